-- Live floating leases are rebuilt from the history when Redis lost them: a renewal names the
-- lease it replaced, and the rebuild finds a key's leases by their expiry.
ALTER TABLE lease_history ADD COLUMN previous_lease_id text;
CREATE INDEX lease_history_live ON lease_history (floating_key_id, expires_at) WHERE action IN ('obtained', 'renewed');
