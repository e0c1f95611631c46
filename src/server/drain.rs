//! The drain signal: set once on shutdown, seen by every accept loop and client connection.
//!
//! A connection task is woken for every read and write, so what it checks on each wake must
//! cost next to nothing: [`DrainWatch`] reads one atomic flag, and registers with the
//! notifier only once per connection (a `watch` receiver would take a lock on every poll).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// Set once when rouse starts draining; never cleared.
#[derive(Debug, Default)]
pub(super) struct Drain {
    started: AtomicBool,
    notify: Arc<Notify>,
}

impl Drain {
    /// Starts the drain and wakes everyone waiting for it.
    pub(super) fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the drain has started.
    pub(super) fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Resolves once the drain has started.
    pub(super) async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a start in between still wakes us.
        notified.as_mut().enable();
        if !self.started() {
            notified.await;
        }
    }

    /// A per-connection view that costs one atomic load per poll.
    pub(super) fn watch(self: &Arc<Self>) -> DrainWatch {
        DrainWatch {
            drain: self.clone(),
            notified: Box::pin(self.notify.clone().notified_owned()),
            registered: false,
        }
    }
}

/// One task's view of the drain; see [`Drain::watch`].
pub(super) struct DrainWatch {
    drain: Arc<Drain>,
    notified: Pin<Box<OwnedNotified>>,
    /// The task's waker is with the notifier (a task's waker stays valid for its whole life,
    /// so registering once is enough).
    registered: bool,
}

impl DrainWatch {
    /// Whether the drain has started; if not, the task is woken when it does.
    pub(super) fn poll_started(&mut self, cx: &mut Context<'_>) -> bool {
        if self.drain.started() {
            return true;
        }
        if !self.registered {
            self.registered = true;
            if self.notified.as_mut().poll(cx) == Poll::Ready(()) {
                return true;
            }
        }
        // A start between the first load and the registration is seen here.
        self.drain.started()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_registered_before_the_start_is_woken_by_it() {
        let drain = Arc::new(Drain::default());
        let mut watch = drain.watch();
        let waiter = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                if watch.poll_started(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        });
        let waits = {
            let drain = drain.clone();
            tokio::spawn(async move { drain.wait().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !waits.is_finished());
        drain.start();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            waiter.await.unwrap();
            waits.await.unwrap();
        })
        .await
        .expect("drain start woke neither the watch nor the waiter");
        // After the start, new views and waits see it at once.
        assert!(
            drain
                .watch()
                .poll_started(&mut Context::from_waker(std::task::Waker::noop()))
        );
        drain.wait().await;
    }
}
