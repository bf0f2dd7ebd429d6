//! Circuit breakers and passive outlier ejection, one per instance, run beside the request path: requests
//! report their outcome into a bounded channel (never waiting), and a background service owns the state
//! machines and flips each instance's gate, which selection reads with one atomic load.
//!
//! closed → open after `consecutive_failures` failures in a row, or when the failure ratio over `window`
//! exceeds `failure_ratio` once `min_requests` were seen (outlier ejection) → half-open after `open` (doubling
//! per failed probe up to `max_open`) → one probe request: success closes, failure re-opens.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mcpgw_proto::v1::{self, BreakerState, InstanceObservation};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::balance::{Gate, InstanceState};
use crate::metrics::METRICS;

/// Outcomes queued beyond this are dropped (the breakers lag; requests never wait).
const QUEUE: usize = 4096;
/// How often the current state is re-published for the control plane even without changes.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Per-server breaker settings (from the routing table; zero fields take these defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub failure_ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open: Duration,
    pub max_open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open: Duration::from_secs(2),
            max_open: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    pub fn from_proto(p: Option<&v1::CircuitBreaker>) -> Self {
        let d = Self::default();
        let Some(p) = p else { return d };
        let ms =
            |v: u32, default: Duration| if v == 0 { default } else { Duration::from_millis(u64::from(v)) };
        let open = ms(p.open_ms, d.open);
        Self {
            consecutive_failures: if p.consecutive_failures == 0 {
                d.consecutive_failures
            } else {
                p.consecutive_failures
            },
            failure_ratio: if p.failure_ratio > 0.0 && p.failure_ratio <= 1.0 {
                p.failure_ratio
            } else {
                d.failure_ratio
            },
            min_requests: if p.min_requests == 0 { d.min_requests } else { p.min_requests },
            window: ms(p.window_ms, d.window),
            open,
            max_open: ms(p.max_open_ms, d.max_open).max(open),
        }
    }
}

/// One finished request, as the breaker sees it.
pub struct Outcome {
    pub instance_id: Arc<str>,
    pub server: Arc<str>,
    pub state: Arc<InstanceState>,
    pub config: BreakerConfig,
    pub ok: bool,
}

/// The request path's handle: report outcomes without waiting.
#[derive(Clone)]
pub struct Breakers {
    tx: mpsc::Sender<Outcome>,
}

impl Breakers {
    pub fn report(&self, outcome: Outcome) {
        let state = &outcome.state;
        if outcome.ok {
            state.successes.fetch_add(1, Ordering::Relaxed);
            // A success only matters to the service when it ends a failure streak or answers a probe.
            if state.streak.load(Ordering::Relaxed) == 0 && state.gate() == Gate::Closed {
                return;
            }
        }
        // A full queue means the service is behind; dropping one sample is better than delaying a request.
        let _ = self.tx.try_send(outcome);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant, backoff: Duration },
    HalfOpen { since: Instant, backoff: Duration },
}

/// The state machine of one instance; pure, driven with explicit times.
#[derive(Debug)]
struct Machine {
    phase: Phase,
    consecutive: u32,
    window_start: Instant,
    /// The instance's success count when the window started.
    window_base: u64,
    failures: u64,
}

impl Machine {
    fn new(now: Instant, successes: u64) -> Self {
        Self { phase: Phase::Closed, consecutive: 0, window_start: now, window_base: successes, failures: 0 }
    }

    /// Requests in the current window, given the instance's success count now.
    fn window_requests(&self, successes: u64) -> u64 {
        successes.saturating_sub(self.window_base) + self.failures
    }

    fn gate(&self) -> Gate {
        match self.phase {
            Phase::Closed => Gate::Closed,
            Phase::Open { .. } => Gate::Open,
            Phase::HalfOpen { .. } => Gate::HalfOpen,
        }
    }

    fn open(&mut self, now: Instant, backoff: Duration) {
        self.phase = Phase::Open { until: now + backoff, backoff };
    }

    /// Applies one reported outcome; `successes` is the instance's success count (this one included).
    fn on_outcome(&mut self, ok: bool, successes: u64, now: Instant, cfg: &BreakerConfig) {
        match self.phase {
            Phase::Closed => {
                if now.duration_since(self.window_start) > cfg.window {
                    // Successes before a failure that opens a new window belong to the old one.
                    let base = if ok { successes.saturating_sub(1) } else { successes };
                    (self.window_start, self.window_base, self.failures) = (now, base, 0);
                }
                if ok {
                    self.consecutive = 0;
                    return;
                }
                self.failures += 1;
                self.consecutive += 1;
                let requests = self.window_requests(successes);
                let ratio_tripped = requests >= u64::from(cfg.min_requests)
                    && self.failures as f64 / requests as f64 >= cfg.failure_ratio;
                if self.consecutive >= cfg.consecutive_failures || ratio_tripped {
                    self.open(now, cfg.open);
                }
            }
            // Late answers of requests admitted before the breaker opened say nothing new.
            Phase::Open { .. } => {}
            Phase::HalfOpen { backoff, .. } => {
                if ok {
                    *self = Self::new(now, successes);
                } else {
                    self.open(now, (backoff * 2).min(cfg.max_open));
                }
            }
        }
    }

