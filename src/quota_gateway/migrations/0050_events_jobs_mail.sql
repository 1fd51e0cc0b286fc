-- Work that leaves the request: a durable job queue, per-tenant SMTP and e-mail templates.

-- Outbox events get a public id (the webhook-id receivers deduplicate on). `delivered_at` now
-- means "fanned out to its subscribers" (webhook endpoints, in-process subscribers).
ALTER TABLE events ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid();
CREATE INDEX events_tenant ON events (tenant_id, id);

-- One row per background job. Workers claim due rows with FOR UPDATE SKIP LOCKED; a claimed row
-- is `running` until `locked_until`, after which another worker may take it over (the holder died).
CREATE TABLE jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind          text NOT NULL,
    payload       jsonb NOT NULL,
    dedupe_key    text,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    run_at        timestamptz NOT NULL,          -- '-infinity': as soon as possible
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL DEFAULT 5,
    locked_until  timestamptz,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE UNIQUE INDEX jobs_dedupe ON jobs (tenant_id, kind, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state = 'pending';
CREATE INDEX jobs_leased ON jobs (locked_until) WHERE state = 'running';
CREATE INDEX jobs_tenant ON jobs (tenant_id, kind, id);

-- Every attempt, written before the handler runs and completed after it.
CREATE TABLE job_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       bigint NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    outcome      text NOT NULL DEFAULT 'running'
                 CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted', 'deferred')),
    error        text
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

-- A tenant's own SMTP server (else the server-wide QG_SMTP_* default). The password is AES-GCM
-- encrypted under a key derived from QG_MASTER_KEY and the tenant id.
CREATE TABLE smtp_settings (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    host          text NOT NULL,
    port          integer NOT NULL,
    security      text NOT NULL CHECK (security IN ('none', 'starttls', 'tls')),
    username      text NOT NULL DEFAULT '',
    password_enc  bytea,
    from_address  text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A tenant's versions of the e-mail templates; a name without a row uses the built-in default.
CREATE TABLE email_templates (
    tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL,
    subject     text NOT NULL,
    text_body   text NOT NULL,
    html_body   text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Tenant-wide e-mail choices: where the tenant itself is told things, whether licenses are mailed.
CREATE TABLE tenant_mail_settings (
    tenant_id            uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    contact_email        text NOT NULL DEFAULT '',
    deliver_licenses     boolean NOT NULL DEFAULT false,
    customer_portal_url  text NOT NULL DEFAULT '',
    updated_at           timestamptz NOT NULL DEFAULT now()
);
