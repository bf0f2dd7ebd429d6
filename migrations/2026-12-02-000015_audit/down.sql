ALTER TABLE servers DROP COLUMN audit_arguments;
DROP TABLE audit_log;
