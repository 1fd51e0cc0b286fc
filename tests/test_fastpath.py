"""The fast path, run against both implementations (the `fastpath_impl` fixture: py, then c)."""

from __future__ import annotations

import calendar
import random

import orjson
import pytest

from quota_gateway import _fastpath_py

KEY = _fastpath_py.generate_api_key(bytes(range(16)))


def test_generated_key_shape_and_round_trip(fastpath_impl):
    key = fastpath_impl.generate_api_key(bytes(range(16)))
    assert key == KEY
    assert key.startswith("qgk_") and len(key) == 4 + 26 + 2
    assert fastpath_impl.normalize_api_key(key) == key


@pytest.mark.parametrize("variant", [
    lambda k: k.lower(),
    lambda k: f"  {k}\t",
    lambda k: k[:4] + "-".join(k[4 + i:4 + i + 4] for i in range(0, 28, 4)),
    lambda k: "QGK_" + k[4:],
    lambda k: k[:4] + k[4:].replace("0", "O").replace("1", "I"),
], ids=["lower", "spaces", "dashes", "upper-prefix", "aliases"])
def test_forgiving_input_normalises_to_the_canonical_key(fastpath_impl, variant):
    assert fastpath_impl.normalize_api_key(variant(KEY)) == KEY


@pytest.mark.parametrize("raw", [
    "", "qgk_", "abc", KEY[:-1], KEY + "0", "xyz_" + KEY[4:], KEY[:10] + "U" + KEY[11:], KEY[:10] + "é" + KEY[11:],
    "qgk_" + "0" * 28, KEY + " " * 200,
], ids=["empty", "prefix", "junk", "short", "long", "bad-prefix", "bad-char-U", "non-ascii", "zeros", "too-long"])
def test_malformed_keys_are_refused(fastpath_impl, raw):
    assert fastpath_impl.normalize_api_key(raw) is None


def test_non_string_key_is_refused(fastpath_impl):
    assert fastpath_impl.normalize_api_key(12345) is None
    assert fastpath_impl.normalize_api_key(None) is None


def test_every_single_character_typo_is_caught(fastpath_impl):
    alphabet = _fastpath_py.CROCKFORD
    for pos in range(4, len(KEY)):
        for c in alphabet:
            if c != KEY[pos]:
                mistyped = KEY[:pos] + c + KEY[pos + 1:]
                assert fastpath_impl.normalize_api_key(mistyped) is None, mistyped


def test_random_keys_pass_the_checksum_rarely(fastpath_impl):
    rng = random.Random(7)
    passed = sum(fastpath_impl.normalize_api_key("qgk_" + "".join(rng.choice(_fastpath_py.CROCKFORD) for _ in range(28)))
                 is not None for _ in range(20_000))
    assert passed < 60  # expectation ≈ 20 (1/1024)


def test_bucket_is_stable_and_in_range(fastpath_impl):
    assert fastpath_impl.api_key_bucket(KEY) == _fastpath_py.api_key_bucket(KEY)
    assert all(0 <= fastpath_impl.api_key_bucket(fastpath_impl.generate_api_key(bytes([i] * 16))) < 1024
               for i in range(256))


@pytest.mark.parametrize("features,expected", [
    ([], ("", [])),
    (["api:tier:premium"], ("", ["api:tier:premium"])),
    (["api:rate:minute:100", "api:units:day:5000", "beta"], ("calls:minute:100,units:day:5000", ["beta"])),
    (["api:units:month:9", "api:rate:month:3", "api:rate:minute:5"], ("calls:minute:5,calls:month:3,units:month:9", [])),
    (["api:rate:minute:100", "api:rate:minute:50"], ("calls:minute:50", [])),
    (["api:rate:week:5", "x"], ("", ["x"])),  # malformed rules are refused at creation; skipped here
])
def test_compile_rules(fastpath_impl, features, expected):
    assert fastpath_impl.compile_rules(features) == expected


