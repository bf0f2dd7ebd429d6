//! Budgets of global rate limits. A global limit is one GCRA bucket per key in Redis, shared by every
//! control-plane replica; proxies lease tokens from it in small chunks (`LeaseBudget`) and spend them
//! locally, so a request costs a Redis round trip only when its proxy runs out. The bucket's clock is
//! Redis's own (`TIME`), so replicas with skewed clocks agree.

use std::time::Duration;

use bb8_redis::redis;
use mcpgw_proto::v1;

use crate::api::RedisPool;

/// Longest a lease may wait for Redis before the proxy is told it is unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Takes up to ARGV[3] tokens from the GCRA bucket KEYS[1] (ARGV[1]: microseconds one token costs,
/// ARGV[2]: burst). Returns {granted, microseconds until one token is available when none was}.
/// Numbers are formatted with `%.0f`: Lua's default formatting would write large ones in exponent form.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.floor((now + burst * interval - tat) / interval)
if available <= 0 then
  return {0, tat - (burst - 1) * interval - now}
end
local granted = math.min(available, want)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000) + 1000))
return {granted, 0}
";

/// What a lease got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    /// When nothing was granted: how long until one token is available.
    pub retry_after: Duration,
}

/// Takes up to `want` tokens of `limit`'s bucket for `key`. The bucket's Redis key names the quota, so a
/// limit whose quota changed starts with a full bucket.
pub async fn lease(redis: &RedisPool, limit: &v1::RateLimit, key: &str, want: u32) -> Result<Grant, String> {
    let interval_us = (limit.per_ms.saturating_mul(1000) / u64::from(limit.requests.max(1))).max(1);
    let redis_key =
        format!("mcpgw:rl:{}:{}:{}:{}:{key}", limit.id, limit.requests, limit.per_ms, limit.burst.max(1));
    let take = async {
        let mut conn = redis.get().await.map_err(|e| format!("cannot reach Redis: {e}"))?;
        redis::cmd("EVAL")
            .arg(TAKE)
            .arg(1)
            .arg(redis_key)
            .arg(interval_us)
            .arg(limit.burst.max(1))
            .arg(want.max(1))
            .query_async::<(i64, i64)>(&mut *conn)
            .await
            .map_err(|e| format!("Redis refused the lease: {e}"))
    };
    let (granted, wait_us) = tokio::time::timeout(REDIS_TIMEOUT, take)
        .await
        .map_err(|_| format!("Redis did not answer within {} ms", REDIS_TIMEOUT.as_millis()))??;
    Ok(Grant {
        granted: u32::try_from(granted).unwrap_or(0),
        retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
    })
}
