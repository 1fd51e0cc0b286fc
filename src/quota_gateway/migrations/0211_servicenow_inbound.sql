-- ServiceNow → tickets: the instance posts incident changes to /hooks/servicenow/{slug} with a
-- bearer token of the tenant's (only its SHA-256 is kept).
ALTER TABLE servicenow_settings ADD COLUMN inbound_token_digest bytea;
-- The incident's sys_mod_count of the last state taken from a post, and of our own last write:
-- a post not newer than either shows a state that is already followed or overwritten.
ALTER TABLE support_tickets ADD COLUMN snow_inbound_mod_count integer;
ALTER TABLE support_tickets ADD COLUMN snow_written_mod_count integer;
-- Replies that came from ServiceNow (never posted back as work notes), keyed by the journal
-- entry they came from, so a repeated post adds nothing.
ALTER TABLE support_messages ADD COLUMN from_servicenow boolean NOT NULL DEFAULT false;
ALTER TABLE support_messages ADD COLUMN snow_journal_key text;
CREATE UNIQUE INDEX support_messages_snow_journal_key ON support_messages (ticket_id, snow_journal_key)
    WHERE snow_journal_key IS NOT NULL;
