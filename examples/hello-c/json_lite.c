/* json_lite.c - see json_lite.h. */
#include "json_lite.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

/* ---- scanning ------------------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static const char *skip_string(const char *p, const char *end) {
    if (p >= end || *p != '"') return NULL;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c != '\\') continue;
        if (++p >= end) return NULL;
        switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            break;
        case 'u':
            if (end - p < 5) return NULL;
            for (int i = 1; i <= 4; i++)
                if (hex_digit(p[i]) < 0) return NULL;
            p += 4;
            break;
        default:
            return NULL;
        }
    }
    return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9') p++;
    return p == start ? NULL : p;
}

static const char *skip_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') {
        p++;
    } else if ((p = skip_digits(p, end)) == NULL) {
        return NULL;
    }
    if (p < end && *p == '.' && (p = skip_digits(p + 1, end)) == NULL) return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if ((p = skip_digits(p, end)) == NULL) return NULL;
    }
    return p;
}

static const char *skip_literal(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0) return NULL;
    return p + n;
}

static const char *skip_value(const char *p, const char *end, int depth);

static const char *skip_container(const char *p, const char *end, int depth, char close,
                                  bool keyed) {
    if (depth > MAX_DEPTH) return NULL;
    p = skip_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
        if (keyed) {
            if ((p = skip_string(p, end)) == NULL) return NULL;
            p = skip_ws(p, end);
            if (p >= end || *p != ':') return NULL;
            p = skip_ws(p + 1, end);
        }
        if ((p = skip_value(p, end, depth + 1)) == NULL) return NULL;
        p = skip_ws(p, end);
        if (p >= end) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
}

static const char *skip_value(const char *p, const char *end, int depth) {
    if (p >= end) return NULL;
    switch (*p) {
    case '{': return skip_container(p, end, depth, '}', true);
    case '[': return skip_container(p, end, depth, ']', false);
    case '"': return skip_string(p, end);
    case 't': return skip_literal(p, end, "true");
    case 'f': return skip_literal(p, end, "false");
    case 'n': return skip_literal(p, end, "null");
    default: return skip_number(p, end);
    }
}

bool json_parse(const char *s, size_t n, jspan *value) {
    const char *end = s + n;
    const char *start = skip_ws(s, end);
    const char *after = skip_value(start, end, 0);
    if (after == NULL || skip_ws(after, end) != end) return false;
    value->p = start;
    value->n = (size_t)(after - start);
    return true;
}

bool json_is_object(jspan v) { return v.n > 0 && v.p[0] == '{'; }

bool json_is_null(jspan v) { return v.n == 4 && memcmp(v.p, "null", 4) == 0; }

bool json_member(jspan obj, const char *key, jspan *out) {
    if (!json_is_object(obj)) return false;
    const char *end = obj.p + obj.n;
    const char *p = skip_ws(obj.p + 1, end);
    size_t key_len = strlen(key);
    while (p < end && *p == '"') {
        const char *key_end = skip_string(p, end);
        bool match = (size_t)(key_end - p) == key_len + 2 && memcmp(p + 1, key, key_len) == 0;
        p = skip_ws(skip_ws(key_end, end) + 1, end); /* past ':' */
        const char *value_end = skip_value(p, end, 0);
        if (match) {
            out->p = p;
            out->n = (size_t)(value_end - p);
            return true;
        }
        p = skip_ws(value_end, end);
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return false;
}

/* ---- reading values ------------------------------------------------------------- */

