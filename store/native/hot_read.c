/* The store's hot GET in one C call: page-cache read, needle checks, the answer's parts.
 *
 * answer(fd, offset, length, key, alt_key, cookie) reads the needle the map located at
 * [offset, offset + length) of the volume file with preadv2(RWF_NOWAIT), runs the checks
 * of store/needle.verify_read on the bytes read (magic, flags, size against the index,
 * footer, checksum, identity, liveness, cookie) and returns
 *
 *     (head_lines, body)   the ETag/caching header lines and a memoryview of the data,
 *                          the checksum checked on exactly these bytes;
 *     MISS                 the bytes are not (all) in the page cache: read from the device;
 *     REFER                anything else (not found, wrong cookie, corrupt, an I/O error,
 *                          an unusual argument): the pure-Python path judges it and raises
 *                          its precise error.
 *
 * chunk_sums_match(data, packed, chunk_bytes) is f4's per-chunk sidecar check
 * (f4/sidecar.check_packed) in one call, with the same XXH3 build; pread_cached(fd,
 * length, offset) is f4's page-cache read (f4/local_block_store.read_cached) into bytes
 * that are not zeroed first.
 *
 * parse_path(path) is store/http_api.fast_needle_path's fast branch: (volume, key, alt_key,
 * cookie) of a canonical /n/{volume}/{key}/{alt_key}/{cookie} (decimals without leading
 * zeros, 16 lower-case hex digits, each within its limit), else None: the Python parser
 * then gives the precise error, or accepts what this one does not try to.
 *
 * The layout (store/needle.py, docs/formats/volume.md), little-endian:
 *     header 32 bytes: magic "NEDL" | flags u8 | 3 x 0 | cookie u64 | key u64 | alt_key u32
 *                      | data_size u32
 *     data data_size bytes
 *     footer 16 bytes: magic "LDEN" | 4 x 0 | checksum u64
 *     zero padding up to the next multiple of 32
 * checksum = xxh3_64(data, seed = xxh3_64(header[4:32] with the DELETED flag cleared)).
 *
 * The GIL stays held for a needle below GIL_RELEASE_BYTES_MIN (releasing and taking it
 * back costs more than the read and hash of a small photo); a larger needle is read and
 * hashed without it, so the volumes' writer threads are not held up by a big original.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define XXH_INLINE_ALL
#include "xxhash.h"
#include "xxh3_avx2.h"

#define MAGIC_BYTES 4
#define FLAGS_BYTES 1
#define HEADER_RESERVED_BYTES 3
#define COOKIE_BYTES 8
#define KEY_BYTES 8
#define ALT_KEY_BYTES 4
#define SIZE_BYTES 4
#define FOOTER_RESERVED_BYTES 4
#define CHECKSUM_BYTES 8

#define FLAGS_AT MAGIC_BYTES
#define COOKIE_AT (FLAGS_AT + FLAGS_BYTES + HEADER_RESERVED_BYTES)
#define KEY_AT (COOKIE_AT + COOKIE_BYTES)
#define ALT_KEY_AT (KEY_AT + KEY_BYTES)
#define SIZE_AT (ALT_KEY_AT + ALT_KEY_BYTES)
#define HEADER_BYTES (SIZE_AT + SIZE_BYTES)
#define FOOTER_BYTES (MAGIC_BYTES + FOOTER_RESERVED_BYTES + CHECKSUM_BYTES)
#define CHECKSUMMED_HEADER_START MAGIC_BYTES
#define NEEDLE_ALIGNMENT_BYTES 32

#define FLAG_DELETED 0x01
#define FLAG_TOMBSTONE 0x02
#define FLAGS_KNOWN (FLAG_DELETED | FLAG_TOMBSTONE)

/* Needles at least this long are read and hashed with the GIL released. */
#define GIL_RELEASE_BYTES_MIN (256 * 1024)

/* The map's lengths are 24 bits of 32-byte units (store/needle.NEEDLE_LENGTH_UNITS_MAX). */
#define NEEDLE_LENGTH_BYTES_MAX (((1LL << 24) - 1) * NEEDLE_ALIGNMENT_BYTES)

