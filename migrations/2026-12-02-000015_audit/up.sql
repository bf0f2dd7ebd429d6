-- One row per MCP request through any proxy (`kind = 'mcp'`) and per admin change or refused admin
-- change (`kind = 'admin'`). Partitioned by day on `time`: the control plane creates partitions ahead of
-- the records and drops whole ones older than `--audit-retention`. `(time, id)` is the idempotency key: a
-- batch sent again after a lost acknowledgement is written once (`ON CONFLICT DO NOTHING`).
CREATE TABLE audit_log (
    time timestamptz NOT NULL,
    id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('mcp', 'admin')),
    tenant_id text NOT NULL,
    -- `api-key:<id>`, `user:<id>`, `jwt:<issuer>#<subject>`, `admin-token`, `anonymous`; empty when the
    -- caller was not authenticated.
    principal text NOT NULL,
    server text NULL,
    instance text NULL,
    era text NULL,
    -- JSON-RPC method (MCP) or `<HTTP method> <route>` (admin).
    method text NOT NULL,
    -- The tool, prompt or resource (MCP); the changed object, `<kind>:<id>` (admin).
    target text NULL,
    request_id text NULL,
    -- `ok`, `error`, `http_<status>` or the refusal reason.
    outcome text NOT NULL,
    status integer NULL,
    rpc_error_code bigint NULL,
    duration_us bigint NULL,
    bytes_in bigint NULL,
    bytes_out bigint NULL,
    client_addr text NULL,
    session text NULL,
    trace_id text NULL,
    arguments text NULL,
    proxy_id text NULL,
    -- Admin changes: the object before and after (secrets never included).
    before jsonb NULL,
    after jsonb NULL,
    PRIMARY KEY (time, id)
) PARTITION BY RANGE (time);

-- The query API's filters, each with the keyset order (newest first).
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, time DESC, id DESC);
CREATE INDEX audit_log_principal ON audit_log (principal, time DESC, id DESC);
CREATE INDEX audit_log_server ON audit_log (server, time DESC, id DESC);

-- What audit records of a server's MCP calls keep of their arguments: `none`, `redacted`, `hashed`.
ALTER TABLE servers ADD COLUMN audit_arguments text NOT NULL DEFAULT 'none'
    CHECK (audit_arguments IN ('none', 'redacted', 'hashed'));
