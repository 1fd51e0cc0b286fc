"""Pure-Python twin of _fastpath.pyx: the same names, the same results, no compiler needed.

API keys look like `qgk_` + 26 Crockford base32 characters (128 random bits) + 2 check
characters (the low 10 bits of the CRC-32 of the 26). Input is forgiving (case, dashes, spaces,
Crockford's O/I/L aliases); a key whose check characters do not match is refused before any I/O,
so a mistyped or random key never reaches Redis (a random string passes with p = 1/1024).
"""

from __future__ import annotations

import calendar
import zlib

from .formats import access_token
from .formats.crockford import ALPHABET as CROCKFORD

_TOKEN_SCHEME = access_token.SCHEME + " "
_TOKEN_PREFIX = access_token.PREFIX
_PUBLIC_LEN = access_token.PUBLIC_LEN
_SECRET_LEN = access_token.SECRET_LEN
_PREFIX_LEN = len(_TOKEN_PREFIX)
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

API_KEY_PREFIX = "qgk_"
_BODY_LEN = 26
_KEY_LEN = len(API_KEY_PREFIX) + _BODY_LEN + 2
_DECODE = {c: c for c in CROCKFORD} | {c.lower(): c for c in CROCKFORD} | {
    "O": "0", "o": "0", "I": "1", "i": "1", "L": "1", "l": "1"}
BUCKETS = 1024

PERIODS = ("minute", "hour", "day", "month")
_PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_RULE_KINDS = {"rate": "calls", "units": "units"}  # feature word -> rule kind
_KIND_ORDER = ("calls", "units")


def parse_authorization(header: str | None) -> tuple[str, str] | None:
    """`ExisOneApi exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if header is None or not header.startswith(_TOKEN_SCHEME):
        return None
    return parse_access_token(header[len(_TOKEN_SCHEME):].strip())


def parse_access_token(token: str) -> tuple[str, str] | None:
    """`exo_at_<public>_<secret>` → (public, secret), or None when malformed."""
    if len(token) != len(_TOKEN_PREFIX) + _PUBLIC_LEN + 1 + _SECRET_LEN or not token.startswith(_TOKEN_PREFIX):
        return None
    public = token[_PREFIX_LEN:_PREFIX_LEN + _PUBLIC_LEN]
    if token[_PREFIX_LEN + _PUBLIC_LEN] != "_":
        return None
    secret = token[_PREFIX_LEN + 1 + _PUBLIC_LEN:]
    if not _ALNUM.issuperset(public) or not _ALNUM.issuperset(secret):
        return None
    return public, secret


def _check_chars(body: str) -> str:
    crc = zlib.crc32(body.encode("ascii")) & 0x3FF
    return CROCKFORD[crc >> 5] + CROCKFORD[crc & 31]


def generate_api_key(entropy: bytes) -> str:
    """A new key from 16 random bytes."""
    if len(entropy) != 16:
        raise ValueError("entropy must be 16 bytes")
    number = int.from_bytes(entropy, "big") << 2  # 128 bits → 130 bits = 26 characters
    body = "".join(CROCKFORD[(number >> (5 * i)) & 31] for i in range(_BODY_LEN - 1, -1, -1))
    return API_KEY_PREFIX + body + _check_chars(body)


def normalize_api_key(raw: str) -> str | None:
    """The canonical key, or None when malformed or its check characters do not match."""
    if not isinstance(raw, str) or len(raw) > 128:
        return None
    text = raw.strip()
    if text[:4].lower() != API_KEY_PREFIX:
        return None
    chars = []
    for c in text[4:]:
        if c == "-" or c == " ":
            continue
        mapped = _DECODE.get(c)
        if mapped is None:
            return None
        chars.append(mapped)
    if len(chars) != _BODY_LEN + 2:
        return None
    body = "".join(chars[:_BODY_LEN])
    if _check_chars(body) != chars[_BODY_LEN] + chars[_BODY_LEN + 1]:
        return None
    return API_KEY_PREFIX + body + chars[_BODY_LEN] + chars[_BODY_LEN + 1]


def api_key_bucket(key: str) -> int:
    """Stable 0..1023 for the key's Redis hash tag {b<n>}."""
    return zlib.crc32(key.encode("ascii")) % BUCKETS


def _parse_rule(name: str) -> tuple[str, str, int] | str | None:
    """(kind, period, limit) for a rule feature, an error message if malformed, None if not a rule."""
    parts = name.split(":")
    if len(parts) < 2 or parts[0] != "api" or parts[1] not in _RULE_KINDS:
        return None
    if len(parts) != 4:
        return f"expected api:{parts[1]}:<minute|hour|day|month>:<N>"
    period, count = parts[2], parts[3]
    if period not in PERIODS:
        return f"unknown period '{period}' (use minute, hour, day or month)"
    if not count.isdigit() or not count.isascii() or len(count) > 15 or int(count) <= 0:
        return f"limit '{count}' must be a positive integer"
    return _RULE_KINDS[parts[1]], period, int(count)


