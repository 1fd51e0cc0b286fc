# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled hot-path functions. Twin: _fastpath_py.py (same names, same results; see its docstring)."""

from libc.stdint cimport uint32_t, int64_t

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


cdef object _parse_rule(str name):
    """(kind, period, limit), an error message, or None when not a rule feature."""
    cdef list parts
    cdef str word, period, count
    if not name.startswith("api:"):
        return None
    parts = name.split(":")
    word = parts[1]
    if word == "rate":
        kind = "calls"
    elif word == "units":
        kind = "units"
    else:
        return None
    if len(parts) != 4:
        return f"expected api:{word}:<minute|hour|day|month>:<N>"
    period = parts[2]
    count = parts[3]
    if period not in PERIODS:
        return f"unknown period '{period}' (use minute, hour, day or month)"
    if not count.isdigit() or not count.isascii() or len(count) > 15 or int(count) <= 0:
        return f"limit '{count}' must be a positive integer"
    return (kind, period, int(count))


def check_rule_feature(str name):
    parsed = _parse_rule(name)
    return parsed if isinstance(parsed, str) else None


def compile_rules(list features):
    """(rule_spec, passthrough): canonical "calls:minute:100,units:day:5000" and the other names."""
    cdef int64_t limits[8]
    cdef int i, slot
    cdef list passthrough = []
    cdef list out = []
    for i in range(8):
        limits[i] = -1
    for name in features:
        parsed = _parse_rule(name)
        if parsed is None:
            passthrough.append(name)
        elif not isinstance(parsed, str):
            slot = (0 if parsed[0] == "calls" else 4) + PERIODS.index(parsed[1])
            if limits[slot] < 0 or parsed[2] < limits[slot]:
                limits[slot] = parsed[2]
    for i in range(8):
        if limits[i] >= 0:
            out.append(f"{'calls' if i < 4 else 'units'}:{PERIODS[i % 4]}:{limits[i]}")
    return ",".join(out), passthrough


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
