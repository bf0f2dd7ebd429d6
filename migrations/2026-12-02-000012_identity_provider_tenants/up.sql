-- The tenant of the users of an identity provider, fixed at each user's first sign-in: the value of
-- `tenant_claim` in the ID token when set (a sign-in without it falls back on `tenant_id`, else is refused),
-- else `tenant_id`, else `default`.
ALTER TABLE identity_providers
    ADD COLUMN tenant_id text NULL,
    ADD COLUMN tenant_claim text NULL;
