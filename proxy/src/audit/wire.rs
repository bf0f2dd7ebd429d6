//! Records in their wire form. A record is written once, as the protobuf bytes of an `AuditRecord`,
//! straight from the request's borrowed fields (no string copies), and copied whole into its thread's
//! record arena ([`RecordWriter`]); batches are those bytes framed as the
//! `records` field of an `AuditBatch`, so the shipper never copies, clones or re-encodes a record — the same
//! bytes are sent, kept for a resend, and spilled. The control plane decodes them as ordinary
//! `AuditBatch` messages.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint};

use crate::memory::{SPARE_LIMIT, Spares};

/// One encoded `AuditRecord`: a slice of its thread's record arena (see [`RecordWriter`]).
pub type Encoded = Bytes;

/// Writes the fields of one `AuditRecord` (empty and zero values are left out, as proto3 does).
///
/// A record is written into its thread's scratch buffer, then copied whole into the thread's record arena,
/// chunks of [`ARENA_CHUNK`] bytes, and handed out as a shared slice of it: a record lives until the
/// shipper frames its batch, ~100 ms later and on another thread, so an allocation of its own was a
/// `malloc` on the request path and a `free` of cold memory across threads. When a chunk is full the next
/// record takes the same chunk again from its start if its records are all gone, and a new chunk otherwise
/// (the old one is freed with its last record). Fields go to the scratch `Vec`, not to the arena's
/// `BytesMut`, whose one-byte writes are calls (~45 instructions a byte: a record's keys and lengths).
pub struct RecordWriter {
    buf: Vec<u8>,
}

/// Bytes of a record arena's chunk (~60 typical records).
const ARENA_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Scratch buffers given back once their record is in the arena.
    static SCRATCH: Spares<Vec<u8>> = const { Spares::new() };
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::with_capacity(ARENA_CHUNK));
}

impl Default for RecordWriter {
    fn default() -> Self {
        // More than a typical record: most are written without growing.
        let buf = SCRATCH.with(Spares::take).unwrap_or_else(|| Vec::with_capacity(512));
        Self { buf }
    }
}

impl RecordWriter {
    /// A string field made of `parts` written one after the other (no joined copy).
    pub fn text(&mut self, field: u32, parts: &[&str]) -> &mut Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > 0 {
            self.key(field, WireType::LengthDelimited).varint(len as u64);
            for part in parts {
                self.buf.extend_from_slice(part.as_bytes());
            }
        }
        self
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        if !value.is_empty() {
            self.key(field, WireType::LengthDelimited).varint(value.len() as u64);
            self.buf.extend_from_slice(value);
        }
        self
    }

    /// A `uint32`/`uint64` field.
    pub fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        if value != 0 {
            self.key(field, WireType::Varint).varint(value);
        }
        self
    }

    /// An `int64` field; `always` writes a zero too (an `optional` field that is set).
    pub fn int(&mut self, field: u32, value: i64, always: bool) -> &mut Self {
        if value != 0 || always {
            self.key(field, WireType::Varint).varint(value as u64);
        }
        self
    }

    /// The record, copied into the arena and split off it.
    pub fn finish(mut self) -> Encoded {
        let record = ARENA.with_borrow_mut(|arena| {
            // A chunk still shared with records in flight is left to them when it has no room.
            arena.extend_from_slice(&self.buf);
            arena.split().freeze()
        });
        // One grown by a large record (a tool's arguments) is not kept.
        if self.buf.capacity() <= SPARE_LIMIT {
            self.buf.clear();
            SCRATCH.with(|spares| spares.give_back(self.buf));
        }
        record
    }

    /// A field's key: its number and wire type.
    fn key(&mut self, field: u32, wire_type: WireType) -> &mut Self {
        self.varint(u64::from(field << 3 | wire_type as u32))
    }

    /// A base-128 varint, written into the record's own buffer. `prost`'s `encode_varint`, generic over
    /// `BufMut`, cost ~26 instructions a call, and a record writes ~36 (scenario h): most values here are
    /// one byte.
    fn varint(&mut self, mut value: u64) -> &mut Self {
        while value >= 0x80 {
            self.buf.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
        self
    }
}

/// `AuditBatch.records`.
const RECORDS_FIELD: u32 = 2;

/// Records framed as an `AuditBatch`'s `records` (the batch without its `seq`), with their count.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub body: Bytes,
    pub records: usize,
}

impl Batch {
    pub fn of<R: AsRef<[u8]>>(records: &[R]) -> Self {
        let size: usize = records
            .iter()
            .map(|r| r.as_ref().len())
            .map(|len| 1 + encoded_len_varint(len as u64) + len)
            .sum();
        let mut body = BytesMut::with_capacity(size);
        for record in records {
            let record = record.as_ref();
            encode_key(RECORDS_FIELD, WireType::LengthDelimited, &mut body);
            encode_varint(record.len() as u64, &mut body);
            body.extend_from_slice(record);
        }
        Self { body: body.freeze(), records: records.len() }
    }
}

