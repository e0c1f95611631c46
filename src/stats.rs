//! Counters of what each route does, for the admin listener's `/metrics` and `/status`.
//!
//! Request counters are kept per worker thread (each on its own cache line), so counting a
//! request never writes a line another core writes; a reader adds the shards up. Backend
//! counters are written by the route's supervisor only. Everything is a relaxed atomic: the
//! figures are for people and dashboards, not for decisions.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Upper bounds of the start-duration histogram buckets, in seconds.
pub const START_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One worker's request counters.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    /// Responses by status class: 1xx … 5xx.
    responses: [AtomicU64; 5],
}

/// A route's counters.
#[derive(Debug)]
pub struct RouteStats {
    shards: Box<[Shard]>,
    starts: AtomicU64,
    failed_starts: AtomicU64,
    stops: AtomicU64,
    /// Start durations: a count per bucket of [`START_BUCKETS`] (plus one for larger), and the
    /// sum in microseconds.
    start_buckets: [AtomicU64; START_BUCKETS.len() + 1],
    start_sum_us: AtomicU64,
    last_start_us: AtomicU64,
    running: Mutex<Running>,
}

#[derive(Debug, Default)]
struct Running {
    since: Option<Instant>,
    before: Duration,
}

/// A consistent-enough reading of a route's counters.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests routed to the route.
    pub requests: u64,
    /// Responses by status class, 1xx first.
    pub responses: [u64; 5],
    /// Start attempts, failed ones included.
    pub starts: u64,
    /// Start attempts that failed.
    pub failed_starts: u64,
    /// Stops of a running backend (idle, shutdown, or its own exit).
    pub stops: u64,
    /// Durations of successful starts: count per bucket (not cumulative), then larger.
    pub start_buckets: Vec<u64>,
    /// Sum of successful start durations.
    pub start_sum: Duration,
    /// How long the last successful start took.
    pub last_start: Option<Duration>,
    /// Time the backend has been ready, all runs together.
    pub running_total: Duration,
    /// How long the current run has lasted, if it runs.
    pub running_for: Option<Duration>,
}

impl RouteStats {
    /// Zeroed counters with one request shard per worker.
    pub fn new(workers: usize) -> RouteStats {
        RouteStats {
            shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
            starts: AtomicU64::new(0),
            failed_starts: AtomicU64::new(0),
            stops: AtomicU64::new(0),
            start_buckets: Default::default(),
            start_sum_us: AtomicU64::new(0),
            last_start_us: AtomicU64::new(0),
            running: Mutex::default(),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[crate::proxy::worker_id() % self.shards.len()]
    }

    /// A request was routed here.
    pub fn request(&self) {
        self.shard().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A response with `status` was sent (its head, at least).
    pub fn response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.shard().responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// A start attempt began.
    pub fn start_attempted(&self) {
        self.starts.fetch_add(1, Ordering::Relaxed);
    }

    /// The start attempt failed.
    pub fn start_failed(&self) {
        self.failed_starts.fetch_add(1, Ordering::Relaxed);
    }

    /// The backend became ready `took` after its start began.
    pub fn ready(&self, took: Duration) {
        let bucket = START_BUCKETS
            .iter()
            .position(|&le| took.as_secs_f64() <= le)
            .unwrap_or(START_BUCKETS.len());
        self.start_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.start_sum_us.fetch_add(us, Ordering::Relaxed);
        self.last_start_us.store(us.max(1), Ordering::Relaxed);
        self.running.lock().expect("stats lock").since = Some(Instant::now());
    }

    /// The backend stopped running (stopped by rouse, or exited by itself).
    pub fn stopped(&self) {
        let mut running = self.running.lock().expect("stats lock");
        if let Some(since) = running.since.take() {
            running.before += since.elapsed();
            self.stops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for shard in &self.shards {
            s.requests += shard.requests.load(Ordering::Relaxed);
            for (sum, count) in s.responses.iter_mut().zip(&shard.responses) {
                *sum += count.load(Ordering::Relaxed);
            }
        }
        s.starts = self.starts.load(Ordering::Relaxed);
        s.failed_starts = self.failed_starts.load(Ordering::Relaxed);
        s.stops = self.stops.load(Ordering::Relaxed);
        s.start_buckets = self
            .start_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        s.start_sum = Duration::from_micros(self.start_sum_us.load(Ordering::Relaxed));
        s.last_start = match self.last_start_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        };
        let running = self.running.lock().expect("stats lock");
        s.running_for = running.since.map(|since| since.elapsed());
        s.running_total = running.before + s.running_for.unwrap_or_default();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_add_up_across_workers_and_runs() {
        let stats = RouteStats::new(2);
        stats.request();
        stats.response(http::StatusCode::OK);
        stats.response(http::StatusCode::BAD_GATEWAY);
        stats.start_attempted();
        stats.ready(Duration::from_millis(30));
        tokio::time::advance(Duration::from_secs(10)).await;
        stats.stopped();
        stats.start_attempted();
        stats.start_failed();
        let s = stats.snapshot();
        assert_eq!(s.requests, 1);
        assert_eq!(s.responses, [0, 1, 0, 0, 1]);
        assert_eq!((s.starts, s.failed_starts, s.stops), (2, 1, 1));
        // 30 ms falls in the 0.05 s bucket, the fourth.
        assert_eq!(s.start_buckets[3], 1);
        assert_eq!(s.start_buckets.iter().sum::<u64>(), 1);
        assert_eq!(s.last_start, Some(Duration::from_millis(30)));
        assert_eq!(s.running_total, Duration::from_secs(10));
        assert_eq!(s.running_for, None);
    }
}
