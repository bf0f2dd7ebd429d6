-- The registry of MCP servers and the version counter of the routing table the proxies receive.
CREATE TABLE servers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    endpoint_url text NOT NULL,
    transport_type text NOT NULL,
    description text NULL,
    tags text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT servers_name_key UNIQUE (name),
    CONSTRAINT servers_transport_type_check CHECK (transport_type IN ('streamable_http', 'sse'))
);

-- One row: bumped in the same transaction as every change to routing-relevant data, so a reader that sees
-- a new version also sees the change, and every control-plane replica can notice it by polling one row.
CREATE TABLE routing_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);

INSERT INTO routing_state (id, version) VALUES (1, 1);
