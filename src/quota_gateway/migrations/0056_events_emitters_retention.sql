-- Quota notices: `api.quota.near_limit` / `api.quota.exhausted` raised once per crossing. The
-- primary key is the claim (concurrent or retried flushes insert, one wins); a lifetime reset
-- (new used_offset) or a changed quota starts a new round of notices.
CREATE TABLE api_quota_notices (
    license_id   bigint NOT NULL REFERENCES api_licenses(id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('near_limit', 'exhausted')),
    used_offset  bigint NOT NULL,
    quota        bigint NOT NULL,
    tenant_id    uuid NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (license_id, kind, used_offset, quota)
);

-- Periodic maintenance claimed across processes: a task runs when its row's `next_run_at` has
-- passed and this process moved it forward (one UPDATE wins per interval).
CREATE TABLE maintenance_runs (
    name         text PRIMARY KEY,
    next_run_at  timestamptz NOT NULL,
    last_run_at  timestamptz,
    last_result  jsonb
);

-- Retention: finished jobs, finished webhook deliveries and fanned-out events by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed');
CREATE INDEX webhook_deliveries_last_activity ON webhook_deliveries ((COALESCE(last_attempt_at, created_at)));
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX events_delivered ON events (delivered_at) WHERE delivered_at IS NOT NULL;

-- The delivery log filtered by state.
CREATE INDEX webhook_deliveries_endpoint_state ON webhook_deliveries (endpoint_id, state, id DESC);

-- Lease events name the client of a renewed, released or expired lease: found by its lease id.
CREATE INDEX lease_history_lease ON lease_history (floating_key_id, lease_id);
