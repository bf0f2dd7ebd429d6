ALTER TABLE identity_providers DROP COLUMN tenant_claim, DROP COLUMN tenant_id;
