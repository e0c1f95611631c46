//! The life of one route's backend: stopped → starting → ready → stopping → stopped.
//!
//! One supervisor task per route owns the backend and is the only writer of its [`State`],
//! published on a `watch` channel that held requests read (see [`crate::hold`]). Requests ask
//! for a start by sending the number of the attempt they want; the supervisor starts at most
//! one attempt at a time, so any number of requests arriving together cause exactly one start.
//!
//! The supervisor also stops the backend once the route's [`Activity`] has been idle for
//! `idle_timeout`, on shutdown, and when a reload removes or replaces its route ([`Stop`]). It
//! knows nothing of HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::activity::Activity;
use crate::backend::{Backend, Instance, StartError};
use crate::config::{ReadyCheck, RouteConfig, UpstreamProtocol};
use crate::proxy::Upstream;
use crate::ready;
use crate::stats::RouteStats;

/// Where a route's backend is in its life.
#[derive(Clone, Debug)]
pub enum State {
    /// Not running; the next request starts it.
    Stopped,
    /// A start is under way; requests wait for it.
    Starting,
    /// Answering; requests go to this upstream.
    Ready(Arc<Upstream>),
    /// Being stopped; requests wait, then start it again.
    Stopping,
    /// The last start failed; requests held on it get this error, the next request starts again.
    Failed(Arc<StartError>),
    /// rouse is shutting down; nothing will start any more.
    Closed,
}

/// The published state, with the number of the start attempt it belongs to.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Attempts are numbered from 1; 0 means never started.
    pub attempt: u64,
    /// The state of that attempt.
    pub state: State,
}

/// What a supervisor is told to do by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Go on.
    Run,
    /// rouse exits: stop the backend (or leave it, see [`Supervisor::leave_on_exit`]).
    Exit,
    /// A reload removed or replaced the route: stop the backend and end.
    Retire,
}

/// What a route's requests and its supervisor share.
#[derive(Debug)]
pub struct Shared {
    /// Route name, for logs and errors.
    pub route: Arc<str>,
    /// The published state.
    pub state: watch::Sender<Snapshot>,
    /// Requests ask here for an attempt newer than the one they saw fail or stop.
    pub wants: mpsc::UnboundedSender<Want>,
    /// Requests currently held.
    pub pending: AtomicUsize,
    /// Most requests that may be held at once.
    pub max_pending: usize,
    /// What the route did, for the admin listener.
    pub stats: RouteStats,
}

impl Shared {
    /// State for a route whose upstream is always on: ready from the start, never supervised.
    pub fn always_ready(
        route: &RouteConfig,
        workers: usize,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Arc<Shared> {
        let (wants, _) = mpsc::unbounded_channel();
        let (state, _) = watch::channel(Snapshot {
            attempt: 0,
            state: State::Ready(Arc::new(Upstream::new(
                route.upstream,
                workers,
                route.upstream_protocol,
                tls,
            ))),
        });
        Arc::new(Shared {
            route: route.name.as_str().into(),
            state,
            wants,
            pending: AtomicUsize::new(0),
            max_pending: route.max_pending,
            stats: RouteStats::new(workers),
        })
    }
}

/// A request for a start attempt.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    /// The attempt asked for: one more than the last attempt the asker saw end.
    pub attempt: u64,
    /// Asked ahead of any request (a TLS handshake naming the route): start even though no
    /// request is held yet.
    pub early: bool,
}

/// The supervisor of one route's backend.
pub struct Supervisor {
    shared: Arc<Shared>,
    wants: mpsc::UnboundedReceiver<Want>,
    backend: Box<dyn Backend>,
    activity: Arc<Activity>,
    /// Counts supervisors whose backend is not stopped, for `idle_exit`.
    running: Arc<Activity>,
    shutdown: watch::Receiver<Stop>,
    upstream: SocketAddr,
    ready: ReadyCheck,
    probe_host: String,
    start_timeout: Duration,
    idle_timeout: Duration,
    workers: usize,
    upstream_protocol: UpstreamProtocol,
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
    attempt: u64,
    /// Leave the backend running when rouse exits on a signal.
    leave_on_exit: bool,
}

/// How a start ended.
enum Started {
    Ready(Box<dyn Instance>),
    Failed,
    Shutdown,
}