_Static_assert(HEADER_BYTES == 32, "needle header is 32 bytes");
_Static_assert(FOOTER_BYTES == 16, "needle footer is 16 bytes");

enum { ANSWER_MISS = 1, ANSWER_REFER = 2 };

/* Exactly the lines store/http_api.needle_response's fields encode to. */
static const char ETAG_PREFIX[] = "etag: \"";
static const char HEAD_TAIL[] =
    "\"\r\ncache-control: public, max-age=31536000, immutable\r\naccept-ranges: bytes\r\n";
#define ETAG_HEX_DIGITS 16

static PyObject *miss_code, *refer_code;

/* The data's hash: AVX2 when the CPU has it, else the baseline (SSE2) build. */
static uint64_t (*data_hash)(const void *, size_t, uint64_t);

static uint64_t
xxh3_baseline(const void *data, size_t size, uint64_t seed)
{
    return XXH3_64bits_withSeed(data, size, seed);
}

static inline uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline int64_t
needle_length(uint64_t data_size)
{
    uint64_t raw = HEADER_BYTES + data_size + FOOTER_BYTES;
    return (int64_t)((raw + NEEDLE_ALIGNMENT_BYTES - 1) / NEEDLE_ALIGNMENT_BYTES *
                     NEEDLE_ALIGNMENT_BYTES);
}

/* 0 when the needle is whole, live and the one asked for; ANSWER_REFER otherwise. */
static int
check(const unsigned char *buf, Py_ssize_t length, uint64_t key, uint32_t alt_key,
      uint64_t cookie, uint32_t *size_out, uint64_t *checksum_out)
{
    if (length < HEADER_BYTES + FOOTER_BYTES || memcmp(buf, "NEDL", MAGIC_BYTES) != 0)
        return ANSWER_REFER;
    unsigned char flags = buf[FLAGS_AT];
    /* Deleted, tombstone or unknown flags: never served from here. */
    if (flags != 0)
        return ANSWER_REFER;
    uint32_t size = le32(buf + SIZE_AT);
    if (needle_length(size) != length)
        return ANSWER_REFER;
    const unsigned char *footer = buf + HEADER_BYTES + size;
    if (memcmp(footer, "LDEN", MAGIC_BYTES) != 0 || le32(footer + MAGIC_BYTES) != 0)
        return ANSWER_REFER;
    uint64_t stored = le64(footer + MAGIC_BYTES + FOOTER_RESERVED_BYTES);
    /* flags == 0, so the header bytes are hashed as they are. */
    XXH64_hash_t seed = XXH3_64bits(buf + CHECKSUMMED_HEADER_START,
                                    HEADER_BYTES - CHECKSUMMED_HEADER_START);
    if (data_hash(buf + HEADER_BYTES, size, seed) != stored)
        return ANSWER_REFER;
    if (le64(buf + KEY_AT) != key || le32(buf + ALT_KEY_AT) != alt_key ||
        le64(buf + COOKIE_AT) != cookie)
        return ANSWER_REFER;
    *size_out = size;
    *checksum_out = stored;
    return 0;
}

static PyObject *
head_lines(uint64_t checksum)
{
    static const char hex[] = "0123456789abcdef";
    char line[sizeof ETAG_PREFIX - 1 + ETAG_HEX_DIGITS + sizeof HEAD_TAIL - 1];
    char *p = line;
    memcpy(p, ETAG_PREFIX, sizeof ETAG_PREFIX - 1);
    p += sizeof ETAG_PREFIX - 1;
    for (int i = ETAG_HEX_DIGITS - 1; i >= 0; i--)
        *p++ = hex[(checksum >> (4 * i)) & 0xf];
    memcpy(p, HEAD_TAIL, sizeof HEAD_TAIL - 1);
    return PyBytes_FromStringAndSize(line, (Py_ssize_t)sizeof line);
}

