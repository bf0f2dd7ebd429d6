-- Upstream credentials of two more kinds: OAuth client credentials (the control plane obtains the tokens)
-- and token exchange (the proxies have the control plane issue a token per caller; nothing is secret).
ALTER TABLE upstream_credentials DROP CONSTRAINT upstream_credentials_kind_check;
ALTER TABLE upstream_credentials ADD CONSTRAINT upstream_credentials_kind_check
    CHECK (kind IN ('static_header', 'oauth_client_credentials', 'token_exchange'));

-- The token last obtained for an `oauth_client_credentials` credential, sealed with --secrets-key (context
-- `upstream-token:<credential id>`), renewed by the leader before it expires. A token fetched before the
-- credential's last change is not used. Failures are kept in last_error (never the token or the secret).
CREATE TABLE upstream_tokens (
    credential_id uuid PRIMARY KEY REFERENCES upstream_credentials (id) ON DELETE CASCADE,
    sealed bytea NULL,
    expires_at timestamptz NULL,
    fetched_at timestamptz NULL,
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text NULL
);
