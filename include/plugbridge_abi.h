/*
 * plugbridge_abi.h - the rustbridge C ABI that plugbridge hosts native plugins through.
 *
 * A native plugin is a shared library exporting the eight required functions below; the
 * optional ones (plugin_create_with_config, and the binary transport plugin_call_raw +
 * rb_response_free) are used when present. Libraries built with rustbridge export all of
 * these (and two async stubs plugbridge ignores), so they load unchanged. The rules of
 * ownership and threading, and what the host guarantees, are in docs/ABI.md; the short
 * form is repeated next to each declaration.
 */
#ifndef PLUGBRIDGE_ABI_H
#define PLUGBRIDGE_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Log levels, as the level byte of LogCallback and plugin_set_log_level. */
enum {
    PLUGBRIDGE_LOG_TRACE = 0,
    PLUGBRIDGE_LOG_DEBUG = 1,
    PLUGBRIDGE_LOG_INFO = 2,
    PLUGBRIDGE_LOG_WARN = 3,
    PLUGBRIDGE_LOG_ERROR = 4,
    PLUGBRIDGE_LOG_OFF = 5
};

/* Lifecycle states, as returned by plugin_get_state. */
enum {
    PLUGBRIDGE_STATE_INSTALLED = 0,
    PLUGBRIDGE_STATE_STARTING = 1,
    PLUGBRIDGE_STATE_ACTIVE = 2,
    PLUGBRIDGE_STATE_STOPPING = 3,
    PLUGBRIDGE_STATE_STOPPED = 4,
    PLUGBRIDGE_STATE_FAILED = 5,
    PLUGBRIDGE_STATE_UNKNOWN_HANDLE = 255
};

/* Error codes: the same stable numbers as plugbridge.ErrorCode. */
enum {
    PLUGBRIDGE_OK = 0,
    PLUGBRIDGE_INVALID_STATE = 1,
    PLUGBRIDGE_INITIALIZATION_FAILED = 2,
    PLUGBRIDGE_SHUTDOWN_FAILED = 3,
    PLUGBRIDGE_CONFIG_ERROR = 4,
    PLUGBRIDGE_SERIALIZATION_ERROR = 5,
    PLUGBRIDGE_UNKNOWN_MESSAGE_TYPE = 6,
    PLUGBRIDGE_HANDLER_ERROR = 7,
    PLUGBRIDGE_RUNTIME_ERROR = 8,
    PLUGBRIDGE_CANCELLED = 9,
    PLUGBRIDGE_TIMEOUT = 10,
    PLUGBRIDGE_INTERNAL_ERROR = 11,
    PLUGBRIDGE_FFI_ERROR = 12,
    PLUGBRIDGE_TOO_MANY_REQUESTS = 13
};

/*
 * A response owned by the plugin until the host hands it back to plugin_free_buffer.
 * error_code == 0: data holds {"status":"success","payload":<json>}.
 * error_code != 0: data holds {"status":"error","error_code":N,"error_message":"..."},
 *                  or a bare UTF-8 message (FFI-level failures), or nothing.
 */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t capacity;
    uint32_t error_code;
} FfiBuffer;

/*
 * Log sink handed to plugin_init. May be called from any thread, at any time between
 * plugin_init and the return of plugin_shutdown. target: NUL-terminated UTF-8 (the
 * logger name); msg: msg_len bytes of UTF-8, not NUL-terminated. Both are borrowed for
 * the duration of the call only.
 */
typedef void (*LogCallback)(uint8_t level, const char *target, const uint8_t *msg,
                            size_t msg_len);

/* Allocate the plugin object. NULL on failure. */
void *plugin_create(void);

/*
 * Optional: allocate the plugin object from the config JSON that plugin_init gets next
 * (config_len bytes, borrowed). Preferred over plugin_create when exported, so a plugin
 * that builds itself from its config sees "data". NULL on failure.
 */
void *plugin_create_with_config(const uint8_t *config_json, size_t config_len);

/*
 * Start the plugin created by plugin_create(_with_config) with the config JSON
 * {"log_level":"info","max_concurrent_ops":N,"shutdown_timeout_ms":N,
 *  "worker_threads":N|null,"data":<any JSON, null when unset>,
 *  "init_params":{...} (only when set)} (config_len bytes, borrowed).
 * Returns the handle for the other calls, or NULL if the plugin failed to start.
 */
void *plugin_init(void *plugin, const uint8_t *config_json, size_t config_len,
                  LogCallback log_callback);

/*
 * Handle one request. type_tag: NUL-terminated UTF-8; request: request_len bytes of JSON.
 * Both are borrowed for the duration of the call. May be called from many threads at
 * once. The returned buffer must be passed to plugin_free_buffer exactly once.
 */
FfiBuffer plugin_call(void *handle, const char *type_tag, const uint8_t *request,
                      size_t request_len);

/* Release a buffer returned by plugin_call; must accept an empty buffer (data NULL). */
void plugin_free_buffer(FfiBuffer *buffer);

/*
 * The binary transport (optional; both functions or neither). A response owned by the
 * plugin until the host hands it back to rb_response_free. Natural C alignment: 24 bytes
 * on LP64 (4 bytes of padding before data).
 * error_code == 0: data holds len bytes of response, any length (0 included).
 * error_code != 0: data holds a NUL-terminated UTF-8 message; len counts the NUL.
 */
typedef struct {
    uint32_t error_code;
    uint32_t len;
    uint32_t capacity;
    void *data;
} RbResponse;

/*
 * Handle one binary request: request_size bytes (borrowed for the call; read them with
 * memcpy, they may be unaligned) for the handler of message_id. May be called from many
 * threads at once. The response must be passed to rb_response_free exactly once.
 */
RbResponse plugin_call_raw(void *handle, uint32_t message_id, const void *request,
                           size_t request_size);

/* Release a response of plugin_call_raw; must accept NULL and an empty response. */
void rb_response_free(RbResponse *response);

/* Stop the plugin. true on a clean stop. The handle is invalid afterwards. */
bool plugin_shutdown(void *handle);

/* Set the plugin's log level (a PLUGBRIDGE_LOG_* value); applies to the next record. */
void plugin_set_log_level(void *handle, uint8_t level);

/* The plugin's lifecycle state (PLUGBRIDGE_STATE_*); 255 for an unknown handle. */
uint8_t plugin_get_state(void *handle);

/* Calls the plugin refused because of its max_concurrent_ops limit, so far. */
uint64_t plugin_get_rejected_count(void *handle);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBRIDGE_ABI_H */
