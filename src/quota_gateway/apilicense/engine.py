"""The quota engine: one Lua call per validation; metadata and counters filled from Postgres on a
miss, every miss of one loop tick together (missfill.py)."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from .. import fastpath
from ..clock import iso_utc
from ..scripts import ScriptRunner
from . import keyspace
from .keyspace import ANSWER_MIN_LEN, VALIDATE, Answer, LicenseRef, answer_head
from .missfill import MissBatcher

if TYPE_CHECKING:
    from ..services import Services

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
# First replies of idempotent consumes written behind (restored with the counters after Redis lost them).
_KEPT_REPLIES = """SELECT idem, reply, GREATEST(1, 86400 - extract(epoch FROM now() - created_at))::int AS ttl
                   FROM api_idempotency WHERE license_id = $1 AND created_at > now() - interval '1 day'"""


def _outcome_labels(key: tuple[str, ...]) -> tuple[str, ...]:
    """(tenant id, product name, code) as counted -> (product, result, code) as /metrics shows it."""
    _, product, code = key
    return product, "allowed" if code == "ok" else "denied", code


log = logging.getLogger("quota_gateway.apilicense")


class QuotaEngine:
    def __init__(self, services: Services, runner: ScriptRunner) -> None:
        self.services = services
        self.runner = runner
        self._clock = services.clock
        self._clock_cache: tuple[int, bytes, tuple, tuple] = (-1, b"", (), ())
        metrics = services.metrics
        # counted per (tenant id, product name, outcome code): /metrics shows product, result and code;
        # the admin analytics read a tenant's own (a product name may be two tenants')
        self._validations = metrics.counts("qg_apilicense_validations", "API-key validations by product and outcome",
                                           ("product", "result", "code"), exposed=_outcome_labels)
        self._near_limit = metrics.counts("qg_apilicense_near_limit",
                                          "validations of keys with >= 80% of a window or the quota used", ("product",))
        self._refs: dict[str, LicenseRef] = {}  # normalised key -> where it lives (hashing once per key)
        self.dirty: set[int] = set()  # buckets with usage to write behind (shared with the flusher)
        self.misses = MissBatcher(services.pool, runner)  # metadata misses of one tick, filled together

    # -- the hot call -------------------------------------------------------------------------

    async def validate(self, tenant_id: str, api_key_raw: str, units: int, consume: bool,
                       idempotency_key: str | None) -> tuple[int, bytes, list]:
        """(HTTP status, JSON body, extra headers) for one validation."""
        key = fastpath.normalize_api_key(api_key_raw)
        if key is None:
            # Not one of ours: a key imported from another licensing server has no checksum to
            # check, so it is looked up by its digest in the same single script call. A mistyped
            # key of ours (qgk_...) is never taken for one: it is refused without I/O.
            key = fastpath.normalize_imported_key(api_key_raw)
            if key is None:
                self._count(tenant_id, "", "not_found")
                return 404, _NOT_FOUND_BODY, []
        ref = self._refs.get(key)
        if ref is None:
            ref = self._remember(key)
        idem = hashlib.sha1(idempotency_key.encode()).hexdigest()[:20] if idempotency_key else ""
        reply, clock = await self._reply(ref, tenant_id, units, consume, idem)
        if reply is None:
            self._count(tenant_id, "", "not_found")
            return 404, _NOT_FOUND_BODY, []
        code, consumed, near_limit, product = answer_head(reply)
        self._count(tenant_id, product, code)
        if near_limit:
            self._near_limit.inc((product,))
        if code == "ok":
            status = 200
            if consumed:  # (an idempotent replay marks a bucket with nothing new: harmless)
                self.dirty.add(ref.bucket)
        else:
            status = DENIAL_STATUS[code]
        # Body and rate-limit fields are rendered straight from the reply by the compiled fast path.
        now, _, resets_at, window_ends = clock
        return status, fastpath.render_validation(reply, resets_at), fastpath.limit_headers(reply, now, window_ends)

    def _remember(self, key: str) -> LicenseRef:
        if len(self._refs) >= _REF_CACHE_SIZE:
            self._refs.clear()
        ref = self._refs[key] = LicenseRef(key)
        return ref

    async def run(self, ref: LicenseRef, tenant_id: str, units: int, consume: bool, idem: str = "") -> Answer | None:
        """The validate script's answer, decoded (None: no such key for this tenant)."""
        reply, clock = await self._reply(ref, tenant_id, units, consume, idem)
        return None if reply is None else Answer(reply, clock[2])

    async def _reply(self, ref: LicenseRef, tenant_id: str, units: int, consume: bool,
                     idem: str) -> tuple[list | None, tuple[int, bytes, tuple, tuple]]:
        """The validate script's answer (None: no such key for this tenant) and the clock it ran
        with (see _packed_clock), filling metadata and counters from Postgres when Redis lacks them."""
        clock = self._packed_clock(int(self._clock.now()))
        args = [tenant_id, units, 1 if consume else 0, idem, clock[1]]
        reply = await self.runner.run(VALIDATE, ref.validate_keys, args)
        for _ in range(5):
            if len(reply) >= ANSWER_MIN_LEN:
                return reply, clock
            need = keyspace.validate_need(reply)
            if need.kind == keyspace.NEEDS_META:  # filled, then validated again, in one script call
                reply = await self.misses.fill(ref, need.value, args)
                continue
            if need.kind == keyspace.NEEDS_USAGE:
                await self._fill_used(ref, int(need.value))
            else:
                return None, clock
            reply = await self.runner.run(VALIDATE, ref.validate_keys, args)
        raise RuntimeError("license metadata kept changing during validation")

    def _packed_clock(self, now: int) -> tuple[int, bytes, tuple, tuple]:
        """(now, the script's clock argument, the windows' ends as ISO text, and as epoch seconds):
        the same for a whole second."""
        cached = self._clock_cache
        if cached[0] != now:
            day = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d").encode()
            bounds = [fastpath.window_bounds(now, period) for period in fastpath.PERIODS]
            resets_at = tuple(iso_utc(end).encode() for _, end in bounds)
            cached = (now, keyspace.packed_clock(now, day, bounds), resets_at, tuple(end for _, end in bounds))
            self._clock_cache = cached
        return cached

    def _count(self, tenant_id: str, product: str, code: str) -> None:
        self._validations.inc((tenant_id, product, code))

    def validation_counts(self) -> dict[tuple[str, ...], int]:
        """(product name, result, code) -> validations this process answered since it started."""
        return self._validations.folded()

    def tenant_validation_counts(self, tenant_id: str) -> dict[str, int]:
        """Outcome code -> validations of this tenant's keys this process answered since it started."""
        totals: dict[str, int] = {}
        for (tenant, _, code), n in self._validations.counts.items():
            if tenant == tenant_id:
                totals[code] = totals.get(code, 0) + n
        return totals

    # -- cache fills --------------------------------------------------------------------------

    async def _fill_used(self, ref: LicenseRef, license_id: int) -> None:
        """Rebuild a license's counters (and the idempotent replies lost with them) from Postgres."""
        for _ in range(5):
            async with self.services.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                                              readonly=True):
                row = await conn.fetchrow("SELECT used_total, used_offset FROM api_licenses WHERE id = $1", license_id)
                applied = await conn.fetch("SELECT epoch, last_seq FROM api_flush_state WHERE bucket = $1",
                                           ref.bucket)
                replies = await conn.fetch(_KEPT_REPLIES, license_id)
            total, offset = (row["used_total"], row["used_offset"]) if row is not None else (0, 0)
            snapshot = ",".join(f"{r['epoch']}:{r['last_seq']}" for r in applied)
            done = await self.runner.run(
                keyspace.FILL_USED, keyspace.fill_used_keys(ref),
                [license_id, total, snapshot, f"{ref.prefix}ir:{license_id}:",
                 *(value for r in replies for value in (r["idem"], r["reply"], r["ttl"]))])
            rebuilt = keyspace.fill_used_rebuilt(done)
            if rebuilt is not None and rebuilt < offset:
                await self._lower_offset(ref, license_id, offset, rebuilt)
            if keyspace.fill_used_done(done):
                return
        raise RuntimeError("could not rebuild a usage counter: flushes kept landing")

    async def _lower_offset(self, ref: LicenseRef, license_id: int, offset: int, rebuilt: int) -> None:
        """A lifetime reset set the offset to a total that included usage Redis then lost unflushed:
        that usage never reaches Postgres, so the offset comes down to what could be rebuilt (else
        "used" would read below zero and grant the lost units again). Only if no reset moved the
        offset since."""
        async with self.services.pool.acquire() as conn:
            await conn.execute("UPDATE api_licenses SET used_offset = $3 WHERE id = $1 AND used_offset = $2",
                               license_id, offset, rebuilt)
        await self.invalidate(ref)

    # -- management -----------------------------------------------------------------------------

    async def prime(self, ref: LicenseRef) -> None:
        """Ready a just-created license: counters at 0, no stale negative cache entry."""
        await self.runner.run(keyspace.PRIME, [ref.entry], [])

    async def invalidate(self, ref: LicenseRef) -> None:
        await invalidate(self.runner, ref)

    async def lifetime_total(self, ref: LicenseRef, license_id: int) -> int:
        """Units the license ever consumed, unflushed ones included (rebuilt from Postgres if missing)."""
        for _ in range(5):
            total = keyspace.lifetime_total(await self.runner.run(keyspace.TOTAL, [ref.entry], []))
            if total is not None:
                return total
            await self._fill_used(ref, license_id)
        raise RuntimeError("could not read a usage counter")

    async def reset_windows(self, ref: LicenseRef, periods: list[str]) -> int:
        """Zero the current windows of `periods`; returns how many had counted something."""
        return int(await self.runner.run(keyspace.RESET, [ref.entry], keyspace.period_indexes(periods)))


async def invalidate(runner: ScriptRunner, ref: LicenseRef) -> None:
    """Drop a key's cached metadata: every gateway reads it from Postgres on its next request."""
    await runner.run(keyspace.INVALIDATE, [ref.entry], [])
