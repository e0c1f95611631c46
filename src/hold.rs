//! The gate in front of a route: a request waits here until the backend is ready.
//!
//! A request for a ready route passes with one read of the route's state. Otherwise it takes a
//! place among at most `max_pending` held requests, asks the supervisor for a start (see
//! [`crate::lifecycle`]) and waits for the outcome of that start. A client that goes away drops
//! its future, which frees its place: nothing else needs to know.

use std::sync::Arc;

use crate::error::Error;
use crate::lifecycle::{PendingGuard, Shared, State, Want};
use crate::proxy::Upstream;

/// The request-facing side of a route's lifecycle.
#[derive(Clone, Debug)]
pub struct Gate {
    shared: Arc<Shared>,
}

impl Gate {
    /// A gate over the given route state.
    pub fn new(shared: Arc<Shared>) -> Gate {
        Gate { shared }
    }

    /// Starts the backend if it is stopped, without waiting: for a client that is about to send
    /// a request (its TLS handshake names this route), so the start overlaps the handshake.
    pub fn prewarm(&self) {
        let snap = self.shared.state.borrow();
        if matches!(snap.state, State::Stopped | State::Failed(_)) {
            let _ = self.shared.wants.send(Want {
                attempt: snap.attempt + 1,
                early: true,
            });
        }
    }

    /// The route's counters.
    pub fn stats(&self) -> &crate::stats::RouteStats {
        &self.shared.stats
    }

    /// The route's state now, and how many requests are held.
    pub fn state(&self) -> (State, usize) {
        (
            self.shared.state.borrow().state.clone(),
            self.shared
                .pending
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Where to forward to if the backend is ready now; never starts it.
    pub fn ready(&self) -> Option<Arc<Upstream>> {
        match &self.shared.state.borrow().state {
            State::Ready(upstream) => Some(upstream.clone()),
            _ => None,
        }
    }

    /// Waits until the route's backend is ready and returns where to forward to.
    pub async fn acquire(&self) -> Result<Arc<Upstream>, Error> {
        if let State::Ready(upstream) = &self.shared.state.borrow().state {
            return Ok(upstream.clone());
        }
        let _place = PendingGuard::take(&self.shared).ok_or_else(|| Error::TooManyPending {
            route: self.shared.route.clone(),
        })?;
        let mut rx = self.shared.state.subscribe();
        // The attempt whose outcome this request takes; failures of earlier ones are not ours.
        let mut awaited: Option<u64> = None;
        loop {
            let (attempt, state) = {
                let snap = rx.borrow_and_update();
                (snap.attempt, snap.state.clone())
            };
            match state {
                State::Ready(upstream) => return Ok(upstream),
                State::Closed => {
                    return Err(Error::ShuttingDown {
                        route: self.shared.route.clone(),
                    });
                }
                State::Starting => {
                    awaited.get_or_insert(attempt);
                }
                State::Failed(cause) if awaited.is_some_and(|a| attempt >= a) => {
                    return Err(Error::StartFailed {
                        route: self.shared.route.clone(),
                        cause,
                    });
                }
                State::Stopped | State::Stopping | State::Failed(_) => {
                    // Ask for the next attempt; a stop under way finishes first.
                    if awaited.is_none_or(|a| a <= attempt) {
                        awaited = Some(attempt + 1);
                        let _ = self.shared.wants.send(Want {
                            attempt: attempt + 1,
                            early: false,
                        });
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::ShuttingDown {
                    route: self.shared.route.clone(),
                });
            }
        }
    }
}