impl Supervisor {
    /// A supervisor for `route`, and the state it shares with the route's requests.
    pub fn new(
        route: &RouteConfig,
        backend: Box<dyn Backend>,
        activity: Arc<Activity>,
        running: Arc<Activity>,
        shutdown: watch::Receiver<Stop>,
        workers: usize,
        upstream_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> (Supervisor, Arc<Shared>) {
        let (wants_tx, wants) = mpsc::unbounded_channel();
        let (state, _) = watch::channel(Snapshot {
            attempt: 0,
            state: State::Stopped,
        });
        let shared = Arc::new(Shared {
            route: route.name.as_str().into(),
            state,
            wants: wants_tx,
            pending: AtomicUsize::new(0),
            max_pending: route.max_pending,
            stats: RouteStats::new(workers),
        });
        let supervisor = Supervisor {
            shared: shared.clone(),
            wants,
            backend,
            activity,
            running,
            shutdown,
            upstream: route.upstream,
            ready: route.ready.clone(),
            probe_host: route
                .hosts
                .first()
                .map(|h| h.to_string().replace('*', "probe"))
                .unwrap_or_default(),
            start_timeout: route.start_timeout,
            idle_timeout: route.idle_timeout,
            workers,
            upstream_protocol: route.upstream_protocol,
            upstream_tls,
            attempt: 0,
            leave_on_exit: false,
        };
        (supervisor, shared)
    }

    /// Leaves the backend running when rouse exits on a signal, for the next rouse to take
    /// over, instead of stopping it.
    pub fn leave_on_exit(mut self, leave: bool) -> Supervisor {
        self.leave_on_exit = leave;
        self
    }

    /// Runs until shutdown, then stops the backend if it runs (or leaves it, see
    /// [`Supervisor::leave_on_exit`]).
    pub async fn run(mut self) {
        // A backend that already runs is taken over: started (a no-op for it), probed, and
        // stopped when idle, as if this rouse had started it.
        let running = tokio::time::timeout(self.start_timeout, self.backend.running()).await;
        if running == Ok(true) {
            info!(route = %self.shared.route, "backend already running: taking it over");
            if !self.attempt_and_serve().await {
                self.publish(State::Closed);
                return;
            }
        }
        loop {
            let want = tokio::select! {
                biased;
                _ = shutdown_requested(&mut self.shutdown) => break,
                want = self.wants.recv() => match want {
                    Some(want) => want,
                    None => break,
                },
            };
            // Old asks (for an attempt already made) and asks of requests that have since
            // gone away start nothing.
            if want.attempt <= self.attempt
                || (!want.early && self.shared.pending.load(Ordering::SeqCst) == 0)
            {
                continue;
            }
            while self.wants.try_recv().is_ok() {}
            if !self.attempt_and_serve().await {
                break;
            }
        }
        self.publish(State::Closed);
    }

    /// One start attempt, and the life of the backend if it becomes ready, until it stops.
    /// Returns false once rouse is shutting down.
    async fn attempt_and_serve(&mut self) -> bool {
        self.attempt += 1;
        let _running = self.running.enter();
        match self.start().await {
            Started::Ready(instance) => match self.serve(instance).await {
                Some((instance, "shutdown"))
                    if self.leave_on_exit && *self.shutdown.borrow() == Stop::Exit =>
                {
                    self.leave(instance).await;
                }
                Some((instance, reason)) => self.stop(instance, reason).await,
                None => {}
            },
            Started::Failed => {}
            Started::Shutdown => return false,
        }
        *self.shutdown.borrow() == Stop::Run
    }

    fn publish(&self, state: State) {
        self.shared.state.send_replace(Snapshot {
            attempt: self.attempt,
            state,
        });
    }

    fn fail(&self, cause: StartError, started: Instant) {
        self.shared.stats.start_failed();
        warn!(route = %self.shared.route, attempt = self.attempt, elapsed_ms = ms(started.elapsed()), error = %cause, "backend start failed");
        self.publish(State::Failed(Arc::new(cause)));
    }

    /// Starts the backend and probes it until it is ready, it exits, or time runs out.
    async fn start(&mut self) -> Started {
        let started = Instant::now();
        let deadline = started + self.start_timeout;
        self.publish(State::Starting);
        self.shared.stats.start_attempted();
        info!(route = %self.shared.route, attempt = self.attempt, "backend starting");
        let mut instance = match tokio::time::timeout_at(deadline, self.backend.start()).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(cause)) => {
                self.fail(cause, started);
                return Started::Failed;
            }
            Err(_) => {
                self.fail(StartError::Timeout(self.start_timeout), started);
                return Started::Failed;
            }
        };
        enum Outcome {
            Ready,
            Exited(String),
            TimedOut,
            Shutdown,
        }
        let outcome = tokio::select! {
            cause = instance.exited() => Outcome::Exited(cause),
            ready = ready::wait(self.upstream, &self.ready, &self.probe_host, deadline) => {
                if ready { Outcome::Ready } else { Outcome::TimedOut }
            }
            _ = shutdown_requested(&mut self.shutdown) => Outcome::Shutdown,
        };
        match outcome {
            Outcome::Ready => {
                self.shared.stats.ready(started.elapsed());
                info!(route = %self.shared.route, attempt = self.attempt, elapsed_ms = ms(started.elapsed()), "backend ready");
                Started::Ready(instance)
            }
            Outcome::Exited(cause) => {
                self.fail(StartError::Exited(cause), started);
                Started::Failed
            }
            Outcome::TimedOut => {
                // Answer the held requests first; then make sure the hung start is gone.
                self.fail(StartError::Timeout(self.start_timeout), started);
                self.stop(instance, "start timeout").await;
                Started::Failed
            }
            Outcome::Shutdown => {
                self.stop(instance, "shutdown").await;
                Started::Shutdown
            }
        }
    }

    /// Serves while ready. Returns the instance to stop, or `None` if it ended by itself.
    async fn serve(
        &mut self,
        mut instance: Box<dyn Instance>,
    ) -> Option<(Box<dyn Instance>, &'static str)> {
        let upstream = Arc::new(Upstream::new(
            self.upstream,
            self.workers,
            self.upstream_protocol,
            self.upstream_tls.clone(),
        ));
        let ready_at = Instant::now();
        self.publish(State::Ready(upstream.clone()));
        loop {
            tokio::select! {
                cause = instance.exited() => {
                    warn!(route = %self.shared.route, attempt = self.attempt, uptime_s = ready_at.elapsed().as_secs(), cause = %cause, "backend exited");
                    self.shared.stats.stopped();
                    self.publish(State::Stopped);
                    return None;
                }
                _ = self.activity.idle_for(self.idle_timeout, ready_at) => {
                    self.publish(State::Stopping);
                    // Pairs with `Activity::enter`: a request that entered before this fence is
                    // counted below; one that enters after it sees `Stopping` and waits.
                    fence(Ordering::SeqCst);
                    if self.activity.active() > 0 {
                        self.publish(State::Ready(upstream.clone()));
                        continue;
                    }
                    return Some((instance, "idle"));
                }
                _ = shutdown_requested(&mut self.shutdown) => {
                    self.publish(State::Stopping);
                    let reason = match *self.shutdown.borrow() {
                        Stop::Retire => "reload",
                        _ => "shutdown",
                    };
                    return Some((instance, reason));
                }
                Some(_) = self.wants.recv() => {}
            }
        }
    }

    /// At exit: leaves the backend running for the next rouse, where its kind allows.
    async fn leave(&mut self, instance: Box<dyn Instance>) {
        self.shared.stats.stopped();
        match instance.leave().await {
            Ok(true) => {
                info!(route = %self.shared.route, attempt = self.attempt, "backend left running for the next rouse");
            }
            Ok(false) => {
                info!(route = %self.shared.route, attempt = self.attempt, "backend stopped");
            }
            Err(e) => {
                warn!(route = %self.shared.route, attempt = self.attempt, error = %e, "backend stopped uncleanly");
            }
        }
    }

    async fn stop(&mut self, instance: Box<dyn Instance>, reason: &'static str) {
        let started = Instant::now();
        self.shared.stats.stopped();
        if !matches!(self.shared.state.borrow().state, State::Failed(_)) {
            self.publish(State::Stopping);
        }
        info!(route = %self.shared.route, attempt = self.attempt, reason = %reason, "backend stopping");
        match instance.stop().await {
            Ok(()) => {
                info!(route = %self.shared.route, attempt = self.attempt, elapsed_ms = ms(started.elapsed()), "backend stopped");
            }
            Err(e) => {
                warn!(route = %self.shared.route, attempt = self.attempt, elapsed_ms = ms(started.elapsed()), error = %e, "backend stopped uncleanly");
            }
        }
        if !matches!(self.shared.state.borrow().state, State::Failed(_)) {
            self.publish(State::Stopped);
        }
    }
}

/// Resolves when the supervisor is told to stop (or its sender is gone).
async fn shutdown_requested(rx: &mut watch::Receiver<Stop>) {
    let _ = rx.wait_for(|stop| *stop != Stop::Run).await;
}

/// A duration in milliseconds with 0.1 ms resolution, for log fields.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// Kept alive by a held request: counts it in `pending` and frees the place when dropped.
pub struct PendingGuard(Arc<Shared>);

impl PendingGuard {
    /// Takes a place among the held requests, or `None` if all `max_pending` are taken.
    pub fn take(shared: &Arc<Shared>) -> Option<PendingGuard> {
        let before = shared.pending.fetch_add(1, Ordering::SeqCst);
        if before >= shared.max_pending {
            shared.pending.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(PendingGuard(shared.clone()))
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}
