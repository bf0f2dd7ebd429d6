DROP INDEX audit_log_tenant;
DROP INDEX audit_log_principal;
DROP INDEX audit_log_server;
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, time DESC, id DESC);
CREATE INDEX audit_log_principal ON audit_log (principal, time DESC, id DESC);
CREATE INDEX audit_log_server ON audit_log (server, time DESC, id DESC);
