/*
 * hello_plugin.c - the hello plugin in C, over the rustbridge C ABI (include/plugbridge_abi.h).
 *
 * Same message types as examples/hello/hello_plugin.py: echo, greet, user.create, math.add,
 * test.sleep, bench.small, bench.medium, bench.large; and config.seen, which answers the
 * config JSON the library was created and started with.
 *
 * The binary transport (plugin_call_raw + rb_response_free), with rustbridge's
 * MSG_BENCH_SMALL (id 1: the 76-byte SmallRequestRaw in, the 80-byte SmallResponseRaw out)
 * and a few more message ids (MSG_* below), and plugin_create_with_config are exported too,
 * as a rustbridge library exports them. -DHELLO_C_NO_BINARY and
 * -DHELLO_C_NO_CREATE_WITH_CONFIG leave them out (a library without them).
 *
 * Like a rustbridge library, it keeps ONE process-global log callback, log level and
 * lifecycle state: a second plugin_init in the same mapping of the library takes them
 * over. plugbridge gives every instance its own private copy of the library, so two
 * instances never share these globals.
 *
 * Build: see Makefile (`make`), or
 *   cc -shared -fPIC -O2 -I../../include -o libhello_c.so hello_plugin.c json_lite.c -lpthread
 * Add -DHELLO_C_TEST_HOOKS for the extra failure-injection hooks the test suite uses.
 */
#define _POSIX_C_SOURCE 200809L
#include "plugbridge_abi.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_lite.h"

#define LOG_TARGET "hello_c"
#define ERR_LEN 256

/* ---- process-global state (one set per mapping of the library) -------------------- */

static _Atomic(LogCallback) g_callback;
static atomic_int g_level = PLUGBRIDGE_LOG_INFO;
static atomic_int g_state = PLUGBRIDGE_STATE_INSTALLED;
static atomic_long g_active;
static atomic_ullong g_rejected;
static atomic_ullong g_next_user;
static long g_max_ops = 1000;
static long g_shutdown_sleep_ms; /* test hook: a shutdown that hangs */
static int g_plugin;             /* its address is the plugin pointer and the handle */
/* The config JSON as plugin_create_with_config and plugin_init got it (config.seen). */
static sbuf g_create_config, g_init_config;
static bool g_created_with_config;

static const char *const LEVEL_NAMES[] = {"trace", "debug", "info", "warn", "error", "off"};

