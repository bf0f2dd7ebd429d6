//! HTTP/1 message framing shared by both sides of the gateway: the client's requests
//! (`crate::downstream`) and the upstream's answers (`crate::upstream::response`). A body is decoded out
//! of the reader's buffer without copying it ([`Body::decode`]); the framing headers are read by the same
//! rules on both sides (RFC 9112 §6): `Transfer-Encoding` ending in `chunked`, else the `Content-Length`
//! (repeated values must agree).
//!
//! Decoding is cancel-safe: the state moves only when bytes are consumed from the buffer.

use crate::headers::Noted;
use crate::memory::Spares;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, header};
use pingora::{Error, ErrorType, Result};

/// The longest chunk-size line (with its extensions) and the most trailer bytes read.
const CHUNK_LINE_LIMIT: usize = 4 * 1024;
const TRAILER_LIMIT: usize = 64 * 1024;

/// Where a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// The head has not been read.
    Head,
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Delimited by the end of the connection.
    UntilClose,
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: the bytes still to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until the empty line; the bytes of them read so far.
    Trailer(usize),
}

pub(crate) fn malformed(what: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, what.into())
}

impl Body {
    /// The body a message's framing headers announce when they say anything: chunked when
    /// `Transfer-Encoding`'s last coding is `chunked`, else `Length` by `Content-Length` (`Done` for 0);
    /// `None` when neither header is there. Any other transfer coding is `UntilClose`. `fields` says which
    /// of them the head has.
    pub(crate) fn framed_by(headers: &HeaderMap, fields: Noted) -> Result<Option<Self>> {
        if fields.may_have(&header::TRANSFER_ENCODING) && headers.contains_key(header::TRANSFER_ENCODING) {
            return Ok(Some(if chunked_last(headers) {
                Body::Chunked(Chunk::Size)
            } else {
                Body::UntilClose
            }));
        }
        if !fields.may_have(&header::CONTENT_LENGTH) {
            return Ok(None);
        }
        let length = match fields.content_length() {
            Some(noted) => noted,
            None => content_length(headers)?,
        };
        Ok(length.map(|n| if n == 0 { Body::Done } else { Body::Length(n) }))
    }

    /// Takes the next body bytes out of `buf`: `None` when more must be read first; `Some(None)` at the
    /// body's end.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Bytes>>> {
        loop {
            match *self {
                Body::Head => {
                    return Error::e_explain(ErrorType::InternalError, "the body was read before the head");
                }
                Body::Done => return Ok(Some(None)),
                Body::UntilClose => {
                    return Ok((!buf.is_empty()).then(|| Some(buf.split().freeze())));
                }
                Body::Length(left) => {
                    let Some(data) = take(buf, left) else { return Ok(None) };
                    let left = left - data.len() as u64;
                    *self = if left == 0 { Body::Done } else { Body::Length(left) };
                    return Ok(Some(Some(data)));
                }
                Body::Chunked(Chunk::Data(left)) => {
                    let Some(data) = take(buf, left) else { return Ok(None) };
                    let left = left - data.len() as u64;
                    *self = Body::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Some(Some(data)));
                }
                Body::Chunked(Chunk::Size) => {
                    let Some(line) = line(buf, CHUNK_LINE_LIMIT, "a chunk-size line")? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&line)?;
                    *self = Body::Chunked(if size == 0 { Chunk::Trailer(0) } else { Chunk::Data(size) });
                }
                Body::Chunked(Chunk::DataEnd) => {
                    let Some(line) = line(buf, 2, "the end of a chunk")? else { return Ok(None) };
                    if !line.is_empty() {
                        return Err(malformed("chunk data longer than its size"));
                    }
                    *self = Body::Chunked(Chunk::Size);
                }
                Body::Chunked(Chunk::Trailer(seen)) => {
                    let room = TRAILER_LIMIT.saturating_sub(seen);
                    let before = buf.len();
                    let Some(line) = line(buf, room, "the trailer fields")? else { return Ok(None) };
                    // Trailer fields are not forwarded (messages are re-framed).
                    *self = if line.is_empty() {
                        Body::Done
                    } else {
                        Body::Chunked(Chunk::Trailer(seen + before - buf.len()))
                    };
                }
            }
        }
    }
}