static PyObject *
data_view(PyObject *raw, uint32_t size)
{
    PyObject *whole = PyMemoryView_FromObject(raw);
    if (whole == NULL)
        return NULL;
    PyObject *start = PyLong_FromLong(HEADER_BYTES);
    PyObject *stop = PyLong_FromLongLong((long long)HEADER_BYTES + size);
    PyObject *slice = (start && stop) ? PySlice_New(start, stop, NULL) : NULL;
    Py_XDECREF(start);
    Py_XDECREF(stop);
    PyObject *view = slice ? PyObject_GetItem(whole, slice) : NULL;
    Py_XDECREF(slice);
    Py_DECREF(whole);
    return view;
}

static PyObject *
answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "answer(fd, offset, length, key, alt_key, cookie) takes 6 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    long long offset = PyLong_AsLongLong(args[1]);
    long long length = PyLong_AsLongLong(args[2]);
    unsigned long long key = PyLong_AsUnsignedLongLong(args[3]);
    unsigned long long alt_key = PyLong_AsUnsignedLongLong(args[4]);
    unsigned long long cookie = PyLong_AsUnsignedLongLong(args[5]);
    if (PyErr_Occurred()) {
        /* Out of range or not an int: the Python path gives the precise answer. */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError) &&
            !PyErr_ExceptionMatches(PyExc_TypeError))
            return NULL;
        PyErr_Clear();
        return Py_NewRef(refer_code);
    }
    if (fd < 0 || fd > INT_MAX || offset < 0 || length <= 0 || length > NEEDLE_LENGTH_BYTES_MAX ||
        alt_key > UINT32_MAX)
        return Py_NewRef(refer_code);

    PyObject *raw = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (raw == NULL)
        return NULL;
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(raw);
    struct iovec iov = {buf, (size_t)length};
    uint32_t size = 0;
    uint64_t checksum = 0;
    ssize_t got;
    int err = 0, verdict = ANSWER_REFER;
    /* `raw` is ours alone until returned: it may be filled without the GIL. */
    PyThreadState *released = length >= GIL_RELEASE_BYTES_MIN ? PyEval_SaveThread() : NULL;
    got = preadv2((int)fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
    if (got == (ssize_t)length)
        verdict = check(buf, (Py_ssize_t)length, key, (uint32_t)alt_key, cookie, &size, &checksum);
    else if (got < 0)
        err = errno;
    if (released != NULL)
        PyEval_RestoreThread(released);
    if (got != (ssize_t)length) {
        /* EAGAIN: not cached. A short read: part of the range is not cached, or the file
         * ends early; EOPNOTSUPP/EINVAL: no RWF_NOWAIT here. The device read decides. */
        Py_DECREF(raw);
        if (got >= 0 || err == EAGAIN || err == EOPNOTSUPP || err == EINVAL)
            return Py_NewRef(miss_code);
        return Py_NewRef(refer_code);
    }
    if (verdict != 0) {
        Py_DECREF(raw);
        return Py_NewRef(refer_code);
    }
    PyObject *head = head_lines(checksum);
    PyObject *body = head ? data_view(raw, size) : NULL;
    Py_DECREF(raw);
    if (body == NULL) {
        Py_XDECREF(head);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(head);
        Py_DECREF(body);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, head);
    PyTuple_SET_ITEM(result, 1, body);
    return result;
}

/* Limits of the path's numbers; load() checks them against common/photo.py and
 * store/needle.py at import. */
#define VOLUME_ID_MAX UINT32_MAX
#define KEY_MAX UINT64_MAX
#define ALT_KEY_MAX UINT32_MAX
#define VOLUME_DIGITS_MAX 10
#define KEY_DIGITS_MAX 20
#define ALT_KEY_DIGITS_MAX 10
#define COOKIE_HEX_DIGITS 16

/* A canonical decimal (no leading zero but "0" itself) of at most `digits_max` digits and
 * at most `max`, ending at '/'; advances *at past the '/'. 0 when it is not one. */
