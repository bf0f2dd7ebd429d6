ALTER TABLE rate_limits DROP COLUMN fail_mode, DROP COLUMN global;
