DROP TABLE upstream_credentials;
