-- The headers each webhook attempt was sent with (signatures included, never a secret), so the
-- admin UI's delivery detail shows the request as sent. NULL for attempts made before this.
ALTER TABLE webhook_attempts ADD COLUMN request_headers jsonb;
