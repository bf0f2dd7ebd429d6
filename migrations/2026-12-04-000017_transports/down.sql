DELETE FROM upstream_credentials WHERE kind = 'stdio_env';
ALTER TABLE upstream_credentials DROP CONSTRAINT upstream_credentials_kind_check;
ALTER TABLE upstream_credentials ADD CONSTRAINT upstream_credentials_kind_check
    CHECK (kind IN ('static_header', 'oauth_client_credentials', 'token_exchange'));

ALTER TABLE instances DROP COLUMN command;

DELETE FROM servers WHERE transport_type IN ('websocket', 'stdio');
ALTER TABLE servers DROP CONSTRAINT servers_transport_type_check;
ALTER TABLE servers ADD CONSTRAINT servers_transport_type_check CHECK (transport_type IN ('streamable_http', 'sse'));