@pytest.mark.parametrize("name,ok", [
    ("api:rate:minute:1", True), ("api:units:month:999999", True), ("api:tier:premium", True), ("plain", True),
    ("api:rate:week:5", False), ("api:rate:minute:0", False), ("api:rate:minute:-1", False),
    ("api:rate:minute:1.5", False), ("api:rate:minute", False), ("api:units:day:5:x", False),
    ("api:rate:minute:١٢", False),
])
def test_check_rule_feature(fastpath_impl, name, ok):
    assert (fastpath_impl.check_rule_feature(name) is None) is ok


def _ts(*parts):
    return calendar.timegm((*parts, 0, 0, 0)[:6])


@pytest.mark.parametrize("ts,period,expected", [
    (_ts(2026, 3, 14, 15, 9, 26), "minute", (_ts(2026, 3, 14, 15, 9, 0), _ts(2026, 3, 14, 15, 10, 0))),
    (_ts(2026, 3, 14, 15, 9, 26), "hour", (_ts(2026, 3, 14, 15, 0, 0), _ts(2026, 3, 14, 16, 0, 0))),
    (_ts(2026, 3, 14, 15, 9, 26), "day", (_ts(2026, 3, 14, 0, 0, 0), _ts(2026, 3, 15, 0, 0, 0))),
    (_ts(2026, 3, 14, 15, 9, 26), "month", (_ts(2026, 3, 1, 0, 0, 0), _ts(2026, 4, 1, 0, 0, 0))),
    (_ts(2026, 12, 31, 23, 59, 59), "month", (_ts(2026, 12, 1, 0, 0, 0), _ts(2027, 1, 1, 0, 0, 0))),
    (_ts(2028, 2, 29, 12, 0, 0), "month", (_ts(2028, 2, 1, 0, 0, 0), _ts(2028, 3, 1, 0, 0, 0))),
    (_ts(2027, 2, 28, 23, 59, 59), "month", (_ts(2027, 2, 1, 0, 0, 0), _ts(2027, 3, 1, 0, 0, 0))),
    (_ts(2027, 3, 1, 0, 0, 0), "month", (_ts(2027, 3, 1, 0, 0, 0), _ts(2027, 4, 1, 0, 0, 0))),
])
def test_window_bounds_are_calendar_aligned(fastpath_impl, ts, period, expected):
    assert fastpath_impl.window_bounds(ts, period) == expected


def test_window_bounds_unknown_period(fastpath_impl):
    with pytest.raises(ValueError):
        fastpath_impl.window_bounds(0, "week")


def test_both_twins_agree_on_many_random_inputs(fastpath_impl):
    rng = random.Random(11)
    for _ in range(3000):
        ts = rng.randrange(0, 4_102_444_800)
        for period in ("minute", "hour", "day", "month"):
            assert fastpath_impl.window_bounds(ts, period) == _fastpath_py.window_bounds(ts, period)
        entropy = rng.randbytes(16)
        key = _fastpath_py.generate_api_key(entropy)
        assert fastpath_impl.generate_api_key(entropy) == key
        noisy = "".join(c.lower() if rng.random() < 0.3 else c for c in key)
        assert fastpath_impl.normalize_api_key(noisy) == _fastpath_py.normalize_api_key(noisy)
        assert fastpath_impl.api_key_bucket(key) == _fastpath_py.api_key_bucket(key)


def test_token_parsing(fastpath_impl):
    good = "exo_at_abcdefghijkl_" + "A1" * 16
    assert fastpath_impl.parse_authorization("ExisOneApi " + good) == ("abcdefghijkl", "A1" * 16)
    assert fastpath_impl.parse_access_token(good) == ("abcdefghijkl", "A1" * 16)
    for bad in (None, "", "Bearer " + good, "ExisOneApi " + good[:-1], "ExisOneApi " + good.replace("_A", "-A")):
        assert fastpath_impl.parse_authorization(bad) is None


