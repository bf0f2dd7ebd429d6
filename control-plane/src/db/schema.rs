//! Diesel table definitions matching `migrations/` (written by hand: no diesel CLI in the build).

diesel::table! {
    servers (id) {
        id -> Uuid,
        name -> Text,
        transport_type -> Text,
        description -> Nullable<Text>,
        tags -> Array<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        load_balancing -> Text,
        hash_key -> Nullable<Text>,
        circuit_breaker -> Nullable<Jsonb>,
        tenant_id -> Nullable<Text>,
        version -> Nullable<Text>,
        capabilities -> Jsonb,
        auto_discover -> Bool,
        health_check_enabled -> Bool,
        health_interval_ms -> Nullable<Int4>,
        health_timeout_ms -> Nullable<Int4>,
        healthy_threshold -> Nullable<Int4>,
        unhealthy_threshold -> Nullable<Int4>,
        owner -> Nullable<Text>,
        audit_arguments -> Text,
        name_prefix -> Text,
        priority -> Int4,
    }
}

diesel::table! {
    audit_log (time, id) {
        time -> Timestamptz,
        id -> Uuid,
        kind -> Text,
        tenant_id -> Text,
        principal -> Text,
        server -> Nullable<Text>,
        instance -> Nullable<Text>,
        era -> Nullable<Text>,
        method -> Text,
        target -> Nullable<Text>,
        request_id -> Nullable<Text>,
        outcome -> Text,
        status -> Nullable<Int4>,
        rpc_error_code -> Nullable<Int8>,
        duration_us -> Nullable<Int8>,
        bytes_in -> Nullable<Int8>,
        bytes_out -> Nullable<Int8>,
        client_addr -> Nullable<Text>,
        session -> Nullable<Text>,
        trace_id -> Nullable<Text>,
        arguments -> Nullable<Text>,
        proxy_id -> Nullable<Text>,
        before -> Nullable<Jsonb>,
        after -> Nullable<Jsonb>,
    }
}

diesel::table! {
    instances (id) {
        id -> Uuid,
        server_id -> Uuid,
        endpoint_url -> Text,
        weight -> Int4,
        metadata -> Jsonb,
        seq -> Int8,
        created_at -> Timestamptz,
        command -> Nullable<Jsonb>,
    }
}

diesel::table! {
    routing_state (id) {
        id -> Int2,
        version -> Int8,
    }
}

diesel::table! {
    instance_health (instance_id) {
        instance_id -> Uuid,
        status -> Text,
        last_check_at -> Timestamptz,
        last_change_at -> Timestamptz,
        consecutive_failures -> Int4,
        consecutive_successes -> Int4,
        latency_ms -> Nullable<Int4>,
        last_error -> Nullable<Text>,
        checked_by -> Text,
        history -> Jsonb,
    }
}

diesel::table! {
    passive_health (instance_id, proxy_id) {
        instance_id -> Uuid,
        proxy_id -> Text,
        breaker -> Text,
        consecutive_failures -> Int4,
        window_requests -> Int8,
        window_failures -> Int8,
        reported_at -> Timestamptz,
    }
}

diesel::table! {
    server_discovery (server_id) {
        server_id -> Uuid,
        status -> Text,
        attempted_at -> Timestamptz,
        discovered_at -> Nullable<Timestamptz>,
        duration_ms -> Nullable<Int4>,
        protocol_version -> Nullable<Text>,
        server_info -> Nullable<Jsonb>,
        capabilities -> Nullable<Jsonb>,
        instructions -> Nullable<Text>,
        error -> Nullable<Text>,
        catalog_digest -> Nullable<Bytea>,
    }
}

diesel::table! {
    server_tools (server_id, position) {
        server_id -> Uuid,
        position -> Int4,
        item -> Jsonb,
        name -> Text,
        title -> Nullable<Text>,
        description -> Nullable<Text>,
        input_schema -> Nullable<Jsonb>,
        output_schema -> Nullable<Jsonb>,
        annotations -> Nullable<Jsonb>,
    }
}

diesel::table! {
    server_resources (server_id, position) {
        server_id -> Uuid,
        position -> Int4,
        item -> Jsonb,
        uri -> Text,
        name -> Nullable<Text>,
        title -> Nullable<Text>,
        description -> Nullable<Text>,
        mime_type -> Nullable<Text>,
        annotations -> Nullable<Jsonb>,
    }
}

diesel::table! {
    server_resource_templates (server_id, position) {
        server_id -> Uuid,
        position -> Int4,
        item -> Jsonb,
        uri_template -> Text,
        name -> Nullable<Text>,
        title -> Nullable<Text>,
        description -> Nullable<Text>,
        mime_type -> Nullable<Text>,
        annotations -> Nullable<Jsonb>,
    }
}

