-- The incident state last written to ServiceNow for a ticket ('6' Resolved after a resolve,
-- '2' In Progress after a reopen; NULL: never written, the incident keeps the state it was made
-- with), so the sync job mirrors a resolve or reopen exactly once, as it does the urgency.
ALTER TABLE support_tickets ADD COLUMN snow_incident_state text;