# -- the validate answer, rendered from a script reply ------------------------------------------

RESETS = (b"2026-03-14T15:10:00Z", b"2026-03-14T16:00:00Z", b"2026-03-15T00:00:00Z", b"2026-04-01T00:00:00Z")


def _expected(reply, resets):
    """What the answer means, built as a dict: the renderers must produce exactly its JSON."""
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    code, used, limit = text(reply[0]), reply[5], reply[6]
    quota = ({"limit": None, "used": used, "remaining": None} if limit < 0
             else {"limit": limit, "used": used, "remaining": max(limit - used, 0)})
    rate_limits = {}
    for i in range(9, len(reply), 3):
        slot, wlimit, wused = reply[i:i + 3]
        rate_limits[_fastpath_py.WINDOW_NAMES[slot]] = {"limit": wlimit, "used": wused,
                                                       "remaining": max(wlimit - wused, 0),
                                                       "resetsAt": text(resets[slot % 4])}
    if code == "ok":
        expires = text(reply[8])
        return {"isValid": True, "unitsConsumed": reply[1], "quota": quota, "rateLimits": rate_limits,
                "features": orjson.loads(reply[7]), "expiresAt": expires or None}
    answer = {"isValid": False, "errorCode": code, "errorMessage": _fastpath_py.DENIAL_MESSAGES[code],
              "quota": quota, "rateLimits": rate_limits}
    if code == "quota_exhausted" or code.startswith("rate_limit_"):
        answer["retryAfterSeconds"] = reply[2]
    return answer


def _random_reply(rng):
    code = rng.choice(["ok"] * 4 + list(_fastpath_py.DENIAL_MESSAGES))
    features = [rng.choice(["api:tier:premium", "beta", "é\"quoted\"", "x" * rng.choice([1, 3000])])
                for _ in range(rng.randrange(4))]
    slots = sorted(rng.sample(range(8), rng.randrange(9)))
    reply = [code.encode(), rng.randrange(1_000_001), rng.randrange(3_000_000), rng.randrange(2), b"Product",
             rng.choice([0, 5, 10**15, 2**53 - 1]), rng.choice([-1, 0, 7, 10**13, 2**53 - 1]), orjson.dumps(features),
             rng.choice([b"", b"2027-01-01T00:00:00Z"])]
    for slot in slots:
        reply += [slot, rng.choice([1, 100, 10**12]), rng.choice([0, 1, 99, 100, 5 * 10**12])]
    return reply


def test_rendered_answer_is_exactly_the_json_of_its_meaning(fastpath_impl):
    rng = random.Random(5)
    for _ in range(2000):
        reply = _random_reply(rng)
        rendered = fastpath_impl.render_validation(reply, RESETS)
        assert rendered == orjson.dumps(_expected(reply, RESETS)), reply
        assert rendered == _fastpath_py.render_validation(reply, RESETS)


def test_rendering_accepts_text_as_str(fastpath_impl):
    """Replies decoded elsewhere (e.g. with decode_responses) carry str where hiredis gives bytes."""
    reply = [b"ok", 1, 0, 0, b"P", 3, 10, b'["beta"]', b"", 0, 60, 1]
    as_str = [v.decode() if isinstance(v, bytes) else v for v in reply]
    resets = tuple(r.decode() for r in RESETS)
    assert fastpath_impl.render_validation(as_str, resets) == fastpath_impl.render_validation(reply, RESETS)


def test_unknown_denial_code_is_an_error(fastpath_impl):
    with pytest.raises(KeyError):
        fastpath_impl.render_validation([b"weird", 0, 0, 0, b"P", 0, -1, b"[]", b""], RESETS)