static int
decimal_field(const Py_UCS1 *s, Py_ssize_t n, Py_ssize_t *at, int digits_max, uint64_t max,
              uint64_t *out)
{
    Py_ssize_t i = *at, start = i;
    uint64_t v = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        unsigned d = (unsigned)(s[i] - '0');
        if (i - start >= digits_max || v > (max - d) / 10)
            return 0;
        v = v * 10 + d;
        i++;
    }
    if (i == start || (s[start] == '0' && i - start > 1) || i >= n || s[i] != '/')
        return 0;
    *at = i + 1;
    *out = v;
    return 1;
}

/* The needle path's fields from s[0..n): "/" `letter` "/" ("/n/" for the store, "/c/" for
 * the cache) then the three decimals and the cookie's 16 hex digits; *at is left just past
 * the cookie. 0 when it is not a canonical path. */
static int
needle_path(const unsigned char *s, Py_ssize_t n, unsigned char letter, Py_ssize_t *at,
            uint64_t out[4])
{
    Py_ssize_t i = 3;
    if (n < 3 || s[0] != '/' || s[1] != letter || s[2] != '/' ||
        !decimal_field(s, n, &i, VOLUME_DIGITS_MAX, VOLUME_ID_MAX, &out[0]) ||
        !decimal_field(s, n, &i, KEY_DIGITS_MAX, KEY_MAX, &out[1]) ||
        !decimal_field(s, n, &i, ALT_KEY_DIGITS_MAX, ALT_KEY_MAX, &out[2]) ||
        n - i < COOKIE_HEX_DIGITS)
        return 0;
    uint64_t cookie = 0;
    for (Py_ssize_t end = i + COOKIE_HEX_DIGITS; i < end; i++) {
        unsigned char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return 0;
        cookie = cookie << 4 | d;
    }
    out[3] = cookie;
    *at = i;
    return 1;
}

static PyObject *
parse_path(PyObject *module, PyObject *path)
{
    (void)module;
    if (!PyUnicode_Check(path) || PyUnicode_KIND(path) != PyUnicode_1BYTE_KIND)
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(path), at = 0;
    uint64_t f[4];
    if (!needle_path(PyUnicode_1BYTE_DATA(path), n, 'n', &at, f) || at != n)
        Py_RETURN_NONE;
    return Py_BuildValue("(KKKK)", (unsigned long long)f[0], (unsigned long long)f[1],
                         (unsigned long long)f[2], (unsigned long long)f[3]);
}

/* -- parse_get: a whole plain GET in one call ------------------------------------------ */

/* RFC 9110 tchar. */
static int
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Whether p[0..len) is `lower` ignoring ASCII case (`lower` is lower-case). */
static int
name_is(const unsigned char *p, Py_ssize_t len, const char *lower)
{
    Py_ssize_t i = 0;
    for (; i < len && lower[i] != 0; i++) {
        unsigned char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lower[i])
            return 0;
    }
    return i == len && lower[i] == 0;
}

/* Header fields that make a GET more than plain: the full path answers them. */
static const char *const NOT_PLAIN[] = {
    "content-length", "transfer-encoding", "upgrade", "expect", "range",
    "if-range",       "if-none-match",     "if-match", NULL,
};

enum { FIELD_OTHER, FIELD_AUTHORIZATION, FIELD_REQUEST_ID, FIELD_CONNECTION, FIELD_NOT_PLAIN };

static int
field_kind(const unsigned char *name, Py_ssize_t len)
{
    if (name_is(name, len, "authorization"))
        return FIELD_AUTHORIZATION;
    if (name_is(name, len, "x-request-id"))
        return FIELD_REQUEST_ID;
    if (name_is(name, len, "connection"))
        return FIELD_CONNECTION;
    for (const char *const *n = NOT_PLAIN; *n != NULL; n++)
        if (name_is(name, len, *n))
            return FIELD_NOT_PLAIN;
    return FIELD_OTHER;
}

static PyObject *
optional_text(const unsigned char *p, Py_ssize_t len)
{
    if (p == NULL)
        Py_RETURN_NONE;
    return PyUnicode_DecodeLatin1((const char *)p, len, NULL);
}

