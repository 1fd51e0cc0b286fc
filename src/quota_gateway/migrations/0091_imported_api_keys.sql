-- API keys issued by another licensing server and imported here (POST /api/apilicense/import):
-- stored like ours (SHA-256 of the canonical form), marked so listings can tell them apart.
ALTER TABLE api_licenses ADD COLUMN imported boolean NOT NULL DEFAULT false;
