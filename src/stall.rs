//! How long something has been waiting on a client: a request body whose next bytes do not
//! come, a response the client does not read.
//!
//! The code that sees the waiting marks it (a body's poll that found nothing, a write the
//! socket refused) and clears it on progress; the connection's timeout check reads it. Marking
//! costs an atomic load when nothing changes and one clock read when a wait begins, so it can
//! sit on every read and write. This module only measures; the server decides.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The start of the current wait, if any.
#[derive(Debug)]
pub struct Stall {
    epoch: Instant,
    /// Nanoseconds after `epoch`, plus one, at which the current wait began; 0: not waiting.
    since: AtomicU64,
}

impl Stall {
    /// Not waiting; times are kept relative to `epoch`.
    pub fn new(epoch: Instant) -> Stall {
        Stall {
            epoch,
            since: AtomicU64::new(0),
        }
    }

    /// Waiting from now on, unless already waiting.
    pub fn waiting(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
            self.since.store(nanos + 1, Ordering::Relaxed);
        }
    }

    /// No longer waiting.
    pub fn progressed(&self) {
        if self.since.load(Ordering::Relaxed) != 0 {
            self.since.store(0, Ordering::Relaxed);
        }
    }

    /// When the current wait began.
    pub fn since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_timed_from_its_first_mark_until_progress() {
        let epoch = Instant::now();
        let stall = Stall::new(epoch);
        assert_eq!(stall.since(), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        stall.waiting();
        tokio::time::advance(Duration::from_secs(2)).await;
        stall.waiting();
        assert_eq!(stall.since(), Some(epoch + Duration::from_secs(3)));
        stall.progressed();
        assert_eq!(stall.since(), None);
    }
}
