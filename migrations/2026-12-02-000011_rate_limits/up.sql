-- Rate limits of a tenant, streamed to every proxy, which enforces each on its own (local token buckets).
CREATE TABLE rate_limits (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key', 'server', 'tool')),
    server text NOT NULL DEFAULT '',
    tool text NOT NULL DEFAULT '',
    requests integer NOT NULL CHECK (requests > 0),
    per_ms bigint NOT NULL CHECK (per_ms > 0),
    burst integer NOT NULL CHECK (burst > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
