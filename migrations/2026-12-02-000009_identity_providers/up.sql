-- Company IdPs users may sign in at, besides the one given by --oidc-* flags: any OpenID provider, found by
-- discovery. The client secret is sealed with --secrets-key (context `identity-provider:<id>`).
CREATE TABLE identity_providers (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    issuer text NOT NULL,
    client_id text NOT NULL,
    client_secret bytea NOT NULL,
    scopes text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT identity_providers_name_key UNIQUE (name)
);
