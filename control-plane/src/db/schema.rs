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
    }
}

diesel::table! {
    routing_state (id) {
        id -> Int2,
        version -> Int8,
    }
}

diesel::joinable!(instances -> servers (server_id));
diesel::allow_tables_to_appear_in_same_query!(servers, instances);
