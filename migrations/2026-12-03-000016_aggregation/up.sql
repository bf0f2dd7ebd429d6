-- Aggregation on `/mcp`: how a server's tools and prompts are named there (`always` `<server>_<name>`,
-- `on_conflict` the bare name unless another server of the tenant offers it, `never` the bare name) and its
-- preference among servers offering the same name (lower first).
ALTER TABLE servers
    ADD COLUMN name_prefix text NOT NULL DEFAULT 'always'
        CHECK (name_prefix IN ('always', 'on_conflict', 'never')),
    ADD COLUMN priority integer NOT NULL DEFAULT 0;

-- SHA-256 of the last successful discovery's canonical content (protocol version, capabilities, server
-- info and every list): an unchanged rediscovery rewrites nothing and publishes nothing. NULL for
-- discoveries stored before it was kept (the next successful one sets it).
ALTER TABLE server_discovery ADD COLUMN catalog_digest bytea NULL;
