-- Custom roles of a tenant: their rules are streamed to the proxies, which decide every named MCP message
-- with them. Users signing in get a role when their IdP roles or groups include one of `idp_groups`.
-- Built-in roles (admin, server_owner, user, platform_admin) are not stored.
CREATE TABLE roles (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    rules jsonb NOT NULL,
    idp_groups text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_tenant_name_key UNIQUE (tenant_id, name)
);
