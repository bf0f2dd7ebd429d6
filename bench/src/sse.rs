//! SSE on both sides of the harness: the fixture stamps each event with the wall-clock time it was
//! produced (`"bench/t"`, nanoseconds since the Unix epoch, a clock every process on the machine shares),
//! and the load generator splits decoded bodies into events and reads the stamps back.

use std::time::{SystemTime, UNIX_EPOCH};

/// The `_meta` key carrying the production time of an event.
pub const STAMP_KEY: &str = "bench/t";

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Removes every complete event from the front of `buf` and hands each to `f` (blank-line separated;
/// `\n\n` or `\r\n\r\n`).
pub fn drain_events(buf: &mut Vec<u8>, mut f: impl FnMut(&[u8])) {
    let mut start = 0;
    let mut i = 0;
    while i + 1 < buf.len() {
        let end = if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            Some(i + 2)
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else {
            None
        };
        match end {
            Some(end) => {
                f(&buf[start..end]);
                start = end;
                i = end;
            }
            None => i += 1,
        }
    }
    buf.drain(..start);
}

/// Whether an event carries data (comments and keep-alives do not).
pub fn has_data(event: &[u8]) -> bool {
    event.starts_with(b"data:") || event.windows(6).any(|w| w == b"\ndata:")
}

/// The production stamp of an event, if it has one.
pub fn stamp(event: &[u8]) -> Option<u64> {
    let key = b"\"bench/t\":";
    let at = event.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: &[u8] = &event[at..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_stamps() {
        let mut buf = b": open\n\nevent: message\ndata: {\"_meta\":{\"bench/t\":123}}\n\ndata: x".to_vec();
        let mut seen = Vec::new();
        drain_events(&mut buf, |e| seen.push((has_data(e), stamp(e))));
        assert_eq!(seen, [(false, None), (true, Some(123))]);
        assert_eq!(buf, b"data: x");
        let mut crlf = b"data: 1\r\n\r\n".to_vec();
        let mut n = 0;
        drain_events(&mut crlf, |_| n += 1);
        assert_eq!((n, crlf.len()), (1, 0));
    }
}
