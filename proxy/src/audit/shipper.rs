//! The shipper: one background task per proxy that takes records off the queue, batches them (up to
//! [`BATCH_RECORDS`] or [`BATCH_WAIT`]), and sends the batches on the `StreamAudit` stream, keeping each
//! until the control plane acknowledges its commit.
//!
//! Order is kept end to end: batches go out in the order they were made, spilled ones first. A batch goes
//! to the spill (when `--audit-spill-dir` is set) whenever it cannot go out at once: the stream is down,
//! [`WINDOW`] batches already wait for their acknowledgement (a slow control plane), or older batches are
//! still spilled. When a stream fails, the batches it had not acknowledged are written before everything
//! spilled. Without a spill directory, [`MEMORY_BATCHES`] batches wait in memory. A batch with nowhere to
//! go stops the shipper from taking records, so the queue fills and `--audit-overflow` decides.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mcpgw_proto::v1::AuditAck;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::spill::Spill;
use super::wire::{Batch, Encoded, RawAuditBatch};
use crate::metrics::METRICS;
use crate::rpc::ControlPlane;

/// Most records in one batch.
pub const BATCH_RECORDS: usize = 1000;
/// Longest time a record waits for its batch to fill.
pub const BATCH_WAIT: Duration = Duration::from_millis(100);
/// Batches sent from memory and not yet acknowledged, at most; more go to the spill.
const WINDOW: usize = 16;
/// Batches kept in memory while the stream is away, without a spill directory.
const MEMORY_BATCHES: usize = 64;
/// Batches a stream's outbound buffer holds (a replayed segment, at most 64, plus the window).
const OUTBOUND: usize = 128;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a batch with nowhere to go is tried again when nothing else happens.
const HELD_RETRY: Duration = Duration::from_secs(1);

/// Where an unacknowledged batch is kept.
enum Origin {
    Memory(Batch),
    /// A batch of a spill segment; the segment is removed when its last batch is acknowledged.
    Segment {
        number: u64,
        last: bool,
        records: usize,
    },
}

/// An open `StreamAudit` stream.
struct Link {
    tx: mpsc::Sender<RawAuditBatch>,
    acks: tonic::Streaming<AuditAck>,
    next_seq: u64,
}

/// The batches between the queue and the control plane.
struct Pipeline {
    spill: Option<Spill>,
    /// Not sent yet, newer than everything spilled.
    memory: VecDeque<Batch>,
    /// Sent, waiting for their acknowledgement, oldest first.
    inflight: VecDeque<(u64, Origin)>,
    /// A batch with nowhere to go yet.
    held: Option<Batch>,
}

