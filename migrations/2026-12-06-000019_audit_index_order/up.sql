-- The query API's indexes in ascending order. A page newest first reads them backward, as fast; but a
-- new record, the newest of its tenant, principal or server, now goes to the right end of its run of
-- equal values, and when that run is the index's last (one tenant, one dominant principal or server: the
-- common deployment) PostgreSQL appends it without descending the tree. With one tenant, principal and
-- server, a row cost PostgreSQL 13.7 µs to write in descending indexes, 10.7 µs in these
-- (BENCHMARKS.md, "Audit ingest"). Made again on every partition: on a large log this takes a while.
DROP INDEX audit_log_tenant;
DROP INDEX audit_log_principal;
DROP INDEX audit_log_server;
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, time, id);
CREATE INDEX audit_log_principal ON audit_log (principal, time, id);
CREATE INDEX audit_log_server ON audit_log (server, time, id);
