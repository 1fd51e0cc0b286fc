-- Support tickets (a thread of messages each) and their sync to a ServiceNow instance.
CREATE TABLE support_tickets (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id            uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    product_id           bigint REFERENCES products(id) ON DELETE SET NULL,
    product_name         text NOT NULL,                -- as the customer sent it
    license_id           bigint REFERENCES licenses(id) ON DELETE SET NULL,
    activation_key_hint  text,                         -- masked key (the key itself is never stored)
    hardware_id          text,
    client_version       text,
    email                text NOT NULL,
    subject              text NOT NULL,
    priority             text NOT NULL CHECK (priority IN ('Low', 'Medium', 'High', 'Critical')),
    status               text NOT NULL CHECK (status IN ('open', 'resolved')),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    resolved_at          timestamptz,
    reopened_at          timestamptz,
    -- ServiceNow: none (not enabled when the ticket was made), pending, synced, failed
    snow_state           text NOT NULL DEFAULT 'none' CHECK (snow_state IN ('none', 'pending', 'synced', 'failed')),
    snow_sys_id          text,
    snow_number          text,
    snow_urgency         text,                         -- urgency last written to the incident
    snow_create_sent_at  timestamptz,                  -- a create was sent: look up by correlation_id before another
    snow_last_error      text,
    snow_attempts        integer NOT NULL DEFAULT 0,
    snow_synced_at       timestamptz
);
CREATE INDEX support_tickets_list ON support_tickets (tenant_id, id DESC);
CREATE INDEX support_tickets_status ON support_tickets (tenant_id, status, priority);

CREATE TABLE support_messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    ticket_id       bigint NOT NULL REFERENCES support_tickets(id) ON DELETE CASCADE,
    author          text NOT NULL CHECK (author IN ('customer', 'staff')),
    author_email    text NOT NULL DEFAULT '',
    body            text NOT NULL,                     -- stored as sent (HTML is text; escaped where shown)
    created_at      timestamptz NOT NULL,
    snow_pending    boolean NOT NULL DEFAULT false,    -- a work note still to post
    snow_noted_at   timestamptz
);
CREATE INDEX support_messages_thread ON support_messages (ticket_id, id);
CREATE INDEX support_messages_snow_pending ON support_messages (ticket_id, id) WHERE snow_pending;

-- One ServiceNow connection per tenant; secrets AES-GCM encrypted under the tenant's derived key.
CREATE TABLE servicenow_settings (
    tenant_id           uuid PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    instance_url        text NOT NULL,
    auth_type           text NOT NULL CHECK (auth_type IN ('basic', 'oauth')),
    username            text,
    password_enc        bytea,
    client_id           text,
    client_secret_enc   bytea,
    table_name          text NOT NULL DEFAULT 'incident',
    enabled             boolean NOT NULL DEFAULT true,
    revision            integer NOT NULL DEFAULT 1,   -- bumped on every save: cached OAuth tokens follow it
    updated_at          timestamptz NOT NULL
);
