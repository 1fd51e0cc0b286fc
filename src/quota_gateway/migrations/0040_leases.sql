-- Floating licenses: customers, pool keys with a lease limit, and the lease history.
CREATE TABLE customers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL,
    contact     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_tenant ON customers (tenant_id, id);

CREATE TABLE floating_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    customer_id  bigint NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
    key_digest   bytea NOT NULL UNIQUE,
    key_hint     text NOT NULL,
    lease_limit  integer NOT NULL CHECK (lease_limit > 0),
    products     jsonb NOT NULL,          -- [{productId, features: [names]}]
    expires_at   timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX floating_keys_tenant ON floating_keys (tenant_id, id);

CREATE TABLE lease_history (
    floating_key_id  bigint NOT NULL REFERENCES floating_keys(id) ON DELETE CASCADE,
    entry_id         text NOT NULL,       -- Redis stream entry id: a re-drained entry is skipped
    tenant_id        uuid NOT NULL,
    lease_id         text NOT NULL,
    client_id        text NOT NULL DEFAULT '',
    action           text NOT NULL,       -- obtained, renewed, released, expired
    at               timestamptz NOT NULL,
    expires_at       timestamptz,
    PRIMARY KEY (floating_key_id, entry_id)
);
