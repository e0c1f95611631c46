//! Counting what keeps something awake, and since when it has been idle.
//!
//! An [`Activity`] counts live guards: in-flight requests and open client connections of a
//! route, or in-flight requests of one client connection. When the count falls to zero it
//! records the time, so the owner can tell how long it has been idle without being notified of
//! every change. Taking and dropping a guard is two atomic operations; nothing here locks.
//!
//! This module decides nothing: the backend lifecycle and the server read it to decide.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Shortest pause between two looks at a busy counter.
const MIN_RECHECK: Duration = Duration::from_millis(10);

/// A counter of live guards with the time it last fell to zero.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    /// Nanoseconds after `epoch` at which `active` last became zero.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Activity {
    /// A new counter, idle since now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Counts one more live thing until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ActivityGuard {
        // SeqCst pairs with the check in `Lifecycle`: either the stopper sees this count, or
        // this caller sees the stopper's new state.
        self.active.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(Arc::clone(self))
    }

    /// How many guards are alive.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// When the count last fell to zero, or `None` while something is active.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.active() > 0 {
            return None;
        }
        let nanos = self.idle_since.load(Ordering::Acquire);
        let since = self.epoch + Duration::from_nanos(nanos);
        // A guard may have come and gone between the two loads; the later time is the safe one.
        (self.active() == 0).then_some(since)
    }

    /// Resolves once the count has been zero for `timeout` without interruption, measured from
    /// `not_before` at the earliest.
    pub async fn idle_for(&self, timeout: Duration, not_before: Instant) {
        loop {
            let deadline = match self.idle_since() {
                Some(since) => since.max(not_before) + timeout,
                // Busy: look again later (never in a tight loop, even for a zero timeout).
                None => Instant::now() + timeout.max(MIN_RECHECK),
            };
            if deadline <= Instant::now() && self.idle_since().is_some() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
            if let Some(since) = self.idle_since()
                && since.max(not_before) + timeout <= Instant::now()
            {
                return;
            }
        }
    }

    fn leave(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // Record the time before the count can read zero, so a reader never sees an old time.
        self.idle_since.store(nanos, Ordering::Release);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Keeps its [`Activity`] counted while alive.
#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_clock_starts_when_the_last_guard_drops() {
        let a = Activity::new();
        let g = a.enter();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(a.idle_since(), None);
        let dropped_at = Instant::now();
        drop(g);
        let waited = tokio::spawn({
            let a = Arc::clone(&a);
            async move {
                a.idle_for(Duration::from_secs(30), Instant::now()).await;
                Instant::now()
            }
        });
        assert_eq!(waited.await.unwrap() - dropped_at, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_in_between_restarts_the_clock() {
        let a = Activity::new();
        let start = Instant::now();
        let waiter = tokio::spawn({
            let a = Arc::clone(&a);
            async move {
                a.idle_for(Duration::from_secs(30), start).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(a.enter()); // a request at t=20s
        assert_eq!(waiter.await.unwrap() - start, Duration::from_secs(50));
    }
}
