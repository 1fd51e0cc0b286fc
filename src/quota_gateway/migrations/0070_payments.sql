-- Payments → license delivery (Stripe, PayPal).

-- Each tenant's provider configuration: mappings in the clear, secrets AES-GCM encrypted
-- under a key derived from the master key and the tenant id (crypto.encrypt_secret).
CREATE TABLE payment_settings (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider     text NOT NULL CHECK (provider IN ('stripe', 'paypal')),
    settings     jsonb NOT NULL,
    secrets_enc  bytea,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);

-- Every verified delivery, once per provider event id: a duplicate delivery inserts nothing
-- and so enqueues nothing.
CREATE TABLE payment_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider      text NOT NULL,
    event_id      text NOT NULL,
    event_type    text NOT NULL,
    payload       jsonb NOT NULL,
    received_at   timestamptz NOT NULL,
    processed_at  timestamptz,
    outcome       text,
    UNIQUE (tenant_id, provider, event_id)
);

-- One row per fulfilled payment: the Stripe Checkout Session, the PayPal capture. The unique
-- key is what makes fulfilment exactly once, whichever event (or how many) carried it.
CREATE TABLE payment_purchases (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider          text NOT NULL,
    purchase_ref      text NOT NULL,          -- cs_... / PayPal capture id
    payment_ref       text,                   -- pi_... / PayPal capture id: what a refund names
    subscription_ref  text,                   -- sub_...: what renewals and cancellations name
    email             text NOT NULL DEFAULT '',
    event_id          text NOT NULL,
    amount            text,                   -- PayPal capture amount, to tell full refunds from partial ones
    created_at        timestamptz NOT NULL,
    refunded_at       timestamptz,
    cancelled_at      timestamptz,
    UNIQUE (tenant_id, provider, purchase_ref)
);
CREATE INDEX payment_purchases_payment ON payment_purchases (tenant_id, provider, payment_ref);
CREATE INDEX payment_purchases_subscription ON payment_purchases (tenant_id, provider, subscription_ref);

-- The licenses a purchase produced, with the mapping's rules as they were at purchase time.
CREATE TABLE payment_licenses (
    purchase_id  bigint NOT NULL REFERENCES payment_purchases(id) ON DELETE CASCADE,
    license_id   bigint NOT NULL REFERENCES licenses(id) ON DELETE CASCADE,
    period_days  integer,                     -- a renewal extends by this; NULL: perpetual
    on_refund    text NOT NULL CHECK (on_refund IN ('revoke', 'expire')),
    on_cancel    text NOT NULL CHECK (on_cancel IN ('revoke', 'expire')),
    PRIMARY KEY (purchase_id, license_id)
);

-- A subscription invoice extends its licenses once, however often it is announced.
CREATE TABLE payment_renewals (
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider     text NOT NULL,
    invoice_ref  text NOT NULL,
    purchase_id  bigint NOT NULL REFERENCES payment_purchases(id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, provider, invoice_ref)
);

-- PayPal orders seen in CHECKOUT.ORDER.* events: a PAYMENT.CAPTURE.COMPLETED names only its
-- order, so the buyer and the items come from here.
CREATE TABLE payment_orders (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    provider    text NOT NULL,
    order_ref   text NOT NULL,
    payload     jsonb NOT NULL,
    PRIMARY KEY (tenant_id, provider, order_ref)
);