/*
 * parse_get(data, head_bytes_max, prefix) -> (head_only, volume, key, alt_key, cookie,
 *                                             authorization, request_id, close) | None
 *
 * `data` must be exactly one whole request of the plainest shape and nothing else:
 * "GET " or "HEAD ", a canonical needle path under `prefix` (b"/n/" for the store's, as
 * parse_path; b"/c/" for the cache's; no query), " HTTP/1.1" CRLF,
 * header fields of a token name, ":", optional blanks and a value of visible ASCII and
 * blanks, each ended by CRLF, and the empty line ending `data`, all within head_bytes_max.
 * At most one Authorization, X-Request-Id and Connection ("keep-alive" or "close"), and
 * none of NOT_PLAIN. Anything else is None: the server's own parser (llhttp) and the full
 * path take it, so this never answers what they would judge differently.
 */
static PyObject *
parse_get(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2]) ||
        PyBytes_GET_SIZE(args[2]) != 3 || PyBytes_AS_STRING(args[2])[0] != '/' ||
        PyBytes_AS_STRING(args[2])[2] != '/') {
        PyErr_SetString(PyExc_TypeError,
                        "parse_get(data: bytes, head_bytes_max: int, prefix: b\"/x/\")");
        return NULL;
    }
    unsigned char letter = (unsigned char)PyBytes_AS_STRING(args[2])[1];
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *s = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]), at;
    if (n > limit)
        Py_RETURN_NONE;
    int head_only;
    if (n > 4 && memcmp(s, "GET ", 4) == 0) {
        head_only = 0;
        at = 4;
    } else if (n > 5 && memcmp(s, "HEAD ", 5) == 0) {
        head_only = 1;
        at = 5;
    } else {
        Py_RETURN_NONE;
    }
    uint64_t f[4];
    Py_ssize_t end;
    static const char VERSION[] = " HTTP/1.1\r\n";
    if (!needle_path(s + at, n - at, letter, &end, f))
        Py_RETURN_NONE;
    at += end;
    if (n - at < (Py_ssize_t)sizeof VERSION - 1 || memcmp(s + at, VERSION, sizeof VERSION - 1))
        Py_RETURN_NONE;
    at += (Py_ssize_t)sizeof VERSION - 1;

    const unsigned char *auth = NULL, *rid = NULL;
    Py_ssize_t auth_len = 0, rid_len = 0;
    int close = -1; /* -1: no Connection field */
    for (;;) {
        if (n - at >= 2 && s[at] == '\r' && s[at + 1] == '\n') {
            if (at + 2 != n) /* pipelined bytes after the head: the full path */
                Py_RETURN_NONE;
            break;
        }
        Py_ssize_t name = at;
        while (at < n && is_tchar(s[at]))
            at++;
        if (at == name || at >= n || s[at] != ':')
            Py_RETURN_NONE;
        Py_ssize_t name_len = at - name;
        at++;
        while (at < n && (s[at] == ' ' || s[at] == '\t'))
            at++;
        Py_ssize_t value = at;
        while (at < n && ((s[at] >= 0x21 && s[at] <= 0x7e) || s[at] == ' ' || s[at] == '\t'))
            at++;
        if (n - at < 2 || s[at] != '\r' || s[at + 1] != '\n')
            Py_RETURN_NONE;
        Py_ssize_t value_end = at;
        while (value_end > value && (s[value_end - 1] == ' ' || s[value_end - 1] == '\t'))
            value_end--;
        at += 2;
        switch (field_kind(s + name, name_len)) {
        case FIELD_AUTHORIZATION:
            if (auth != NULL)
                Py_RETURN_NONE;
            auth = s + value;
            auth_len = value_end - value;
            break;
        case FIELD_REQUEST_ID:
            if (rid != NULL)
                Py_RETURN_NONE;
            rid = s + value;
            rid_len = value_end - value;
            break;
        case FIELD_CONNECTION:
            if (close != -1)
                Py_RETURN_NONE;
            if (name_is(s + value, value_end - value, "close"))
                close = 1;
            else if (name_is(s + value, value_end - value, "keep-alive"))
                close = 0;
            else
                Py_RETURN_NONE;
            break;
        case FIELD_NOT_PLAIN:
            Py_RETURN_NONE;
        default:
            break;
        }
    }
    PyObject *auth_text = optional_text(auth, auth_len);
    PyObject *rid_text = auth_text ? optional_text(rid, rid_len) : NULL;
    if (rid_text == NULL) {
        Py_XDECREF(auth_text);
        return NULL;
    }
    return Py_BuildValue("(OKKKKNNO)", head_only ? Py_True : Py_False,
                         (unsigned long long)f[0], (unsigned long long)f[1],
                         (unsigned long long)f[2], (unsigned long long)f[3], auth_text, rid_text,
                         close == 1 ? Py_True : Py_False);
}

