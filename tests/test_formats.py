"""The shared formats (quota_gateway.formats): one module each, pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quota_gateway.errors import ApiError
from quota_gateway.formats import access_token, crockford, digests, rediskeys, times


def test_crockford_round_trips_and_refuses_what_is_not_canonical():
    for data in (b"", b"\x00", b"\xff" * 7, bytes(range(40))):
        assert crockford.decode(crockford.encode(data)) == data
    assert crockford.encode(b"\xff") == "ZW"  # 8 bits: one full character, then 3 bits padded with zeros
    with pytest.raises(ValueError):
        crockford.decode("0O")  # the forgiving aliases are for reading keys, not for decoding


def test_the_check_character_catches_every_single_typo_and_adjacent_swap():
    body = "7K3M9QXR2T"
    check = crockford.luhn_check_char(body)
    for i, char in enumerate(body):
        for other in crockford.ALPHABET:
            if other != char:
                assert crockford.luhn_check_char(body[:i] + other + body[i + 1:]) != check
    for i in range(len(body) - 1):
        if body[i] != body[i + 1]:
            swapped = body[:i] + body[i + 1] + body[i] + body[i + 2:]
            assert crockford.luhn_check_char(swapped) != check


def test_digests_hash_text_as_utf8():
    assert digests.sha256("qgk_é") == digests.sha256("qgk_é".encode())
    assert digests.sha256(b"").hex().startswith("e3b0c442")


def test_access_tokens_are_composed_and_masked_one_way():
    token = access_token.compose("a" * access_token.PUBLIC_LEN, "s" * access_token.SECRET_LEN)
    assert token.startswith("exo_at_") and token.count("_") == 3
    assert access_token.masked("pub") == "exo_at_pub_********"


@pytest.mark.parametrize(("text", "expected"), [
    ("2027-01-15T08:00:00Z", datetime(2027, 1, 15, 8, tzinfo=UTC)),
    ("2027-01-15T10:00:00+02:00", datetime(2027, 1, 15, 8, tzinfo=UTC)),
])
def test_times_are_read_as_utc(text, expected):
    assert times.parse_iso_utc(text) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2027-01-15T08:00:00", "9999-12-31T23:59:59-10:00",
                                  "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
def test_times_outside_the_format_are_a_400_naming_the_field(text):
    with pytest.raises(ApiError) as refused:
        times.parse_field(text, "expiresAt")
    assert (refused.value.status, refused.value.code, refused.value.extra) == (400, "invalid_field",
                                                                               {"field": "expiresAt"})


def test_a_naive_time_may_be_read_as_utc_when_asked():
    assert times.parse_iso_utc("2027-01-15T08:00:00", naive_is_utc=True) == datetime(2027, 1, 15, 8, tzinfo=UTC)


def test_redis_prefixes_carry_one_hash_tag_each():
    assert rediskeys.bucket(7) == "qg:{b7}:"
    assert rediskeys.lease_pool_id(rediskeys.lease_pool("0123abcd")) == "0123abcd"
    assert rediskeys.LEASE_HISTORY_PATTERN == "qg:{fl:*}:hist"
