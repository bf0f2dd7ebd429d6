-- stdio and WebSocket upstream MCP servers.
ALTER TABLE servers DROP CONSTRAINT servers_transport_type_check;
ALTER TABLE servers ADD CONSTRAINT servers_transport_type_check
    CHECK (transport_type IN ('streamable_http', 'sse', 'websocket', 'stdio'));

-- A stdio instance's command: {"program", "args", "env", "working_directory"}, nothing secret (its endpoint_url
-- is `stdio:<program>`, for display). NULL for instances reached at a URL.
ALTER TABLE instances ADD COLUMN command jsonb NULL;

-- A stdio instance's secret environment is sealed like an upstream credential, in the same table (the
-- instance's one row: a stdio instance has no upstream credential): kind `stdio_env`, config
-- {"names": [...]}, sealed {"env": {...}}.
ALTER TABLE upstream_credentials DROP CONSTRAINT upstream_credentials_kind_check;
ALTER TABLE upstream_credentials ADD CONSTRAINT upstream_credentials_kind_check
    CHECK (kind IN ('static_header', 'oauth_client_credentials', 'token_exchange', 'stdio_env'));
