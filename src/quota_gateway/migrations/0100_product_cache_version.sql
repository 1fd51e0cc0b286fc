-- A product's metadata is cached once per Redis bucket and shared by its API keys there: raised on
-- every change (name, features) so a cache fill that read the product before the change is refused.
ALTER TABLE products ADD COLUMN cache_version bigint NOT NULL DEFAULT 0;
