//! The route table and its changes: built at start, rebuilt on reload (SIGHUP, `rouse reload`).
//!
//! Requests read the table in force ([`Table`]) through one atomic pointer; a reload builds a
//! whole new table beside it and swaps the pointer, so a request sees either the old routes or
//! the new ones, never a mix. Nothing a connection holds is torn down by the swap.
//!
//! What a reload does to each route, matched by name:
//! - **unchanged backend** ([`RouteConfig::same_backend`]): the route keeps its supervisor,
//!   its backend (running or not), its held requests and its open connections; new hosts,
//!   certificate, passive requests or starting page apply to the next request;
//! - **changed backend**: the old route *retires*: its open connections and in-flight requests
//!   get up to `drain_timeout`, then its backend is stopped. The new route starts its backend
//!   on demand, once the old one is stopped (they may be the same container or unit);
//! - **removed**: retires the same way; its hosts get `404` at once;
//! - **added**: starts stopped, like every route at start.
//!
//! The control thread owns all of this ([`Routes`]); workers only read tables.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{App, Route};
use crate::activity::Activity;
use crate::backend::Claims;
use crate::config::{Config, OnExit, Protocol, RouteConfig};
use crate::hold::Gate;
use crate::lifecycle::{Shared, Stop, Supervisor};
use crate::route::HostMap;
use crate::tls::Tls;

/// The routes in force, as requests read them.
pub(super) struct Table {
    /// Host → index into `routes`.
    pub(super) hosts: HostMap<usize>,
    pub(super) routes: Vec<Arc<Route>>,
    /// For each listener, in config order: the route of a `tcp` listener.
    pub(super) tcp_routes: Vec<Option<usize>>,
    /// Certificates of the `https` listeners (none without such a listener).
    pub(super) tls: Option<Arc<Tls>>,
}

impl Table {
    /// The route of a normalised host name.
    pub(super) fn lookup(&self, host: &str) -> Option<&Arc<Route>> {
        self.hosts.lookup(host).map(|index| &self.routes[index])
    }
}

/// A route as the control thread keeps it: its config, and the handle on its supervisor.
struct Live {
    config: RouteConfig,
    route: Arc<Route>,
    /// Tells the supervisor to stop (`None`: an always-on upstream, nothing to supervise).
    stop: Option<Arc<watch::Sender<Stop>>>,
    /// Becomes true once the supervisor has ended (its backend stopped).
    done: Option<watch::Receiver<bool>>,
}

/// A config put in force: the new table, what changed, and the routes that must now retire
/// (they serve until the table is swapped).
struct Applied {
    table: Table,
    changes: Changes,
    retired: Vec<Live>,
}

/// What a reload changed, for the log and for `rouse reload`.
#[derive(Debug, Default)]
struct Changes {
    added: Vec<String>,
    changed: Vec<String>,
    removed: Vec<String>,
    kept: usize,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        write!(
            f,
            "added: {}; backend changed: {}; removed: {}; {} kept as they were",
            list(&self.added),
            list(&self.changed),
            list(&self.removed),
            self.kept
        )
    }
}

/// Every route's supervisor, and the config in force: owned by the control thread.
pub(super) struct Routes {
    config: Config,
    live: Vec<Live>,
    /// Stop handles of every supervisor ever started, retired ones included, for the exit.
    stops: Vec<Arc<watch::Sender<Stop>>>,
    supervisors: JoinSet<()>,
    claims: Arc<Claims>,
    /// Counts supervisors whose backend is not stopped, for `idle_exit`.
    pub(super) running: Arc<Activity>,
}

impl Routes {
    /// Starts a supervisor per route of `config` and returns the first table.
    pub(super) fn start(config: Config) -> Result<(Routes, Table), String> {
        let tls = Tls::load(&config).map_err(|e| e.to_string())?.map(Arc::new);
        let mut routes = Routes {
            config: Config {
                routes: Vec::new(),
                ..config.clone()
            },
            live: Vec::new(),
            stops: Vec::new(),
            supervisors: JoinSet::new(),
            claims: Arc::new(Claims::default()),
            running: Activity::new(),
        };
        let applied = routes.apply(config, tls)?;
        Ok((routes, applied.table))
    }

