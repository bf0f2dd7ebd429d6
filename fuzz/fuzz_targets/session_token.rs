//! Session tokens (`Mcp-Session-Id`, legacy `sessionId`, `/mcp` cursors): `SessionKeys::open` on any
//! string must refuse cleanly, and sealing fuzzer-chosen claims must open again to the same claims for the
//! same scope only. The first input byte picks the mode; the key is fixed so findings reproduce.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcpgw_proxy::session::{Claims, ClientHello, Scope, SessionKeys, TokenError, parse_key};

const CURRENT: [u8; 32] = *b"fuzz-session-key-current-0123456";
const PREVIOUS: [u8; 32] = *b"fuzz-session-key-previous-abcdef";

static KEYS: LazyLock<SessionKeys> =
    LazyLock::new(|| SessionKeys::new(&CURRENT, &[PREVIOUS], Duration::from_secs(3600)));
/// A deployment that only knows the previous key (before a rotation).
static OLD: LazyLock<SessionKeys> =
    LazyLock::new(|| SessionKeys::new(&PREVIOUS, &[], Duration::from_secs(3600)));

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Splits `text` into up to `n` fields at NUL bytes (missing ones are empty).
fn fields(text: &str, n: usize) -> Vec<&str> {
    let mut out: Vec<&str> = text.splitn(n, '\0').collect();
    out.resize(n, "");
    out
}

fn scope<'a>(selector: u8, server: &'a str, principal: &'a str) -> Scope<'a> {
    match selector % 4 {
        0 => Scope::Session(server, principal),
        1 => Scope::SseMessage(server, principal),
        2 => Scope::Aggregate(principal),
        _ => Scope::Cursor(principal),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match mode % 3 {
        // A token as a client presents it.
        0 => {
            let f = fields(text, 3);
            let s = scope(rest.first().copied().unwrap_or(0), f[1], f[2]);
            match KEYS.open(s, f[0]) {
                Ok(claims) => {
                    // Only sealing with a configured key can produce an openable token: a fuzzer cannot
                    // forge AES-GCM, so success means the input held a token sealed by this test's keys.
                    assert!(now().saturating_sub(claims.issued) <= 3600);
                }
                Err(
                    TokenError::Malformed | TokenError::UnknownKey | TokenError::Forged | TokenError::Expired,
                ) => {}
            }
            let _ = OLD.open(s, f[0]);
        }
        // Seal fuzzer-chosen claims, open them again.
        1 => {
            let f = fields(text, 8);
            let (server, principal) = (f[0], f[1]);
            let selector = rest.len() as u8;
            let claims = Claims {
                instance: f[2].to_owned(),
                upstream: f[3].to_owned(),
                issued: now(),
                aggregate: (!f[4].is_empty()).then(|| ClientHello {
                    protocol_version: f[4].to_owned(),
                    capabilities: f[5].to_owned(),
                    client_info: f[6].to_owned(),
                }),
            };
            let s = scope(selector, server, principal);
            let token = KEYS.seal_claims(s, &claims);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "base64url");
            assert_eq!(KEYS.open(s, &token), Ok(claims.clone()), "seal then open");
            // Surrounding whitespace (as a header value may carry) is not part of the token.
            assert_eq!(KEYS.open(s, &format!(" {token}\t")), Ok(claims.clone()));
            // Bound to its scope: another role, server or principal cannot open it.
            let other = scope(selector.wrapping_add(1), server, principal);
            assert_ne!(KEYS.open(other, &token).ok(), Some(claims.clone()), "another role");
            let stranger = format!("{principal}x");
            assert!(KEYS.open(scope(selector, server, &stranger), &token).is_err(), "another principal");
            // Server ids hold no newline (the boundary of the authenticated data relies on it).
            if matches!(s, Scope::Session(..) | Scope::SseMessage(..)) && !server.contains('\n') {
                let moved = format!("{server}x");
                assert!(KEYS.open(scope(selector, &moved, principal), &token).is_err(), "another server");
            }
            // A deployment without the current key does not know it.
            assert!(OLD.open(s, &token).is_err());
            // Any single flipped character is refused.
            if !f[7].is_empty() {
                let at = f[7].len() % token.len();
                let mut bytes = token.clone().into_bytes();
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                let flipped = String::from_utf8(bytes).expect("ASCII");
                if let Ok(opened) = KEYS.open(s, &flipped) {
                    // The last base64 character carries unused low bits: changing only those decodes to
                    // the same bytes, hence the same token.
                    assert_eq!(opened, claims, "a changed token opened to other claims");
                    assert_eq!(at, token.len() - 1, "only the final character has spare bits");
                }
            }
        }
        // A configured key (`--session-key`).
        _ => {
            if let Ok(key) = parse_key(text) {
                let distinct = key.iter().collect::<std::collections::HashSet<_>>().len();
                assert!(distinct >= 12, "a weak key was accepted");
                let keys = SessionKeys::new(&key, &[], Duration::from_secs(60));
                let token = keys.seal(Scope::Cursor("p"), "i", "u");
                assert!(keys.open(Scope::Cursor("p"), &token).is_ok());
            }
        }
    }
});