/// An `AuditBatch` on the stream: its `seq`, then the framed records as they are.
#[derive(Debug, Clone, Default)]
pub struct RawAuditBatch {
    pub seq: u64,
    pub body: Bytes,
}

impl prost::Message for RawAuditBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.seq != 0 {
            encode_key(1, WireType::Varint, buf);
            encode_varint(self.seq, buf);
        }
        buf.put_slice(&self.body);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Only ever encoded by the proxy.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let seq = if self.seq == 0 { 0 } else { 1 + encoded_len_varint(self.seq) };
        seq + self.body.len()
    }

    fn clear(&mut self) {
        self.seq = 0;
        self.body = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use mcpgw_proto::v1::{AuditBatch, AuditRecord};
    use prost::Message;

    use super::*;

    /// What the writer and the batch framing make decodes as the ordinary messages the control plane reads.
    #[test]
    fn records_and_batches_decode_as_the_proto_messages() {
        let mut w = RecordWriter::default();
        w.bytes(1, &[7; 16])
            .int(2, 1_764_000_000_000_000, false)
            .text(3, &["api-key:", "k1"])
            .text(4, &["acme"])
            .text(5, &[])
            .uint(12, 200)
            .int(13, 0, true)
            .int(14, 0, false)
            .uint(15, u64::MAX)
            .text(21, &["proxy-", "a"]);
        let first = w.finish();
        let mut w = RecordWriter::default();
        w.int(13, -32601, true).text(11, &["error"]);
        let second = w.finish();

        let record = AuditRecord::decode(&first[..]).unwrap();
        assert_eq!(record.id, vec![7; 16]);
        assert_eq!(record.time_unix_us, 1_764_000_000_000_000);
        assert_eq!(
            (record.principal.as_str(), record.tenant_id.as_str(), record.server.as_str()),
            ("api-key:k1", "acme", "")
        );
        assert_eq!((record.status, record.rpc_error_code, record.duration_us), (200, Some(0), 0));
        // Keys of fields past 15 and values past 63 bits take more than one byte.
        assert_eq!((record.bytes_in, record.proxy_id.as_str()), (u64::MAX, "proxy-a"));

        let batch = Batch::of(&[first, second]);
        assert_eq!(batch.records, 2);
        let raw = RawAuditBatch { seq: 9, body: batch.body };
        let decoded = AuditBatch::decode(raw.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.seq, 9);
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[0], record);
        assert_eq!(
            (decoded.records[1].rpc_error_code, decoded.records[1].outcome.as_str()),
            (Some(-32601), "error")
        );
        assert_eq!(raw.encoded_len(), raw.encode_to_vec().len());
    }

    /// Records of one thread are cut from one chunk, each its own bytes whatever is written after it; a
    /// full chunk is written again from its start when its records are all gone, and left to them while
    /// one is held.
    #[test]
    fn records_share_their_thread_arena() {
        fn write(n: u64) -> Encoded {
            let mut w = RecordWriter::default();
            w.uint(12, n).text(11, &["outcome-", &n.to_string()]);
            w.finish()
        }
        // A thread of its own: its arena is new, so its first record starts the chunk.
        std::thread::spawn(|| {
            let chunk_start = write(0).as_ptr();
            let records: Vec<Encoded> = (0..1000).map(write).collect();
            for (n, record) in records.iter().enumerate() {
                let decoded = AuditRecord::decode(&record[..]).unwrap();
                assert_eq!((decoded.status, decoded.outcome), (n as u32, format!("outcome-{n}")));
            }
            let adjacent = records
                .windows(2)
                .filter(|w| w[0].as_ptr().wrapping_add(w[0].len()) == w[1].as_ptr())
                .count();
            // ~20 bytes a record here: a 16 KiB chunk holds hundreds, so all but a few follow the one before.
            assert!(adjacent >= 990, "records were allocated one by one ({adjacent} adjacent)");
            drop(records);

            // Each record dropped at once, as the shipper drops them: once full, the same chunk again.
            let turned = (0..2 * ARENA_CHUNK as u64 / 10).any(|n| write(n).as_ptr() == chunk_start);
            assert!(turned, "a chunk whose records are gone was not written again");

            // A record held while its chunk fills: the chunk is left to it.
            let held = write(7);
            let mut last = held.clone();
            for n in 0..2 * ARENA_CHUNK as u64 / 10 {
                last = write(n);
            }
            assert_eq!(AuditRecord::decode(&held[..]).unwrap().outcome, "outcome-7");
            assert_eq!(AuditRecord::decode(&last[..]).unwrap().status, (2 * ARENA_CHUNK / 10 - 1) as u32);
        })
        .join()
        .unwrap();
    }
}
