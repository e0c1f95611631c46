//! `kind = "systemd"`: a route's units, started and stopped through systemd's D-Bus API.
//!
//! A start queues a start job for every unit of the route at once (so systemd orders them by
//! their own `After=`), waits for each job's `JobRemoved`, and checks that the units are up;
//! readiness is then probed by the lifecycle like for any backend. While the route is up, each
//! unit's `PropertiesChanged` is watched so that a unit that fails or is stopped by hand ends
//! the backend. A stop stops only the units no other route still uses (see [`Claims`]).
//!
//! systemd is only ever talked to over D-Bus; `systemctl` is never run. The files below this
//! one hold the D-Bus calls (`dbus`), the claims and stops (`held`) and the watch (`watch`).

mod dbus;
mod held;
mod watch;

use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, info, warn};
use zbus::zvariant::OwnedObjectPath;

use self::dbus::{Bus, JobEnd};
use self::held::{Held, lock_units};
use self::watch::Watch;
use super::{Backend, BoxFuture, Claims, Instance, StartError, StopError};
use crate::config::{BusAddress, SystemdConfig};

/// The systemd units of one route.
pub struct Systemd {
    shared: Arc<Shared>,
    units: Arc<[Unit]>,
}

impl Systemd {
    /// The units of `cfg` for `route`; units shared with other routes are counted in `claims`.
    pub fn new(route: &str, cfg: SystemdConfig, claims: Arc<Claims>) -> Systemd {
        let units = cfg
            .units
            .iter()
            .map(|name| Unit {
                name: name.clone(),
                key: format!("systemd {} {name}", cfg.bus),
            })
            .collect();
        Systemd {
            shared: Arc::new(Shared {
                route: route.into(),
                bus_name: dbus::describe(&cfg.bus),
                address: cfg.bus,
                claims,
                bus: tokio::sync::Mutex::new(None),
            }),
            units,
        }
    }

    /// Starts every unit, holding their claims; on failure the claims are released and the
    /// units this start began are stopped again before the error is returned.
    async fn start_units(&self) -> Result<Running, Error> {
        let bus = self.shared.bus().await?;
        let locks = lock_units(&self.units).await;
        let held = Held::claim(self.shared.clone(), self.units.clone());
        let started = self.run_start_jobs(&bus).await;
        drop(locks);
        match started {
            Ok(watch) => Ok(Running { held, watch }),
            Err(e) => {
                // Claims are given back (and what was started stopped) before the error is told,
                // so that the next attempt finds the units as they were.
                if let Err(stop) = held.release().await {
                    warn!(route = %self.shared.route, error = %stop, "units stopped uncleanly");
                }
                Err(e)
            }
        }
    }

    async fn run_start_jobs(&self, bus: &Bus) -> Result<Watch, Error> {
        let shared = &self.shared;
        let started = Instant::now();
        let mut jobs = bus.jobs().await.map_err(|e| shared.lost(e))?;
        let mut queued: Vec<(&Unit, OwnedObjectPath)> = Vec::with_capacity(self.units.len());
        for unit in self.units.iter() {
            info!(route = %shared.route, unit = %unit.name, bus = %shared.address, "unit starting");
            let job = bus
                .manager
                .start_unit(&unit.name, "replace")
                .await
                .map_err(|e| shared.call_error(e, "start", &unit.name))?;
            queued.push((unit, job));
        }
        for (unit, job) in &queued {
            let end = jobs.wait(job).await.ok_or_else(|| shared.lost_quietly())?;
            let result = match &end {
                JobEnd::Result(result) => result.as_str(),
                JobEnd::Gone => "gone",
            };
            info!(route = %shared.route, unit = %unit.name, op = "start", result = %result, elapsed_ms = ms(started), "unit job done");
            if let JobEnd::Result(result) = end
                && result != "done"
            {
                let path = unit_path(bus, shared, &unit.name).await?;
                let result = match bus.unit_result(&unit.name, &path).await {
                    Some(r) if r != "success" => r,
                    _ => result,
                };
                return Err(Error::Failed {
                    unit: unit.name.clone(),
                    result,
                });
            }
        }
        let mut paths = Vec::with_capacity(queued.len());
        for (unit, _) in &queued {
            let path = unit_path(bus, shared, &unit.name).await?;
            let state = bus
                .unit_state(&path, "ActiveState")
                .await
                .map_err(|e| shared.call_error(e, "read the state of", &unit.name))?;
            debug!(route = %shared.route, unit = %unit.name, state = %state, "unit state");
            match state.as_str() {
                // Readiness is probed next by the lifecycle; a unit still activating is fine.
                "active" | "activating" | "reloading" | "refreshing" => {}
                "failed" => {
                    return Err(Error::Failed {
                        unit: unit.name.clone(),
                        result: bus
                            .unit_result(&unit.name, &path)
                            .await
                            .unwrap_or_else(|| "failed".into()),
                    });
                }
                _ => {
                    return Err(Error::NotRunning {
                        unit: unit.name.clone(),
                        state,
                    });
                }
            }
            paths.push(((*unit).clone(), path));
        }
        Watch::new(shared.clone(), bus.clone(), paths)
            .await
            .map_err(|e| shared.lost(e))
    }
}

