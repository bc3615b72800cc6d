/* Helpers shared by the C tests of kestrel.h: checks that count failures, a tiny reader for
 * the string and number fields of the JSON results, and a 24-bit BMP reader. */
#ifndef KESTREL_TEST_COMMON_H
#define KESTREL_TEST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "kestrel.h"

static int failures = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* A call that must fail with `want` and leave a message. */
#define EXPECT_STATUS(call, want)                                                             \
    do {                                                                                      \
        kestrel_status got_ = (call);                                                         \
        const char *msg_ = kestrel_last_error();                                              \
        CHECK(got_ == (want), "%s returned %d, want %d (%s)", #call, (int)got_, (int)(want), msg_); \
        if ((want) != KESTREL_OK)                                                             \
            CHECK(msg_ != NULL && msg_[0] != '\0', "%s: no message", #call);                  \
    } while (0)

/* Appends the UTF-8 encoding of code point `c` to `out`. */
static inline char *put_utf8(char *out, unsigned c) {
    if (c < 0x80) {
        *out++ = (char)c;
    } else if (c < 0x800) {
        *out++ = (char)(0xC0 | (c >> 6));
        *out++ = (char)(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        *out++ = (char)(0xE0 | (c >> 12));
        *out++ = (char)(0x80 | ((c >> 6) & 0x3F));
        *out++ = (char)(0x80 | (c & 0x3F));
    } else {
        *out++ = (char)(0xF0 | (c >> 18));
        *out++ = (char)(0x80 | ((c >> 12) & 0x3F));
        *out++ = (char)(0x80 | ((c >> 6) & 0x3F));
        *out++ = (char)(0x80 | (c & 0x3F));
    }
    return out;
}

/* The first string value of `"key":` in `json`, unescaped (malloc'ed), or NULL. */
static inline char *json_string(const char *json, const char *key) {
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *p = strstr(json, pattern);
    if (!p) return NULL;
    p += strlen(pattern);
    char *out = malloc(strlen(p) + 1), *o = out;
    while (*p && *p != '"') {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        switch (*p) {
        case 'n': *o++ = '\n'; p++; break;
        case 't': *o++ = '\t'; p++; break;
        case 'r': *o++ = '\r'; p++; break;
        case 'b': *o++ = '\b'; p++; break;
        case 'f': *o++ = '\f'; p++; break;
        case 'u': {
            unsigned c = (unsigned)strtoul((char[]){p[1], p[2], p[3], p[4], 0}, NULL, 16);
            p += 5;
            if (c >= 0xD800 && c < 0xDC00 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = (unsigned)strtoul((char[]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            o = put_utf8(o, c);
            break;
        }
        default: *o++ = *p++; break; /* \" \\ \/ */
        }
    }
    *o = '\0';
    return out;
}

/* The first number value of `"key":` in `json`, or -1. */
static inline double json_number(const char *json, const char *key) {
    char pattern[128];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(json, pattern);
    return p ? strtod(p + strlen(pattern), NULL) : -1.0;
}

/* Reads a bottom-up 24-bit BMP into top-down RGBA rows of `stride` bytes (malloc'ed). */
static inline uint8_t *read_bmp_rgba(const char *path, uint32_t *w, uint32_t *h, uint32_t extra_stride, uint32_t *stride) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t hdr[54];
    if (fread(hdr, 1, 54, f) != 54 || hdr[0] != 'B' || hdr[1] != 'M' || hdr[28] != 24) {
        fclose(f);
        return NULL;
    }
    uint32_t off = hdr[10] | hdr[11] << 8 | hdr[12] << 16 | (uint32_t)hdr[13] << 24;
    int32_t width = (int32_t)(hdr[18] | hdr[19] << 8 | hdr[20] << 16 | (uint32_t)hdr[21] << 24);
    int32_t height = (int32_t)(hdr[22] | hdr[23] << 8 | hdr[24] << 16 | (uint32_t)hdr[25] << 24);
    int bottom_up = height > 0;
    if (height < 0) height = -height;
    uint32_t row_bytes = ((uint32_t)width * 3 + 3) & ~3u;
    uint8_t *row = malloc(row_bytes);
    *w = (uint32_t)width;
    *h = (uint32_t)height;
    *stride = (uint32_t)width * 4 + extra_stride;
    uint8_t *rgba = calloc((size_t)*stride * (size_t)height, 1);
    fseek(f, (long)off, SEEK_SET);
    for (int32_t y = 0; y < height; y++) {
        if (fread(row, 1, row_bytes, f) != row_bytes) {
            free(row);
            free(rgba);
            fclose(f);
            return NULL;
        }
        uint8_t *dst = rgba + (size_t)*stride * (size_t)(bottom_up ? height - 1 - y : y);
        for (int32_t x = 0; x < width; x++) {
            dst[4 * x] = row[3 * x + 2];
            dst[4 * x + 1] = row[3 * x + 1];
            dst[4 * x + 2] = row[3 * x];
            dst[4 * x + 3] = 255;
        }
    }
    free(row);
    fclose(f);
    return rgba;
}

#endif
