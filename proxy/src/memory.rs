//! Giving freed memory back to the system after a wave of connections ends. glibc keeps what the process
//! freed in its arenas: a proxy that held 10,000 idle streams kept ~550 MiB resident after they all closed
//! (BENCHMARKS.md, scenario f). `malloc_trim` returns every wholly free page. It walks the heap, so it runs
//! only once the open client connections have fallen to half of their peak since the last trim, and by at
//! least [`MIN_DROP`], and have stopped falling (a trim in the middle of the wave would leave what the rest
//! of it frees); the housekeeping service (`server::Housekeeping`) asks every few seconds.

/// Fewest connections that must have closed since the peak before a trim is worth its walk of the heap.
pub const MIN_DROP: i64 = 256;

/// Decides when to trim, from the open connection count seen at each tick.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: i64,
    last: i64,
}

impl Trimmer {
    /// Notes `open` connections; `true` when memory should be trimmed now (the peak then restarts here).
    pub fn due(&mut self, open: i64) -> bool {
        self.peak = self.peak.max(open);
        let falling = open < self.last;
        self.last = open;
        if !falling && self.peak - open >= MIN_DROP && open <= self.peak / 2 {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Buffers kept by a thread for reuse (each kind in a `thread_local!` of its own): a request takes one and
/// gives it back once its bytes are gone, so an idle connection holds none and the allocator is not asked
/// for one per request (buffers past glibc's per-thread cache, ~1 KiB, cost ~350-400 instructions to
/// allocate and free).
pub struct Spares<T> {
    kept: std::cell::RefCell<Vec<T>>,
}

impl<T> Default for Spares<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The largest buffer [`Spares`] should be given: one grown by a large message is freed instead.
pub const SPARE_LIMIT: usize = 8 * 1024;

impl<T> Spares<T> {
    /// The most buffers kept.
    const MOST: usize = 4;

    pub const fn new() -> Self {
        Self { kept: std::cell::RefCell::new(Vec::new()) }
    }

    pub fn take(&self) -> Option<T> {
        self.kept.borrow_mut().pop()
    }

    /// Keeps `buffer` unless as many as are kept already are.
    pub fn give_back(&self, buffer: T) {
        let mut kept = self.kept.borrow_mut();
        if kept.len() < Self::MOST {
            kept.push(buffer);
        }
    }
}

/// Returns the allocator's free pages to the system.
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator holds free; it has no preconditions.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "Returned freed memory to the system.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_wave_of_connections_ends() {
        let mut t = Trimmer::default();
        assert!(!t.due(0));
        assert!(!t.due(10_000), "rising: no trim");
        assert!(!t.due(6_000), "not yet half of the peak");
        assert!(!t.due(40), "under half of the peak, but still falling");
        assert!(t.due(40), "fell under half of the peak by more than the minimum, and stopped");
        assert!(!t.due(10), "the peak restarted at the trim");
        assert!(!t.due(300));
        assert!(!t.due(100));
        assert!(!t.due(100), "stopped, but a drop smaller than the minimum is not worth a trim");
        assert!(!t.due(600));
        assert!(!t.due(20));
        assert!(t.due(25), "the next wave's end trims again");
    }
}
