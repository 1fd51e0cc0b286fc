# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot-path functions. Twin: _fastpath_py.py (same names, same results; see its docstring)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, strlen

cdef str _TOKEN_SCHEME = "ExisOneApi "
cdef Py_ssize_t _PUBLIC_LEN = 12
cdef Py_ssize_t _TOKEN_LEN = 7 + 12 + 1 + 32

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
API_KEY_PREFIX = "qgk_"
BUCKETS = 1024
PERIODS = ("minute", "hour", "day", "month")

cdef const char* _ALPHABET = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
cdef Py_ssize_t _BODY_LEN = 26
cdef uint32_t _CRC_TABLE[256]
cdef signed char _DECODE[128]


cdef void _init_tables():
    cdef uint32_t c
    cdef int n, k
    for n in range(256):
        c = <uint32_t>n
        for k in range(8):
            c = (0xEDB88320u ^ (c >> 1)) if (c & 1) else (c >> 1)
        _CRC_TABLE[n] = c
    for n in range(128):
        _DECODE[n] = -1
    for n in range(32):
        _DECODE[<int>_ALPHABET[n]] = n
        if _ALPHABET[n] >= 65:  # letters: accept lower case too
            _DECODE[<int>_ALPHABET[n] + 32] = n
    _DECODE[ord('O')] = 0
    _DECODE[ord('o')] = 0
    for k in (ord('I'), ord('i'), ord('L'), ord('l')):
        _DECODE[k] = 1


_init_tables()