def check_rule_feature(name: str) -> str | None:
    parsed = _parse_rule(name)
    return parsed if isinstance(parsed, str) else None


def compile_rules(features: list[str]) -> tuple[str, list[str]]:
    """(rule_spec, passthrough): canonical "calls:minute:100,units:day:5000" and the other names."""
    limits: dict[tuple[str, str], int] = {}
    passthrough = []
    for name in features:
        parsed = _parse_rule(name)
        if parsed is None:
            passthrough.append(name)
        elif not isinstance(parsed, str):
            kind, period, limit = parsed
            current = limits.get((kind, period))
            if current is None or limit < current:
                limits[(kind, period)] = limit
    spec = ",".join(f"{kind}:{period}:{limits[(kind, period)]}"
                    for kind in _KIND_ORDER for period in PERIODS if (kind, period) in limits)
    return spec, passthrough


def window_bounds(ts: int, period: str) -> tuple[int, int]:
    """Calendar-aligned UTC [start, end) containing `ts`."""
    seconds = _PERIOD_SECONDS.get(period)
    if seconds is not None:
        start = ts - ts % seconds
        return start, start + seconds
    if period != "month":
        raise ValueError(f"unknown period {period!r}")
    days = ts // 86400
    year, month = _civil_year_month(days)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((year + (month == 12), month % 12 + 1, 1, 0, 0, 0))
    return start, end