    /// Moves time forward; `open` periods end, and a probe that never reported is allowed again.
    fn on_tick(&mut self, now: Instant, cfg: &BreakerConfig) -> bool {
        match self.phase {
            Phase::Open { until, backoff } if now >= until => {
                self.phase = Phase::HalfOpen { since: now, backoff };
                true
            }
            Phase::HalfOpen { since, backoff }
                if now.duration_since(since) >= cfg.open.max(Duration::from_secs(1)) =>
            {
                self.phase = Phase::HalfOpen { since: now, backoff };
                true
            }
            _ => false,
        }
    }

    fn deadline(&self, cfg: &BreakerConfig) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Open { until, .. } => Some(until),
            Phase::HalfOpen { since, .. } => Some(since + cfg.open.max(Duration::from_secs(1))),
        }
    }
}

struct Tracked {
    machine: Machine,
    state: Arc<InstanceState>,
    server: Arc<str>,
    config: BreakerConfig,
}

/// Owns every instance's machine; publishes passive-health observations for the control plane.
pub struct BreakerService {
    rx: Mutex<Option<mpsc::Receiver<Outcome>>>,
    reports: watch::Sender<Vec<InstanceObservation>>,
}

/// Creates the request-path handle, the service, and the stream of observations.
pub fn breakers() -> (Breakers, BreakerService, watch::Receiver<Vec<InstanceObservation>>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let (reports, reports_rx) = watch::channel(Vec::new());
    (Breakers { tx }, BreakerService { rx: Mutex::new(Some(rx)), reports }, reports_rx)
}

fn breaker_state(gate: Gate) -> BreakerState {
    match gate {
        Gate::Closed => BreakerState::Closed,
        Gate::Open => BreakerState::Open,
        Gate::HalfOpen => BreakerState::HalfOpen,
    }
}

#[async_trait]
impl BackgroundService for BreakerService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else { return };
        let mut tracked: HashMap<Arc<str>, Tracked> = HashMap::new();
        let mut next_report = Instant::now() + REPORT_EVERY;
        loop {
            let deadline = tracked
                .values()
                .filter_map(|t| t.machine.deadline(&t.config))
                .chain([next_report])
                .min()
                .unwrap_or(next_report);
            let mut changed = false;
            tokio::select! {
                _ = shutdown.changed() => return,
                outcome = rx.recv() => {
                    let Some(o) = outcome else { return };
                    let now = Instant::now();
                    let successes = o.state.successes.load(Ordering::Relaxed);
                    let t = tracked.entry(o.instance_id.clone()).or_insert_with(|| Tracked {
                        machine: Machine::new(now, successes),
                        state: o.state.clone(),
                        server: o.server.clone(),
                        config: o.config,
                    });
                    if !Arc::ptr_eq(&t.state, &o.state) {
                        // The instance was re-created (its endpoint changed): start afresh.
                        *t = Tracked { machine: Machine::new(now, successes), state: o.state, server: o.server, config: o.config };
                    }
                    t.config = o.config;
                    let before = t.machine.gate();
                    t.machine.on_outcome(o.ok, successes, now, &t.config);
                    t.state.streak.store(t.machine.consecutive, Ordering::Relaxed);
                    changed = apply(&o.instance_id, t, before);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    for (id, t) in tracked.iter_mut() {
                        let before = t.machine.gate();
                        if t.machine.on_tick(now, &t.config) {
                            changed |= apply(id, t, before);
                            // A re-armed half-open gate lets one more probe through.
                            t.state.set_gate(t.machine.gate());
                        }
                    }
                    // Instances gone from the routing table are only referenced here.
                    tracked.retain(|_, t| Arc::strong_count(&t.state) > 1);
                    if now >= next_report {
                        next_report = now + REPORT_EVERY;
                        changed = true;
                    }
                }
            }
            if changed {
                let observations = tracked
                    .iter()
                    .map(|(id, t)| InstanceObservation {
                        instance_id: id.to_string(),
                        breaker: breaker_state(t.machine.gate()) as i32,
                        consecutive_failures: t.machine.consecutive,
                        window_requests: t.machine.window_requests(t.state.successes.load(Ordering::Relaxed)),
                        window_failures: t.machine.failures,
                    })
                    .collect();
                self.reports.send_replace(observations);
            }
        }
    }
}

/// Publishes a gate change; `true` when the gate moved.
fn apply(id: &str, t: &Tracked, before: Gate) -> bool {
    let after = t.machine.gate();
    if after == before {
        return false;
    }
    t.state.set_gate(after);
    let labels = [&*t.server, id];
    METRICS.breaker_state.with_label_values(&labels).set(breaker_state(after) as i64 - 1);
    METRICS.breaker_transitions.with_label_values(&[&*t.server, breaker_label(after)]).inc();
    match after {
        Gate::Open => {
            tracing::warn!(server = %t.server, instance = id, "Circuit breaker opened; instance ejected.")
        }
        Gate::Closed => {
            tracing::info!(server = %t.server, instance = id, "Circuit breaker closed; instance back in rotation.")
        }
        Gate::HalfOpen => {
            tracing::debug!(server = %t.server, instance = id, "Circuit breaker half-open; probing.")
        }
    }
    true
}

