//! A route's hold on its units: claimed when a start begins, given back on stop, on a failed
//! start, or when a start or a started route is dropped, stopping the units nobody else holds.
//!
//! Claims and stops of one unit are serialised by a per-unit lock, so that a route giving a
//! unit back (and stopping it) and another route claiming it (and starting it) cannot cross:
//! whichever goes second sees what the first did.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tracing::{info, warn};

use super::dbus::JobEnd;
use super::{Error, Shared, Unit, ms};

/// One lock per claim key, for the life of the process (there are as many as configured units).
static UNIT_LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Locks every unit of `units`, in key order so that overlapping groups cannot deadlock.
pub(super) async fn lock_units(units: &[Unit]) -> Vec<OwnedMutexGuard<()>> {
    let mut keys: Vec<&str> = units.iter().map(|u| u.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let locks: Vec<_> = {
        let mut all = UNIT_LOCKS.lock().expect("unit locks");
        keys.iter()
            .map(|k| all.entry((*k).to_owned()).or_default().clone())
            .collect()
    };
    let mut guards = Vec::with_capacity(locks.len());
    for lock in locks {
        guards.push(lock.lock_owned().await);
    }
    guards
}

/// The claims of one start of a route on its units. Dropped without [`Held::release`], it gives
/// them back (and stops what nobody else holds) in a task of its own.
pub(super) struct Held {
    shared: Arc<Shared>,
    units: Arc<[Unit]>,
    armed: bool,
}

impl Held {
    /// Claims every unit. Call with the units locked.
    pub fn claim(shared: Arc<Shared>, units: Arc<[Unit]>) -> Held {
        for unit in units.iter() {
            shared.claims.claim(&unit.key);
        }
        Held {
            shared,
            units,
            armed: true,
        }
    }

    /// Lets the units run on, stopping nothing (rouse exits and leaves them to the next one).
    pub fn forget(mut self) {
        self.armed = false;
    }

    /// Gives the claims back and stops the units no other route holds, waiting for their stop
    /// jobs. Runs in a task of its own, so that it completes even if the caller goes away.
    pub async fn release(mut self) -> Result<(), Error> {
        self.armed = false;
        let task = tokio::spawn(release(self.shared.clone(), self.units.clone()));
        match task.await {
            Ok(result) => result,
            Err(e) => Err(Error::Call {
                verb: "stop",
                unit: self
                    .units
                    .first()
                    .map(|u| u.name.clone())
                    .unwrap_or_default(),
                message: format!("the stop task ended: {e}"),
            }),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (shared, units) = (self.shared.clone(), self.units.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(route = %shared.route, "units left running: no runtime to stop them on");
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = release(shared.clone(), units).await {
                warn!(route = %shared.route, error = %e, "units stopped uncleanly");
            }
        });
    }
}

/// Gives back one claim on each unit, then stops (in parallel) those no route holds any more.
async fn release(shared: Arc<Shared>, units: Arc<[Unit]>) -> Result<(), Error> {
    let _locks = lock_units(&units).await;
    let to_stop: Vec<&Unit> = units
        .iter()
        .filter(|unit| {
            let last = shared.claims.release(&unit.key);
            if !last {
                info!(route = %shared.route, unit = %unit.name, "unit left running for another route");
            }
            last
        })
        .collect();
    if to_stop.is_empty() {
        return Ok(());
    }
    let bus = shared.bus().await?;
    let mut jobs = bus.jobs().await.map_err(|e| shared.lost(e))?;
    let started = Instant::now();
    let mut first_error = None;
    let mut queued = Vec::with_capacity(to_stop.len());
    for unit in to_stop {
        info!(route = %shared.route, unit = %unit.name, "unit stopping");
        match bus.manager.stop_unit(&unit.name, "replace").await {
            Ok(job) => queued.push((unit, job)),
            Err(e) => match shared.call_error(e, "stop", &unit.name) {
                // Nothing to stop.
                Error::NotFound { .. } => {}
                e => {
                    first_error.get_or_insert(e);
                }
            },
        }
    }
    for (unit, job) in queued {
        let result = match jobs.wait(&job).await {
            Some(JobEnd::Result(result)) => result,
            Some(JobEnd::Gone) => "gone".into(),
            None => {
                first_error.get_or_insert(shared.lost_quietly());
                break;
            }
        };
        info!(route = %shared.route, unit = %unit.name, op = "stop", result = %result, elapsed_ms = ms(started), "unit job done");
        if result != "done" && result != "gone" {
            first_error.get_or_insert(Error::StopFailed {
                unit: unit.name.clone(),
                result,
            });
        }
    }
    first_error.map_or(Ok(()), Err)
}
