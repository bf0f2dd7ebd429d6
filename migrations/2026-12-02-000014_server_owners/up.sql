-- Who registered a server, as the admin API labels principals (`api-key:<id>`, `user:<id>`): a caller
-- holding `server_owner` manages the servers it owns. NULL for servers registered by the bootstrap admin
-- token or before owners were recorded; only administrators manage those.
ALTER TABLE servers ADD COLUMN owner text NULL;
