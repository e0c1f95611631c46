//! `kind = "podman"` and `kind = "docker"`: containers started and stopped through the engine's
//! REST API on its unix socket (never the CLI). One implementation; the two dialects differ
//! only in paths and bodies (`container/api.rs`).
//!
//! A start claims every container of the route (the `also` ones first, then the route's own),
//! starts each, creates the route's container first if it is missing and `image` is set, and
//! waits for a container with a healthcheck to report healthy. The engine's event stream, opened
//! before the first start, tells when a container dies. A stop stops each container no other
//! route still claims; a stop under way and a start of the same container never overlap (see
//! `container/held.rs`). Whatever a start claimed is let go if the start fails or is dropped.

mod api;
mod client;
mod held;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::api::{Api, Exit, StartReply};
use self::held::{Claimed, Held, stop_all};
use super::{Backend, BoxFuture, Claims, Instance, StartError, StopError};
use crate::config::ContainerConfig;

/// How often a container's state is read while waiting for it (health, stop, lost events).
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How often to inspect the containers once the event stream is gone.
const POLL_WITHOUT_EVENTS: Duration = Duration::from_secs(1);
/// Bounds on how often rouse runs a podman healthcheck itself while waiting for "healthy".
const HEALTH_RUN_MIN: Duration = Duration::from_millis(250);
const HEALTH_RUN_MAX: Duration = Duration::from_secs(1);
/// Longest line of the event stream kept; a longer one is not an event rouse reads.
const MAX_EVENT_LINE: usize = 64 * 1024;

/// The containers of one route.
pub struct Container {
    route: Arc<str>,
    cfg: ContainerConfig,
    claims: Arc<Claims>,
    api: Arc<Api>,
}

impl Container {
    /// The containers of `cfg` for `route`.
    pub fn new(route: &str, cfg: ContainerConfig, claims: Arc<Claims>) -> Container {
        Container {
            route: route.into(),
            api: Arc::new(Api::new(cfg.engine, &cfg.socket)),
            cfg,
            claims,
        }
    }

    async fn start_all(&self) -> Result<Box<dyn Instance>, StartError> {
        let mut held = Held {
            api: self.api.clone(),
            route: self.route.clone(),
            claims: self.claims.clone(),
            held: Vec::new(),
        };
        // Dependencies first, so that the route's container finds them running.
        let mut order: Vec<&String> = self.cfg.containers[1..].iter().collect();
        order.push(&self.cfg.containers[0]);
        for name in &order {
            held.claim(name).await;
        }
        // The event stream is opened after any stop of these containers has finished (its
        // "died" is not this start's) and before the first start (so no exit is missed).
        let events = self
            .api
            .events(&self.cfg.containers)
            .await
            .map_err(refused)?;
        let (tx, exits) = mpsc::unbounded_channel();
        let watcher = AbortOnDrop(tokio::spawn(watch_events(
            events,
            self.cfg.containers.clone(),
            tx,
            self.route.clone(),
        )));
        for name in order {
            self.start_one(&mut held, name, name == &self.cfg.containers[0])
                .await?;
        }
        Ok(Box::new(Running {
            held,
            exits,
            _watcher: watcher,
        }))
    }

    /// Starts one container (creating the route's own if it is missing and may be created),
    /// then waits for it to be healthy if it has a healthcheck.
    async fn start_one(&self, held: &mut Held, name: &str, own: bool) -> Result<(), StartError> {
        let started = Instant::now();
        let engine = self.api.engine();
        info!(route = %self.route, container = %name, %engine, "container starting");
        held.mark_started(name);
        match self
            .api
            .start(name)
            .await
            .map_err(|e| start_failed(name, e))?
        {
            StartReply::Started => {}
            StartReply::AlreadyRunning => {
                info!(route = %self.route, container = %name, "container already running");
            }
            StartReply::Missing => {
                let spec = match &self.cfg.create {
                    Some(spec) if own => spec,
                    _ => return Err(StartError::Refused(self.not_found(name, own))),
                };
                self.api.create(name, spec).await.map_err(|e| {
                    StartError::Refused(format!(
                        "cannot create container \"{name}\" from image \"{}\": {e}",
                        spec.image
                    ))
                })?;
                info!(route = %self.route, container = %name, image = %spec.image, "container created");
                if self
                    .api
                    .start(name)
                    .await
                    .map_err(|e| start_failed(name, e))?
                    == StartReply::Missing
                {
                    return Err(StartError::Refused(self.not_found(name, own)));
                }
            }
        }
        self.wait_healthy(name, started).await?;
        info!(route = %self.route, container = %name, elapsed_ms = ms(started.elapsed()), "container started");
        Ok(())
    }

    fn not_found(&self, name: &str, own: bool) -> String {
        let hint = if own {
            "create it, or set image (and ports) for rouse to create it"
        } else {
            "create it"
        };
        format!(
            "container \"{name}\" not found ({} at {}): {hint}",
            self.api.engine(),
            self.api.socket().display()
        )
    }

