-- API keys: machine credentials. Only the SHA-256 digest of each key is stored (the key is shown once, when
-- it is created); proxies receive the digests through the routing table, so every change bumps
-- routing_state.version in the same transaction.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    tenant_id text NOT NULL,
    role text NOT NULL,
    -- `[{"server", "tools", "prompts", "resources"}]` as given; enforced by the proxies.
    permissions jsonb NOT NULL DEFAULT '[]'::jsonb,
    digest bytea NOT NULL,
    -- The key's first characters, so that an administrator can recognise a key without its secret.
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- NULL = never expires.
    expires_at timestamptz NULL,
    CONSTRAINT api_keys_digest_key UNIQUE (digest),
    CONSTRAINT api_keys_digest_length CHECK (octet_length(digest) = 32)
);
CREATE INDEX api_keys_expires_at_idx ON api_keys (expires_at) WHERE expires_at IS NOT NULL;
