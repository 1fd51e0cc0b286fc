-- Activation-key licensing: plans, license keys, device activations, trials, device history, events.
CREATE TABLE plans (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name           text NOT NULL,
    duration_days  integer,                 -- NULL: perpetual
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE licenses (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id        bigint NOT NULL REFERENCES products(id) ON DELETE RESTRICT,
    plan_id           bigint REFERENCES plans(id) ON DELETE SET NULL,
    key_digest        bytea NOT NULL UNIQUE,       -- SHA-256 of the canonical key
    key_hint          text NOT NULL,               -- masked, for listings
    kind              text NOT NULL CHECK (kind IN ('standard', 'corporate')),
    max_seats         integer,                     -- standard: 1; corporate: N or NULL (unlimited)
    email             text NOT NULL DEFAULT '',
    features          text[],                      -- NULL: every feature of the product
    expires_at        timestamptz,
    revoked_at        timestamptz,
    last_deactivated_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX licenses_tenant ON licenses (tenant_id, id);

CREATE TABLE activations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    license_id      bigint NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    hardware_id     text NOT NULL,                -- upper-cased: compared case-insensitively
    email           text NOT NULL DEFAULT '',
    client_version  text,
    offline         boolean NOT NULL DEFAULT false,
    activated_at    timestamptz NOT NULL,
    deactivated_at  timestamptz
);
CREATE UNIQUE INDEX activations_live ON activations (license_id, hardware_id) WHERE deactivated_at IS NULL;

-- First sighting of a device per product: trials run from here.
CREATE TABLE device_sightings (
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id     bigint NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    hardware_id    text NOT NULL,
    first_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, product_id, hardware_id)
);

CREATE TABLE device_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    hardware_id  text NOT NULL,
    license_id   bigint,
    product_id   bigint,
    action       text NOT NULL,
    at           timestamptz NOT NULL,
    details      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX device_history_lookup ON device_history (tenant_id, hardware_id, id DESC);

-- Domain events outbox: written in the same transaction as the change, delivered later
-- (webhooks, e-mail) by whoever reads undelivered rows.
CREATE TABLE events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    type          text NOT NULL,
    data          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX events_undelivered ON events (id) WHERE delivered_at IS NULL;
