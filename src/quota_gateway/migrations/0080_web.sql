-- Web front end: admin users, e-mailed sign-in codes, one-time sign-in links, browser sessions,
-- per-tenant portal branding, and the country (never the address) of each activation.
CREATE TABLE admin_users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email          text NOT NULL,                 -- stored lower-cased
    created_at     timestamptz NOT NULL,
    last_login_at  timestamptz,
    UNIQUE (tenant_id, email)
);

-- A 6-digit code mailed to an address. Only an HMAC of the code is kept (a bare digest of a
-- 6-digit code is reversed by trying a million values); the client address is kept the same way,
-- only to bound how many codes one client may ask for.
CREATE TABLE web_login_codes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    audience      text NOT NULL CHECK (audience IN ('admin', 'portal')),
    email         text NOT NULL,
    code_digest   bytea NOT NULL,
    client_digest bytea NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    used_at       timestamptz
);
CREATE INDEX web_login_codes_email ON web_login_codes (tenant_id, audience, email, created_at);
CREATE INDEX web_login_codes_client ON web_login_codes (client_digest, created_at);

-- One-time admin sign-in links (printed by `serve` on a first start, or by `admin link`).
CREATE TABLE web_signin_links (
    token_digest   bytea PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    admin_user_id  bigint NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);

-- Browser sessions: the cookie carries a signed random id, the row only its digest.
CREATE TABLE web_sessions (
    id_digest      bytea PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    audience       text NOT NULL CHECK (audience IN ('admin', 'portal')),
    admin_user_id  bigint REFERENCES admin_users(id) ON DELETE CASCADE,
    email          text NOT NULL,
    created_at     timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    ended_at       timestamptz
);
CREATE INDEX web_sessions_tenant ON web_sessions (tenant_id);

CREATE TABLE tenant_branding (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    display_name  text NOT NULL DEFAULT '',
    colour        text NOT NULL DEFAULT '#1d4ed8',   -- #rrggbb, checked for contrast with white
    logo          bytea,                             -- PNG or JPEG (checked by magic bytes), never SVG
    logo_type     text
);

ALTER TABLE activations ADD COLUMN country text;      -- ISO 3166 alpha-2 of the client address
CREATE INDEX activations_tenant_time ON activations (tenant_id, activated_at);
CREATE INDEX licenses_email ON licenses (tenant_id, lower(email));
