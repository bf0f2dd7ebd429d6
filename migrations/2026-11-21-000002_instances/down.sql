ALTER TABLE servers DROP COLUMN load_balancing, DROP COLUMN hash_key, DROP COLUMN circuit_breaker;
ALTER TABLE servers ADD COLUMN endpoint_url text NOT NULL DEFAULT '';
UPDATE servers s SET endpoint_url = i.endpoint_url
FROM (SELECT DISTINCT ON (server_id) server_id, endpoint_url FROM instances ORDER BY server_id, seq) i
WHERE i.server_id = s.id;
ALTER TABLE servers ALTER COLUMN endpoint_url DROP DEFAULT;
DROP TABLE instances;
