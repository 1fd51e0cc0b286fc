-- Products and their features: one model shared by API-key licensing and activation licensing.
CREATE TABLE products (
    id                            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id                     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                          text NOT NULL,
    description                   text NOT NULL DEFAULT '',
    trial_days                    integer NOT NULL DEFAULT 0,
    minimum_required_version      text,
    deactivation_cooldown_hours   integer NOT NULL DEFAULT 0,
    created_at                    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE features (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id   bigint NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    code         integer NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (product_id, code),
    UNIQUE (product_id, name)
);
CREATE INDEX features_tenant ON features (tenant_id);
