-- The write-behind updates used_total of every key in use at each flush. Room left on each page
-- lets those updates stay on the page (HOT: no new entries in the table's five indexes); a full
-- page (COPY or a long run of inserts fills them) turns each key's first update into a new tuple
-- elsewhere plus an entry in every index.
ALTER TABLE api_licenses SET (fillfactor = 80);