def _civil_year_month(days: int) -> tuple[int, int]:
    """Year and month of a day count since 1970-01-01 (Howard Hinnant's civil_from_days)."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month


# -- the validate answer, rendered from the script's reply ------------------------------------

WINDOW_NAMES = ("calls_minute", "calls_hour", "calls_day", "calls_month",
                "units_minute", "units_hour", "units_day", "units_month")
DENIAL_MESSAGES = {
    "revoked": "this API key has been revoked",
    "expired": "this API key has expired",
    "quota_exhausted": "the lifetime quota of this API key is used up",
    "rate_limit_minute": "per-minute limit reached",
    "rate_limit_hour": "per-hour limit reached",
    "rate_limit_day": "per-day limit reached",
    "rate_limit_month": "per-month limit reached",
}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def render_validation(reply: list, resets_at: tuple) -> bytes:
    """The JSON answer to a validation from the validate script's reply (see its header):
    `{code, consumed, retry_after, near, product, used, limit, features json, expires ISO,
    (slot, limit, used)...}`; `resets_at` holds the ISO ends of the minute, hour, day and month
    windows. Integers are written in full (never in exponent form)."""
    if len(resets_at) != 4:
        raise ValueError("resets_at must hold the ends of the minute, hour, day and month windows")
    code = _text(reply[0])
    used, limit = int(reply[5]), int(reply[6])
    if limit < 0:
        quota = f'{{"limit":null,"used":{used},"remaining":null}}'
    else:
        quota = f'{{"limit":{limit},"used":{used},"remaining":{max(limit - used, 0)}}}'
    windows = []
    for i in range(9, len(reply), 3):
        slot, wlimit, wused = int(reply[i]), int(reply[i + 1]), int(reply[i + 2])
        if not 0 <= slot < 8:
            raise ValueError(f"window slot {slot!r} out of range")
        windows.append(f'"{WINDOW_NAMES[slot]}":{{"limit":{wlimit},"used":{wused},'
                       f'"remaining":{max(wlimit - wused, 0)},"resetsAt":"{_text(resets_at[slot % 4])}"}}')
    rate_limits = "{" + ",".join(windows) + "}"
    if code == "ok":
        expires = _text(reply[8])
        expires_at = f'"{expires}"' if expires else "null"
        return (f'{{"isValid":true,"unitsConsumed":{int(reply[1])},"quota":{quota},"rateLimits":{rate_limits},'
                f'"features":{_text(reply[7])},"expiresAt":{expires_at}}}').encode()
    body = (f'{{"isValid":false,"errorCode":"{code}","errorMessage":"{DENIAL_MESSAGES[code]}","quota":{quota},'
            f'"rateLimits":{rate_limits}')
    if code == "quota_exhausted" or code.startswith("rate_limit_"):
        body += f',"retryAfterSeconds":{int(reply[2])}'
    return (body + "}").encode()


# -- rate-limit header fields, from the same reply ----------------------------------------------

_WINDOW_SECONDS = (60, 3600, 86400, 2592000)  # RateLimit-Policy w= for minute, hour, day, month (30 days)
_PERIOD_INDEX = {period.encode(): index for index, period in enumerate(PERIODS)}


def limit_headers(reply: list, now: int, window_ends: tuple) -> list[tuple[bytes, bytes]]:
    """X-RateLimit-Limit/-Remaining/-Reset and the IETF `RateLimit: "name";r=R;t=T` and
    `RateLimit-Policy: "name";q=L;w=W` fields for a validate reply; `window_ends` holds the epoch
    ends of the current minute, hour, day and month windows.

    The named limit: on an allowed answer, the window closest to its limit (least left; ties: the
    one that resets first), or the lifetime quota when it has less left than every window (it
    never resets, so it has no `t` and no X-RateLimit-Reset); on a 429, the limit that refused
    (`quota`, or the refusing period's window with the least left), with Retry-After first. Other
    refusals, and answers with nothing limited, get no fields: []."""
    if len(window_ends) != 4:
        raise ValueError("window_ends must hold the ends of the minute, hour, day and month windows")
    code = _text(reply[0]).encode()
    ok = code == b"ok"
    best, best_left = -1, 0  # best: reply index of the named window; 0: the quota
    best_reset: int | None = None  # None: the named limit never resets
    period = -1
    retry_after = 0
    if not ok:
        retry_after = int(reply[2])
        if code == b"quota_exhausted":
            best, best_left = 0, int(reply[6]) - int(reply[5])
        elif code.startswith(b"rate_limit_"):
            period = _PERIOD_INDEX[code[11:]]
        else:
            return []
    if best != 0:
        for i in range(9, len(reply) - 2, 3):
            slot = int(reply[i])
            if not 0 <= slot < 8:
                raise ValueError(f"window slot {slot!r} out of range")
            if period >= 0 and slot % 4 != period:
                continue
            left = int(reply[i + 1]) - int(reply[i + 2])
            reset = int(window_ends[slot % 4]) - now
            if best_reset is None or left < best_left or (left == best_left and reset < best_reset):
                best, best_left, best_reset = i, left, reset
        quota_limit = int(reply[6])
        if ok and quota_limit >= 0 and (best < 0 or quota_limit - int(reply[5]) < best_left):
            best, best_left, best_reset = 0, quota_limit - int(reply[5]), None
        if best < 0:
            return []
    if not ok:
        best_reset = retry_after
    remaining = str(max(best_left, 0)).encode()
    if best == 0:
        name, limit = b'"quota"', str(int(reply[6])).encode()
        policy = name + b";q=" + limit
    else:
        slot = int(reply[best])
        name, limit = b'"' + WINDOW_NAMES[slot].encode() + b'"', str(int(reply[best + 1])).encode()
        policy = name + b";q=" + limit + b";w=" + str(_WINDOW_SECONDS[slot % 4]).encode()
    headers = []
    if not ok:
        headers.append((b"retry-after", str(max(retry_after, 1)).encode()))
    headers += [(b"x-ratelimit-limit", limit), (b"x-ratelimit-remaining", remaining)]
    if best_reset is None:
        headers.append((b"ratelimit", name + b";r=" + remaining))
    else:
        headers.append((b"x-ratelimit-reset", str(now + best_reset).encode()))
        headers.append((b"ratelimit", name + b";r=" + remaining + b";t=" + str(best_reset).encode()))
    headers.append((b"ratelimit-policy", policy))
    return headers


# -- keys issued elsewhere (imported) ---------------------------------------------------------

IMPORTED_MIN_LEN = 8
IMPORTED_MAX_LEN = 100
_IMPORTED_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def normalize_imported_key(raw: str) -> str | None:
    """The canonical form of a key issued by another licensing server (`XXXX-XXXX-XXXX-XXXX` and
    the like), or None: dashes and spaces dropped, ASCII letters upper-cased, then 8 to 100 of
    A-Z 0-9 `_` `.`. A key starting with our `qgk_` is never an imported one (a mistyped key of
    ours stays refused without I/O)."""
    if not isinstance(raw, str) or len(raw) > 128:
        return None
    text = raw.strip()
    if text[:4].lower() == API_KEY_PREFIX:
        return None
    compact = text.replace("-", "").replace(" ", "")
    if not compact.isascii():
        return None
    compact = compact.upper()
    if not IMPORTED_MIN_LEN <= len(compact) <= IMPORTED_MAX_LEN or not _IMPORTED_CHARS.issuperset(compact):
        return None
    return compact