impl Pipeline {
    fn has_backlog(&self) -> bool {
        !self.memory.is_empty()
            || !self.inflight.is_empty()
            || self.held.is_some()
            || self.spill.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn memory_inflight(&self) -> usize {
        self.inflight.iter().filter(|(_, o)| matches!(o, Origin::Memory(_))).count()
    }

    fn segment_inflight(&self) -> bool {
        self.inflight.iter().any(|(_, o)| matches!(o, Origin::Segment { .. }))
    }

    /// Puts a new batch where it goes next (see the module's documentation); keeps it in `held` when it
    /// has nowhere to go.
    fn place(&mut self, batch: Batch, connected: bool, stopping: bool) {
        let window_full = self.memory.len() + self.memory_inflight() >= WINDOW;
        if let Some(spill) = self.spill.as_mut()
            && (stopping || !connected || window_full || !spill.is_empty())
        {
            // Older batches waiting in memory go first, so the spill stays in order.
            while let Some(older) = self.memory.pop_front() {
                let len = older.records;
                match spill.append(older) {
                    Ok(()) => METRICS.audit_records.with_label_values(&["spilled"]).inc_by(len as u64),
                    Err((e, older)) => {
                        self.memory.push_front(older);
                        self.held = Some(batch);
                        log_spill_error(&e);
                        return;
                    }
                }
            }
            let len = batch.records;
            match spill.append(batch) {
                Ok(()) => METRICS.audit_records.with_label_values(&["spilled"]).inc_by(len as u64),
                Err((e, batch)) => {
                    log_spill_error(&e);
                    self.held = Some(batch);
                }
            }
            METRICS.audit_spill_bytes.set(spill.bytes() as i64);
            return;
        }
        if self.memory.len() + self.memory_inflight() < MEMORY_BATCHES {
            self.memory.push_back(batch);
        } else {
            self.held = Some(batch);
        }
    }

    /// Sends what may go now: memory batches up to the window, then (with nothing in memory) the oldest
    /// spilled segment. `Err` when the stream is gone.
    fn pump(&mut self, link: &mut Link) -> Result<(), ()> {
        while self.memory_inflight() < WINDOW {
            let Some(batch) = self.memory.pop_front() else { break };
            let seq = link.next_seq;
            // The bytes are shared, not copied: the batch stays here until its acknowledgement.
            match link.tx.try_send(RawAuditBatch { seq, body: batch.body.clone() }) {
                Ok(()) => {
                    link.next_seq += 1;
                    self.inflight.push_back((seq, Origin::Memory(batch)));
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.memory.push_front(batch);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.memory.push_front(batch);
                    return Err(());
                }
            }
        }
        if !self.memory.is_empty() || self.segment_inflight() {
            return Ok(());
        }
        let Some((number, batches)) = self.spill.as_mut().and_then(Spill::oldest) else { return Ok(()) };
        let count = batches.len();
        for (i, batch) in batches.into_iter().enumerate() {
            let seq = link.next_seq;
            let len = batch.records;
            if link.tx.try_send(RawAuditBatch { seq, body: batch.body }).is_err() {
                // The segment stays on disk and is sent again, whole, on the next stream.
                return Err(());
            }
            link.next_seq += 1;
            self.inflight.push_back((seq, Origin::Segment { number, last: i + 1 == count, records: len }));
        }
        Ok(())
    }

    /// Takes an acknowledgement; `Err` when it is not for the oldest batch in flight.
    fn ack(&mut self, ack: &AuditAck) -> Result<(), String> {
        match self.inflight.front() {
            Some((seq, _)) if *seq == ack.seq => {}
            other => {
                return Err(format!(
                    "acknowledgement of batch {} while batch {:?} is the oldest in flight",
                    ack.seq,
                    other.map(|(s, _)| s)
                ));
            }
        }
        let (_, origin) = self.inflight.pop_front().expect("checked above");
        let counter =
            |result: &str, n: usize| METRICS.audit_records.with_label_values(&[result]).inc_by(n as u64);
        match origin {
            Origin::Memory(batch) => counter("acked", batch.records),
            Origin::Segment { number, last, records } => {
                counter("acked", records);
                counter("replayed", records);
                if last && let Some(spill) = self.spill.as_mut() {
                    spill.remove(number);
                    METRICS.audit_spill_bytes.set(spill.bytes() as i64);
                }
            }
        }
        Ok(())
    }

    /// The stream is gone: batches it had not acknowledged are kept before everything newer.
    fn disconnected(&mut self) {
        let unacked: Vec<Batch> = std::mem::take(&mut self.inflight)
            .into_iter()
            .filter_map(|(_, origin)| match origin {
                Origin::Memory(batch) => Some(batch),
                // Still on disk: the segment is sent again, whole.
                Origin::Segment { .. } => None,
            })
            .collect();
        let unacked = match self.spill.as_mut() {
            Some(spill) if !unacked.is_empty() => {
                let records: usize = unacked.iter().map(|b| b.records).sum();
                match spill.prepend(&unacked) {
                    Ok(()) => {
                        METRICS.audit_records.with_label_values(&["spilled"]).inc_by(records as u64);
                        METRICS.audit_spill_bytes.set(spill.bytes() as i64);
                        Vec::new()
                    }
                    Err(e) => {
                        log_spill_error(&e);
                        unacked
                    }
                }
            }
            _ => unacked,
        };
        for batch in unacked.into_iter().rev() {
            self.memory.push_front(batch);
        }
    }

    /// Shutting down: everything in memory goes to the spill, where the next run finds it.
    fn spill_all(&mut self) {
        if self.spill.is_none() {
            return;
        }
        self.disconnected();
        if let Some(batch) = self.memory.pop_front() {
            // `place` writes every older batch in memory before this one.
            self.place(batch, false, true);
        }
    }
}

fn log_spill_error(e: &super::spill::SpillError) {
    static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    let mut last = LAST.lock().expect("not poisoned");
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
        *last = Some(std::time::Instant::now());
        tracing::error!(error = %e, "Audit batches cannot be spilled; records wait in memory, then --audit-overflow applies.");
    }
}

/// Opens `StreamAudit` with a codec that sends the batches' bytes as they are (`wire::RawAuditBatch`).
async fn connect(control_plane: &ControlPlane) -> Result<Link, tonic::Status> {
    let (tx, rx) = mpsc::channel(OUTBOUND);
    let mut grpc = tonic::client::Grpc::new(control_plane.streaming_channel().await);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the control plane is not reachable: {e}")))?;
    let path = http::uri::PathAndQuery::from_static("/mcpgw.routing.v1.RoutingDiscovery/StreamAudit");
    let codec = tonic_prost::ProstCodec::<RawAuditBatch, AuditAck>::default();
    let acks =
        grpc.streaming(control_plane.request(ReceiverStream::new(rx)), path, codec).await?.into_inner();
    Ok(Link { tx, acks, next_seq: 1 })
}