def test_both_twins_agree_on_rule_like_features(fastpath_impl):
    rng = random.Random(3)
    pieces = ["api", "rate", "units", "tier", "minute", "hour", "day", "month", "week", "0", "7", "15",
              "999999999999999", "1000000000000000", "1.5", "-1", "", "x", "é", "١٢", "Rate"]
    for _ in range(5000):
        name = ":".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        if rng.random() < 0.5:
            name = "api:" + name
        assert fastpath_impl.check_rule_feature(name) == _fastpath_py.check_rule_feature(name), name
        features = [name, "api:rate:minute:60", "beta"]
        assert fastpath_impl.compile_rules(features) == _fastpath_py.compile_rules(features), features


def test_malformed_replies_are_errors_not_crashes(fastpath_impl):
    reply = [b"ok", 1, 0, 0, b"P", 3, 10, b"[]", b"", 8, 60, 1]
    with pytest.raises(ValueError):
        fastpath_impl.render_validation(reply, RESETS)  # slot 8: no such window
    with pytest.raises(ValueError):
        fastpath_impl.render_validation(reply[:9], RESETS[:3])
    long_resets = tuple(b"9" * 500 for _ in range(4))
    full = [b"ok", 1, 0, 0, b"P", 3, 10, b"[]", b""] + [v for slot in range(8) for v in (slot, 10**15, 10**15)]
    assert fastpath_impl.render_validation(full, long_resets) == _fastpath_py.render_validation(full, long_resets)


def test_constants_match_the_shared_formats(fastpath_impl):
    """The compiled module keeps C-level copies of the shared formats; they must not drift."""
    from quota_gateway.formats import access_token, crockford

    assert fastpath_impl.CROCKFORD == crockford.ALPHABET
    assert (fastpath_impl.API_KEY_PREFIX, fastpath_impl.BUCKETS, fastpath_impl.PERIODS) == \
        (_fastpath_py.API_KEY_PREFIX, _fastpath_py.BUCKETS, _fastpath_py.PERIODS)
    token = access_token.compose("a" * access_token.PUBLIC_LEN, "B" * access_token.SECRET_LEN)
    assert fastpath_impl.parse_authorization(f"{access_token.SCHEME} {token}") == \
        ("a" * access_token.PUBLIC_LEN, "B" * access_token.SECRET_LEN)


ENDS = (1_800_000_060, 1_800_003_600, 1_800_086_400, 1_802_000_000)


def _expected_headers(reply, now):
    """The rate-limit fields by their meaning: the window closest to its limit (or the quota when
    it has less left) on allowed answers, the refusing limit on 429s."""
    code = reply[0].decode()
    windows = [(reply[i], reply[i + 1], reply[i + 2]) for i in range(9, len(reply), 3)]
    seconds = (60, 3600, 86400, 2592000)
    if code == "quota_exhausted":
        named = ("quota", reply[6], reply[6] - reply[5], None, reply[2])
    elif code.startswith("rate_limit_"):
        period = _fastpath_py.PERIODS.index(code[11:])
        candidates = [w for w in windows if w[0] % 4 == period]
        if not candidates:
            return []
        slot, limit, used = min(candidates, key=lambda w: w[1] - w[2])
        named = (_fastpath_py.WINDOW_NAMES[slot], limit, limit - used, seconds[slot % 4], reply[2])
    elif code == "ok":
        candidates = [(w[1] - w[2], ENDS[w[0] % 4] - now, i, w) for i, w in enumerate(windows)]
        best = min(candidates) if candidates else None
        if reply[6] >= 0 and (best is None or reply[6] - reply[5] < best[0]):
            named = ("quota", reply[6], reply[6] - reply[5], None, None)
        elif best is None:
            return []
        else:
            slot, limit, used = best[3]
            named = (_fastpath_py.WINDOW_NAMES[slot], limit, limit - used, seconds[slot % 4], best[1])
    else:
        return []
    name, limit, left, window, reset = named
    left = max(left, 0)
    headers = [] if code == "ok" else [(b"retry-after", str(max(reply[2], 1)).encode())]
    headers += [(b"x-ratelimit-limit", str(limit).encode()), (b"x-ratelimit-remaining", str(left).encode())]
    if reset is None:
        headers.append((b"ratelimit", f'"{name}";r={left}'.encode()))
    else:
        headers.append((b"x-ratelimit-reset", str(now + reset).encode()))
        headers.append((b"ratelimit", f'"{name}";r={left};t={reset}'.encode()))
    policy = f'"{name}";q={limit}' + (f";w={window}" if window else "")
    return headers + [(b"ratelimit-policy", policy.encode())]