static PyObject *
checksum(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* checksum(header, data): the needle checksum, for tests of this module's hashing. */
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "checksum(header, data) takes 2 arguments");
        return NULL;
    }
    Py_buffer header, data;
    if (PyObject_GetBuffer(args[0], &header, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&header);
        return NULL;
    }
    PyObject *result = NULL;
    if (header.len != HEADER_BYTES) {
        PyErr_SetString(PyExc_ValueError, "a needle header is 32 bytes");
    } else {
        unsigned char covered[HEADER_BYTES - CHECKSUMMED_HEADER_START];
        memcpy(covered, (const char *)header.buf + CHECKSUMMED_HEADER_START, sizeof covered);
        covered[0] &= (unsigned char)~FLAG_DELETED;
        XXH64_hash_t seed = XXH3_64bits(covered, sizeof covered);
        result = PyLong_FromUnsignedLongLong(data_hash(data.buf, (size_t)data.len, seed));
    }
    PyBuffer_Release(&data);
    PyBuffer_Release(&header);
    return result;
}

static PyObject *
pread_cached(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* pread_cached(fd, length, offset) -> exactly length bytes at offset, read with
     * preadv2(RWF_NOWAIT) into a bytes object that is not zeroed first, or None when any
     * of them is not in the page cache, the file is shorter, or the read fails (the
     * caller then reads the blocking way, which reports what is wrong). */
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "pread_cached(fd, length, offset) takes 3 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    long long offset = PyLong_AsLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX || length < 0 || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "pread_cached: a negative fd, length or offset");
        return NULL;
    }
    PyObject *raw = PyBytes_FromStringAndSize(NULL, length);
    if (raw == NULL)
        return NULL;
    struct iovec iov = {PyBytes_AS_STRING(raw), (size_t)length};
    ssize_t got = 0;
    if (length >= GIL_RELEASE_BYTES_MIN) {
        Py_BEGIN_ALLOW_THREADS
        got = preadv2((int)fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
        Py_END_ALLOW_THREADS
    } else if (length) {
        got = preadv2((int)fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
    }
    if (got != (ssize_t)length) {
        Py_DECREF(raw);
        Py_RETURN_NONE;
    }
    return raw;
}

/* f4's sidecar check (f4/sidecar.check_packed): each chunk_bytes-long chunk of data (the
 * last may be short) against its xxh3_64 in packed, little-endian u64s back to back. One
 * call instead of a Python call and a slice per chunk. */

static Py_ssize_t
first_bad_chunk(const unsigned char *data, Py_ssize_t length, const unsigned char *packed,
                Py_ssize_t chunk_bytes)
{
    Py_ssize_t i = 0;
    for (Py_ssize_t at = 0; at < length; at += chunk_bytes, i++) {
        Py_ssize_t n = length - at < chunk_bytes ? length - at : chunk_bytes;
        if (data_hash(data + at, (size_t)n, 0) != le64(packed + 8 * i))
            return i;
    }
    return -1;
}

static PyObject *
chunk_sums_match(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* chunk_sums_match(data, packed, chunk_bytes) -> -1 when every chunk matches, else the
     * index of the first chunk that does not. packed must hold exactly one sum per chunk. */
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "chunk_sums_match(data, packed, chunk_bytes) takes 3 arguments");
        return NULL;
    }
    Py_ssize_t chunk_bytes = PyLong_AsSsize_t(args[2]);
    if (chunk_bytes == -1 && PyErr_Occurred())
        return NULL;
    if (chunk_bytes <= 0) {
        PyErr_SetString(PyExc_ValueError, "chunk_bytes must be positive");
        return NULL;
    }
    Py_buffer data, packed;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &packed, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t chunks = data.len / chunk_bytes + (data.len % chunk_bytes != 0);
    if (packed.len != 8 * chunks) {
        PyErr_SetString(PyExc_ValueError, "packed must hold one 8-byte sum per chunk");
    } else {
        Py_ssize_t bad;
        if (data.len >= GIL_RELEASE_BYTES_MIN) {
            Py_BEGIN_ALLOW_THREADS
            bad = first_bad_chunk(data.buf, data.len, packed.buf, chunk_bytes);
            Py_END_ALLOW_THREADS
        } else {
            bad = first_bad_chunk(data.buf, data.len, packed.buf, chunk_bytes);
        }
        result = PyLong_FromSsize_t(bad);
    }
    PyBuffer_Release(&packed);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"answer", (PyCFunction)(void (*)(void))answer, METH_FASTCALL,
     "answer(fd, offset, length, key, alt_key, cookie) -> (head_lines, body) | MISS | REFER"},
    {"parse_get", (PyCFunction)(void (*)(void))parse_get, METH_FASTCALL,
     "parse_get(data, head_bytes_max, prefix) -> (head_only, volume, key, alt_key, cookie, "
     "authorization, request_id, close) of one whole plain GET or HEAD | None"},
    {"parse_path", parse_path, METH_O,
     "parse_path(path) -> (volume, key, alt_key, cookie) of a canonical needle path | None"},
    {"checksum", (PyCFunction)(void (*)(void))checksum, METH_FASTCALL,
     "checksum(header, data) -> the needle checksum (xxh3_64 seeded by the header)"},
    {"pread_cached", (PyCFunction)(void (*)(void))pread_cached, METH_FASTCALL,
     "pread_cached(fd, length, offset) -> bytes from the page cache only, or None"},
    {"chunk_sums_match", (PyCFunction)(void (*)(void))chunk_sums_match, METH_FASTCALL,
     "chunk_sums_match(data, packed, chunk_bytes) -> -1, or the first chunk whose xxh3_64 "
     "differs"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "store.native._hot_read",
    .m_doc = "The store's hot GET in C (see hot_read.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__hot_read(void)
{
    data_hash = xxh3_baseline;
    /* PINHOLE_STORE_XXH3=baseline keeps the baseline build on a CPU with AVX2: the
     * tests run it there (tests/store/test_native.py), as machines without AVX2 do. */
    const char *chosen = getenv("PINHOLE_STORE_XXH3");
    int baseline_only = chosen != NULL && strcmp(chosen, "baseline") == 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!baseline_only && pinhole_xxh3_avx2_built() && __builtin_cpu_supports("avx2"))
        data_hash = pinhole_xxh3_avx2;
#else
    (void)baseline_only;
#endif
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    miss_code = PyLong_FromLong(ANSWER_MISS);
    refer_code = PyLong_FromLong(ANSWER_REFER);
    if (miss_code == NULL || refer_code == NULL ||
        PyModule_AddObjectRef(m, "MISS", miss_code) < 0 ||
        PyModule_AddObjectRef(m, "REFER", refer_code) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_BYTES", HEADER_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "FOOTER_BYTES", FOOTER_BYTES) < 0 ||
        PyModule_AddObject(m, "VOLUME_ID_MAX", PyLong_FromUnsignedLongLong(VOLUME_ID_MAX)) < 0 ||
        PyModule_AddObject(m, "KEY_MAX", PyLong_FromUnsignedLongLong(KEY_MAX)) < 0 ||
        PyModule_AddObject(m, "ALT_KEY_MAX", PyLong_FromUnsignedLongLong(ALT_KEY_MAX)) < 0 ||
        PyModule_AddStringConstant(m, "HASH", data_hash == xxh3_baseline ? "baseline" : "avx2") <
            0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
