//! Spill files: audit batches the control plane has not acknowledged, kept on disk in order while it is
//! away or slow, and read back oldest first when the stream returns — also after a restart.
//!
//! The directory holds numbered segments (`<20-digit number>.spill`); a segment is a sequence of frames,
//! each a little-endian `u32` length, a `u32` record count and the batch's records as they go on the
//! stream (the `records` of an `AuditBatch`, see `wire`), flushed to disk (`fdatasync`) before the append
//! returns. A frame cut short by a crash ends its segment's reading (what it held was never
//! acknowledged as spilled). Segments are removed once every batch in them was acknowledged. Batches that
//! were in flight when a stream failed are older than everything spilled after them, so they are written
//! to a segment numbered before the oldest one.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::wire::Batch;

/// Frames per segment: a segment is replayed (and acknowledged) as a unit.
const SEGMENT_FRAMES: usize = 64;
/// Bytes per segment, at most (a segment always takes at least one frame).
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Numbers start here, so that segments written before the oldest one still have numbers below it.
const FIRST_NUMBER: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("the audit spill is full ({0} bytes)")]
    Full(u64),
    #[error("audit spill: {0}")]
    Io(#[from] io::Error),
}

struct Segment {
    number: u64,
    bytes: u64,
    frames: usize,
}

struct Writing {
    segment: Segment,
    file: File,
}

pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    /// Closed segments, oldest first.
    closed: VecDeque<Segment>,
    writing: Option<Writing>,
    next: u64,
    bytes: u64,
}

impl Spill {
    /// Opens `dir` (created if missing) and finds the segments a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(number) =
                name.to_str().and_then(|n| n.strip_suffix(".spill")).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let bytes = entry.metadata()?.len();
            if bytes == 0 {
                fs::remove_file(entry.path())?;
                continue;
            }
            found.push(Segment { number, bytes, frames: SEGMENT_FRAMES });
        }
        found.sort_by_key(|s| s.number);
        let bytes = found.iter().map(|s| s.bytes).sum();
        let next = found.last().map_or(FIRST_NUMBER, |s| s.number + 1);
        Ok(Self { dir: dir.to_owned(), max_bytes, closed: found.into(), writing: None, next, bytes })
    }

    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.writing.as_ref().is_none_or(|w| w.segment.frames == 0)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.spill"))
    }

    fn frame(batch: &Batch) -> Vec<u8> {
        let mut frame = Vec::with_capacity(8 + batch.body.len());
        frame.extend_from_slice(&u32::try_from(batch.body.len()).unwrap_or(u32::MAX).to_le_bytes());
        frame.extend_from_slice(&u32::try_from(batch.records).unwrap_or(u32::MAX).to_le_bytes());
        frame.extend_from_slice(&batch.body);
        frame
    }

    fn room_for(&self, len: u64) -> Result<(), SpillError> {
        if self.bytes + len > self.max_bytes { Err(SpillError::Full(self.max_bytes)) } else { Ok(()) }
    }

    /// Appends a batch after everything spilled. On `Full` the batch is handed back untouched.
    pub fn append(&mut self, batch: Batch) -> Result<(), (SpillError, Batch)> {
        let frame = Self::frame(&batch);
        let len = frame.len() as u64;
        if let Err(e) = self.room_for(len) {
            return Err((e, batch));
        }
        let rotate = self
            .writing
            .as_ref()
            .is_some_and(|w| w.segment.frames >= SEGMENT_FRAMES || w.segment.bytes + len > SEGMENT_BYTES);
        if rotate {
            self.rotate();
        }
        let result = (|| -> io::Result<()> {
            if self.writing.is_none() {
                let number = self.next;
                let file = OpenOptions::new().create_new(true).append(true).open(self.path(number))?;
                self.next += 1;
                self.writing = Some(Writing { segment: Segment { number, bytes: 0, frames: 0 }, file });
            }
            let w = self.writing.as_mut().expect("opened above");
            w.file.write_all(&frame)?;
            w.file.sync_data()?;
            w.segment.bytes += len;
            w.segment.frames += 1;
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.bytes += len;
                Ok(())
            }
            Err(e) => {
                // A half-written frame would end its segment's reading early; start a new segment instead.
                self.rotate();
                Err((e.into(), batch))
            }
        }
    }

    /// Writes `batches` (older than everything spilled) into a segment before the oldest one.
    pub fn prepend(&mut self, batches: &[Batch]) -> Result<(), SpillError> {
        if batches.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        let frames = batches.len();
        for batch in batches {
            data.extend_from_slice(&Self::frame(batch));
        }
        self.room_for(data.len() as u64)?;
        let oldest =
            self.closed.front().map(|s| s.number).or(self.writing.as_ref().map(|w| w.segment.number));
        let number = oldest.map_or(self.next, |n| n - 1);
        let path = self.path(number);
        let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        file.write_all(&data)?;
        file.sync_data()?;
        let bytes = data.len() as u64;
        self.bytes += bytes;
        if oldest.is_none() {
            self.next += 1;
        }
        self.closed.push_front(Segment { number, bytes, frames });
        Ok(())
    }

    /// Closes the segment being written, so that it can be replayed.
    fn rotate(&mut self) {
        if let Some(w) = self.writing.take() {
            if w.segment.frames > 0 {
                self.closed.push_back(w.segment);
            } else {
                let _ = fs::remove_file(self.path(w.segment.number));
            }
        }
    }

    /// The oldest segment's number and its batches, closing the segment being written if it is the only
    /// one left; `None` when nothing is spilled.
    pub fn oldest(&mut self) -> Option<(u64, Vec<Batch>)> {
        if self.closed.is_empty() {
            self.rotate();
        }
        loop {
            let number = self.closed.front()?.number;
            match fs::read(self.path(number)) {
                Ok(data) => {
                    let batches = read_frames(Bytes::from(data));
                    if batches.is_empty() {
                        tracing::warn!(
                            segment = number,
                            "An audit spill segment held no readable batch; removing it."
                        );
                        self.remove(number);
                        continue;
                    }
                    return Some((number, batches));
                }
                Err(e) => {
                    tracing::error!(segment = number, error = %e, "Cannot read an audit spill segment; skipping it.");
                    self.remove(number);
                }
            }
        }
    }

    /// Removes a segment whose batches were all acknowledged.
    pub fn remove(&mut self, number: u64) {
        if let Some(pos) = self.closed.iter().position(|s| s.number == number) {
            let segment = self.closed.remove(pos).expect("position is in range");
            self.bytes = self.bytes.saturating_sub(segment.bytes);
            if let Err(e) = fs::remove_file(self.path(number)) {
                tracing::error!(segment = number, error = %e, "Cannot remove a replayed audit spill segment.");
            }
        }
    }
}