static void put_utf8(sbuf *b, uint32_t cp) {
    char tmp[4];
    size_t n;
    if (cp < 0x80) {
        tmp[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        tmp[0] = (char)(0xC0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        tmp[0] = (char)(0xE0 | (cp >> 12));
        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        tmp[0] = (char)(0xF0 | (cp >> 18));
        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sbuf_put(b, tmp, n);
}

static uint32_t read_hex4(const char *p) {
    return (uint32_t)(hex_digit(p[0]) << 12 | hex_digit(p[1]) << 8 | hex_digit(p[2]) << 4 |
                      hex_digit(p[3]));
}

bool json_string(jspan v, sbuf *out) {
    if (v.n < 2 || v.p[0] != '"') return false;
    const char *p = v.p + 1;
    const char *end = v.p + v.n - 1; /* the closing quote */
    while (p < end) {
        const char *run = p;
        while (p < end && *p != '\\') p++;
        sbuf_put(out, run, (size_t)(p - run));
        if (p >= end) break;
        char esc = p[1];
        p += 2;
        switch (esc) {
        case 'b': sbuf_put(out, "\b", 1); break;
        case 'f': sbuf_put(out, "\f", 1); break;
        case 'n': sbuf_put(out, "\n", 1); break;
        case 'r': sbuf_put(out, "\r", 1); break;
        case 't': sbuf_put(out, "\t", 1); break;
        case 'u': {
            uint32_t cp = read_hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                uint32_t low = read_hex4(p + 2);
                if (low >= 0xDC00 && low < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
            }
            put_utf8(out, cp);
            break;
        }
        default: sbuf_put(out, &esc, 1); break; /* '"', '\\', '/' */
        }
    }
    sbuf_put(out, "", 0);
    if (out->failed) return false;
    out->data[out->len] = '\0';
    return true;
}

bool json_int(jspan v, long long *out) {
    char tmp[32];
    if (v.n == 0 || v.n >= sizeof tmp || memchr(v.p, '.', v.n) || memchr(v.p, 'e', v.n) ||
        memchr(v.p, 'E', v.n) || !(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')))
        return false;
    memcpy(tmp, v.p, v.n);
    tmp[v.n] = '\0';
    errno = 0;
    char *stop;
    *out = strtoll(tmp, &stop, 10);
    return errno == 0 && *stop == '\0';
}

bool json_bool(jspan v, bool *out) {
    if (v.n == 4 && memcmp(v.p, "true", 4) == 0) {
        *out = true;
        return true;
    }
    if (v.n == 5 && memcmp(v.p, "false", 5) == 0) {
        *out = false;
        return true;
    }
    return false;
}

long json_array_len(jspan v) {
    if (v.n == 0 || v.p[0] != '[') return -1;
    const char *end = v.p + v.n;
    const char *p = skip_ws(v.p + 1, end);
    long count = 0;
    while (p < end && *p != ']') {
        p = skip_ws(skip_value(p, end, 0), end);
        count++;
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return count;
}

/* ---- building output ------------------------------------------------------------ */

static bool sbuf_reserve(sbuf *b, size_t extra) {
    if (b->failed) return false;
    size_t need = b->len + extra + 1; /* room for a NUL */
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) {
        b->failed = true;
        return false;
    }
    b->data = data;
    b->cap = cap;
    return true;
}

void sbuf_put(sbuf *b, const char *s, size_t n) {
    if (!sbuf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void sbuf_puts(sbuf *b, const char *s) { sbuf_put(b, s, strlen(s)); }

void sbuf_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, args);
    va_end(args);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sbuf_put(b, tmp, (size_t)n);
        return;
    }
    if (!sbuf_reserve(b, (size_t)n)) return;
    va_start(args, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, args);
    va_end(args);
    b->len += (size_t)n;
}

void sbuf_json_string(sbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    sbuf_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sbuf_put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        size_t len = 2;
        if (c == '\n') esc[1] = 'n';
        else if (c == '\r') esc[1] = 'r';
        else if (c == '\t') esc[1] = 't';
        else if (c < 0x20) {
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        sbuf_put(b, esc, len);
    }
    sbuf_put(b, s + run, n - run);
    sbuf_put(b, "\"", 1);
}

void sbuf_double(sbuf *b, double value) {
    char tmp[32];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(tmp, sizeof tmp, "%.*g", digits, value);
        if (strtod(tmp, NULL) == value) break;
    }
    if (!strpbrk(tmp, ".eEn")) strcat(tmp, ".0"); /* keep it a float in JSON readers */
    sbuf_puts(b, tmp);
}

void sbuf_free(sbuf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
