//! Diesel table definitions matching `migrations/` (written by hand: no diesel CLI in the build).

diesel::table! {
    servers (id) {
        id -> Uuid,
        name -> Text,
        endpoint_url -> Text,
        transport_type -> Text,
        description -> Nullable<Text>,
        tags -> Array<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    routing_state (id) {
        id -> Int2,
        version -> Int8,
    }
}