fn breaker_label(gate: Gate) -> &'static str {
    match gate {
        Gate::Closed => "closed",
        Gate::Open => "open",
        Gate::HalfOpen => "half_open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open: Duration::from_secs(1),
            max_open: Duration::from_secs(4),
        }
    }

    /// Drives a machine the way the service does, counting successes as the request path would.
    struct Driver {
        m: Machine,
        successes: u64,
    }

    impl Driver {
        fn new(now: Instant) -> Self {
            Self { m: Machine::new(now, 0), successes: 0 }
        }

        fn outcome(&mut self, ok: bool, now: Instant, c: &BreakerConfig) {
            self.successes += u64::from(ok);
            self.m.on_outcome(ok, self.successes, now, c);
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_back() {
        let c = cfg();
        let t0 = Instant::now();
        let mut d = Driver::new(t0);
        for ok in [false, false, true, false, false] {
            d.outcome(ok, t0, &c);
        }
        assert_eq!(d.m.gate(), Gate::Closed, "a success resets the run");
        d.outcome(false, t0, &c);
        assert_eq!(d.m.gate(), Gate::Open);
        assert!(!d.m.on_tick(t0 + Duration::from_millis(999), &c));
        assert!(d.m.on_tick(t0 + Duration::from_secs(1), &c));
        assert_eq!(d.m.gate(), Gate::HalfOpen);
        // A failed probe doubles the open period.
        let t1 = t0 + Duration::from_secs(1);
        d.outcome(false, t1, &c);
        assert_eq!(d.m.deadline(&c), Some(t1 + Duration::from_secs(2)));
        d.m.on_tick(t1 + Duration::from_secs(2), &c);
        d.outcome(true, t1 + Duration::from_secs(2), &c);
        assert_eq!(d.m.gate(), Gate::Closed);
    }

    #[test]
    fn ejects_an_outlier_on_failure_ratio() {
        let c = cfg();
        let t0 = Instant::now();
        let mut d = Driver::new(t0);
        for i in 0..10 {
            d.outcome(i % 2 == 0, t0, &c);
        }
        assert_eq!(d.m.gate(), Gate::Open, "5 failures in 10 requests reach the 0.5 ratio");
        let mut fresh = Driver::new(t0);
        for i in 0..9 {
            fresh.outcome(i % 2 == 0, t0, &c);
        }
        assert_eq!(fresh.m.gate(), Gate::Closed, "below min_requests the ratio does not count");
        // The window restarts after `window`.
        fresh.outcome(false, t0 + Duration::from_secs(11), &c);
        assert_eq!((fresh.m.window_requests(fresh.successes), fresh.m.failures), (1, 1));
    }

    #[test]
    fn backoff_is_capped_and_a_lost_probe_is_re_armed() {
        let c = cfg();
        let mut t = Instant::now();
        let mut d = Driver::new(t);
        for _ in 0..3 {
            d.outcome(false, t, &c);
        }
        for _ in 0..5 {
            t = d.m.deadline(&c).unwrap();
            d.m.on_tick(t, &c);
            d.outcome(false, t, &c);
        }
        assert_eq!(d.m.deadline(&c), Some(t + c.max_open));
        t += c.max_open;
        d.m.on_tick(t, &c);
        assert_eq!(d.m.gate(), Gate::HalfOpen);
        assert!(
            d.m.on_tick(t + Duration::from_secs(1), &c),
            "no probe result within a second re-arms the probe"
        );
    }

    #[test]
    fn successes_on_a_healthy_instance_wake_nothing() {
        let (breakers, _service, _reports) = breakers();
        let state = Arc::new(InstanceState::default());
        let outcome = |ok| Outcome {
            instance_id: Arc::from("i"),
            server: Arc::from("s"),
            state: state.clone(),
            config: cfg(),
            ok,
        };
        for _ in 0..10 {
            breakers.report(outcome(true));
        }
        assert_eq!(breakers.tx.capacity(), QUEUE, "no success was queued");
        assert_eq!(state.successes.load(Ordering::Relaxed), 10);
        breakers.report(outcome(false));
        state.streak.store(1, Ordering::Relaxed);
        breakers.report(outcome(true));
        assert_eq!(QUEUE - breakers.tx.capacity(), 2, "the failure and the success that ends its streak");
    }

    #[test]
    fn config_defaults_fill_zero_fields() {
        let c = BreakerConfig::from_proto(Some(&v1::CircuitBreaker {
            consecutive_failures: 2,
            open_ms: 500,
            ..Default::default()
        }));
        assert_eq!((c.consecutive_failures, c.open, c.min_requests), (2, Duration::from_millis(500), 20));
        assert_eq!(BreakerConfig::from_proto(None), BreakerConfig::default());
    }
}
