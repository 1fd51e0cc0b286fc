"""The quota engine: one Lua call per validation, metadata filled from Postgres on a miss."""

from __future__ import annotations

import hashlib
import struct
from datetime import datetime, timezone

import orjson

from .. import fastpath
from ..clock import iso_utc
from ..redisconn import LuaScript

VALIDATE = LuaScript("apilicense_validate")
FILL_META = LuaScript("apilicense_meta_fill")
FILL_USED = LuaScript("apilicense_fill_used")
INVALIDATE = LuaScript("meta_invalidate")
RESET = LuaScript("apilicense_reset")
PRIME = LuaScript("apilicense_prime")
TOTAL = LuaScript("apilicense_total")

META_TTL = 3600
META_FORMAT = "4"  # the script refills metadata cached in any other format
NEGATIVE_TTL = 30  # unknown (checksum-valid) keys: remembered briefly, not forever
MAX_UNITS = 1_000_000

# errorCode -> HTTP status (messages: fastpath.DENIAL_MESSAGES)
DENIAL_STATUS = {
    "not_found": 404,
    "revoked": 403,
    "expired": 403,
    "quota_exhausted": 429,
    "rate_limit_minute": 429,
    "rate_limit_hour": 429,
    "rate_limit_day": 429,
    "rate_limit_month": 429,
}
_NOT_FOUND_BODY = orjson.dumps({"isValid": False, "errorCode": "not_found", "errorMessage": "no such API key"})
_REF_CACHE_SIZE = 65536
_WINDOW_SECONDS = {"minute": 60, "hour": 3600, "day": 86400, "month": 2592000}  # RateLimit-Policy w=


def _window_limits(spec: str) -> list[int]:
    """The compiled rules as the script reads them: 8 limits, calls then units, each minute..month
    (0: none)."""
    limits = [0] * 8
    for rule in filter(None, spec.split(",")):
        kind, period, limit = rule.split(":")
        limits[(0 if kind == "calls" else 4) + fastpath.PERIODS.index(period)] = int(limit)
    return limits


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class LicenseRef:
    """Where one canonical key lives in Redis."""

    __slots__ = ("key", "digest", "bucket", "prefix", "meta", "gen", "validate_keys")

    def __init__(self, key: str, bucket: int | None = None, digest: bytes | None = None) -> None:
        self.key = key
        self.digest = digest if digest is not None else key_digest(key)
        self.bucket = fastpath.api_key_bucket(key) if bucket is None else bucket
        self.prefix = f"qg:{{b{self.bucket}}}:"
        hexdigest = self.digest.hex()[:32]
        self.meta = f"{self.prefix}m:{hexdigest}"
        self.gen = f"{self.prefix}gen:{hexdigest}"
        self.validate_keys = [self.meta, f"{self.prefix}pending", self.prefix]

    @classmethod
    def from_row(cls, digest: bytes, bucket: int) -> "LicenseRef":
        return cls("", bucket=bucket, digest=bytes(digest))


class Outcome:
    """A decoded validate reply (see apilicense_validate.lua): the numbers, and the answer's body."""

    __slots__ = ("code", "consumed", "retry_after", "near_limit", "product", "used", "limit", "windows", "body")

    def __init__(self, reply: list, resets_at: tuple) -> None:
        self.code = _text(reply[0])
        self.consumed = int(reply[1])
        self.retry_after = int(reply[2])
        self.near_limit = reply[3] == 1
        self.product = _text(reply[4])
        self.used = int(reply[5])
        self.limit = int(reply[6])
        self.windows = [(int(reply[i]), int(reply[i + 1]), int(reply[i + 2])) for i in range(9, len(reply), 3)]
        self.body = fastpath.render_validation(reply, resets_at)

    def document(self) -> dict:
        return orjson.loads(self.body)

    def named_limit(self) -> tuple[str, int, int, int]:
        """(name, limit, remaining, window seconds) of the limit that refused the request: the
        quota, or the window of the refusing period with the least left."""
        if self.code == "quota_exhausted":
            return "quota", self.limit, max(self.limit - self.used, 0), 0
        period = self.code.removeprefix("rate_limit_")
        slot, limit, used = min((w for w in self.windows if fastpath.PERIODS[w[0] % 4] == period),
                                key=lambda w: w[1] - w[2])
        return fastpath.WINDOW_NAMES[slot], limit, max(limit - used, 0), _WINDOW_SECONDS[period]


