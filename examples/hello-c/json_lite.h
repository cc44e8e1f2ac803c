/*
 * json_lite.h - just enough JSON for the hello-c plugin: validate a document, find an
 * object member, read strings, integers, booleans and array lengths, and build output in
 * a growable buffer. Not a general JSON library.
 */
#ifndef HELLO_C_JSON_LITE_H
#define HELLO_C_JSON_LITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A raw JSON value inside a document (not NUL-terminated). */
typedef struct {
    const char *p;
    size_t n;
} jspan;

/* A growable byte buffer; `failed` is set once an allocation fails. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
} sbuf;

/* true if s[0..n) is exactly one JSON value, optionally surrounded by whitespace. */
bool json_parse(const char *s, size_t n, jspan *value);

bool json_is_object(jspan v);
bool json_is_null(jspan v);

/* The value of member `key` of object `obj` (a validated object span). */
bool json_member(jspan obj, const char *key, jspan *out);

/* Decode a JSON string value (escapes resolved, UTF-8) into `out` (NUL-terminated). */
bool json_string(jspan v, sbuf *out);
bool json_int(jspan v, long long *out);
bool json_bool(jspan v, bool *out);
/* Number of elements of an array value, or -1 if `v` is not an array. */
long json_array_len(jspan v);

void sbuf_put(sbuf *b, const char *s, size_t n);
void sbuf_puts(sbuf *b, const char *s);
void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s[0..n) as a quoted, escaped JSON string. */
void sbuf_json_string(sbuf *b, const char *s, size_t n);
/* Append a double in its shortest round-tripping form. */
void sbuf_double(sbuf *b, double value);
void sbuf_free(sbuf *b);

#endif