    /// The config in force.
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the config file again and, if it is valid and a reload can apply it, puts it in
    /// force. On any error the routes in force stay as they are.
    pub(super) async fn reload(&mut self, app: &App) -> Result<String, String> {
        let path = self.config.path.clone();
        // File reads (config, certificates): off the control thread's event loop.
        let next = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| format!("reload failed: {e}"))?
            .map_err(|e| e.to_string())?;
        if let Some(what) = self.config.needs_restart_for(&next) {
            return Err(format!(
                "{}: {what}: that takes a restart of rouse, not a reload",
                next.path.display()
            ));
        }
        let previous = app.table.load_full().tls.clone();
        let (next, tls) = tokio::task::spawn_blocking(move || {
            let tls = Tls::load_next(&next, previous.as_deref()).map_err(|e| e.to_string())?;
            Ok::<_, String>((next, tls.map(Arc::new)))
        })
        .await
        .map_err(|e| format!("reload failed: {e}"))??;
        let drain = next.proxy.drain_timeout;
        // Forget the supervisors that have ended (retired by earlier reloads).
        while self.supervisors.try_join_next().is_some() {}
        self.stops.retain(|stop| stop.receiver_count() > 0);
        let Applied {
            table,
            changes,
            retired,
        } = self.apply(next, tls)?;
        let table = Arc::new(table);
        app.table.store(table.clone());
        app.view.routes.store(Arc::new(super::route_views(&table)));
        for live in retired {
            self.retire(live, drain);
        }
        Ok(changes.to_string())
    }

    /// Builds the table for `next` from the routes in force: keeps what is unchanged, starts
    /// supervisors for what is new.
    fn apply(&mut self, next: Config, tls: Option<Arc<Tls>>) -> Result<Applied, String> {
        // Everything that can fail first, so a failure leaves nothing half-done.
        let mut upstream_tls = Vec::with_capacity(next.routes.len());
        for rc in &next.routes {
            let same = self
                .live
                .iter()
                .any(|l| l.config.name == rc.name && l.config.same_backend(rc));
            upstream_tls.push(if same {
                None
            } else {
                crate::proxy::upstream_tls(rc)?
            });
        }

        let mut old: Vec<Option<Live>> = std::mem::take(&mut self.live)
            .into_iter()
            .map(Some)
            .collect();
        let mut changes = Changes::default();
        let mut retired = Vec::new();
        let mut live = Vec::with_capacity(next.routes.len());
        for (rc, upstream_tls) in next.routes.iter().zip(upstream_tls) {
            let same_name = old
                .iter()
                .position(|l| l.as_ref().is_some_and(|l| l.config.name == rc.name));
            let kept =
                same_name.filter(|&i| old[i].as_ref().is_some_and(|l| l.config.same_backend(rc)));
            if let Some(i) = kept {
                let Some(before) = old[i].take() else {
                    continue;
                };
                changes.kept += 1;
                live.push(Live {
                    config: rc.clone(),
                    route: Arc::new(Route::new(
                        rc,
                        before.route.activity.clone(),
                        before.route.gate.clone(),
                    )),
                    stop: before.stop,
                    done: before.done,
                });
                continue;
            }
            // A new route, or a new backend for one: its predecessor must be stopped before
            // it starts anything.
            let predecessor = same_name.and_then(|i| old[i].take());
            match &predecessor {
                Some(_) => changes.changed.push(rc.name.clone()),
                None => changes.added.push(rc.name.clone()),
            }
            let after = predecessor.as_ref().and_then(|p| p.done.clone());
            live.push(self.spawn(rc, upstream_tls, after, next.proxy.on_exit));
            retired.extend(predecessor);
        }
        for gone in old.into_iter().flatten() {
            changes.removed.push(gone.config.name.clone());
            retired.push(gone);
        }

        let mut hosts = HostMap::default();
        for (index, l) in live.iter().enumerate() {
            for host in &l.config.hosts {
                hosts.insert(host, index);
            }
        }
        let table = Table {
            hosts,
            routes: live.iter().map(|l| l.route.clone()).collect(),
            tcp_routes: next
                .listeners
                .iter()
                .map(|l| (l.protocol == Protocol::Tcp).then_some(l.route).flatten())
                .collect(),
            tls,
        };
        self.live = live;
        self.config = next;
        Ok(Applied {
            table,
            changes,
            retired,
        })
    }

    /// A new route with its supervisor, which waits for `after` (its predecessor's end)
    /// before it starts anything.
    fn spawn(
        &mut self,
        rc: &RouteConfig,
        upstream_tls: Option<Arc<rustls::ClientConfig>>,
        after: Option<watch::Receiver<bool>>,
        on_exit: OnExit,
    ) -> Live {
        let activity = Activity::new();
        let workers = self.config.proxy.workers;
        let Some(backend) = crate::backend::for_route(rc, &self.claims) else {
            let shared = Shared::always_ready(rc, workers, upstream_tls);
            return Live {
                config: rc.clone(),
                route: Arc::new(Route::new(rc, activity, Gate::new(shared))),
                stop: None,
                done: None,
            };
        };
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let stop = Arc::new(stop);
        self.stops.push(stop.clone());
        let (supervisor, shared) = Supervisor::new(
            rc,
            backend,
            activity.clone(),
            self.running.clone(),
            stop_rx,
            workers,
            upstream_tls,
        );
        let supervisor = supervisor.leave_on_exit(on_exit == OnExit::Leave);
        let (done_tx, done) = watch::channel(false);
        self.supervisors.spawn(async move {
            if let Some(mut after) = after {
                // Err: the predecessor's task is gone, which is as good as done.
                let _ = after.wait_for(|done| *done).await;
            }
            supervisor.run().await;
            done_tx.send_replace(true);
        });
        Live {
            config: rc.clone(),
            route: Arc::new(Route::new(rc, activity, Gate::new(shared))),
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Stops a removed or replaced route's backend once its connections and requests are done,
    /// or after `drain`.
    fn retire(&self, live: Live, drain: Duration) {
        let Some(stop) = live.stop else { return };
        let activity = live.route.activity.clone();
        let name = live.config.name;
        tokio::spawn(async move {
            let idle =
                tokio::time::timeout(drain, activity.idle_for(Duration::ZERO, Instant::now()));
            if idle.await.is_err() {
                warn!(route = %name, open = activity.active(), "retired route still in use after drain_timeout: stopping its backend");
            } else {
                info!(route = %name, "retired route idle: stopping its backend");
            }
            // Unless rouse is exiting meanwhile (then the exit decides).
            stop.send_if_modified(|s| {
                let run = *s == Stop::Run;
                if run {
                    *s = Stop::Retire;
                }
                run
            });
        });
    }

    /// Tells every supervisor that rouse exits, and waits until each has stopped (or left) its
    /// backend.
    pub(super) async fn exit(&mut self) {
        for stop in &self.stops {
            stop.send_replace(Stop::Exit);
        }
        while self.supervisors.join_next().await.is_some() {}
    }
}

impl Route {
    fn new(rc: &RouteConfig, activity: Arc<Activity>, gate: Gate) -> Route {
        Route {
            name: rc.name.as_str().into(),
            activity,
            gate,
            proxy_protocol: rc.proxy_protocol,
            passive: rc.passive.clone(),
            starting_page: rc.starting_page,
        }
    }
}