diesel::table! {
    server_prompts (server_id, position) {
        server_id -> Uuid,
        position -> Int4,
        item -> Jsonb,
        name -> Text,
        title -> Nullable<Text>,
        description -> Nullable<Text>,
        arguments -> Nullable<Jsonb>,
    }
}

diesel::table! {
    leader_state (id) {
        id -> Int2,
        replica_id -> Text,
        since -> Timestamptz,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        name -> Text,
        tenant_id -> Text,
        role -> Text,
        permissions -> Jsonb,
        digest -> Bytea,
        prefix -> Text,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    trusted_issuers (id) {
        id -> Uuid,
        issuer -> Text,
        jwks_uri -> Text,
        jwks_uri_discovered -> Bool,
        audiences -> Array<Text>,
        algorithms -> Array<Text>,
        subject_claim -> Text,
        tenant_claim -> Nullable<Text>,
        roles_claim -> Text,
        groups_claim -> Text,
        default_tenant -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        jwks -> Nullable<Jsonb>,
        jwks_fetched_at -> Nullable<Timestamptz>,
        jwks_changed_at -> Nullable<Timestamptz>,
        last_attempt_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    upstream_credentials (id) {
        id -> Uuid,
        server_id -> Nullable<Uuid>,
        instance_id -> Nullable<Uuid>,
        kind -> Text,
        config -> Jsonb,
        sealed -> Bytea,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    upstream_tokens (credential_id) {
        credential_id -> Uuid,
        sealed -> Nullable<Bytea>,
        expires_at -> Nullable<Timestamptz>,
        fetched_at -> Nullable<Timestamptz>,
        last_attempt_at -> Timestamptz,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    rate_limits (id) {
        id -> Uuid,
        tenant_id -> Text,
        scope -> Text,
        server -> Text,
        tool -> Text,
        requests -> Int4,
        per_ms -> Int8,
        burst -> Int4,
        created_at -> Timestamptz,
        global -> Bool,
        fail_mode -> Text,
    }
}

diesel::table! {
    roles (id) {
        id -> Uuid,
        tenant_id -> Text,
        name -> Text,
        rules -> Jsonb,
        idp_groups -> Array<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    identity_providers (id) {
        id -> Uuid,
        name -> Text,
        issuer -> Text,
        client_id -> Text,
        client_secret -> Bytea,
        scopes -> Text,
        created_at -> Timestamptz,
        tenant_id -> Nullable<Text>,
        tenant_claim -> Nullable<Text>,
    }
}

diesel::table! {
    oauth_signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_key -> Bytea,
        public_jwk -> Jsonb,
        created_at -> Timestamptz,
        retire_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_clients (client_id) {
        client_id -> Text,
        kind -> Text,
        secret_digest -> Nullable<Bytea>,
        client_name -> Nullable<Text>,
        redirect_uris -> Array<Text>,
        metadata -> Jsonb,
        created_at -> Timestamptz,
        fetched_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        issuer -> Text,
        subject -> Text,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        tenant_id -> Text,
        roles -> Array<Text>,
        groups -> Array<Text>,
        groups_overage -> Bool,
        claims -> Jsonb,
        created_at -> Timestamptz,
        last_login_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_requests (id) {
        id -> Text,
        idp_state_digest -> Nullable<Bytea>,
        idp_name -> Text,
        idp_nonce -> Text,
        idp_verifier -> Text,
        client_id -> Text,
        redirect_uri -> Text,
        scope -> Text,
        client_state -> Nullable<Text>,
        code_challenge -> Text,
        resource -> Text,
        user_id -> Nullable<Uuid>,
        csrf_digest -> Nullable<Bytea>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_consents (user_id, client_id) {
        user_id -> Uuid,
        client_id -> Text,
        scopes -> Array<Text>,
        granted_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_codes (code_digest) {
        code_digest -> Bytea,
        client_id -> Text,
        redirect_uri -> Text,
        user_id -> Uuid,
        scope -> Text,
        resource -> Text,
        code_challenge -> Text,
        family_id -> Uuid,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    oauth_refresh_tokens (token_digest) {
        token_digest -> Bytea,
        family_id -> Uuid,
        client_id -> Text,
        user_id -> Uuid,
        scope -> Text,
        resource -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    console_sessions (id_digest) {
        id_digest -> Bytea,
        kind -> Text,
        admin_token_digest -> Nullable<Bytea>,
        api_key_id -> Nullable<Uuid>,
        user_id -> Nullable<Uuid>,
        csrf_token -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(instances -> servers (server_id));
diesel::joinable!(instance_health -> instances (instance_id));
diesel::allow_tables_to_appear_in_same_query!(
    servers,
    instances,
    instance_health,
    passive_health,
    server_discovery,
    server_tools,
    server_resources,
    server_resource_templates,
    server_prompts
);