    /// Waits until a container with a healthcheck reports healthy; returns at once for one
    /// without. podman without systemd never runs healthchecks by itself, so rouse runs them.
    async fn wait_healthy(&self, name: &str, started: Instant) -> Result<(), StartError> {
        let mut last_run: Option<Instant> = None;
        let mut waited = false;
        loop {
            let state = self
                .api
                .inspect(name)
                .await
                .map_err(refused)?
                .ok_or_else(|| {
                    StartError::Refused(format!("container \"{name}\" was removed while starting"))
                })?;
            if !state.running {
                return Err(StartError::Exited(exit_cause(name, Some(state.exit_code))));
            }
            match state.health.as_deref() {
                None => return Ok(()),
                Some("healthy") => {
                    if waited {
                        info!(route = %self.route, container = %name, elapsed_ms = ms(started.elapsed()), "container healthy");
                    }
                    return Ok(());
                }
                Some("unhealthy") => {
                    let output = match state.health_output.as_str() {
                        "" => String::new(),
                        out => format!(" (last check said: {out})"),
                    };
                    return Err(StartError::Refused(format!(
                        "container \"{name}\" is unhealthy{output}: fix its healthcheck or what it checks"
                    )));
                }
                Some(_) => {}
            }
            if !waited {
                debug!(route = %self.route, container = %name, "container waiting for healthy");
                waited = true;
            }
            if self.api.runs_healthchecks() {
                let every = state
                    .health_interval
                    .unwrap_or(HEALTH_RUN_MAX)
                    .clamp(HEALTH_RUN_MIN, HEALTH_RUN_MAX);
                if last_run.is_none_or(|t| t.elapsed() >= every) {
                    last_run = Some(Instant::now());
                    if let Err(e) = self.api.run_healthcheck(name).await {
                        debug!(route = %self.route, container = %name, error = %e, "container healthcheck failed to run");
                    }
                    continue;
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Backend for Container {
    fn start(&self) -> BoxFuture<'_, Result<Box<dyn Instance>, StartError>> {
        Box::pin(self.start_all())
    }

    fn running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Some(own) = self.cfg.containers.first() else {
                return false;
            };
            matches!(self.api.inspect(own).await, Ok(Some(state)) if state.running)
        })
    }

    fn preflight(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            if let Err(e) = self.api.ping().await {
                return vec![format!("route \"{}\": {e}", self.route)];
            }
            let mut warnings = Vec::new();
            for (i, name) in self.cfg.containers.iter().enumerate() {
                let own = i == 0;
                match self.api.inspect(name).await {
                    Ok(Some(_)) => {}
                    Ok(None) if own && self.cfg.create.is_some() => {}
                    Ok(None) => warnings.push(format!(
                        "route \"{}\": {}",
                        self.route,
                        self.not_found(name, own)
                    )),
                    Err(e) => warnings.push(format!("route \"{}\": {e}", self.route)),
                }
            }
            warnings
        })
    }
}

// === A started group ===

/// The containers of one start, watched through the event stream.
struct Running {
    held: Held,
    /// Exits, from the event stream; closed if the stream broke.
    exits: mpsc::UnboundedReceiver<Exit>,
    _watcher: AbortOnDrop,
}

impl Running {
    /// Without events: inspects the containers until one is not running.
    async fn poll_exit(&self) -> (String, String) {
        loop {
            for Claimed { name, .. } in &self.held.held {
                match self.held.api.inspect(name).await {
                    Ok(Some(state)) if state.running => {}
                    Ok(Some(state)) => {
                        return (name.clone(), exit_cause(name, Some(state.exit_code)));
                    }
                    Ok(None) => return (name.clone(), format!("container \"{name}\" was removed")),
                    // The engine's service may be restarting; its containers run on without it.
                    Err(e) => {
                        debug!(route = %self.held.route, container = %name, error = %e, "container inspect failed")
                    }
                }
            }
            tokio::time::sleep(POLL_WITHOUT_EVENTS).await;
        }
    }
}

impl Instance for Running {
    fn exited(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let (name, cause) = match self.exits.recv().await {
                Some(exit) => (exit.name.clone(), exit_cause(&exit.name, exit.code)),
                None => self.poll_exit().await,
            };
            // The lifecycle drops an instance that exited without stopping it: let go of the
            // group now, and stop what is left of it.
            self.held.let_go(Some(&name));
            cause
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StopError>> {
        Box::pin(async move {
            let tickets = self.held.release_all();
            stop_all(self.held.api.clone(), self.held.route.clone(), tickets).await
        })
    }

    fn leave(mut self: Box<Self>) -> BoxFuture<'static, Result<bool, StopError>> {
        // The claims are given back without stop tickets being used: nothing is stopped.
        drop(self.held.release_all());
        Box::pin(async { Ok(true) })
    }
}

/// Follows the event stream; sends each exit of a container of the group, and ends (closing
/// the channel) if the stream breaks.
async fn watch_events(
    mut body: Incoming,
    names: Vec<String>,
    exits: mpsc::UnboundedSender<Exit>,
    route: Arc<str>,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let data = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                warn!(route = %route, error = %e, "container event stream broken");
                return;
            }
            None => {
                warn!(route = %route, "container event stream ended");
                return;
            }
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if let Some(exit) = api::parse_event(&line)
                && names.contains(&exit.name)
            {
                info!(route = %route, container = %exit.name, code = exit.code.unwrap_or(-1), "container exited");
                let _ = exits.send(exit);
            }
        }
        if buf.len() > MAX_EVENT_LINE {
            buf.clear();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// === Helpers ===

fn exit_cause(name: &str, code: Option<i64>) -> String {
    match code {
        Some(code) => format!("container \"{name}\" exited (code {code})"),
        None => format!("container \"{name}\" exited"),
    }
}

fn refused(e: api::ApiError) -> StartError {
    StartError::Refused(e.to_string())
}

fn start_failed(name: &str, e: api::ApiError) -> StartError {
    match e {
        e @ api::ApiError::Status { .. } => {
            StartError::Refused(format!("cannot start container \"{name}\": {e}"))
        }
        e => refused(e),
    }
}

/// A duration in milliseconds with 0.1 ms resolution, for log fields.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}
