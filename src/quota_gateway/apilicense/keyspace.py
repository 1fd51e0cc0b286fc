"""Where API keys live in Redis, the Lua scripts that run there, and each script's reply decoded.

Every script's arguments are built and its reply read here and nowhere else; the validate
answer's layout is also read by fastpath.render_validation (the compiled renderer), which the
script's header documents.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import orjson

from .. import fastpath
from ..clock import iso_utc
from ..formats import rediskeys
from ..formats.digests import sha256
from ..scripts import LuaScript, reply_pairs

# The per-bucket strings every key of a bucket shares (built once, not per LicenseRef).
_PREFIXES = [rediskeys.bucket(b) for b in range(fastpath.BUCKETS)]
_PENDING = [prefix + "pending" for prefix in _PREFIXES]


class LicenseRef:
    """Where one canonical key lives in Redis: one small hash per key, `qg:{b<n>}:k:<digest>`, with
    fields m (the key's own metadata), c (its counters) and g (the metadata's generation), beside
    its product's metadata kept once per bucket (`product_key`). All share the bucket's hash tag."""

    __slots__ = ("bucket", "digest", "entry", "validate_keys")

    def __init__(self, key: str, bucket: int | None = None, digest: bytes | None = None) -> None:
        self.digest = digest if digest is not None else sha256(key)
        self.bucket = fastpath.api_key_bucket(key) if bucket is None else bucket
        self.entry = f"{_PREFIXES[self.bucket]}k:{self.digest.hex()[:32]}"
        self.validate_keys = [self.entry, _PENDING[self.bucket], _PREFIXES[self.bucket]]

    @classmethod
    def from_row(cls, digest: bytes, bucket: int) -> LicenseRef:
        return cls("", bucket=bucket, digest=bytes(digest))

    @property
    def prefix(self) -> str:
        return _PREFIXES[self.bucket]

    def legacy_keys(self, license_id: int) -> list[str]:
        """The key's entries as format 5 kept them (metadata, generation, backup copy, counters):
        read once and dropped by the first fill after an upgrade (apilicense_fill_batch.lua names
        them from the key's hash the same way)."""
        hexdigest = self.digest.hex()[:32]
        p = self.prefix
        return [f"{p}m:{hexdigest}", f"{p}gen:{hexdigest}", f"{p}mb:{hexdigest}", f"{p}c:{license_id}"]


def product_key(bucket: int, product_id: int) -> str:
    """A product's metadata (tenant, name, features, window limits) as the keys of one bucket share
    it: hash fields m (packed) and v (the products.cache_version it was read at, or the newer one
    an invalidation left without m)."""
    return f"{_PREFIXES[bucket]}p:{product_id}"


# -- VALIDATE --------------------------------------------------------------------------------------
# Reply: an answer {code, consumed, retry_after, near_limit (0|1), product, used, limit, features
# json, expires ISO, then (slot, limit, used) per limited window}, or a shorter one asking for a
# cache fill first (ValidateNeed).

VALIDATE = LuaScript("apilicense_validate")

ANSWER_MIN_LEN = 9  # replies shorter than this are ValidateNeed
NEEDS_META = b"miss"  # {"miss", generation}: fill metadata and counters from Postgres (FILL_BATCH)
NEEDS_USAGE = b"fill"  # {"fill", license id}: rebuild the counters from Postgres (FILL_USED)
NOT_FOUND = b"nf"  # {"nf"}: no such key for this tenant


class ValidateNeed(NamedTuple):
    kind: bytes  # NEEDS_META, NEEDS_USAGE or NOT_FOUND
    value: Any  # the metadata generation, or the license id


def validate_need(reply: list) -> ValidateNeed:
    return ValidateNeed(reply[0], reply[1] if len(reply) > 1 else None)


def answer_head(reply: list) -> tuple[str, int, bool, str]:
    """(code, units consumed, near a limit, product): what every answer is counted by. The hot
    path reads only these; the body is rendered from the reply as it is."""
    return reply[0].decode(), reply[1], reply[3] == 1, reply[4].decode()


class Answer:
    """A validate answer decoded in full, and its JSON body."""

    __slots__ = ("body", "code", "consumed", "limit", "near_limit", "product", "retry_after", "used", "windows")

    def __init__(self, reply: list, resets_at: tuple) -> None:
        self.code, self.consumed, self.near_limit, self.product = answer_head(reply)
        self.retry_after = int(reply[2])
        self.used = int(reply[5])
        self.limit = int(reply[6])
        self.windows = [(int(reply[i]), int(reply[i + 1]), int(reply[i + 2])) for i in range(9, len(reply), 3)]
        self.body = fastpath.render_validation(reply, resets_at)

    def document(self) -> dict:
        return orjson.loads(self.body)


def _msgpack_uint(value: int) -> bytes:
    return struct.pack(">BQ", 0xCF, value)  # uint 64


def packed_clock(now: int, day: bytes, bounds: list[tuple[int, int]]) -> bytes:
    """The script's clock argument (msgpack: now, day yyyymmdd, each window's start and end)."""
    return (_msgpack_uint(now) + bytes([0xA0 | len(day)]) + day  # fixstr: 8 bytes
            + b"".join(_msgpack_uint(edge) for pair in bounds for edge in pair))


# -- metadata: FILL_BATCH caches it (the layouts the validate script unpacks) and runs the validations
# that waited on it; INVALIDATE drops a key's, DROP_PRODUCT a product's -------------------------------

FILL_BATCH = LuaScript("apilicense_fill_batch", functions={"validate": "apilicense_validate"})
INVALIDATE = LuaScript("apilicense_invalidate")
DROP_PRODUCT = LuaScript("apilicense_product_invalidate")

# A found key's metadata is cached until invalidated (every change to the key or its product drops
# it), with no TTL: no wave of misses after a cold start, no expiry entry per key, and nothing
# lapses during a Postgres outage. Like the counters (which never expire), it stays while the key exists.
META_FORMAT = "6"  # the validate script refills metadata cached in any other format (5: one string per key)
NEGATIVE_TTL = 30  # unknown (checksum-valid) keys: remembered briefly, not forever


def _window_limits(spec: str) -> list[int]:
    """The compiled rules as the script reads them: 8 limits, calls then units, each minute..month
    (0: none)."""
    limits = [0] * 8
    for rule in filter(None, spec.split(",")):
        kind, period, limit = rule.split(":")
        limits[(0 if kind == "calls" else 4) + fastpath.PERIODS.index(period)] = int(limit)
    return limits


def fill_batch_call(groups: list[list[tuple[LicenseRef, Any, Any, list]]],
                    products: dict[int, bytes]) -> tuple[list, list]:
    """FILL_BATCH's (keys, args) for the misses of one or more buckets, a group per bucket: (ref,
    generation seen, row or None, the waiting validations as (future, validate args)). The
    metadata goes packed as the validate script reads it, each product's once per call however many
    buckets and keys it spans; `products` keeps the products packed for one batch's calls."""
    keys: list[Any] = []
    call_products: dict[int, int] = {}  # product id -> its place among the call's products (1-based)
    product_args: list[Any] = []
    group_args: list[Any] = [len(groups)]
    for items in groups:
        bucket = items[0][0].bucket
        prefix = _PREFIXES[bucket]
        group_keys = [_PENDING[bucket], f"{prefix}flushing", f"{prefix}applied"]
        in_group: set[int] = set()
        places: list[int] = []  # the group's products, by their place among the call's (1-based)
        for _, _, row, _ in items:
            if row is not None and row["product_id"] not in in_group:
                product_id = row["product_id"]
                in_group.add(product_id)
                group_keys.append(product_key(bucket, product_id))
                if product_id not in call_products:
                    call_products[product_id] = len(call_products) + 1
                    packed = products.get(product_id) or products.setdefault(product_id, packed_product(row))
                    product_args += [row["cache_version"], packed]
                places.append(call_products[product_id])
        snapshot = next((row["applied"] or "" for _, _, row, _ in items if row is not None), "")
        args: list[Any] = [snapshot, len(places), *places, len(items)]
        requests: list[Any] = []
        for n, (ref, generation, row, waiting) in enumerate(items, 1):
            group_keys.append(ref.entry)
            if row is None:
                args += [generation, "", 0, "", 0, _NOT_FOUND_META]
            else:
                args += [generation, "" if row["kept_replies"] else row["used_total"], 1, row["id"],
                         row["used_offset"], packed_key(row)]
            for _, validate_args in waiting:
                requests += [n, *validate_args]
        keys += group_keys
        group_args += [len(group_keys), *args, len(requests) // (1 + VALIDATE_ARGS), *requests]
    return keys, [len(call_products), *product_args, *group_args]


VALIDATE_ARGS = 5  # tenant, units, consume, idempotency suffix, clock (apilicense_validate.lua)


def fill_batch_answers(reply: list) -> list:
    """FILL_BATCH's reply: the validate script's reply to each waiting validation, in the order
    they were sent (group by group)."""
    return reply[1:]


# The metadata is packed here as the scripts' cmsgpack.pack would pack it (the smallest encoding
# of each value), sent as one argument instead of one per field: building and sending a fill's
# arguments had cost the gateway more per key than the PostgreSQL read.

def _packed_int(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    if -32 <= value < 0:
        return struct.pack(">b", value)
    if value >= 0:
        for limit, code, fmt in ((0xFF, 0xCC, ">BB"), (0xFFFF, 0xCD, ">BH"), (0xFFFFFFFF, 0xCE, ">BI")):
            if value <= limit:
                return struct.pack(fmt, code, value)
        return struct.pack(">BQ", 0xCF, value)
    for limit, code, fmt in ((-0x80, 0xD0, ">Bb"), (-0x8000, 0xD1, ">Bh"), (-0x80000000, 0xD2, ">Bi")):
        if value >= limit:
            return struct.pack(fmt, code, value)
    return struct.pack(">Bq", 0xD3, value)


def _packed_str(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    if n < 32:
        return bytes((0xA0 | n,)) + data
    if n <= 0xFF:
        return struct.pack(">BB", 0xD9, n) + data
    if n <= 0xFFFF:
        return struct.pack(">BH", 0xDA, n) + data
    return struct.pack(">BI", 0xDB, n) + data


def packed_values(values: list) -> bytes:
    """Strings and integers, one after another, as cmsgpack.pack(v1, v2, ...) writes them."""
    return b"".join(_packed_str(v) if isinstance(v, str) else _packed_int(v) for v in values)


def key_fields(row: Any) -> list:
    """A key's own metadata for a license row (None: no such key, cached briefly), as the validate
    script unpacks it (strings and numbers)."""
    if row is None:
        return [META_FORMAT, "0"]
    expires = row["expires_at"]
    return [META_FORMAT, "1", str(row["id"]), str(row["product_id"]), "1" if row["revoked_at"] else "0",
            int(expires.timestamp()) if expires else 0,
            row["max_api_calls"] if row["max_api_calls"] is not None else -1, row["used_offset"],
            iso_utc(expires) if expires else ""]


_FOUND_HEAD = packed_values([META_FORMAT, "1"])
_REVOKED = packed_values(["1"]), packed_values(["0"])
_NO_EXPIRY = packed_values([0])  # and, at the end, "" (expires ISO)
_NO_LIMIT = packed_values([-1])


def packed_key(row: Any) -> bytes:
    """packed_values(key_fields(row)) for a found key, written out: it runs once per key of every
    fill, where the generic loop cost a few microseconds more per key."""
    license_id = str(row["id"]).encode()
    product_id = str(row["product_id"]).encode()
    expires = row["expires_at"]
    limit = row["max_api_calls"]
    offset = row["used_offset"]
    return b"".join((_FOUND_HEAD, bytes((0xA0 | len(license_id),)), license_id, bytes((0xA0 | len(product_id),)),
                     product_id, _REVOKED[0] if row["revoked_at"] else _REVOKED[1],
                     _packed_int(int(expires.timestamp())) if expires else _NO_EXPIRY,
                     _NO_LIMIT if limit is None else _packed_int(limit),
                     bytes((offset,)) if 0 <= offset < 0x80 else _packed_int(offset),
                     _packed_str(iso_utc(expires)) if expires else b"\xa0"))


_NOT_FOUND_META = packed_values(key_fields(None))


def product_fields(row: Any) -> list:
    """A product's metadata, shared by its keys in a bucket, as the validate script unpacks it."""
    # Rules drive the limits; the answer lists every feature of the product, rules included
    # (the ExisOne document's example: "features": ["api:rate:minute:100", "api:tier:premium"]).
    rules, _ = fastpath.compile_rules(list(row["features"]))
    return [META_FORMAT, str(row["tenant_id"]), row["name"], orjson.dumps(list(row["features"])).decode(),
            *_window_limits(rules)]


def packed_product(row: Any) -> bytes:
    return packed_values(product_fields(row))


def product_invalidations(product_id: int, version: int) -> list[tuple[list, list]]:
    """DROP_PRODUCT's calls: the product's metadata in every bucket."""
    return [([product_key(b, product_id)], [version]) for b in range(fastpath.BUCKETS)]


# -- counters: FILL_USED rebuilds them, PRIME starts a new license's, TOTAL, RESET ----------------------

FILL_USED = LuaScript("apilicense_fill_used")
PRIME = LuaScript("apilicense_prime")
TOTAL = LuaScript("apilicense_total")
RESET = LuaScript("apilicense_reset")


def fill_used_keys(ref: LicenseRef) -> list[str]:
    p = ref.prefix
    return [ref.entry, f"{p}pending", f"{p}flushing", f"{p}applied"]


def fill_used_done(reply: Any) -> bool:
    """True: counters rebuilt (or present); False: the Postgres snapshot was older than a finished
    flush, read it again."""
    return isinstance(reply, list) or int(reply) == 1


def fill_used_rebuilt(reply: Any) -> int | None:
    """The lifetime total FILL_USED rebuilt (None: it rebuilt nothing)."""
    return int(reply[1]) if isinstance(reply, list) else None


def lifetime_total(reply: Any) -> int | None:
    """TOTAL's reply: units ever consumed (None: the counters are not in Redis, fill them first)."""
    return None if reply is None else int(reply)


def period_indexes(periods: list[str]) -> list[int]:
    return [fastpath.PERIODS.index(period) for period in periods]


# -- TAKE / DONE: write-behind of usage, per bucket --------------------------------------------------

TAKE = LuaScript("apilicense_flush_take")
DONE = LuaScript("apilicense_flush_done")


def _bucket_keys(bucket: int, *names: str) -> list[str]:
    prefix = rediskeys.bucket(bucket)
    return [prefix + name for name in names]


TAKE_KEYS = [_bucket_keys(b, "pending", "flushing", "fstate") for b in range(fastpath.BUCKETS)]
DONE_KEYS = [_bucket_keys(b, "flushing", "applied") for b in range(fastpath.BUCKETS)]


@dataclass(slots=True)
class TakenUsage:
    """A bucket's usage taken for writing to Postgres (TAKE's reply)."""

    epoch: str
    seq: int
    more: bool  # an unfinished flush was taken while more usage is pending: go round again
    deltas: list[tuple[int, date, int]]  # (license id, day, units)
    replies: list[tuple[int, str, bytes]]  # (license id, idempotency hash, first reply): idempotent consumes

    def done_args(self) -> list:
        return [self.epoch, self.seq]


def taken_usage(flat: list) -> TakenUsage | None:
    """TAKE's reply decoded: None when the bucket had nothing to write."""
    if not flat:
        return None
    fields: dict[str, bytes] = {name.decode(): value for name, value in reply_pairs(flat)}
    deltas = []
    replies = []
    for name, value in fields.items():
        if name.startswith("__"):  # __epoch, __seq, __more
            continue
        if name.startswith("i:"):  # i:<license id>:<idempotency hash> -> the first reply (msgpack)
            _, license_id, idem = name.split(":", 2)
            replies.append((int(license_id), idem, value))
            continue
        license_id, day = name.split(":")
        deltas.append((int(license_id), date(int(day[:4]), int(day[4:6]), int(day[6:])), int(value)))
    return TakenUsage(fields["__epoch"].decode(), int(fields["__seq"]), "__more" in fields, deltas, replies)
