-- The control plane as an OAuth 2.1 authorization server (control-plane/src/oauth/README.md).

-- Signing keys of the access tokens it issues. The private key (PKCS#8) is sealed with --secrets-key; the
-- public JWK is published at /oauth/jwks and streamed to every proxy as a trusted issuer. The newest key
-- signs; older ones stay published until `retire_at` so tokens they signed keep verifying.
CREATE TABLE oauth_signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    private_key bytea NOT NULL,
    public_jwk jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retire_at timestamptz NULL
);

-- Clients: registered dynamically (RFC 7591; a confidential client's secret as a SHA-256 digest) or known
-- by a client ID metadata document (the client_id is its https URL; the document is cached here).
CREATE TABLE oauth_clients (
    client_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('registered', 'metadata_document')),
    secret_digest bytea NULL,
    client_name text NULL,
    redirect_uris text[] NOT NULL,
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    fetched_at timestamptz NOT NULL DEFAULT now()
);

-- People who signed in through a company IdP: recorded on first login, updated on each.
CREATE TABLE users (
    id uuid PRIMARY KEY,
    issuer text NOT NULL,
    subject text NOT NULL,
    email text NULL,
    name text NULL,
    tenant_id text NOT NULL,
    roles text[] NOT NULL DEFAULT '{}',
    groups text[] NOT NULL DEFAULT '{}',
    -- The IdP said the user has more groups than fit in a token (Entra ID `_claim_names.groups`).
    groups_overage boolean NOT NULL DEFAULT false,
    claims jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_issuer_subject_key UNIQUE (issuer, subject)
);

-- Authorization requests in flight: created by /oauth/authorize, found again by the single-use state sent to
-- the IdP (its SHA-256 digest), then by the consent form (CSRF token digest). Deleted when used.
CREATE TABLE oauth_requests (
    id text PRIMARY KEY,
    idp_state_digest bytea NULL UNIQUE,
    idp_name text NOT NULL,
    idp_nonce text NOT NULL,
    idp_verifier text NOT NULL,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    scope text NOT NULL,
    client_state text NULL,
    code_challenge text NOT NULL,
    resource text NOT NULL,
    user_id uuid NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_digest bytea NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX oauth_requests_expires_at_idx ON oauth_requests (expires_at);

-- Consent: one user approved one client for these scopes (confused-deputy rule: per user and per client).
CREATE TABLE oauth_consents (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id text NOT NULL,
    scopes text[] NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);

-- Authorization codes (SHA-256 digests), single use: a second use revokes what the first one issued.
CREATE TABLE oauth_codes (
    code_digest bytea PRIMARY KEY,
    client_id text NOT NULL,
    redirect_uri text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope text NOT NULL,
    resource text NOT NULL,
    code_challenge text NOT NULL,
    family_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz NULL
);

-- Refresh tokens (SHA-256 digests), rotated at every use; a family is every token descended from one code.
-- A token used twice revokes its family.
CREATE TABLE oauth_refresh_tokens (
    token_digest bytea PRIMARY KEY,
    family_id uuid NOT NULL,
    client_id text NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope text NOT NULL,
    resource text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz NULL,
    revoked_at timestamptz NULL
);
CREATE INDEX oauth_refresh_tokens_family_idx ON oauth_refresh_tokens (family_id);
