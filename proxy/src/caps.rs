//! Caps on what callers hold open, so that no caller can exhaust the gateway: at most `max_total` at once
//! and `max_per_key` per key. Long-lived streams (GET: server-to-client SSE, legacy SSE sessions and the
//! bridges to SSE servers) are counted per principal; connections per client address
//! (`crate::connections`). A holder keeps a [`Permit`] for as long as it is open; dropping it frees the
//! place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ProxyError;

/// Counts of what is open, in total and per key.
#[derive(Debug)]
pub struct Caps {
    max_total: usize,
    max_per_key: usize,
    open: Mutex<(usize, HashMap<Arc<str>, usize>)>,
}

/// A place among the open ones, given back on drop.
#[derive(Debug)]
pub struct Permit {
    caps: Arc<Caps>,
    key: Arc<str>,
}

/// Which cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    PerKey(usize),
    Total(usize),
}

impl Caps {
    pub fn new(max_total: usize, max_per_key: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_key, open: Mutex::new((0, HashMap::new())) })
    }

    /// A place for one more of `key`'s.
    pub fn try_acquire(self: &Arc<Self>, key: &Arc<str>) -> Result<Permit, Exceeded> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.1.get(key).copied().unwrap_or(0) >= self.max_per_key {
            return Err(Exceeded::PerKey(self.max_per_key));
        }
        if open.0 >= self.max_total {
            return Err(Exceeded::Total(self.max_total));
        }
        open.0 += 1;
        *open.1.entry(key.clone()).or_default() += 1;
        Ok(Permit { caps: self.clone(), key: key.clone() })
    }

    /// A place for one more stream of `principal`: 429 over the principal's cap, 503 over the total.
    pub fn acquire_stream(self: &Arc<Self>, principal: &Arc<str>) -> Result<Permit, ProxyError> {
        self.try_acquire(principal).map_err(|over| match over {
            Exceeded::PerKey(limit) => ProxyError::TooManyStreams { per_principal: true, limit },
            Exceeded::Total(limit) => ProxyError::TooManyStreams { per_principal: false, limit },
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_in_total() {
        let caps = Caps::new(3, 2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let a1 = caps.acquire_stream(&a).unwrap();
        let _a2 = caps.acquire_stream(&a).unwrap();
        assert!(matches!(
            caps.acquire_stream(&a),
            Err(ProxyError::TooManyStreams { per_principal: true, .. })
        ));
        let _b1 = caps.acquire_stream(&b).unwrap();
        assert_eq!(caps.try_acquire(&b).err(), Some(Exceeded::Total(3)));
        drop(a1);
        assert!(caps.try_acquire(&b).is_ok(), "a closed one frees its place");
    }
}
