DROP TRIGGER routing_state_notify ON routing_state;
DROP FUNCTION mcpgw_notify_routing();
DROP TABLE leader_state, server_prompts, server_resource_templates, server_resources, server_tools,
    server_discovery, passive_health, instance_health;
DROP INDEX servers_tenant_idx;
ALTER TABLE servers DROP COLUMN tenant_id, DROP COLUMN version, DROP COLUMN capabilities,
    DROP COLUMN auto_discover, DROP COLUMN health_check_enabled, DROP COLUMN health_interval_ms,
    DROP COLUMN health_timeout_ms, DROP COLUMN healthy_threshold, DROP COLUMN unhealthy_threshold;
