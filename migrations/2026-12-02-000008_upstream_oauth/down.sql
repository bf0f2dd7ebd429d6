DROP TABLE IF EXISTS upstream_tokens;
DELETE FROM upstream_credentials WHERE kind <> 'static_header';
ALTER TABLE upstream_credentials DROP CONSTRAINT upstream_credentials_kind_check;
ALTER TABLE upstream_credentials ADD CONSTRAINT upstream_credentials_kind_check CHECK (kind IN ('static_header'));
