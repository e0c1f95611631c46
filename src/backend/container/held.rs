//! Which containers a start holds, and stopping them: claims shared with other routes, and the
//! marks that keep a start of a container from overlapping a stop of it still under way.
//!
//! A container is stopped only by the route that lets go of it last, and only if that route's
//! start sent it a start. Whatever is still held when a [`Held`] is dropped (a failed or dropped
//! start, an instance dropped without a stop) is let go and stopped in the background.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::api::{self, Api, StopReply};
use super::{POLL, ms};
use crate::backend::{Claims, StopError};

/// How long a stopped container may still show as running before the stop counts as failed.
const STOP_SETTLE: Duration = Duration::from_secs(10);

/// Stops under way, by claim key: a start of the same container waits for the stop to end,
/// so that a stop decided just before never hits a container just started again.
static STOPS: Mutex<BTreeMap<String, watch::Receiver<()>>> = Mutex::new(BTreeMap::new());

/// Marks the stop of one container as under way until dropped.
pub struct Ticket {
    name: String,
    key: String,
    mark: watch::Receiver<()>,
    /// Dropping it wakes the starts waiting for this stop.
    _done: watch::Sender<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut stops = STOPS.lock().expect("stops lock");
        if stops
            .get(&self.key)
            .is_some_and(|m| m.same_channel(&self.mark))
        {
            stops.remove(&self.key);
        }
    }
}

/// The containers one start has claimed. Dropped while holding any (a start that failed or was
/// dropped, an instance dropped without a stop), it lets them go and stops in the background
/// those no other route uses.
pub struct Held {
    pub api: Arc<Api>,
    pub route: Arc<str>,
    pub claims: Arc<Claims>,
    /// In the order they were claimed.
    pub held: Vec<Claimed>,
}

/// One claimed container.
pub struct Claimed {
    /// The container's name.
    pub name: String,
    key: String,
    /// Whether a start was sent: only then is it this start's to stop.
    started: bool,
}

impl Held {
    /// Claims a container, then waits for any stop of it that is under way.
    pub async fn claim(&mut self, name: &str) {
        let key = format!(
            "{} {} {name}",
            self.api.engine(),
            self.api.socket().display()
        );
        let pending = {
            let stops = STOPS.lock().expect("stops lock");
            self.claims.claim(&key);
            stops.get(&key).cloned()
        };
        self.held.push(Claimed {
            name: name.to_owned(),
            key,
            started: false,
        });
        if let Some(mut pending) = pending {
            debug!(route = %self.route, container = %name, "container start waits for its stop");
            while pending.changed().await.is_ok() {}
        }
    }

    /// Records that a start of `name` is being sent (from then on, it may run).
    pub fn mark_started(&mut self, name: &str) {
        if let Some(c) = self.held.iter_mut().find(|c| c.name == name) {
            c.started = true;
        }
    }

    /// Lets go of every container; returns a ticket for each that this start started and no
    /// route uses any more.
    pub fn release_all(&mut self) -> Vec<Ticket> {
        let mut tickets = Vec::new();
        for Claimed { name, key, started } in self.held.drain(..).rev() {
            let mut stops = STOPS.lock().expect("stops lock");
            if self.claims.release(&key) {
                if !started {
                    continue;
                }
                let (done, mark) = watch::channel(());
                stops.insert(key.clone(), mark.clone());
                tickets.push(Ticket {
                    name,
                    key,
                    mark,
                    _done: done,
                });
            } else if started {
                info!(route = %self.route, container = %name, "container kept running for another route");
            }
        }
        tickets
    }

    /// Lets go of every container and stops the unused ones in the background, but for
    /// `dead`, which has stopped by itself.
    pub fn let_go(&mut self, dead: Option<&str>) {
        let mut tickets = self.release_all();
        tickets.retain(|t| Some(t.name.as_str()) != dead);
        if tickets.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (api, route) = (self.api.clone(), self.route.clone());
            rt.spawn(async move {
                if let Err(e) = stop_all(api, route.clone(), tickets).await {
                    warn!(route = %route, error = %e, "container stop failed");
                }
            });
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.let_go(None);
    }
}

/// Stops the ticketed containers, all at once.
pub async fn stop_all(
    api: Arc<Api>,
    route: Arc<str>,
    tickets: Vec<Ticket>,
) -> Result<(), StopError> {
    let mut stops = tokio::task::JoinSet::new();
    for ticket in tickets {
        let (api, route) = (api.clone(), route.clone());
        stops.spawn(async move {
            let result = stop_one(&api, &route, &ticket.name).await;
            drop(ticket);
            result
        });
    }
    let mut errors = Vec::new();
    while let Some(result) = stops.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("container stop task failed: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StopError(errors.join("; ")))
    }
}

/// Stops one container and waits until the engine shows it stopped.
async fn stop_one(api: &Api, route: &str, name: &str) -> Result<(), String> {
    let started = Instant::now();
    info!(route = %route, container = %name, "container stopping");
    let fail = |e: api::ApiError| format!("cannot stop container \"{name}\": {e}");
    match api.stop(name).await.map_err(fail)? {
        StopReply::Stopped | StopReply::NotRunning => {}
        StopReply::Missing => {
            info!(route = %route, container = %name, "container already removed");
            return Ok(());
        }
    }
    // The engine answers once it has stopped the container; an engine that answers early is
    // given a little time to catch up.
    let settle = Instant::now() + STOP_SETTLE;
    while let Some(state) = api.inspect(name).await.map_err(fail)? {
        if !state.running {
            break;
        }
        if Instant::now() >= settle {
            return Err(format!(
                "container \"{name}\" still runs {} after its stop: stop it by hand ({} stop {name})",
                crate::error::fmt_duration(STOP_SETTLE),
                api.engine()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    info!(route = %route, container = %name, elapsed_ms = ms(started.elapsed()), "container stopped");
    Ok(())
}
