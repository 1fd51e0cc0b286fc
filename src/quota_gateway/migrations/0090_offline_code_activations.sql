-- An offline activation code is the client's only handle on its seat: the SDK's deactivate_smart
-- sends the code itself as licenseKey. SHA-256 of the code's bytes (payload and signature) finds
-- the activation it was issued for.
ALTER TABLE activations ADD COLUMN offline_code_digest bytea;
CREATE INDEX activations_offline_code ON activations (tenant_id, offline_code_digest)
    WHERE offline_code_digest IS NOT NULL;
