//! Field checks of a registration that need more than one line: instance lists, breaker and health
//! settings, tags, and NUL characters anywhere.

use serde_json::Value;

use super::{InstanceRequest, MAX_TAG_CHARS, MAX_TAGS, err};
use crate::api::{ApiError, Code};
use crate::model::{
    CircuitBreaker, HealthCheck, HealthCheckSpec, InstanceSpec, MAX_INSTANCES, TransportType,
};

/// An empty list is allowed: it is the state a server is in after its last instance was removed (the
/// proxy answers 503), so PATCH, export and import must be able to express it.
pub(super) fn validate_instances(
    list: Vec<InstanceRequest>,
    transport: TransportType,
) -> Result<Vec<InstanceSpec>, ApiError> {
    if list.len() > MAX_INSTANCES {
        return Err(err(
            Code::InvalidInstances,
            format!("at most {MAX_INSTANCES} instances are allowed, not {}", list.len()),
        ));
    }
    let mut specs: Vec<InstanceSpec> = Vec::with_capacity(list.len());
    for (i, instance) in list.into_iter().enumerate() {
        let spec = instance.validate(Some(i), transport)?;
        if specs.iter().any(|s| s.endpoint_url == spec.endpoint_url) {
            let what = match &spec.command {
                // A stdio server's instances are told apart by their program (`stdio:<program>`).
                Some(command) => format!("command.program {:?}", command.program),
                None => format!("endpoint_url {:?}", spec.endpoint_url),
            };
            return Err(err(Code::InvalidInstances, format!("instances[{i}]: {what} is listed twice")));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Whether any string or key in `value` contains NUL.
pub(super) fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub(super) fn check_breaker(b: CircuitBreaker) -> Result<CircuitBreaker, ApiError> {
    let bad = |why: String| Err(err(Code::InvalidCircuitBreaker, why));
    if let Some(r) = b.failure_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return bad(format!("circuit_breaker.failure_ratio must be in (0, 1], not {r}"));
    }
    let millis = |field: &str, value: &Option<String>| -> Result<Option<u64>, ApiError> {
        let Some(raw) = value else { return Ok(None) };
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            err(
                Code::InvalidCircuitBreaker,
                format!("circuit_breaker.{field} {raw:?} is not a duration like \"10s\": {e}"),
            )
        })?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 || ms > u64::from(u32::MAX) {
            return Err(err(
                Code::InvalidCircuitBreaker,
                format!("circuit_breaker.{field} must be between 1ms and 49 days"),
            ));
        }
        Ok(Some(ms))
    };
    let window = millis("window", &b.window)?;
    let open = millis("open", &b.open)?;
    let max_open = millis("max_open", &b.max_open)?;
    if let (Some(open), Some(max)) = (open, max_open)
        && open > max
    {
        return bad("circuit_breaker.open must not exceed max_open".into());
    }
    let canonical = |ms: Option<u64>| {
        ms.map(|ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string())
    };
    Ok(CircuitBreaker {
        window: canonical(window),
        open: canonical(open),
        max_open: canonical(max_open),
        ..b
    })
}

pub(super) fn check_health(h: HealthCheck) -> Result<HealthCheckSpec, ApiError> {
    let millis = |field: &str, value: &Option<String>, min_ms: u64| -> Result<Option<u32>, ApiError> {
        let Some(raw) = value else { return Ok(None) };
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} {raw:?} is not a duration like \"10s\": {e}"),
            )
        })?;
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if ms < min_ms || ms > 3_600_000 {
            return Err(err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} must be between {min_ms}ms and 1h"),
            ));
        }
        Ok(u32::try_from(ms).ok())
    };
    let threshold = |field: &str, value: Option<u32>| -> Result<Option<u32>, ApiError> {
        match value {
            Some(v) if v == 0 || v > crate::config::MAX_HEALTH_THRESHOLD => Err(err(
                Code::InvalidHealthCheck,
                format!("health_check.{field} must be between 1 and {}", crate::config::MAX_HEALTH_THRESHOLD),
            )),
            other => Ok(other),
        }
    };
    Ok(HealthCheckSpec {
        enabled: h.enabled.unwrap_or(true),
        interval_ms: millis("interval", &h.interval, 50)?,
        timeout_ms: millis("timeout", &h.timeout, 10)?,
        healthy_threshold: threshold("healthy_threshold", h.healthy_threshold)?,
        unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold)?,
    })
}

pub(super) fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    let bad = |why: String| Err(err(Code::InvalidTags, why));
    if tags.len() > MAX_TAGS {
        return bad(format!("at most {MAX_TAGS} tags are allowed, not {}", tags.len()));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.trim().is_empty() || tag.chars().any(char::is_control) {
            return bad(format!("tag {i} is empty or contains control characters"));
        }
        if tag.chars().count() > MAX_TAG_CHARS {
            return bad(format!("tag {tag:?} is longer than {MAX_TAG_CHARS} characters"));
        }
        if tags[..i].contains(tag) {
            return bad(format!("tag {tag:?} is listed twice"));
        }
    }
    Ok(())
}