def test_rate_limit_fields_name_the_limit_closest_to_its_end(fastpath_impl):
    rng = random.Random(11)
    now = 1_800_000_000
    for _ in range(3000):
        reply = _random_reply(rng)
        headers = fastpath_impl.limit_headers(reply, now, ENDS)
        assert headers == _expected_headers(reply, now), reply
        assert headers == _fastpath_py.limit_headers(reply, now, ENDS)


def test_rate_limit_fields_examples(fastpath_impl):
    now = 1_800_000_000
    # minute window 100 with 40 used, day window 1000 with 950 used: the day has fewer calls left
    reply = [b"ok", 1, 0, 0, b"P", 950, -1, b"[]", b"", 0, 100, 40, 2, 1000, 950]
    assert dict(fastpath_impl.limit_headers(reply, now, ENDS)) == {
        b"x-ratelimit-limit": b"1000", b"x-ratelimit-remaining": b"50", b"x-ratelimit-reset": b"1800086400",
        b"ratelimit": b'"calls_day";r=50;t=86400', b"ratelimit-policy": b'"calls_day";q=1000;w=86400'}
    # a lifetime quota with less left than any window: named without a reset (it never resets)
    reply = [b"ok", 1, 0, 0, b"P", 98, 100, b"[]", b"", 0, 100, 5]
    assert fastpath_impl.limit_headers(reply, now, ENDS) == [
        (b"x-ratelimit-limit", b"100"), (b"x-ratelimit-remaining", b"2"), (b"ratelimit", b'"quota";r=2'),
        (b"ratelimit-policy", b'"quota";q=100')]
    assert fastpath_impl.limit_headers([b"ok", 1, 0, 0, b"P", 3, -1, b"[]", b""], now, ENDS) == []
    assert fastpath_impl.limit_headers([b"revoked", 0, 0, 0, b"P", 3, -1, b"[]", b"", 0, 10, 1], now, ENDS) == []
    as_str = ["ok", 1, 0, 0, "P", 950, -1, "[]", "", 0, 100, 90]
    assert fastpath_impl.limit_headers(as_str, now, ENDS) == _fastpath_py.limit_headers(as_str, now, ENDS)
    with pytest.raises(ValueError):
        fastpath_impl.limit_headers([b"ok", 1, 0, 0, b"P", 3, -1, b"[]", b"", 9, 10, 1], now, ENDS)
    with pytest.raises(ValueError):
        fastpath_impl.limit_headers(reply, now, ENDS[:3])


def test_imported_keys_normalise_alike_in_both_twins(fastpath_impl):
    assert fastpath_impl.normalize_imported_key(" aaaa-bbbb cccc-dddd ") == "AAAABBBBCCCCDDDD"
    assert fastpath_impl.normalize_imported_key("k3y.from_elsewhere") == "K3Y.FROM_ELSEWHERE"
    ours = _fastpath_py.generate_api_key(b"\x07" * 16)
    for refused in ("short", "ÄBCDEFGHIJ", "has/slash1234", ours, ours.upper(), "A" * 101, "x" * 129, None, 12):
        assert fastpath_impl.normalize_imported_key(refused) is None, refused
    assert fastpath_impl.normalize_imported_key("A" * 100) == "A" * 100
    rng = random.Random(17)
    alphabet = "abcXYZ019-_. é/\tqgk_QGK"
    for _ in range(5000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        assert fastpath_impl.normalize_imported_key(raw) == _fastpath_py.normalize_imported_key(raw), raw
