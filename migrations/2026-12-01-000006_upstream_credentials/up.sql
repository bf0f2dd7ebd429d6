-- How the gateway authenticates to upstream MCP servers: at most one credential per server and one per
-- instance (an instance's own replaces its server's). `kind` names the mechanism, `config` holds what may
-- be shown (e.g. the header name), and `sealed` the secret part as AES-256-GCM under --secrets-key
-- (version byte, nonce, ciphertext and tag of a JSON object such as {"value": "..."}). Secrets are never
-- stored in clear and never returned by the REST API; they reach proxies only on the routing stream.
-- New mechanisms (OAuth client credentials, token exchange) are new `kind` values with their own JSON.
CREATE TABLE upstream_credentials (
    id uuid PRIMARY KEY,
    server_id uuid NULL REFERENCES servers (id) ON DELETE CASCADE,
    instance_id uuid NULL REFERENCES instances (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('static_header')),
    config jsonb NOT NULL,
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT upstream_credentials_one_owner CHECK (num_nonnulls(server_id, instance_id) = 1),
    CONSTRAINT upstream_credentials_server_key UNIQUE (server_id),
    CONSTRAINT upstream_credentials_instance_key UNIQUE (instance_id)
);