impl Backend for Systemd {
    fn start(&self) -> BoxFuture<'_, Result<Box<dyn Instance>, StartError>> {
        Box::pin(async move {
            match self.start_units().await {
                Ok(running) => Ok(Box::new(running) as Box<dyn Instance>),
                Err(e) => Err(StartError::Refused(e.to_string())),
            }
        })
    }

    fn running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let Some(unit) = self.units.first() else {
                return false;
            };
            let Ok(bus) = self.shared.bus().await else {
                return false;
            };
            let Ok(path) = unit_path(&bus, &self.shared, &unit.name).await else {
                return false;
            };
            matches!(
                bus.unit_state(&path, "ActiveState").await.as_deref(),
                Ok("active" | "activating" | "reloading" | "refreshing")
            )
        })
    }

    fn preflight(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let bus = match self.shared.bus().await {
                Ok(bus) => bus,
                Err(e) => return vec![e.to_string()],
            };
            let mut warnings = Vec::new();
            for unit in self.units.iter() {
                let name = &unit.name;
                let state = match bus.manager.load_unit(name).await {
                    Ok(path) => bus.unit_state(&path, "LoadState").await,
                    Err(e) => Err(e),
                };
                let problem = match state {
                    Ok(state) => match state.as_str() {
                        "loaded" => None,
                        "not-found" => Some(Error::NotFound {
                            unit: name.clone(),
                            bus: self.shared.bus_name.clone(),
                        }),
                        "masked" => Some(Error::Masked {
                            unit: name.clone(),
                            bus: self.shared.bus_name.clone(),
                        }),
                        _ => Some(Error::NotLoaded {
                            unit: name.clone(),
                            state,
                        }),
                    },
                    Err(e) => Some(self.shared.call_error(e, "load", name)),
                };
                warnings.extend(problem.map(|p| p.to_string()));
            }
            warnings
        })
    }
}

/// One unit of a route.
#[derive(Debug, Clone)]
struct Unit {
    /// Its name, with the type suffix.
    name: String,
    /// Its key in [`Claims`]: `systemd BUS NAME`.
    key: String,
}

/// What a route's start, watch and stops share: the route, the bus and its connection.
struct Shared {
    route: Arc<str>,
    address: BusAddress,
    /// The bus as messages name it.
    bus_name: String,
    claims: Arc<Claims>,
    /// The connection, made on first use and made again once it breaks.
    bus: tokio::sync::Mutex<Option<Bus>>,
}

impl Shared {
    /// The connection to systemd, checked (by subscribing again) and remade if it broke.
    async fn bus(&self) -> Result<Bus, Error> {
        let mut cached = self.bus.lock().await;
        if let Some(bus) = cached.as_ref() {
            match bus.subscribe().await {
                Ok(()) => return Ok(bus.clone()),
                Err(e) => {
                    debug!(route = %self.route, bus = %self.address, error = %e, "bus reconnecting")
                }
            }
        }
        *cached = None;
        let bus = Bus::connect(&self.address).await.map_err(|source| {
            match dbus::error_name(&source) {
                Some(
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner",
                ) => Error::NoSystemd {
                    bus: self.bus_name.clone(),
                },
                _ => Error::Connect {
                    bus: self.bus_name.clone(),
                    source,
                },
            }
        })?;
        debug!(route = %self.route, bus = %self.address, "bus connected");
        *cached = Some(bus.clone());
        Ok(bus)
    }

    /// What a failed call on `unit` means.
    fn call_error(&self, e: zbus::Error, verb: &'static str, unit: &str) -> Error {
        let unit = unit.to_owned();
        let bus = self.bus_name.clone();
        match dbus::error_name(&e) {
            Some("org.freedesktop.systemd1.NoSuchUnit") => return Error::NotFound { unit, bus },
            Some("org.freedesktop.systemd1.UnitMasked") => return Error::Masked { unit, bus },
            Some(
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner",
            ) => return Error::NoSystemd { bus },
            Some(
                "org.freedesktop.DBus.Error.AccessDenied"
                | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
            ) => {
                return Error::Denied {
                    verb,
                    unit,
                    message: dbus::error_text(&e),
                };
            }
            _ => {}
        }
        if dbus::is_transport(&e) {
            return self.lost(e);
        }
        Error::Call {
            verb,
            unit,
            message: dbus::error_text(&e),
        }
    }

