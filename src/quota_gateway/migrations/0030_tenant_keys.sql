-- Each tenant's RSA key pairs. Private keys are AES-GCM encrypted under a key derived from the
-- master key; rotation adds a key and keeps the old ones for verification.
CREATE TABLE tenant_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kid          text NOT NULL UNIQUE,
    public_pem   text NOT NULL,
    private_enc  bytea NOT NULL,                -- nonce (12 bytes) || AES-GCM ciphertext
    active       boolean NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant_id) WHERE active;
