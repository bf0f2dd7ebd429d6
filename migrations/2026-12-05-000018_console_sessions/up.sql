-- Sessions of the web console (/ui): the browser holds a random id in an HttpOnly cookie, the table only its
-- SHA-256. A session names who signed in — the bootstrap admin token (the digest of the token it was opened
-- with, so a new --admin-token ends it), an API key (deleting the key ends it), or a user of the
-- authorization server — and is re-checked on every request like a bearer credential would be.
CREATE TABLE console_sessions (
    id_digest bytea PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('admin_token', 'api_key', 'user')),
    admin_token_digest bytea NULL,
    api_key_id uuid NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    user_id uuid NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CHECK ((kind = 'admin_token') = (admin_token_digest IS NOT NULL)),
    CHECK ((kind = 'api_key') = (api_key_id IS NOT NULL)),
    CHECK ((kind = 'user') = (user_id IS NOT NULL))
);
CREATE INDEX console_sessions_expires_at_idx ON console_sessions (expires_at);
