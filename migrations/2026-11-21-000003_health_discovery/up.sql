-- Registry completeness, active and passive health, capability discovery, leader bookkeeping, and the
-- notification other replicas listen to.
ALTER TABLE servers
    ADD COLUMN tenant_id text NULL,
    ADD COLUMN version text NULL,
    ADD COLUMN capabilities jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN auto_discover boolean NOT NULL DEFAULT true,
    -- Health-check settings; NULL = the control plane's default (--health-*).
    ADD COLUMN health_check_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN health_interval_ms integer NULL CHECK (health_interval_ms > 0),
    ADD COLUMN health_timeout_ms integer NULL CHECK (health_timeout_ms > 0),
    ADD COLUMN healthy_threshold integer NULL CHECK (healthy_threshold > 0),
    ADD COLUMN unhealthy_threshold integer NULL CHECK (unhealthy_threshold > 0);
CREATE INDEX servers_tenant_idx ON servers (tenant_id);

-- Latest active-check result per instance; no row = unknown. `history` holds the most recent checks.
CREATE TABLE instance_health (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('healthy', 'unhealthy', 'unknown')),
    last_check_at timestamptz NOT NULL,
    last_change_at timestamptz NOT NULL,
    consecutive_failures integer NOT NULL DEFAULT 0,
    consecutive_successes integer NOT NULL DEFAULT 0,
    latency_ms integer NULL,
    last_error text NULL,
    checked_by text NOT NULL,
    history jsonb NOT NULL DEFAULT '[]'::jsonb
);

-- What each proxy's circuit breakers think of each instance (ProxyMessage.passive_health).
CREATE TABLE passive_health (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    proxy_id text NOT NULL,
    breaker text NOT NULL,
    consecutive_failures integer NOT NULL,
    window_requests bigint NOT NULL,
    window_failures bigint NOT NULL,
    reported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, proxy_id)
);

-- Outcome of the last discovery per server; the capability tables keep the last successful one.
CREATE TABLE server_discovery (
    server_id uuid PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('ok', 'error')),
    attempted_at timestamptz NOT NULL,
    discovered_at timestamptz NULL,
    duration_ms integer NULL,
    protocol_version text NULL,
    server_info jsonb NULL,
    capabilities jsonb NULL,
    instructions text NULL,
    error text NULL
);

CREATE TABLE server_tools (
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position integer NOT NULL,
    -- The object exactly as the server listed it; the other columns are extracted for queries.
    item jsonb NOT NULL,
    name text NOT NULL,
    title text NULL,
    description text NULL,
    input_schema jsonb NULL,
    output_schema jsonb NULL,
    annotations jsonb NULL,
    PRIMARY KEY (server_id, position)
);
CREATE INDEX server_tools_name_idx ON server_tools (name);

CREATE TABLE server_resources (
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position integer NOT NULL,
    -- The object exactly as the server listed it; the other columns are extracted for queries.
    item jsonb NOT NULL,
    uri text NOT NULL,
    name text NULL,
    title text NULL,
    description text NULL,
    mime_type text NULL,
    annotations jsonb NULL,
    PRIMARY KEY (server_id, position)
);

CREATE TABLE server_resource_templates (
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position integer NOT NULL,
    -- The object exactly as the server listed it; the other columns are extracted for queries.
    item jsonb NOT NULL,
    uri_template text NOT NULL,
    name text NULL,
    title text NULL,
    description text NULL,
    mime_type text NULL,
    annotations jsonb NULL,
    PRIMARY KEY (server_id, position)
);

CREATE TABLE server_prompts (
    server_id uuid NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    position integer NOT NULL,
    -- The object exactly as the server listed it; the other columns are extracted for queries.
    item jsonb NOT NULL,
    name text NOT NULL,
    title text NULL,
    description text NULL,
    arguments jsonb NULL,
    PRIMARY KEY (server_id, position)
);

-- Which replica runs the health checks (written by the leader when it takes over, for the API).
CREATE TABLE leader_state (
    id smallint PRIMARY KEY CHECK (id = 1),
    replica_id text NOT NULL,
    since timestamptz NOT NULL
);

-- Every routing change notifies the replicas that LISTEN, on commit and in commit order.
CREATE FUNCTION mcpgw_notify_routing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mcpgw_routing', NEW.version::text);
    RETURN NEW;
END;
$$;
CREATE TRIGGER routing_state_notify AFTER UPDATE ON routing_state
    FOR EACH ROW EXECUTE FUNCTION mcpgw_notify_routing();
