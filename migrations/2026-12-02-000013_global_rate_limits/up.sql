-- Global rate limits: one budget shared by every proxy replica, kept in Redis by the control plane and
-- leased to proxies in small chunks. `fail_mode` says what a proxy does while no budget can be leased
-- (Redis or the control plane away): 'closed' refuses the limit's requests (503), 'open' enforces the
-- limit on each proxy on its own until leasing works again.
ALTER TABLE rate_limits
    ADD COLUMN global boolean NOT NULL DEFAULT false,
    ADD COLUMN fail_mode text NOT NULL DEFAULT 'closed' CHECK (fail_mode IN ('open', 'closed'));
