//! Caps on long-lived streams (GET: server-to-client SSE, legacy SSE sessions), so that no caller can
//! exhaust the gateway: at most `max_total` open at once and `max_per_principal` per principal. A stream
//! holds a [`StreamPermit`] for as long as it is served; dropping it frees the place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::ProxyError;

/// The stream counts.
#[derive(Debug)]
pub struct StreamCaps {
    max_total: usize,
    max_per_principal: usize,
    /// Open streams: in total, and per principal binding.
    open: Mutex<(usize, HashMap<Arc<str>, usize>)>,
}

/// A place among the open streams, given back on drop.
#[derive(Debug)]
pub struct StreamPermit {
    caps: Arc<StreamCaps>,
    principal: Arc<str>,
}

impl StreamCaps {
    pub fn new(max_total: usize, max_per_principal: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_principal, open: Mutex::new((0, HashMap::new())) })
    }

    /// A place for one more stream of `principal`: 429 over the principal's cap, 503 over the total.
    pub fn acquire(self: &Arc<Self>, principal: &Arc<str>) -> Result<StreamPermit, ProxyError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let mine = open.1.get(principal).copied().unwrap_or(0);
        if mine >= self.max_per_principal {
            return Err(ProxyError::TooManyStreams { per_principal: true, limit: self.max_per_principal });
        }
        if open.0 >= self.max_total {
            return Err(ProxyError::TooManyStreams { per_principal: false, limit: self.max_total });
        }
        open.0 += 1;
        *open.1.entry(principal.clone()).or_default() += 1;
        Ok(StreamPermit { caps: self.clone(), principal: principal.clone() })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_principal_and_in_total() {
        let caps = StreamCaps::new(3, 2);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let a1 = caps.acquire(&a).unwrap();
        let _a2 = caps.acquire(&a).unwrap();
        assert!(matches!(caps.acquire(&a), Err(ProxyError::TooManyStreams { per_principal: true, .. })));
        let _b1 = caps.acquire(&b).unwrap();
        assert!(matches!(caps.acquire(&b), Err(ProxyError::TooManyStreams { per_principal: false, .. })));
        drop(a1);
        assert!(caps.acquire(&b).is_ok(), "a closed stream frees its place");
    }
}
