-- Time-driven license notices: `license.expired` events and renewal reminders, each at most once
-- per license (the primary key is the claim: concurrent schedulers insert, one wins).
CREATE TABLE license_notices (
    license_id  bigint NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    kind        text NOT NULL,                 -- 'expired' or 'reminder:<days>'
    tenant_id   uuid NOT NULL,
    at          timestamptz NOT NULL,
    PRIMARY KEY (license_id, kind)
);

-- Renewal reminder days per product (absent: 7 and 1 days before expiry; empty: none).
CREATE TABLE product_reminders (
    product_id  bigint PRIMARY KEY REFERENCES products(id) ON DELETE CASCADE,
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    days        integer[] NOT NULL
);

CREATE INDEX licenses_live_expiry ON licenses (expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;