/// The batches of a segment, up to the first frame that is cut short. (The control plane decodes and
/// checks a frame's records; a segment is never half-written except at its end.)
fn read_frames(data: Bytes) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut at = 0;
    while data.len() >= at + 8 {
        let word = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes")) as usize;
        let (len, records) = (word(at), word(at + 4));
        if data.len() < at + 8 + len {
            tracing::warn!("An audit spill segment ends in a frame cut short (a crash while writing it).");
            break;
        }
        batches.push(Batch { body: data.slice(at + 8..at + 8 + len), records });
        at += 8 + len;
    }
    batches
}

#[cfg(test)]
mod tests {
    use mcpgw_proto::v1::{AuditBatch, AuditRecord};
    use prost::Message;

    use super::*;

    fn batch(ids: std::ops::Range<u8>) -> Batch {
        let records: Vec<_> = ids
            .map(|i| {
                AuditRecord { id: vec![i; 16], method: "tools/call".into(), ..Default::default() }
                    .encode_to_vec()
            })
            .collect();
        Batch::of(&records)
    }

    fn ids(batches: &[Batch]) -> Vec<u8> {
        batches
            .iter()
            .flat_map(|b| AuditBatch::decode(b.body.clone()).unwrap().records)
            .map(|r| r.id[0])
            .collect()
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mcpgw-spill-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// Everything spilled comes back in order, across segments and a reopen, and is gone once removed.
    #[test]
    fn batches_come_back_in_order_after_a_reopen() {
        let dir = dir("order");
        let mut spill = Spill::open(&dir, 1 << 30).unwrap();
        assert!(spill.is_empty());
        for i in 0..(SEGMENT_FRAMES as u8 + 2) {
            spill.append(batch(i..i + 1)).unwrap();
        }
        spill.prepend(&[batch(200..201), batch(201..202)]).unwrap();
        drop(spill);

        let mut spill = Spill::open(&dir, 1 << 30).unwrap();
        let mut seen = Vec::new();
        while let Some((number, batches)) = spill.oldest() {
            seen.extend(ids(&batches));
            spill.remove(number);
        }
        let mut expected = vec![200, 201];
        expected.extend(0..(SEGMENT_FRAMES as u8 + 2));
        assert_eq!(seen, expected);
        assert!(spill.is_empty());
        assert_eq!(spill.bytes(), 0);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "replayed segments are removed");
    }

    /// A frame cut short by a crash ends the segment: the frames before it are read, nothing invented.
    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = dir("torn");
        let mut spill = Spill::open(&dir, 1 << 30).unwrap();
        spill.append(batch(0..3)).unwrap();
        spill.append(batch(3..5)).unwrap();
        drop(spill);
        let path = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let mut spill = Spill::open(&dir, 1 << 30).unwrap();
        let (_, batches) = spill.oldest().unwrap();
        assert_eq!(ids(&batches), vec![0, 1, 2]);
    }

    /// Past the size limit a batch is handed back, not lost and not written.
    #[test]
    fn a_full_spill_hands_the_batch_back() {
        let dir = dir("full");
        let one = Spill::frame(&batch(0..10)).len() as u64;
        let mut spill = Spill::open(&dir, one * 2).unwrap();
        spill.append(batch(0..10)).unwrap();
        spill.append(batch(10..20)).unwrap();
        let (err, back) = spill.append(batch(20..30)).unwrap_err();
        assert!(matches!(err, SpillError::Full(_)));
        assert_eq!(back.records, 10);
        assert_eq!(spill.bytes(), one * 2);
    }
}
