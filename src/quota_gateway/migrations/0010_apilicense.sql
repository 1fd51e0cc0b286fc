-- API-key licenses (metered API access). Redis arbitrates quota; these rows are the record.
CREATE TABLE api_licenses (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id         bigint NOT NULL REFERENCES products(id) ON DELETE RESTRICT,
    key_digest         bytea NOT NULL UNIQUE,          -- SHA-256 of the canonical key
    bucket             integer NOT NULL,               -- Redis hash-tag bucket of the key
    key_hint           text NOT NULL,                  -- masked form for listings
    email              text NOT NULL DEFAULT '',
    client_name        text NOT NULL DEFAULT '',
    client_identifier  text NOT NULL DEFAULT '',
    max_api_calls      bigint,                         -- NULL: no lifetime quota
    expires_at         timestamptz,                    -- NULL: never expires
    revoked_at         timestamptz,
    used_total         bigint NOT NULL DEFAULT 0,      -- every unit ever consumed (write-behind)
    used_offset        bigint NOT NULL DEFAULT 0,      -- used_total at the last lifetime reset
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_licenses_tenant ON api_licenses (tenant_id, id);
CREATE INDEX api_licenses_client ON api_licenses (tenant_id, client_identifier);

CREATE TABLE api_usage_daily (
    license_id  bigint NOT NULL REFERENCES api_licenses(id) ON DELETE CASCADE,
    day         date NOT NULL,
    tenant_id   uuid NOT NULL,
    units       bigint NOT NULL,
    PRIMARY KEY (license_id, day)
);

-- Exactly-once write-behind: flush `seq` of a bucket is applied at most once. `epoch` names a
-- Redis incarnation, so numbering that restarts after Redis lost its data is never mistaken
-- for flushes already applied.
CREATE TABLE api_flush_state (
    bucket    integer NOT NULL,
    epoch     text NOT NULL,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (bucket, epoch)
);
CREATE INDEX api_licenses_product ON api_licenses (product_id);