def _msgpack_uint(value: int) -> bytes:
    return struct.pack(">BQ", 0xCF, value)  # uint 64


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class QuotaEngine:
    def __init__(self, services, runner) -> None:
        self.services = services
        self.runner = runner
        self._clock = services.clock
        self._clock_cache: tuple[int, bytes, tuple] = (-1, b"", ())
        metrics = services.metrics
        self._validations = metrics.counts("qg_apilicense_validations", "API-key validations by product and outcome",
                                           ("product", "result", "code"))
        self._near_limit = metrics.counts("qg_apilicense_near_limit",
                                          "validations of keys with >= 80% of a window or the quota used", ("product",))
        self._refs: dict[str, LicenseRef] = {}  # normalised key -> where it lives (hashing once per key)
        self.dirty: set[int] = set()  # buckets with usage to write behind (shared with the flusher)

    # -- the hot call -------------------------------------------------------------------------

    async def validate(self, tenant_id: str, api_key_raw: str, units: int, consume: bool,
                       idempotency_key: str | None) -> tuple[int, bytes, list]:
        """(HTTP status, JSON body, extra headers) for one validation."""
        key = fastpath.normalize_api_key(api_key_raw)
        if key is None:  # malformed or bad checksum: refused without I/O
            self._count("", "not_found")
            return 404, _NOT_FOUND_BODY, []
        ref = self._refs.get(key)
        if ref is None:
            ref = self._remember(key)
        idem = hashlib.sha1(idempotency_key.encode()).hexdigest()[:20] if idempotency_key else ""
        reply, resets_at = await self._reply(ref, tenant_id, units, consume, idem)
        if reply is None:
            self._count("", "not_found")
            return 404, _NOT_FOUND_BODY, []
        code, product = _text(reply[0]), _text(reply[4])
        self._count(product, code)
        if reply[3] == 1:
            self._near_limit.inc((product,))
        if code == "ok":  # the common answer: rendered straight from the reply
            if reply[1]:  # consumed (an idempotent replay marks a bucket with nothing new: harmless)
                self.dirty.add(ref.bucket)
            return 200, fastpath.render_validation(reply, resets_at), []
        outcome = Outcome(reply, resets_at)
        status = DENIAL_STATUS[code]
        return status, outcome.body, self._limit_headers(outcome) if status == 429 else []

    def _remember(self, key: str) -> LicenseRef:
        if len(self._refs) >= _REF_CACHE_SIZE:
            self._refs.clear()
        ref = self._refs[key] = LicenseRef(key)
        return ref

    async def run(self, ref: LicenseRef, tenant_id: str, units: int, consume: bool, idem: str = "") -> Outcome | None:
        """The validate script's answer, decoded (None: no such key for this tenant)."""
        reply, resets_at = await self._reply(ref, tenant_id, units, consume, idem)
        return None if reply is None else Outcome(reply, resets_at)

    async def _reply(self, ref: LicenseRef, tenant_id: str, units: int, consume: bool,
                     idem: str) -> tuple[list | None, tuple]:
        """The validate script's reply (None: no such key for this tenant) and the ISO ends of the
        windows it counted in, filling metadata and counters from Postgres when Redis lacks them."""
        packed_clock, resets_at = self._packed_clock(int(self._clock.now()))
        args = [tenant_id, units, 1 if consume else 0, idem, packed_clock]
        for _ in range(5):
            reply = await self.runner.run(VALIDATE, ref.validate_keys, args)
            head = reply[0]
            if head == b"miss":
                await self._fill_meta(ref, reply[1])
            elif head == b"fill":
                await self._fill_used(ref, int(reply[1]))
            elif head == b"nf":
                return None, resets_at
            else:
                return reply, resets_at
        raise RuntimeError("license metadata kept changing during validation")

    def _packed_clock(self, now: int) -> tuple[bytes, tuple]:
        """The script's clock argument (msgpack: now, day yyyymmdd, each window's start and end),
        and the windows' ends as ISO text: the same for a whole second."""
        cached_at, packed, resets_at = self._clock_cache
        if cached_at != now:
            day = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%d").encode()
            bounds = [fastpath.window_bounds(now, period) for period in fastpath.PERIODS]
            packed = (_msgpack_uint(now) + bytes([0xA0 | len(day)]) + day  # fixstr: 8 bytes
                      + b"".join(_msgpack_uint(edge) for pair in bounds for edge in pair))
            resets_at = tuple(iso_utc(end).encode() for _, end in bounds)
            self._clock_cache = (now, packed, resets_at)
        return packed, resets_at

    def _limit_headers(self, outcome: Outcome) -> list:
        """Retry-After, X-RateLimit-*, and the IETF RateLimit / RateLimit-Policy fields."""
        name, limit, remaining, window = outcome.named_limit()
        reset_at = str(int(self._clock.now()) + outcome.retry_after).encode()
        policy = f'"{name}";q={limit}' + (f";w={window}" if window else "")
        return [
            (b"retry-after", str(max(outcome.retry_after, 1)).encode()),
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(remaining).encode()),
            (b"x-ratelimit-reset", reset_at),
            (b"ratelimit", f'"{name}";r={remaining};t={outcome.retry_after}'.encode()),
            (b"ratelimit-policy", policy.encode()),
        ]

    def _count(self, product: str, code: str) -> None:
        self._validations.inc((product, "allowed" if code == "ok" else "denied", code))

    # -- cache fills --------------------------------------------------------------------------

    async def _fill_meta(self, ref: LicenseRef, generation) -> None:
        async with self.services.pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT l.id, l.tenant_id, l.revoked_at, l.expires_at, l.max_api_calls, l.used_offset, p.name,
                          ARRAY(SELECT f.name FROM features f WHERE f.product_id = l.product_id ORDER BY f.code) AS features
                   FROM api_licenses l JOIN products p ON p.id = l.product_id WHERE l.key_digest = $1""", ref.digest)
        if row is None:
            fields = [META_FORMAT, "0"]
            ttl = NEGATIVE_TTL
        else:  # the layout apilicense_validate.lua unpacks
            rules, passthrough = fastpath.compile_rules(list(row["features"]))
            fields = [META_FORMAT, "1", row["id"], str(row["tenant_id"]), "1" if row["revoked_at"] else "0",
                      int(row["expires_at"].timestamp()) if row["expires_at"] else 0,
                      row["max_api_calls"] if row["max_api_calls"] is not None else -1, row["used_offset"],
                      orjson.dumps(passthrough), row["name"], iso_utc(row["expires_at"]) if row["expires_at"] else "",
                      *_window_limits(rules)]
            ttl = META_TTL
        await self.runner.run(FILL_META, [ref.meta, ref.gen], [generation, ttl, *fields])

    async def _fill_used(self, ref: LicenseRef, license_id: int) -> None:
        for _ in range(5):
            async with self.services.pool.acquire() as conn:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    total = await conn.fetchval("SELECT used_total FROM api_licenses WHERE id = $1", license_id)
                    applied = await conn.fetch("SELECT epoch, last_seq FROM api_flush_state WHERE bucket = $1",
                                               ref.bucket)
            snapshot = ",".join(f"{r['epoch']}:{r['last_seq']}" for r in applied)
            p = ref.prefix
            done = await self.runner.run(FILL_USED, [f"{p}c:{license_id}", f"{p}pending", f"{p}flushing", f"{p}applied"],
                                         [license_id, total or 0, snapshot])
            if int(done) == 1:
                return
        raise RuntimeError("could not rebuild a usage counter: flushes kept landing")

    async def prime(self, ref: LicenseRef, license_id: int) -> None:
        """Ready a just-created license: counters at 0, no stale negative cache entry."""
        await self.runner.run(PRIME, [f"{ref.prefix}c:{license_id}", ref.meta, ref.gen], [])

    async def invalidate(self, ref: LicenseRef) -> None:
        await self.runner.run(INVALIDATE, [ref.meta, ref.gen], [])

    async def lifetime_total(self, ref: LicenseRef, license_id: int) -> int:
        """Units the license ever consumed, unflushed ones included (rebuilt from Postgres if missing)."""
        for _ in range(5):
            total = await self.runner.run(TOTAL, [f"{ref.prefix}c:{license_id}"], [])
            if total is not None:
                return int(total)
            await self._fill_used(ref, license_id)
        raise RuntimeError("could not read a usage counter")

    async def reset_windows(self, ref: LicenseRef, license_id: int, periods: list[str]) -> int:
        """Zero the current windows of `periods`; returns how many had counted something."""
        indexes = [fastpath.PERIODS.index(period) for period in periods]
        return int(await self.runner.run(RESET, [f"{ref.prefix}c:{license_id}"], indexes))