    fn lost(&self, source: zbus::Error) -> Error {
        Error::Lost {
            bus: self.bus_name.clone(),
            source: Some(source),
        }
    }

    fn lost_quietly(&self) -> Error {
        Error::Lost {
            bus: self.bus_name.clone(),
            source: None,
        }
    }
}

/// The object path of `unit` (loading it if systemd had unloaded it).
async fn unit_path(bus: &Bus, shared: &Shared, unit: &str) -> Result<OwnedObjectPath, Error> {
    bus.manager
        .load_unit(unit)
        .await
        .map_err(|e| shared.call_error(e, "load", unit))
}

/// A started route: its claims, and the watch on its units.
struct Running {
    held: Held,
    watch: Watch,
}

impl Instance for Running {
    fn exited(&mut self) -> BoxFuture<'_, String> {
        Box::pin(self.watch.exited())
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<(), StopError>> {
        let Running { held, watch } = *self;
        // Its signal streams are not read any more: dropped now, so they never fill up.
        drop(watch);
        Box::pin(async move { held.release().await.map_err(|e| StopError(e.to_string())) })
    }

    fn leave(self: Box<Self>) -> BoxFuture<'static, Result<bool, StopError>> {
        let Running { held, watch } = *self;
        drop(watch);
        held.forget();
        Box::pin(async { Ok(true) })
    }
}

/// Why talking to systemd about a route's units failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The bus could not be connected to.
    #[error("cannot connect to {bus}: {source}")]
    Connect {
        /// The bus, as messages name it.
        bus: String,
        /// zbus's error.
        source: zbus::Error,
    },
    /// The bus answers, but systemd is not on it.
    #[error("systemd does not answer on {bus}: check the route's bus setting")]
    NoSystemd {
        /// The bus, as messages name it.
        bus: String,
    },
    /// The connection broke during a call.
    #[error("lost the connection to systemd on {bus}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Lost {
        /// The bus, as messages name it.
        bus: String,
        /// zbus's error, when there was one.
        source: Option<zbus::Error>,
    },
    /// No such unit on that bus.
    #[error("unit \"{unit}\" not found on {bus}")]
    NotFound {
        /// The unit.
        unit: String,
        /// The bus, as messages name it.
        bus: String,
    },
    /// The unit is masked.
    #[error("unit \"{unit}\" is masked on {bus}: unmask it to let rouse start it")]
    Masked {
        /// The unit.
        unit: String,
        /// The bus, as messages name it.
        bus: String,
    },
    /// The unit file could not be loaded (`bad-setting`, `error`).
    #[error("unit \"{unit}\" cannot be loaded ({state}): see systemctl status {unit}")]
    NotLoaded {
        /// The unit.
        unit: String,
        /// Its `LoadState`.
        state: String,
    },
    /// The start job failed, or the unit failed right after it.
    #[error("unit \"{unit}\" failed: {result}")]
    Failed {
        /// The unit.
        unit: String,
        /// The unit's `Result` (`exit-code`), or the job's (`dependency`).
        result: String,
    },
    /// The start job succeeded but the unit is not running.
    #[error(
        "unit \"{unit}\" is {state} right after its start: it must keep running to serve (a Type=oneshot unit needs RemainAfterExit=yes)"
    )]
    NotRunning {
        /// The unit.
        unit: String,
        /// Its `ActiveState`.
        state: String,
    },
    /// The stop job did not end well.
    #[error("unit \"{unit}\" did not stop cleanly: {result}")]
    StopFailed {
        /// The unit.
        unit: String,
        /// The job's result.
        result: String,
    },
    /// systemd (or the bus's policy) refused rouse.
    #[error(
        "not allowed to {verb} unit \"{unit}\": {message}: run rouse as root, or allow it with a polkit rule"
    )]
    Denied {
        /// What was asked.
        verb: &'static str,
        /// The unit.
        unit: String,
        /// systemd's words.
        message: String,
    },
    /// systemd refused the call for another reason.
    #[error("systemd cannot {verb} unit \"{unit}\": {message}")]
    Call {
        /// What was asked.
        verb: &'static str,
        /// The unit.
        unit: String,
        /// systemd's words.
        message: String,
    },
}

/// Milliseconds since `since`, with 0.1 ms resolution, for log fields.
fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10_000.0).round() / 10.0
}
