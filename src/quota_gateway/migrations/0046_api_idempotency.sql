-- First replies to consumes with an Idempotency-Key, written behind with the usage they consumed,
-- so a retry after Redis lost its data replays instead of consuming again (kept a day, as in Redis).
CREATE TABLE api_idempotency (
    license_id  bigint NOT NULL REFERENCES api_licenses(id) ON DELETE CASCADE,
    idem        text NOT NULL,        -- the key's hash, as in the Redis key name
    reply       bytea NOT NULL,       -- the validate script's reply, msgpack
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (license_id, idem)
);
CREATE INDEX api_idempotency_created ON api_idempotency (created_at);
