DROP TABLE IF EXISTS oauth_refresh_tokens;
DROP TABLE IF EXISTS oauth_codes;
DROP TABLE IF EXISTS oauth_consents;
DROP TABLE IF EXISTS oauth_requests;
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS oauth_clients;
DROP TABLE IF EXISTS oauth_signing_keys;