cdef inline uint32_t _crc32(const char* data, Py_ssize_t n):
    cdef uint32_t c = 0xFFFFFFFFu
    cdef Py_ssize_t i
    for i in range(n):
        c = _CRC_TABLE[(c ^ <unsigned char>data[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFu


cdef inline bint _alnum(Py_UCS4 c):
    return (c >= u'0' and c <= u'9') or (c >= u'a' and c <= u'z') or (c >= u'A' and c <= u'Z')


cpdef object parse_access_token(str token):
    """`exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    cdef Py_ssize_t i
    if len(token) != _TOKEN_LEN or not token.startswith("exo_at_"):
        return None
    if token[7 + _PUBLIC_LEN] != u'_':
        return None
    for i in range(7, 7 + _PUBLIC_LEN):
        if not _alnum(token[i]):
            return None
    for i in range(8 + _PUBLIC_LEN, _TOKEN_LEN):
        if not _alnum(token[i]):
            return None
    return token[7:7 + _PUBLIC_LEN], token[8 + _PUBLIC_LEN:]


cpdef object parse_authorization(object header):
    """`ExisOneApi exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if header is None or not isinstance(header, str) or not (<str>header).startswith(_TOKEN_SCHEME):
        return None
    return parse_access_token((<str>header)[11:].strip())


def generate_api_key(bytes entropy):
    """A new key from 16 random bytes."""
    if len(entropy) != 16:
        raise ValueError("entropy must be 16 bytes")
    number = int.from_bytes(entropy, "big") << 2
    cdef char out[32]
    cdef int i
    cdef uint32_t crc
    for i in range(26):
        out[25 - i] = _ALPHABET[number & 31]
        number >>= 5
    crc = _crc32(out, 26) & 0x3FF
    out[26] = _ALPHABET[crc >> 5]
    out[27] = _ALPHABET[crc & 31]
    return "qgk_" + out[:28].decode("ascii")


cpdef object normalize_api_key(object raw):
    """The canonical key, or None when malformed or its check characters do not match."""
    cdef str text
    cdef Py_ssize_t i, n, count = 0
    cdef Py_UCS4 c
    cdef signed char v
    cdef char body[28]
    cdef uint32_t crc
    if not isinstance(raw, str) or len(<str>raw) > 128:
        return None
    text = (<str>raw).strip()
    n = len(text)
    if n < 4 or text[:4].lower() != "qgk_":
        return None
    for i in range(4, n):
        c = text[i]
        if c == u'-' or c == u' ':
            continue
        if c >= 128 or count >= 28:
            return None
        v = _DECODE[<int>c]
        if v < 0:
            return None
        body[count] = _ALPHABET[v]
        count += 1
    if count != 28:
        return None
    crc = _crc32(body, 26) & 0x3FF
    if body[26] != _ALPHABET[crc >> 5] or body[27] != _ALPHABET[crc & 31]:
        return None
    return "qgk_" + body[:28].decode("ascii")


cpdef int api_key_bucket(str key):
    """Stable 0..1023 for the key's Redis hash tag {b<n>}."""
    cdef bytes data = key.encode("ascii")
    return _crc32(data, len(data)) % 1024


cdef inline bytes _as_bytes(object value):
    return <bytes>value if type(value) is bytes else str(value).encode()


cdef inline char* _put(char* p, bytes text):
    cdef Py_ssize_t n = len(text)
    memcpy(p, PyBytes_AS_STRING(text), n)
    return p + n


cdef inline char* _put_lit(char* p, const char* text):
    cdef size_t n = strlen(text)
    memcpy(p, text, n)
    return p + n


cdef char* _put_int(char* p, int64_t value):
    cdef char digits[20]
    cdef int n = 0
    cdef uint64_t magnitude
    if value < 0:
        p[0] = b'-'
        p += 1
        magnitude = <uint64_t>(-(value + 1)) + 1
    else:
        magnitude = <uint64_t>value
    while True:
        digits[n] = <char>(48 + magnitude % 10)
        n += 1
        magnitude //= 10
        if magnitude == 0:
            break
    while n > 0:
        n -= 1
        p[0] = digits[n]
        p += 1
    return p


# _scan_rule's verdicts
cdef enum:
    _NOT_A_RULE = 0
    _RULE = 1
    _BAD_PARTS = 2
    _BAD_PERIOD = 3
    _BAD_LIMIT = 4

cdef const char* _PERIOD_NAMES[4]
_PERIOD_NAMES[0] = b"minute"
_PERIOD_NAMES[1] = b"hour"
_PERIOD_NAMES[2] = b"day"
_PERIOD_NAMES[3] = b"month"


cdef inline Py_ssize_t _find_colon(str text, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t i
    for i in range(start, end):
        if text[i] == u':':
            return i
    return end


cdef bint _equals(str text, Py_ssize_t start, Py_ssize_t end, const char* word):
    cdef Py_ssize_t i
    for i in range(end - start):
        if word[i] == 0 or text[start + i] != <Py_UCS4>(<unsigned char>word[i]):
            return False
    return word[end - start] == 0


cdef int _scan_rule(str name, int* slot, int64_t* limit):
    """api:{rate|units}:{minute|hour|day|month}:N read character by character (no substrings):
    a verdict, and the rule's slot (calls 0..3, units 4..7) and limit when it is _RULE."""
    cdef Py_ssize_t n = len(name), word_end, period_end, i
    cdef int kind, period
    cdef Py_UCS4 c
    if n < 4 or not _equals(name, 0, 4, b"api:"):
        return _NOT_A_RULE
    word_end = _find_colon(name, 4, n)
    if _equals(name, 4, word_end, b"rate"):
        kind = 0
    elif _equals(name, 4, word_end, b"units"):
        kind = 4
    else:
        return _NOT_A_RULE
    if word_end == n:
        return _BAD_PARTS
    period_end = _find_colon(name, word_end + 1, n)
    if period_end == n or _find_colon(name, period_end + 1, n) != n:
        return _BAD_PARTS
    for period in range(4):
        if _equals(name, word_end + 1, period_end, _PERIOD_NAMES[period]):
            break
    else:
        return _BAD_PERIOD
    if n - period_end - 1 < 1 or n - period_end - 1 > 15:
        return _BAD_LIMIT
    limit[0] = 0
    for i in range(period_end + 1, n):
        c = name[i]
        if c < u'0' or c > u'9':
            return _BAD_LIMIT
        limit[0] = limit[0] * 10 + (<int>c - 48)
    if limit[0] <= 0:
        return _BAD_LIMIT
    slot[0] = kind + period
    return _RULE


def check_rule_feature(str name):
    """What is wrong with a rule feature, or None (also for features that are not rules)."""
    cdef int slot
    cdef int64_t limit
    cdef int verdict = _scan_rule(name, &slot, &limit)
    if verdict <= _RULE:
        return None
    parts = name.split(":")
    if verdict == _BAD_PARTS:
        return f"expected api:{parts[1]}:<minute|hour|day|month>:<N>"
    if verdict == _BAD_PERIOD:
        return f"unknown period '{parts[2]}' (use minute, hour, day or month)"
    return f"limit '{parts[3]}' must be a positive integer"


def compile_rules(list features):
    """(rule_spec, passthrough): canonical "calls:minute:100,units:day:5000" and the other names."""
    cdef int64_t limits[8]
    cdef int64_t limit
    cdef int i, slot
    cdef list passthrough = []
    cdef char spec[512]  # 8 rules of at most 13 + 15 characters and a comma each
    cdef char* p = spec
    for i in range(8):
        limits[i] = -1
    for name in features:
        verdict = _scan_rule(name, &slot, &limit)
        if verdict == _NOT_A_RULE:
            passthrough.append(name)
        elif verdict == _RULE and (limits[slot] < 0 or limit < limits[slot]):
            limits[slot] = limit
    for i in range(8):
        if limits[i] >= 0:
            if p != spec:
                p = _put_lit(p, b",")
            p = _put_lit(p, b"calls:" if i < 4 else b"units:")
            p = _put_lit(p, _PERIOD_NAMES[i % 4])
            p = _put_lit(p, b":")
            p = _put_int(p, limits[i])
    return spec[:p - spec].decode("ascii"), passthrough


cdef inline int64_t _floordiv(int64_t a, int64_t b):
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef int64_t _days_from_civil(int64_t y, int64_t m, int64_t d):
    y -= m <= 2
    cdef int64_t era = _floordiv(y, 400)
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cpdef tuple window_bounds(int64_t ts, str period):
    """Calendar-aligned UTC [start, end) containing `ts`."""
    cdef int64_t size, start, days, z, era, doe, yoe, doy, mp, month, year
    if period == "minute":
        size = 60
    elif period == "hour":
        size = 3600
    elif period == "day":
        size = 86400
    elif period == "month":
        days = _floordiv(ts, 86400)
        z = days + 719468
        era = _floordiv(z, 146097)
        doe = z - era * 146097
        yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
        doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
        mp = (5 * doy + 2) // 153
        month = mp + 3 if mp < 10 else mp - 9
        year = yoe + era * 400 + (month <= 2)
        start = _days_from_civil(year, month, 1) * 86400
        if month == 12:
            return start, _days_from_civil(year + 1, 1, 1) * 86400
        return start, _days_from_civil(year, month + 1, 1) * 86400
    else:
        raise ValueError(f"unknown period {period!r}")
    start = ts - (ts % size + size) % size
    return start, start + size


# -- the validate answer, rendered from the script's reply ------------------------------------

from ._fastpath_py import DENIAL_MESSAGES, WINDOW_NAMES  # one copy of the wire text

cdef tuple _WINDOW_NAMES_B = tuple(name.encode() for name in WINDOW_NAMES)
cdef dict _DENIAL_MESSAGES_B = {code.encode(): message.encode() for code, message in DENIAL_MESSAGES.items()}
cdef Py_ssize_t _INT_MAX_CHARS = 21
cdef enum:
    _STACK_BUFFER = 2048  # answers up to this size are written on the stack


cdef char* _put_counts(char* p, int64_t limit, int64_t used):
    """`{"limit":L,"used":U,"remaining":R` (open: a window adds its resetsAt); no limit is null."""
    if limit < 0:
        p = _put_lit(p, b'{"limit":null,"used":')
        p = _put_int(p, used)
        return _put_lit(p, b',"remaining":null')
    p = _put_lit(p, b'{"limit":')
    p = _put_int(p, limit)
    p = _put_lit(p, b',"used":')
    p = _put_int(p, used)
    p = _put_lit(p, b',"remaining":')
    return _put_int(p, limit - used if limit > used else 0)


def render_validation(list reply, tuple resets_at):
    """The JSON answer to a validation from the validate script's reply; see the twin's docstring."""
    cdef bytes code = _as_bytes(reply[0])
    cdef bytes features = _as_bytes(reply[7])
    cdef bytes expires = _as_bytes(reply[8])
    cdef list resets = [_as_bytes(iso) for iso in resets_at]
    cdef bytes message = None
    cdef Py_ssize_t n = len(reply), i, windows = (n - 9) // 3 if n > 9 else 0
    cdef int64_t wlimit, wused
    cdef int slot
    cdef bint ok = code == b"ok"
    cdef Py_ssize_t longest_reset = 0
    if not ok:
        message = _DENIAL_MESSAGES_B[code]
    if len(resets) != 4:
        raise ValueError("resets_at must hold the ends of the minute, hour, day and month windows")
    for iso in resets:
        longest_reset = max(longest_reset, len(<bytes>iso))
    # Upper bound: fixed text, integers at their widest, the strings as they are.
    cdef Py_ssize_t capacity = 200 + len(features) + len(expires) + len(code) + (len(message) if message else 0) \
        + windows * (100 + 3 * _INT_MAX_CHARS + longest_reset) + 5 * _INT_MAX_CHARS
    cdef char stack[_STACK_BUFFER]
    cdef char* buffer = &stack[0]
    if capacity > _STACK_BUFFER:
        buffer = <char*>malloc(capacity)
    if buffer == NULL:
        raise MemoryError()
    cdef char* p = buffer
    try:
        if ok:
            p = _put_lit(p, b'{"isValid":true,"unitsConsumed":')
            p = _put_int(p, reply[1])
        else:
            p = _put_lit(p, b'{"isValid":false,"errorCode":"')
            p = _put(p, code)
            p = _put_lit(p, b'","errorMessage":"')
            p = _put(p, message)
            p = _put_lit(p, b'"')
        p = _put_lit(p, b',"quota":')
        p = _put_counts(p, reply[6], reply[5])
        p = _put_lit(p, b'}')
        p = _put_lit(p, b',"rateLimits":{')
        for i in range(windows):
            slot = reply[9 + 3 * i]
            if slot < 0 or slot >= 8:  # the names are indexed without bounds checks
                raise ValueError(f"window slot {slot} out of range")
            wlimit = reply[10 + 3 * i]
            wused = reply[11 + 3 * i]
            if i:
                p = _put_lit(p, b',')
            p = _put_lit(p, b'"')
            p = _put(p, <bytes>_WINDOW_NAMES_B[slot])
            p = _put_lit(p, b'":')
            p = _put_counts(p, wlimit, wused)
            p = _put_lit(p, b',"resetsAt":"')
            p = _put(p, <bytes>resets[slot % 4])
            p = _put_lit(p, b'"}')
        p = _put_lit(p, b'}')
        if ok:
            p = _put_lit(p, b',"features":')
            p = _put(p, features)
            if len(expires):
                p = _put_lit(p, b',"expiresAt":"')
                p = _put(p, expires)
                p = _put_lit(p, b'"}')
            else:
                p = _put_lit(p, b',"expiresAt":null}')
        else:
            if code == b"quota_exhausted" or code.startswith(b"rate_limit_"):
                p = _put_lit(p, b',"retryAfterSeconds":')
                p = _put_int(p, reply[2])
            p = _put_lit(p, b'}')
        return PyBytes_FromStringAndSize(buffer, p - buffer)
    finally:
        if buffer != &stack[0]:
            free(buffer)


# -- rate-limit header fields, from the same reply ----------------------------------------------

cdef tuple _QUOTED_WINDOW_NAMES_B = tuple(b'"' + name + b'"' for name in _WINDOW_NAMES_B)
cdef const char* _WINDOW_SECONDS[4]  # RateLimit-Policy w= (a month: 30 days)
_WINDOW_SECONDS[0] = b"60"
_WINDOW_SECONDS[1] = b"3600"
_WINDOW_SECONDS[2] = b"86400"
_WINDOW_SECONDS[3] = b"2592000"
cdef int64_t _NO_RESET = 0x7FFFFFFFFFFFFFFF
cdef dict _PERIOD_INDEX = {b"minute": 0, b"hour": 1, b"day": 2, b"month": 3}
cdef bytes _QUOTA_NAME = b'"quota"'


cdef bytes _int_bytes(int64_t value):
    cdef char digits[24]
    cdef char* end = _put_int(digits, value)
    return PyBytes_FromStringAndSize(digits, end - digits)


def limit_headers(list reply, int64_t now, tuple window_ends):
    """X-RateLimit-* and the IETF RateLimit / RateLimit-Policy fields for a validate reply (see the
    twin's docstring); Retry-After first on refusals. [] when nothing is limited or nothing to name.

    Every allowed answer carries these five fields, so each value is written once into a buffer
    and becomes one bytes object (no concatenations)."""
    cdef bytes code = _as_bytes(reply[0])
    cdef Py_ssize_t n = len(reply), i, best = -1  # best: reply index of the named window; 0: the quota
    cdef int64_t left, reset, best_left = 0, best_reset = _NO_RESET, retry_after = 0, limit
    cdef int slot, period = -1
    cdef bint ok = code == b"ok"
    if len(window_ends) != 4:
        raise ValueError("window_ends must hold the ends of the minute, hour, day and month windows")
    if not ok:
        retry_after = reply[2]
        if code == b"quota_exhausted":
            best, best_left = 0, <int64_t>reply[6] - <int64_t>reply[5]
        elif code.startswith(b"rate_limit_"):
            period = _PERIOD_INDEX[code[11:]]
        else:
            return []
    if best != 0:
        for i in range(9, n - 2, 3):
            slot = reply[i]
            if slot < 0 or slot >= 8:
                raise ValueError(f"window slot {slot} out of range")
            if period >= 0 and slot % 4 != period:
                continue
            left = <int64_t>reply[i + 1] - <int64_t>reply[i + 2]
            reset = <int64_t>window_ends[slot % 4] - now
            if best < 0 or left < best_left or (left == best_left and reset < best_reset):
                best, best_left, best_reset = i, left, reset
        if ok and <int64_t>reply[6] >= 0 and (best < 0 or <int64_t>reply[6] - <int64_t>reply[5] < best_left):
            best, best_left, best_reset = 0, <int64_t>reply[6] - <int64_t>reply[5], _NO_RESET
        if best < 0:
            return []
    if not ok:
        best_reset = retry_after
    if best_left < 0:
        best_left = 0
    cdef bytes name
    if best == 0:
        slot = -1
        name, limit = _QUOTA_NAME, reply[6]
    else:
        slot = reply[best]
        name, limit = <bytes>_QUOTED_WINDOW_NAMES_B[slot], reply[best + 1]
    # RateLimit: "name";r=R[;t=T]   RateLimit-Policy: "name";q=L[;w=W]   (names are at most 15 bytes)
    cdef char field[128]
    cdef char* p = _put(field, name)
    p = _put_lit(p, b";r=")
    p = _put_int(p, best_left)
    if best_reset != _NO_RESET:  # the lifetime quota of an allowed answer never resets
        p = _put_lit(p, b";t=")
        p = _put_int(p, best_reset)
    cdef bytes ratelimit = PyBytes_FromStringAndSize(field, p - field)
    p = _put(field, name)
    p = _put_lit(p, b";q=")
    p = _put_int(p, limit)
    if slot >= 0:
        p = _put_lit(p, b";w=")
        p = _put_lit(p, _WINDOW_SECONDS[slot % 4])
    cdef bytes policy = PyBytes_FromStringAndSize(field, p - field)
    cdef tuple limit_field = (b"x-ratelimit-limit", _int_bytes(limit))
    cdef tuple remaining_field = (b"x-ratelimit-remaining", _int_bytes(best_left))
    cdef list headers
    if best_reset == _NO_RESET:
        headers = [limit_field, remaining_field, (b"ratelimit", ratelimit), (b"ratelimit-policy", policy)]
    else:
        headers = [limit_field, remaining_field, (b"x-ratelimit-reset", _int_bytes(now + best_reset)),
                   (b"ratelimit", ratelimit), (b"ratelimit-policy", policy)]
    if not ok:
        headers.insert(0, (b"retry-after", _int_bytes(retry_after if retry_after > 1 else 1)))
    return headers


# -- keys issued elsewhere (imported) ---------------------------------------------------------

IMPORTED_MIN_LEN = 8
IMPORTED_MAX_LEN = 100


cpdef object normalize_imported_key(object raw):
    """The canonical form of a key issued by another licensing server, or None; see the twin."""
    cdef str text
    cdef Py_ssize_t i, n, count = 0
    cdef Py_UCS4 c
    cdef char body[100]
    if not isinstance(raw, str) or len(<str>raw) > 128:
        return None
    text = (<str>raw).strip()
    n = len(text)
    if n >= 4 and text[:4].lower() == "qgk_":
        return None
    for i in range(n):
        c = text[i]
        if c == u'-' or c == u' ':
            continue
        if count >= IMPORTED_MAX_LEN:
            return None
        if c >= u'a' and c <= u'z':
            body[count] = <char>(<int>c - 32)
        elif (c >= u'A' and c <= u'Z') or (c >= u'0' and c <= u'9') or c == u'_' or c == u'.':
            body[count] = <char>c
        else:
            return None
        count += 1
    if count < IMPORTED_MIN_LEN:
        return None
    return body[:count].decode("ascii")
