-- Outbound webhooks: endpoints, their signing secrets, one delivery per (endpoint, event), and
-- every attempt of it (the delivery log).
CREATE TABLE webhook_endpoints (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    url                   text NOT NULL,
    events                text[] NOT NULL,           -- event types, or '*'
    description           text NOT NULL DEFAULT '',
    enabled               boolean NOT NULL DEFAULT true,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    disabled_reason       text,
    disabled_at           timestamptz,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, id);

-- AES-GCM sealed `whsec_...` secrets. The current one has no expiry; a rotated-away one keeps
-- signing until `expires_at` (the overlap window), so receivers can switch without a gap.
CREATE TABLE webhook_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  bigint NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    secret_enc   bytea NOT NULL,
    hint         text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz
);
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id, id DESC);

CREATE TABLE webhook_deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    endpoint_id      bigint NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    sending_until    timestamptz,                -- an attempt is in flight (claimed) until then
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id DESC);

CREATE TABLE webhook_attempts (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       bigint NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt           integer NOT NULL,
    manual            boolean NOT NULL DEFAULT false,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    outcome           text NOT NULL DEFAULT 'sending'
                      CHECK (outcome IN ('sending', 'succeeded', 'failed', 'interrupted')),
    status_code       integer,
    latency_ms        integer,
    response_excerpt  text,
    error             text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