/// Up to `left` buffered body bytes, `None` when none is buffered.
fn take(buf: &mut BytesMut, left: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some(buf.split_to(n).freeze())
}

/// The next line in `buf` without its CRLF (or bare LF), consumed; `None` when it has not all arrived. A
/// line of `limit` bytes or more is an error naming `what`.
fn line(buf: &mut BytesMut, limit: usize, what: &str) -> Result<Option<BytesMut>> {
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(limit.saturating_add(1))]) else {
        if buf.len() >= limit {
            return Err(malformed(format!("{what} over {limit} bytes")));
        }
        return Ok(None);
    };
    let mut line = buf.split_to(lf + 1);
    line.truncate(if line.ends_with(b"\r\n") { lf - 1 } else { lf });
    Ok(Some(line))
}

/// Whether the last transfer coding of `Transfer-Encoding` is `chunked`.
pub(crate) fn chunked_last(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|coding| !coding.is_empty())
        .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"))
}

/// The `Content-Length`, when there is one: every value (repeated headers, comma lists) must be the same
/// decimal number.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(item.trim_ascii())
                .ok_or_else(|| malformed(format!("Content-Length {:?}", String::from_utf8_lossy(item))))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("Content-Length values that disagree"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether a `Connection` header of `headers` lists `token` (ASCII case ignored).
pub(crate) fn connection_has(headers: &HeaderMap, fields: Noted, token: &str) -> bool {
    fields.may_have(&header::CONNECTION)
        && headers.get_all(header::CONNECTION).iter().any(|v| list_has(v.as_bytes(), token.as_bytes()))
}

/// Whether the comma-separated list `value` holds `token` (ASCII case ignored).
pub(crate) fn list_has(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// A non-negative decimal number (digits only, no sign).
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // 19 digits always fit in a u64.
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The size of a chunk-size line (`1*HEXDIG [ BWS ";" extensions ]`).
fn chunk_size(line: &[u8]) -> Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(malformed(format!("the chunk-size line {:?}", String::from_utf8_lossy(line))));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| malformed("a chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| malformed("a chunk size"))
}

/// How many names [`KNOWN_NAMES`] holds (a `u32` of [`KNOWN_BY_LENGTH`] has a bit for each).
const KNOWN: usize = 24;

/// Header names matched before `HeaderName::from_bytes`: those of MCP traffic that are not in `http`'s
/// standard table (it allocates a copy of every name it does not know), and the standard names most MCP
/// requests and answers carry (it lowercases each name into a buffer and matches it against ~90 names:
/// ~115 instructions a name, ~10 names a forwarded call). The first are [`crate::headers::MCP_HEADERS`],
/// in its order.
static KNOWN_NAMES: [HeaderName; KNOWN] = [
    crate::headers::MCP_PROTOCOL_VERSION,
    crate::headers::MCP_SESSION_ID,
    crate::headers::MCP_METHOD,
    crate::headers::MCP_NAME,
    HeaderName::from_static("last-event-id"),
    crate::headers::TRACEPARENT,
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-forwarded-for"),
    crate::headers::KEEP_ALIVE,
    header::HOST,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::AUTHORIZATION,
    header::CACHE_CONTROL,
    header::CONNECTION,
    header::CONTENT_ENCODING,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::DATE,
    header::EXPECT,
    header::ORIGIN,
    header::SERVER,
    header::TRANSFER_ENCODING,
    header::USER_AGENT,
];

/// [`KNOWN_NAMES`] as text, in the same order.
const KNOWN_TEXT: [&[u8]; KNOWN] = [
    b"mcp-protocol-version",
    b"mcp-session-id",
    b"mcp-method",
    b"mcp-name",
    b"last-event-id",
    b"traceparent",
    b"tracestate",
    b"x-forwarded-for",
    b"keep-alive",
    b"host",
    b"accept",
    b"accept-encoding",
    b"authorization",
    b"cache-control",
    b"connection",
    b"content-encoding",
    b"content-length",
    b"content-type",
    b"date",
    b"expect",
    b"origin",
    b"server",
    b"transfer-encoding",
    b"user-agent",
];

/// For each of [`KNOWN_TEXT`], its bit among the fields [`Noted`] notes (0 for the others).
const KNOWN_NOTED: [u16; KNOWN] = {
    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let noted = crate::headers::NOTED_NAMES;
    let mut bits = [0u16; KNOWN];
    let mut n = 0;
    while n < noted.len() {
        let mut at = 0;
        while at < KNOWN_TEXT.len() && !same(KNOWN_TEXT[at], noted[n]) {
            at += 1;
        }
        // A name matched outside the table carries no bit: each noted name must be in it.
        assert!(at < KNOWN_TEXT.len(), "every noted name is a known name");
        bits[at] = 1 << n;
        n += 1;
    }
    bits
};

/// A header field's name as the head readers take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldName {
    /// As `http` keeps it.
    pub name: HeaderName,
    /// Its slot among [`crate::headers::MCP_HEADERS`].
    pub slot: Option<usize>,
    /// Its bit among the fields [`Noted`] notes (0 for a name not noted): [`Noted::note_bit`].
    pub noted: u16,
}

/// For each name length up to the longest in [`KNOWN_TEXT`], one bit for each of its names of that length.
const KNOWN_BY_LENGTH: [u32; KNOWN_LONGEST + 1] = {
    let mut table = [0u32; KNOWN_LONGEST + 1];
    let mut at = 0;
    while at < KNOWN_TEXT.len() {
        table[KNOWN_TEXT[at].len()] |= 1 << at;
        at += 1;
    }
    table
};

/// The longest name in [`KNOWN_TEXT`].
const KNOWN_LONGEST: usize = {
    let (mut longest, mut at) = (0, 0);
    while at < KNOWN_TEXT.len() {
        if KNOWN_TEXT[at].len() > longest {
            longest = KNOWN_TEXT[at].len();
        }
        at += 1;
    }
    longest
};
/// Words of a name compared at once.
const NAME_WORDS: usize = KNOWN_LONGEST.div_ceil(8);

/// [`KNOWN_TEXT`] as words, zero after each name's end, and for each the bits that fold case: `0x20` in
/// each byte that is a letter. A name of the same length matches when its words, with those bits set,
/// equal the text's: a letter in either case matches its lowercase, any other byte only itself.
const KNOWN_WORDS: [([u64; NAME_WORDS], [u64; NAME_WORDS]); KNOWN] = {
    let mut table = [([0u64; NAME_WORDS], [0u64; NAME_WORDS]); KNOWN];
    let mut at = 0;
    while at < KNOWN_TEXT.len() {
        let text = KNOWN_TEXT[at];
        let mut i = 0;
        while i < text.len() {
            assert!(text[i] == b'-' || text[i].is_ascii_lowercase(), "a known name is lowercase");
            table[at].0[i / 8] |= (text[i] as u64) << (i % 8 * 8);
            if text[i].is_ascii_lowercase() {
                table[at].1[i / 8] |= 0x20 << (i % 8 * 8);
            }
            i += 1;
        }
        at += 1;
    }
    table
};

thread_local! {
    /// Header maps of heads that have ended, emptied, for the next heads read on this thread.
    static MAPS: Spares<HeaderMap> = const { Spares::new() };
}

/// The most fields a map given back to [`MAPS`] may have room for (one grown by an unusual head is freed).
const MAP_LIMIT: usize = 48;

/// A header map with room for a head's `fields`: one an ended head left on this thread ([`recycle_map`]),
/// or a new one. Both head readers take one per head: a new map is two allocations (its indices and its
/// entries) to make and free, ~950 instructions for the two heads of a forwarded call (BENCHMARKS.md).
pub(crate) fn head_map(fields: usize) -> HeaderMap {
    match MAPS.with(Spares::take) {
        Some(mut map) => {
            // Within `MAX_HEADERS`, far below the map's limit.
            let _ = map.try_reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Gives an ended head's map back for [`head_map`]: its fields are dropped now (values can be slices of
/// a connection's read buffer, which must not stay held), the room kept.
pub(crate) fn recycle_map(mut map: HeaderMap) {
    if map.capacity() <= MAP_LIMIT {
        map.clear();
        MAPS.with(|maps| maps.give_back(map));
    }
}

/// The name of a header field as `http` keeps it (lowercase), its slot among the MCP headers and its bit
/// among the noted fields.
pub(crate) fn known_header_name(name: &[u8]) -> Result<FieldName> {
    // Only the known names of the same length are compared: most names a request carries are standard
    // ones, which match none of them.
    let mut candidates = KNOWN_BY_LENGTH.get(name.len()).copied().unwrap_or(0);
    if candidates != 0 {
        // Compared a word at a time: byte by byte, a name of 14 letters took ~200 instructions.
        let mut padded = [0u8; NAME_WORDS * 8];
        padded[..name.len()].copy_from_slice(name);
        let words: [u64; NAME_WORDS] = std::array::from_fn(|i| {
            u64::from_le_bytes(padded[i * 8..i * 8 + 8].try_into().unwrap_or_default())
        });
        while candidates != 0 {
            let at = candidates.trailing_zeros() as usize;
            let (text, fold) = &KNOWN_WORDS[at];
            if (0..NAME_WORDS).all(|i| words[i] | fold[i] == text[i]) {
                let slot = (at < crate::headers::MCP_HEADERS.len()).then_some(at);
                return Ok(FieldName { name: KNOWN_NAMES[at].clone(), slot, noted: KNOWN_NOTED[at] });
            }
            candidates &= candidates - 1;
        }
    }
    HeaderName::from_bytes(name)
        .map(|name| FieldName { name, slot: None, noted: 0 })
        .map_err(|_| malformed(format!("the header name {:?}", String::from_utf8_lossy(name))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"1A ; name=value").unwrap(), 26);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"0x1").is_err());
        assert!(chunk_size(b"-1").is_err());
        assert_eq!(parse_decimal(b"007"), Some(7));
        assert_eq!(parse_decimal(b"+7"), None);
        assert_eq!(parse_decimal(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        assert_eq!(parse_decimal(b"10000000000000000000"), None, "20 digits");
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn framing_headers() {
        // The framing of a head read with its fields noted is the framing of its whole map.
        let framed = |pairs: &[(&'static str, &'static str)]| {
            let (mut h, mut noted) = (HeaderMap::new(), Noted::default());
            for (n, v) in pairs {
                let name = header_name(n.as_bytes()).unwrap();
                noted.note(&name, v.as_bytes());
                h.append(name, http::HeaderValue::from_static(v));
            }
            let any = Body::framed_by(&h, Noted::ANY).map_err(|e| e.to_string());
            assert_eq!(Body::framed_by(&h, noted).map_err(|e| e.to_string()), any, "{pairs:?}");
            for token in ["close", "keep-alive"] {
                assert_eq!(
                    connection_has(&h, noted, token),
                    connection_has(&h, Noted::ANY, token),
                    "{pairs:?}"
                );
            }
            assert_eq!(
                noted.may_have(&crate::headers::KEEP_ALIVE),
                h.contains_key("keep-alive"),
                "{pairs:?}"
            );
            any
        };
        assert_eq!(framed(&[("host", "x"), ("content-type", "application/json")]).unwrap(), None);
        assert_eq!(framed(&[("Content-Length", "0")]).unwrap(), Some(Body::Done));
        assert_eq!(
            framed(&[("content-length", "5, 5"), ("accept", "*/*"), ("content-length", "5")]).unwrap(),
            Some(Body::Length(5))
        );
        assert!(framed(&[("content-length", "5"), ("content-length", "6")]).is_err());
        assert_eq!(
            framed(&[("content-length", "7"), ("content-length", " 7\t")]).unwrap(),
            Some(Body::Length(7))
        );
        assert!(framed(&[("content-length", "7"), ("content-length", "7, 8")]).is_err());
        for bad in ["", "x", "-1", "+7", "10000000000000000000"] {
            assert!(framed(&[("content-length", bad)]).is_err(), "{bad:?}");
        }
        assert_eq!(
            framed(&[("transfer-encoding", "gzip, Chunked"), ("content-length", "x")]).unwrap(),
            Some(Body::Chunked(Chunk::Size)),
            "Transfer-Encoding wins"
        );
        assert_eq!(framed(&[("Transfer-Encoding", "chunked, gzip")]).unwrap(), Some(Body::UntilClose));
        framed(&[("connection", "Keep-Alive"), ("keep-alive", "timeout=5"), ("content-length", "2")])
            .unwrap();
        framed(&[("Connection", "close"), ("mcp-session-id", "s")]).unwrap();
    }

    #[test]
    fn ended_heads_maps_are_taken_again_empty_and_oversized_ones_are_freed() {
        assert!(MAPS.with(Spares::take).is_none(), "a new thread keeps none");
        let mut map = head_map(8);
        let room = map.capacity();
        assert!(room >= 8);
        map.append(header::HOST, http::HeaderValue::from_static("example"));
        recycle_map(map);
        let again = head_map(4);
        assert!(again.is_empty(), "its fields were dropped");
        assert_eq!(again.capacity(), room, "the same map, its room kept");
        recycle_map(again);
        let grown = head_map(100);
        assert!(grown.capacity() >= 100, "room made for a larger head");
        recycle_map(grown);
        assert!(MAPS.with(Spares::take).is_none(), "a map over the limit is freed");
    }

    #[test]
    fn known_header_names_match_their_text() {
        for (at, (text, known)) in KNOWN_TEXT.iter().zip(&KNOWN_NAMES).enumerate() {
            assert_eq!(known.as_str().as_bytes(), *text);
            // As `http` would make it, in any case.
            assert_eq!(HeaderName::from_bytes(text).unwrap(), *known);
            let slot = (at < crate::headers::MCP_HEADERS.len()).then_some(at);
            let noted = Noted::default();
            let mut one = noted;
            one.note(known, b"");
            for spelled in [text.to_vec(), text.to_ascii_uppercase(), capitalized(text)] {
                let field = known_header_name(&spelled).unwrap();
                assert_eq!((&field.name, field.slot), (known, slot));
                let mut by_bit = noted;
                by_bit.note_bit(field.noted, b"");
                assert_eq!(by_bit, one, "{known} noted by its bit as by its name");
            }
        }
        // Names as long as known ones (one byte apart, first or last), and longer than any, are as `http`
        // makes them, in no slot.
        for other in
            ["user-agenx", "xontent-length", "x-forwarded-proto", "x-a-name-longer-than-twenty", "mcp-nam3"]
        {
            let field = known_header_name(other.as_bytes()).unwrap();
            let name = HeaderName::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(field, FieldName { name, slot: None, noted: 0 }, "{other}");
        }
        // `\r` is `-` with the case bit set: it must not match a known name's `-` (nor be a name at all).
        for other in [&b"user\ragent"[..], b"content\rtype", b"mcp\rname"] {
            assert!(known_header_name(other).is_err(), "{}", String::from_utf8_lossy(other));
        }
        for (slot, name) in crate::headers::MCP_HEADERS.iter().enumerate() {
            assert_eq!(known_header_name(name.as_str().as_bytes()).unwrap().slot, Some(slot));
        }
        assert_eq!(header_name(b"Content-Type").unwrap(), http::header::CONTENT_TYPE);
        assert_eq!(header_name(b"x-Custom").unwrap().as_str(), "x-custom");
        assert!(header_name(b"bad name").is_err());
    }

    /// The name of a header field as `http` keeps it (lowercase).
    fn header_name(name: &[u8]) -> Result<HeaderName> {
        known_header_name(name).map(|field| field.name)
    }

    /// `Content-Type` for `content-type`.
    fn capitalized(text: &[u8]) -> Vec<u8> {
        let mut upper = true;
        text.iter()
            .map(|&b| {
                let b = if upper { b.to_ascii_uppercase() } else { b };
                upper = b == b'-';
                b
            })
            .collect()
    }
}
