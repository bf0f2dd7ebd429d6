-- OAuth / OIDC issuers whose JWT access tokens the proxies accept. The control plane fetches each issuer's
-- JWKS (at registration, then every --jwks-refresh) and streams it to the proxies as a TrustedIssuer
-- resource; proxies never fetch it themselves. A change of the stored JWKS bumps routing_state.version in
-- the same transaction, so a key rotated out stops verifying everywhere.
CREATE TABLE trusted_issuers (
    id uuid PRIMARY KEY,
    -- The exact `iss` of the issuer's tokens (compared as a string, never normalised).
    issuer text NOT NULL,
    -- Where the JWKS is fetched from: given at registration, or read from the issuer's metadata.
    jwks_uri text NOT NULL,
    jwks_uri_discovered boolean NOT NULL,
    audiences text[] NOT NULL DEFAULT '{}',
    algorithms text[] NOT NULL,
    subject_claim text NOT NULL DEFAULT 'sub',
    tenant_claim text NULL,
    roles_claim text NOT NULL DEFAULT 'roles',
    groups_claim text NOT NULL DEFAULT 'groups',
    default_tenant text NOT NULL DEFAULT 'default',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The JWKS document as last fetched successfully, and when; a failed refresh keeps both and records
    -- why in last_error (NULL once a refresh succeeds again).
    jwks jsonb NULL,
    jwks_fetched_at timestamptz NULL,
    jwks_changed_at timestamptz NULL,
    last_attempt_at timestamptz NULL,
    last_error text NULL,
    CONSTRAINT trusted_issuers_issuer_key UNIQUE (issuer),
    CONSTRAINT trusted_issuers_algorithms_nonempty CHECK (cardinality(algorithms) > 0)
);