/// The next acknowledgement of `link`; pending forever without one.
async fn next_ack(link: &mut Option<Link>) -> Result<Option<AuditAck>, tonic::Status> {
    match link {
        Some(link) => link.acks.message().await,
        None => std::future::pending().await,
    }
}

/// Takes what the queue holds (after `building`) into batches and places them, until the queue is empty or a
/// batch has nowhere to go.
fn drain(
    rx: &mut mpsc::Receiver<Encoded>,
    building: &mut Vec<Encoded>,
    pipeline: &mut Pipeline,
    connected: bool,
    stopping: bool,
) {
    loop {
        while building.len() < BATCH_RECORDS {
            match rx.try_recv() {
                Ok(record) => building.push(record),
                Err(_) => break,
            }
        }
        if building.is_empty() {
            return;
        }
        let full = building.len() >= BATCH_RECORDS;
        pipeline.place(Batch::of(building), connected, stopping);
        building.clear();
        if !full || pipeline.held.is_some() {
            return;
        }
    }
}

/// The shipper service (see the module's documentation).
pub struct Shipper {
    state: Mutex<Option<(Pipeline, mpsc::Receiver<Encoded>)>>,
    control_plane: Arc<ControlPlane>,
}

impl Shipper {
    pub(super) fn new(
        rx: mpsc::Receiver<Encoded>,
        spill: Option<Spill>,
        control_plane: Arc<ControlPlane>,
    ) -> Self {
        if let Some(spill) = &spill {
            METRICS.audit_spill_bytes.set(spill.bytes() as i64);
        }
        let pipeline = Pipeline { spill, memory: VecDeque::new(), inflight: VecDeque::new(), held: None };
        Self { state: Mutex::new(Some((pipeline, rx))), control_plane }
    }
}

#[async_trait]
impl BackgroundService for Shipper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some((mut pipeline, mut rx)) = self.state.lock().expect("not poisoned").take() else { return };
        let mut link: Option<Link> = None;
        let mut building: Vec<Encoded> = Vec::new();
        let mut deadline: Option<Instant> = None;
        let mut retry_at = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut stopping = false;
        loop {
            // Connected as soon as a batch is being made, so that it can go out at its deadline.
            let wanted = pipeline.has_backlog() || !building.is_empty();
            if link.is_none() && wanted && Instant::now() >= retry_at {
                match connect(&self.control_plane).await {
                    Ok(l) => {
                        link = Some(l);
                        METRICS.audit_stream_connected.set(1);
                    }
                    Err(status) => {
                        tracing::warn!(reason = status.message(), code = ?status.code(), retry_in = ?backoff, "Cannot open the audit stream; records are kept.");
                        retry_at = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if let Some(batch) = pipeline.held.take() {
                pipeline.place(batch, link.is_some(), stopping);
            }
            if let Some(l) = link.as_mut()
                && pipeline.pump(l).is_err()
            {
                link = None;
                METRICS.audit_stream_connected.set(0);
                pipeline.disconnected();
            }
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = shutdown.changed(), if !stopping => {
                    // Requests still being answered keep making records: they go straight to the spill.
                    stopping = true;
                    pipeline.spill_all();
                    deadline = None;
                    drain(&mut rx, &mut building, &mut pipeline, false, true);
                }
                ack = next_ack(&mut link) => {
                    let failure = match ack {
                        Ok(Some(ack)) => pipeline.ack(&ack).err(),
                        Ok(None) => Some("the control plane ended the audit stream".to_owned()),
                        Err(status) => Some(format!("{:?}: {}", status.code(), status.message())),
                    };
                    match failure {
                        None => backoff = BACKOFF_MIN,
                        Some(why) => {
                            tracing::warn!(reason = why, retry_in = ?backoff, "Audit stream down; unacknowledged batches are kept.");
                            link = None;
                            METRICS.audit_stream_connected.set(0);
                            pipeline.disconnected();
                            retry_at = Instant::now() + backoff;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                // Woken by the first record after a quiet spell only: the rest of the batch is taken at its
                // deadline, so a busy proxy wakes the shipper ten times a second, not once per request.
                record = rx.recv(), if pipeline.held.is_none() && deadline.is_none() => {
                    let Some(record) = record else {
                        // Every sender is gone: the proxy is stopping.
                        if !building.is_empty() {
                            pipeline.place(Batch::of(&building), link.is_some(), true);
                        }
                        pipeline.spill_all();
                        return;
                    };
                    building.push(record);
                    deadline = Some(Instant::now() + if stopping { BATCH_WAIT / 10 } else { BATCH_WAIT });
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    deadline = None;
                    drain(&mut rx, &mut building, &mut pipeline, link.is_some(), stopping);
                }
                _ = tokio::time::sleep_until(retry_at), if link.is_none() && wanted => {}
                _ = tokio::time::sleep(HELD_RETRY), if pipeline.held.is_some() => {}
            }
        }
    }
}