static void log_record(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_record(int level, const char *fmt, ...) {
    LogCallback cb = atomic_load(&g_callback);
    if (cb == NULL || level < atomic_load(&g_level)) return;
    char msg[1024];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    if (n < 0) return;
    if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
    cb((uint8_t)level, LOG_TARGET, (const uint8_t *)msg, (size_t)n);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- responses ------------------------------------------------------------------- */

#ifdef HELLO_C_TEST_HOOKS
/* Response buffers handed out and not yet freed (test.outstanding reports it). */
static atomic_long g_outstanding;
#endif

static FfiBuffer take_buffer(sbuf *b, uint32_t code) {
    FfiBuffer out = {(uint8_t *)b->data, b->len, b->cap, code};
#ifdef HELLO_C_TEST_HOOKS
    if (out.data != NULL) atomic_fetch_add(&g_outstanding, 1);
#endif
    return out;
}

static FfiBuffer bare_error(uint32_t code, const char *message) {
    sbuf b = {0};
    sbuf_puts(&b, message);
    return take_buffer(&b, code);
}

static FfiBuffer error_envelope(uint32_t code, const char *message) {
    sbuf b = {0};
    sbuf_printf(&b, "{\"status\":\"error\",\"error_code\":%u,\"error_message\":", code);
    sbuf_json_string(&b, message, strlen(message));
    sbuf_puts(&b, "}");
    if (b.failed) {
        sbuf_free(&b);
        return bare_error(code, "out of memory");
    }
    return take_buffer(&b, code);
}

/* ---- request fields ---------------------------------------------------------------- */

/* Each reader writes a SerializationError message into err and returns false. */

static bool field(jspan obj, const char *name, jspan *out, char *err) {
    if (json_member(obj, name, out)) return true;
    snprintf(err, ERR_LEN, "Object missing required field `%s`", name);
    return false;
}

static bool str_field(jspan obj, const char *name, sbuf *out, char *err) {
    jspan v;
    if (!field(obj, name, &v, err)) return false;
    if (json_string(v, out)) return true;
    snprintf(err, ERR_LEN, "Expected `str`, got another type - at `$.%s`", name);
    return false;
}

static bool int_field(jspan obj, const char *name, long long *out, char *err) {
    jspan v;
    if (!field(obj, name, &v, err)) return false;
    if (json_int(v, out)) return true;
    snprintf(err, ERR_LEN, "Expected `int`, got another type - at `$.%s`", name);
    return false;
}

static bool bool_field(jspan obj, const char *name, bool *out, char *err) {
    jspan v;
    if (!field(obj, name, &v, err)) return false;
    if (json_bool(v, out)) return true;
    snprintf(err, ERR_LEN, "Expected `bool`, got another type - at `$.%s`", name);
    return false;
}

static bool array_field(jspan obj, const char *name, long *len, char *err) {
    jspan v;
    if (!field(obj, name, &v, err)) return false;
    if ((*len = json_array_len(v)) >= 0) return true;
    snprintf(err, ERR_LEN, "Expected `array`, got another type - at `$.%s`", name);
    return false;
}

/* ---- handlers ---------------------------------------------------------------------- */

/* A handler writes its payload JSON into out and returns 0, or an error code with err. */
typedef uint32_t (*handler_fn)(jspan req, sbuf *out, char *err);

#define SER PLUGBRIDGE_SERIALIZATION_ERROR

static uint32_t handle_echo(jspan req, sbuf *out, char *err) {
    sbuf message = {0};
    uint32_t code = 0;
    if (str_field(req, "message", &message, err)) {
        log_record(PLUGBRIDGE_LOG_DEBUG, "Handling echo request: %s", message.data);
        sbuf_puts(out, "{\"message\":");
        sbuf_json_string(out, message.data, message.len);
        sbuf_printf(out, ",\"length\":%zu}", message.len);
    } else {
        code = SER;
    }
    sbuf_free(&message);
    return code;
}

static uint32_t handle_greet(jspan req, sbuf *out, char *err) {
    sbuf name = {0};
    uint32_t code = 0;
    if (str_field(req, "name", &name, err)) {
        log_record(PLUGBRIDGE_LOG_DEBUG, "Handling greet request for %s", name.data);
        sbuf greeting = {0};
        sbuf_printf(&greeting, "Hello, %s! Welcome to plugbridge.", name.data);
        sbuf_puts(out, "{\"greeting\":");
        sbuf_json_string(out, greeting.data, greeting.len);
        sbuf_puts(out, "}");
        sbuf_free(&greeting);
    } else {
        code = SER;
    }
    sbuf_free(&name);
    return code;
}

static uint32_t handle_user_create(jspan req, sbuf *out, char *err) {
    sbuf username = {0}, email = {0};
    uint32_t code = 0;
    if (str_field(req, "username", &username, err) && str_field(req, "email", &email, err)) {
        log_record(PLUGBRIDGE_LOG_INFO, "Creating user: %s (%s)", username.data, email.data);
        unsigned long long number = atomic_fetch_add(&g_next_user, 1);
        sbuf_printf(out, "{\"user_id\":\"user-%08llx\",\"created_at\":\"%lldZ\"}", number,
                    (long long)time(NULL));
    } else {
        code = SER;
    }
    sbuf_free(&username);
    sbuf_free(&email);
    return code;
}

static uint32_t handle_math_add(jspan req, sbuf *out, char *err) {
    long long a, b, sum;
    if (!int_field(req, "a", &a, err) || !int_field(req, "b", &b, err)) return SER;
    log_record(PLUGBRIDGE_LOG_DEBUG, "Adding %lld + %lld", a, b);
    if (__builtin_add_overflow(a, b, &sum)) {
        snprintf(err, ERR_LEN, "OverflowError: %lld + %lld does not fit in 64 bits", a, b);
        return PLUGBRIDGE_HANDLER_ERROR;
    }
    sbuf_printf(out, "{\"result\":%lld}", sum);
    return 0;
}

static uint32_t handle_sleep(jspan req, sbuf *out, char *err) {
    long long ms;
    if (!int_field(req, "duration_ms", &ms, err)) return SER;
    if (ms < 0) {
        snprintf(err, ERR_LEN, "ValueError: duration_ms must not be negative");
        return PLUGBRIDGE_HANDLER_ERROR;
    }
    log_record(PLUGBRIDGE_LOG_DEBUG, "Sleeping for %lld ms", ms);
    sleep_ms((long)ms);
    sbuf_printf(out, "{\"slept_ms\":%lld}", ms);
    return 0;
}

static uint32_t handle_bench_small(jspan req, sbuf *out, char *err) {
    sbuf key = {0};
    long long flags;
    uint32_t code = SER;
    if (str_field(req, "key", &key, err) && int_field(req, "flags", &flags, err)) {
        sbuf value = {0};
        sbuf_printf(&value, "value_for_%s", key.data);
        sbuf_puts(out, "{\"value\":");
        sbuf_json_string(out, value.data, value.len);
        sbuf_printf(out, ",\"ttl_seconds\":3600,\"cache_hit\":%s}",
                    (flags & 1) ? "true" : "false");
        sbuf_free(&value);
        code = 0;
    }
    sbuf_free(&key);
    return code;
}

static const char *const PERMISSIONS[] = {
    "read", "write", "delete", "admin", "users.read", "users.write", "reports.read",
    "reports.write", "settings.read", "settings.write", "audit.read", "billing.read",
    "billing.write", "api.access", "webhooks.manage",
};

static uint32_t handle_bench_medium(jspan req, sbuf *out, char *err) {
    long long uid, max_results;
    long fields;
    bool with_meta, with_perms;
    jspan options;
    if (!int_field(req, "user_id", &uid, err) || !array_field(req, "include_fields", &fields, err) ||
        !field(req, "options", &options, err))
        return SER;
    if (!bool_field(options, "include_metadata", &with_meta, err) ||
        !bool_field(options, "include_permissions", &with_perms, err) ||
        !int_field(options, "max_results", &max_results, err))
        return SER;
    sbuf_printf(out,
                "{\"user_id\":%lld,\"username\":\"user_%lld\",\"email\":\"user_%lld@example.com\","
                "\"display_name\":\"User Number %lld\",\"metadata\":[",
                uid, uid, uid, uid);
    for (int i = 0; with_meta && i < 10; i++)
        sbuf_printf(out, "%s{\"key\":\"meta_key_%d\",\"value\":\"meta_value_%d_for_user_%lld\"}",
                    i ? "," : "", i, i, uid);
    sbuf_puts(out, "],\"permissions\":[");
    for (size_t i = 0; with_perms && i < sizeof PERMISSIONS / sizeof *PERMISSIONS; i++)
        sbuf_printf(out, "%s\"%s\"", i ? "," : "", PERMISSIONS[i]);
    sbuf_puts(out, "],\"created_at\":1700000000,\"updated_at\":1705000000}");
    return 0;
}

static uint32_t handle_bench_large(jspan req, sbuf *out, char *err) {
    long long qid, page_size;
    long filters;
    if (!int_field(req, "query_id", &qid, err) || !array_field(req, "filters", &filters, err) ||
        !int_field(req, "page_size", &page_size, err))
        return SER;
    long long count = page_size < 0 ? 0 : (page_size > 1000 ? 1000 : page_size);
    sbuf_printf(out, "{\"query_id\":%lld,\"results\":[", qid);
    for (long long i = 0; i < count; i++) {
        sbuf_printf(out,
                    "%s{\"id\":%lld,\"name\":\"Record %lld for query %lld\",\"description\":"
                    "\"This is a detailed description for record %lld. It contains enough text"
                    " to make the payload realistic. Query ID: %lld, Filters: %ld\","
                    "\"category\":\"category_%lld\",\"tags\":[\"tag_a_%lld\",\"tag_b_%lld\","
                    "\"tag_c_%lld\"],\"score\":",
                    i ? "," : "", qid * 10000 + i, i, qid, i, qid, filters, i % 10, i % 5, i % 7,
                    i % 3);
        sbuf_double(out, (double)i * 0.1 + 0.5);
        sbuf_printf(out,
                    ",\"metadata\":[{\"key\":\"source\",\"value\":\"benchmark\"},"
                    "{\"key\":\"version\",\"value\":\"1.0\"}],\"created_at\":%lld}",
                    1700000000 + i * 1000);
    }
    sbuf_printf(out, "],\"total_count\":%lld,\"next_page_token\":\"token_%lld_%lld\"}",
                count * 10, qid, count);
    return 0;
}

/* The config JSON the library saw: {"created_with_config": bool, "create_config": <JSON
 * or null>, "init_config": <JSON>} (both are complete, validated JSON documents). */
static uint32_t handle_config_seen(jspan req, sbuf *out, char *err) {
    (void)req, (void)err;
    sbuf_printf(out, "{\"created_with_config\":%s,\"create_config\":",
                g_created_with_config ? "true" : "false");
    if (g_create_config.len > 0)
        sbuf_put(out, g_create_config.data, g_create_config.len);
    else
        sbuf_puts(out, "null");
    sbuf_puts(out, ",\"init_config\":");
    if (g_init_config.len > 0)
        sbuf_put(out, g_init_config.data, g_init_config.len);
    else
        sbuf_puts(out, "null");
    sbuf_puts(out, "}");
    return 0;
}

#ifdef HELLO_C_TEST_HOOKS
static uint32_t handle_crash(jspan req, sbuf *out, char *err) {
    (void)req, (void)out, (void)err;
    volatile int *nowhere = NULL;
    *nowhere = 1; /* a deliberate segfault */
    return 0;
}

/* Waits until `parties` calls are inside at once (10 s at most): proof of parallel calls. */
static atomic_long g_rendezvous;

static uint32_t handle_rendezvous(jspan req, sbuf *out, char *err) {
    long long parties;
    if (!int_field(req, "parties", &parties, err)) return SER;
    long arrived = atomic_fetch_add(&g_rendezvous, 1) + 1;
    for (int waited = 0; arrived < parties && waited < 10000; waited++) {
        sleep_ms(1);
        arrived = atomic_load(&g_rendezvous);
    }
    sbuf_printf(out, "{\"met\":%s}", arrived >= parties ? "true" : "false");
    return 0;
}

/* Buffers not freed yet, this response's own excluded. */
static uint32_t handle_outstanding(jspan req, sbuf *out, char *err) {
    (void)req, (void)err;
    sbuf_printf(out, "{\"outstanding\":%ld}", atomic_load(&g_outstanding));
    return 0;
}

/* A payload nested `depth` arrays deep (at most 10 million). */
static uint32_t handle_deep(jspan req, sbuf *out, char *err) {
    long long depth;
    if (!int_field(req, "depth", &depth, err)) return SER;
    if (depth < 0 || depth > 10000000) depth = 0;
    for (long long i = 0; i < depth; i++) sbuf_put(out, "[", 1);
    for (long long i = 0; i < depth; i++) sbuf_put(out, "]", 1);
    if (depth == 0) sbuf_puts(out, "null");
    return 0;
}

/* Responses that break the ABI's rules on purpose, written byte for byte. */
static const struct {
    const char *tag;
    uint32_t code;
    const char *bytes;
} RAW_RESPONSES[] = {
    /* invalid UTF-8 inside a JSON string of a success payload */
    {"test.bad_utf8", 0, "{\"status\":\"success\",\"payload\":{\"text\":\"bad \xff\xfe here\"}}"},
    /* invalid UTF-8 in an error envelope's message */
    {"test.bad_utf8_error", PLUGBRIDGE_HANDLER_ERROR,
     "{\"status\":\"error\",\"error_code\":7,\"error_message\":\"bad \xff here\"}"},
    /* invalid UTF-8 in a bare error message */
    {"test.bad_utf8_bare", PLUGBRIDGE_FFI_ERROR, "bare \xc3\x28 message"},
};

static bool raw_response(const char *tag, FfiBuffer *out) {
    for (size_t i = 0; i < sizeof RAW_RESPONSES / sizeof *RAW_RESPONSES; i++) {
        if (strcmp(RAW_RESPONSES[i].tag, tag) != 0) continue;
        sbuf b = {0};
        sbuf_puts(&b, RAW_RESPONSES[i].bytes);
        *out = take_buffer(&b, RAW_RESPONSES[i].code);
        return true;
    }
    return false;
}

/* HELLO_C_LOAD_MARKER=<file>: every mapping of the library appends "loaded" to <file>. */
__attribute__((constructor)) static void note_loaded(void) {
    const char *path = getenv("HELLO_C_LOAD_MARKER");
    FILE *marker = path != NULL ? fopen(path, "a") : NULL;
    if (marker == NULL) return;
    fputs("loaded\n", marker);
    fclose(marker);
}
#endif

static const struct {
    const char *tag;
    handler_fn fn;
} HANDLERS[] = {
    {"echo", handle_echo},
    {"greet", handle_greet},
    {"user.create", handle_user_create},
    {"math.add", handle_math_add},
    {"test.sleep", handle_sleep},
    {"bench.small", handle_bench_small},
    {"bench.medium", handle_bench_medium},
    {"bench.large", handle_bench_large},
    {"config.seen", handle_config_seen},
#ifdef HELLO_C_TEST_HOOKS
    {"test.crash", handle_crash},
    {"test.rendezvous", handle_rendezvous},
    {"test.deep", handle_deep},
    {"test.outstanding", handle_outstanding},
#endif
};

static handler_fn find_handler(const char *tag) {
    for (size_t i = 0; i < sizeof HANDLERS / sizeof *HANDLERS; i++)
        if (strcmp(HANDLERS[i].tag, tag) == 0) return HANDLERS[i].fn;
    return NULL;
}

/* ---- the ABI ----------------------------------------------------------------------- */

static void remember_config(sbuf *seen, jspan config) {
    sbuf_free(seen);
    sbuf_put(seen, config.p, config.n);
    if (seen->failed) sbuf_free(seen);
}

void *plugin_create(void) {
    g_created_with_config = false;
    sbuf_free(&g_create_config);
    return &g_plugin;
}

#ifndef HELLO_C_NO_CREATE_WITH_CONFIG
/* As rustbridge's: no config (NULL or empty) is the default one; invalid JSON fails. */
void *plugin_create_with_config(const uint8_t *config_json, size_t config_len) {
    jspan config;
    g_created_with_config = true;
    sbuf_free(&g_create_config);
    if (config_json == NULL || config_len == 0) return &g_plugin;
    if (!json_parse((const char *)config_json, config_len, &config) || !json_is_object(config))
        return NULL;
    remember_config(&g_create_config, config);
#ifdef HELLO_C_TEST_HOOKS
    jspan data, hook;
    bool fail = false;
    if (json_member(config, "data", &data) && json_member(data, "fail_create", &hook) &&
        json_bool(hook, &fail) && fail)
        return NULL;
#endif
    return &g_plugin;
}
#endif

static bool read_config(const uint8_t *json, size_t len) {
    jspan config, v;
    if (json == NULL || !json_parse((const char *)json, len, &config) || !json_is_object(config))
        return false;
    remember_config(&g_init_config, config);
    if (json_member(config, "log_level", &v)) {
        sbuf name = {0};
        bool ok = json_string(v, &name);
        int level = -1;
        for (int i = 0; ok && i <= PLUGBRIDGE_LOG_OFF; i++)
            if (strcmp(name.data, LEVEL_NAMES[i]) == 0) level = i;
        sbuf_free(&name);
        if (level < 0) return false;
        atomic_store(&g_level, level);
    }
    long long max_ops = 1000;
    if (json_member(config, "max_concurrent_ops", &v) && (!json_int(v, &max_ops) || max_ops < 0))
        return false;
    g_max_ops = (long)max_ops;
    g_shutdown_sleep_ms = 0;
#ifdef HELLO_C_TEST_HOOKS
    jspan data, hook;
    if (json_member(config, "data", &data)) {
        bool fail = false;
        long long ms = 0;
        if (json_member(data, "fail_init", &hook) && json_bool(hook, &fail) && fail) return false;
        if (json_member(data, "shutdown_sleep_ms", &hook) && json_int(hook, &ms))
            g_shutdown_sleep_ms = (long)ms;
        if (json_member(data, "init_sleep_ms", &hook) && json_int(hook, &ms) && ms > 0)
            sleep_ms((long)ms);
    }
#endif
    return true;
}

void *plugin_init(void *plugin, const uint8_t *config_json, size_t config_len,
                  LogCallback log_callback) {
    if (plugin != &g_plugin) return NULL;
    atomic_store(&g_state, PLUGBRIDGE_STATE_STARTING);
    atomic_store(&g_callback, log_callback); /* the one global callback */
    if (!read_config(config_json, config_len)) {
        log_record(PLUGBRIDGE_LOG_ERROR, "hello-c plugin: invalid configuration");
        atomic_store(&g_state, PLUGBRIDGE_STATE_FAILED);
        return NULL;
    }
    atomic_store(&g_active, 0);
    atomic_store(&g_rejected, 0);
    atomic_store(&g_state, PLUGBRIDGE_STATE_ACTIVE);
    log_record(PLUGBRIDGE_LOG_INFO, "HelloPlugin (C) starting (log level %s)",
               LEVEL_NAMES[atomic_load(&g_level)]);
    return &g_plugin;
}

static FfiBuffer dispatch(const char *type_tag, const uint8_t *request, size_t request_len) {
    handler_fn fn = find_handler(type_tag);
    char err[ERR_LEN] = "";
    if (fn == NULL) {
        snprintf(err, sizeof err, "plugin 'hello-c' has no handler for '%.100s'", type_tag);
        return error_envelope(PLUGBRIDGE_UNKNOWN_MESSAGE_TYPE, err);
    }
    jspan req;
    if (!json_parse((const char *)request, request_len, &req))
        return error_envelope(SER, "request is not valid JSON");
    if (!json_is_object(req)) return error_envelope(SER, "Expected `object` - at `$`");
    sbuf payload = {0};
    uint32_t code = fn(req, &payload, err);
    if (code == 0 && payload.failed) {
        code = PLUGBRIDGE_INTERNAL_ERROR;
        snprintf(err, sizeof err, "out of memory");
    }
    if (code != 0) {
        sbuf_free(&payload);
        return error_envelope(code, err);
    }
    sbuf env = {0};
    sbuf_puts(&env, "{\"status\":\"success\",\"payload\":");
    sbuf_put(&env, payload.data, payload.len);
    sbuf_puts(&env, "}");
    sbuf_free(&payload);
    if (env.failed) {
        sbuf_free(&env);
        return bare_error(PLUGBRIDGE_INTERNAL_ERROR, "out of memory");
    }
    return take_buffer(&env, 0);
}

FfiBuffer plugin_call(void *handle, const char *type_tag, const uint8_t *request,
                      size_t request_len) {
    if (handle != &g_plugin) return bare_error(PLUGBRIDGE_FFI_ERROR, "unknown plugin handle");
    if (type_tag == NULL || (request == NULL && request_len > 0))
        return bare_error(PLUGBRIDGE_FFI_ERROR, "null type tag or request");
#ifdef HELLO_C_TEST_HOOKS
    if (strcmp(type_tag, "test.bare_error") == 0)
        return bare_error(PLUGBRIDGE_FFI_ERROR, "deliberate bare error message");
    FfiBuffer raw;
    if (raw_response(type_tag, &raw)) return raw;
#endif
    if (atomic_load(&g_state) != PLUGBRIDGE_STATE_ACTIVE)
        return error_envelope(PLUGBRIDGE_INVALID_STATE, "plugin 'hello-c' is not active");
    long running = atomic_fetch_add(&g_active, 1) + 1;
    if (g_max_ops > 0 && running > g_max_ops) {
        atomic_fetch_sub(&g_active, 1);
        atomic_fetch_add(&g_rejected, 1);
        char err[ERR_LEN];
        snprintf(err, sizeof err, "concurrency limit of %ld calls reached; request refused",
                 g_max_ops);
        return error_envelope(PLUGBRIDGE_TOO_MANY_REQUESTS, err);
    }
    FfiBuffer out = dispatch(type_tag, request, request_len);
    atomic_fetch_sub(&g_active, 1);
    return out;
}

void plugin_free_buffer(FfiBuffer *buffer) {
    if (buffer == NULL) return;
#ifdef HELLO_C_TEST_HOOKS
    if (buffer->data != NULL) atomic_fetch_sub(&g_outstanding, 1);
#endif
    free(buffer->data);
    buffer->data = NULL;
    buffer->len = buffer->capacity = 0;
}

/* ---- the binary transport (rustbridge's plugin_call_raw) -------------------------- */

#ifndef HELLO_C_NO_BINARY
enum {
    MSG_BENCH_SMALL = 1, /* SmallRequestRaw -> SmallResponseRaw, as rustbridge's hello-plugin */
    MSG_ECHO_BYTES = 10, /* the request's bytes back, whatever their length (0 included) */
    MSG_FILL = 11,       /* FillRequest -> `size` bytes, byte i = (seed + i) & 0xff */
    MSG_FAIL = 12,       /* uint32_t code + message bytes -> that error, with that text */
    MSG_SLEEP = 13       /* uint32_t ms: sleeps that long, answers the 4 bytes back */
};

/* rustbridge's hello-plugin binary_messages.rs (#[repr(C)], version 1). */
typedef struct {
    uint8_t version;
    uint8_t _reserved[3];
    uint8_t key[64];
    uint32_t key_len;
    uint32_t flags;
} SmallRequestRaw;

typedef struct {
    uint8_t version;
    uint8_t _reserved[3];
    uint8_t value[64];
    uint32_t value_len;
    uint32_t ttl_seconds;
    uint8_t cache_hit;
    uint8_t _padding[3];
} SmallResponseRaw;

_Static_assert(sizeof(SmallRequestRaw) == 76, "SmallRequestRaw is 76 bytes");
_Static_assert(sizeof(SmallResponseRaw) == 80, "SmallResponseRaw is 80 bytes");
#define SMALL_VERSION 1

typedef struct {
    uint32_t size;
    uint32_t seed;
} FillRequest;

#define MAX_FILL (256u << 20)

static RbResponse rb_response(uint32_t code, uint8_t *data, size_t len, size_t cap) {
    RbResponse out = {code, (uint32_t)len, (uint32_t)cap, data};
#ifdef HELLO_C_TEST_HOOKS
    if (data != NULL) atomic_fetch_add(&g_outstanding, 1);
#endif
    return out;
}

/* An error: the text and a NUL, which len counts (as rustbridge does). */
static RbResponse raw_error_text(uint32_t code, const char *text, size_t len) {
    uint8_t *data = malloc(len + 1);
    if (data == NULL) return rb_response(code, NULL, 0, 0);
    memcpy(data, text, len);
    data[len] = 0;
    return rb_response(code, data, len + 1, len + 1);
}

static RbResponse raw_error(uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static RbResponse raw_error(uint32_t code, const char *fmt, ...) {
    char msg[ERR_LEN];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
    return raw_error_text(code, msg, (size_t)n);
}

/* A success: a copy of bytes[0..len) (never NULL data, even for 0 bytes). */
static RbResponse raw_bytes(const void *bytes, size_t len) {
    uint8_t *data = malloc(len ? len : 1);
    if (data == NULL) return raw_error(PLUGBRIDGE_INTERNAL_ERROR, "out of memory");
    if (len) memcpy(data, bytes, len);
    return rb_response(0, data, len, len ? len : 1);
}

static RbResponse raw_bench_small(const uint8_t *request, size_t size) {
    SmallRequestRaw req; /* copied: the request bytes may be unaligned */
    if (size < sizeof req)
        return raw_error(PLUGBRIDGE_HANDLER_ERROR, "handler error: Request too small");
    memcpy(&req, request, sizeof req);
    if (req.version != SMALL_VERSION)
        return raw_error(PLUGBRIDGE_HANDLER_ERROR,
                         "handler error: Unsupported request version: %u (expected %u)",
                         req.version, SMALL_VERSION);
    uint32_t key_len = req.key_len < sizeof req.key ? req.key_len : sizeof req.key;
    char value[16 + sizeof req.key];
    int n = snprintf(value, sizeof value, "value_for_%.*s", (int)key_len, (const char *)req.key);
    SmallResponseRaw resp;
    memset(&resp, 0, sizeof resp);
    resp.version = SMALL_VERSION;
    resp.value_len = (uint32_t)n < sizeof resp.value ? (uint32_t)n : sizeof resp.value;
    memcpy(resp.value, value, resp.value_len);
    resp.ttl_seconds = 3600;
    resp.cache_hit = (req.flags & 1) ? 1 : 0;
    return raw_bytes(&resp, sizeof resp);
}

static RbResponse raw_fill(const uint8_t *request, size_t size) {
    FillRequest req;
    if (size != sizeof req)
        return raw_error(PLUGBRIDGE_SERIALIZATION_ERROR, "FillRequest is %zu bytes, not %zu",
                         sizeof req, size);
    memcpy(&req, request, sizeof req);
    if (req.size > MAX_FILL)
        return raw_error(PLUGBRIDGE_HANDLER_ERROR, "handler error: %u bytes is more than %u",
                         req.size, MAX_FILL);
    uint8_t *data = malloc(req.size ? req.size : 1);
    if (data == NULL) return raw_error(PLUGBRIDGE_INTERNAL_ERROR, "out of memory");
    for (uint32_t i = 0; i < req.size; i++) data[i] = (uint8_t)(req.seed + i);
    return rb_response(0, data, req.size, req.size ? req.size : 1);
}

static RbResponse raw_fail(const uint8_t *request, size_t size) {
    uint32_t code;
    if (size < sizeof code)
        return raw_error(PLUGBRIDGE_SERIALIZATION_ERROR, "MSG_FAIL needs a uint32_t code first");
    memcpy(&code, request, sizeof code);
    return raw_error_text(code ? code : PLUGBRIDGE_HANDLER_ERROR,
                          (const char *)request + sizeof code, size - sizeof code);
}

static RbResponse raw_sleep(const uint8_t *request, size_t size) {
    uint32_t ms;
    if (size != sizeof ms)
        return raw_error(PLUGBRIDGE_SERIALIZATION_ERROR, "MSG_SLEEP needs a uint32_t");
    memcpy(&ms, request, sizeof ms);
    log_record(PLUGBRIDGE_LOG_DEBUG, "Sleeping for %u ms (raw)", ms);
    sleep_ms((long)ms);
    return raw_bytes(&ms, sizeof ms);
}

/* As rustbridge's: no concurrency limit of its own (the host's applies). */
RbResponse plugin_call_raw(void *handle, uint32_t message_id, const void *request,
                           size_t request_size) {
    if (handle != &g_plugin) return raw_error(PLUGBRIDGE_INVALID_STATE, "Invalid handle");
    if (request == NULL && request_size > 0)
        return raw_error(PLUGBRIDGE_FFI_ERROR, "null request with a size");
    if (atomic_load(&g_state) != PLUGBRIDGE_STATE_ACTIVE)
        return raw_error(PLUGBRIDGE_INVALID_STATE, "Plugin not in Active state");
    const uint8_t *req = request;
    switch (message_id) {
    case MSG_BENCH_SMALL:
        return raw_bench_small(req, request_size);
    case MSG_ECHO_BYTES:
        return raw_bytes(req, request_size);
    case MSG_FILL:
        return raw_fill(req, request_size);
    case MSG_FAIL:
        return raw_fail(req, request_size);
    case MSG_SLEEP:
        return raw_sleep(req, request_size);
    default:
        return raw_error(PLUGBRIDGE_UNKNOWN_MESSAGE_TYPE, "Unknown message ID: %u", message_id);
    }
}

void rb_response_free(RbResponse *response) {
    if (response == NULL) return;
#ifdef HELLO_C_TEST_HOOKS
    if (response->data != NULL) atomic_fetch_sub(&g_outstanding, 1);
#endif
    free(response->data);
    response->data = NULL;
    response->error_code = response->len = response->capacity = 0;
}
#endif

bool plugin_shutdown(void *handle) {
    int expected = PLUGBRIDGE_STATE_ACTIVE;
    if (handle != &g_plugin ||
        !atomic_compare_exchange_strong(&g_state, &expected, PLUGBRIDGE_STATE_STOPPING))
        return false;
    log_record(PLUGBRIDGE_LOG_INFO, "HelloPlugin (C) stopping");
    if (g_shutdown_sleep_ms > 0) sleep_ms(g_shutdown_sleep_ms);
    atomic_store(&g_state, PLUGBRIDGE_STATE_STOPPED);
    log_record(PLUGBRIDGE_LOG_INFO, "HelloPlugin (C) stopped");
    return true;
}

void plugin_set_log_level(void *handle, uint8_t level) {
    if (handle == &g_plugin && level <= PLUGBRIDGE_LOG_OFF) atomic_store(&g_level, level);
}

uint8_t plugin_get_state(void *handle) {
    return handle == &g_plugin ? (uint8_t)atomic_load(&g_state)
                               : PLUGBRIDGE_STATE_UNKNOWN_HANDLE;
}

uint64_t plugin_get_rejected_count(void *handle) {
    return handle == &g_plugin ? atomic_load(&g_rejected) : 0;
}
