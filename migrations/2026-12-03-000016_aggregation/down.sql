ALTER TABLE server_discovery DROP COLUMN catalog_digest;
ALTER TABLE servers DROP COLUMN priority, DROP COLUMN name_prefix;
