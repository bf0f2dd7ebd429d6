//! Ports for the test processes' servers, kept apart across processes. Std only: the proxy's integration
//! tests include this file too (`proxy/tests/integration/support.rs`), so both suites share one scheme.

use std::fs::File;
use std::hash::BuildHasher;
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;

/// A port on 127.0.0.1 that no other test process holds, for a server a test starts (or restarts at the
/// same address) and for an address meant to stay closed.
///
/// Ports come from below the kernel's ephemeral range, so no socket bound to port 0 and no outgoing
/// connection on the machine can take one (both happened: a killed server could not come back, its port
/// held by a client socket; an upstream's port was handed to another test process's proxy, which then
/// answered the test). A lock file per port under the temp dir, held until this process exits, keeps the
/// test processes that nextest runs side by side apart (and one process's own ports: each open of the
/// file is locked on its own).
pub fn free_port() -> io::Result<u16> {
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = (10_000u16, low.max(10_001));
    let dir = std::env::temp_dir().join("mcpgw-test-ports");
    std::fs::create_dir_all(&dir)?;
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0..1024u32 {
        let port = from + (random.hash_one(attempt) % u64::from(to - from)) as u16;
        let lock =
            File::options().create(true).truncate(false).write(true).open(dir.join(port.to_string()))?;
        if lock.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no port in {from}..{to} both free and unheld by another test process"),
    ))
}
