-- Several instances per server (each its own routing resource), and the per-server balancing policy.
CREATE TABLE instances (
    id uuid PRIMARY KEY,
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    endpoint_url text NOT NULL,
    weight integer NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 10000),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Insertion order: a server's first instance is the one its `endpoint_url` shows.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instances_server_endpoint_key UNIQUE (server_id, endpoint_url)
);
CREATE INDEX instances_server_seq_idx ON instances (server_id, seq);

-- Existing servers keep their one instance under the server's id, as proxies already know it.
INSERT INTO instances (id, server_id, endpoint_url, weight, created_at)
SELECT id, id, endpoint_url, 1, created_at FROM servers ORDER BY created_at, id;

ALTER TABLE servers DROP COLUMN endpoint_url;
ALTER TABLE servers
    ADD COLUMN load_balancing text NOT NULL DEFAULT 'round_robin',
    ADD COLUMN hash_key text NULL,
    ADD COLUMN circuit_breaker jsonb NULL,
    ADD CONSTRAINT servers_load_balancing_check
        CHECK (load_balancing IN ('round_robin', 'weighted', 'least_connections', 'random', 'consistent_hash'));
