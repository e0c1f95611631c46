//! Watching a started route's units, so that one that fails or is stopped behind rouse's back
//! ends the backend with a one-line cause.
//!
//! Each unit's `PropertiesChanged` signals only wake the watch up; the units' states are then
//! read afresh, so a missed or coalesced signal cannot hide an end. The watch is cancel-safe:
//! a read interrupted by the lifecycle's `select!` is done again on the next call.
//!
//! A lost bus connection (D-Bus restarted) does not end the backend: the watch connects again
//! and reads the states afresh; only a bus that cannot be reached any more ends it.

use std::sync::Arc;

use tracing::{debug, warn};
use zbus::MessageStream;
use zbus::zvariant::OwnedObjectPath;

use super::dbus::{self, Bus};
use super::{Shared, Unit};

/// `ExecMainCode` of a main process that exited by itself (`CLD_EXITED`).
const CLD_EXITED: i32 = 1;
/// Reconnections in a row, without a successful look at the units, before giving up.
const MAX_RECONNECTS: u32 = 4;
/// Pause after a failed reconnection, times the number of tries so far.
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// The watch on one started route's units.
pub(super) struct Watch {
    shared: Arc<Shared>,
    bus: Bus,
    units: Vec<Watched>,
    streams: Vec<MessageStream>,
    /// Something may have changed since the states were last read.
    dirty: bool,
    /// Reconnections since the units' states were last read.
    reconnects: u32,
    /// The cause, once an end was seen; told again on every later call.
    ended: Option<String>,
}

struct Watched {
    unit: Unit,
    path: OwnedObjectPath,
    /// A `deactivating` was seen: systemd was stopping it, so nobody's process just ended.
    saw_stopping: bool,
}

impl Watch {
    /// Subscribes to the changes of every unit in `units` (each with its object path).
    pub async fn new(
        shared: Arc<Shared>,
        bus: Bus,
        units: Vec<(Unit, OwnedObjectPath)>,
    ) -> zbus::Result<Watch> {
        let mut streams = Vec::with_capacity(units.len());
        for (_, path) in &units {
            streams.push(bus.changes(path).await?);
        }
        Ok(Watch {
            shared,
            bus,
            reconnects: 0,
            units: units
                .into_iter()
                .map(|(unit, path)| Watched {
                    unit,
                    path,
                    saw_stopping: false,
                })
                .collect(),
            streams,
            // The units may have changed between the start's last look and the subscription.
            dirty: true,
            ended: None,
        })
    }

    /// Resolves once a unit has failed or stopped, with the cause.
    pub async fn exited(&mut self) -> String {
        loop {
            if let Some(cause) = &self.ended {
                return cause.clone();
            }
            if self.dirty {
                match self.check().await {
                    Ok(Some(cause)) => self.ended = Some(cause),
                    Ok(None) => {
                        self.dirty = false;
                        self.reconnects = 0;
                    }
                    // The streams end too: the reconnection below follows.
                    Err(e) if dbus::is_transport(&e) => {
                        self.streams.clear();
                        self.dirty = false;
                    }
                    Err(e) => {
                        self.ended = Some(format!(
                            "cannot read the state of the route's units on {}: {}",
                            self.shared.bus_name,
                            dbus::error_text(&e)
                        ));
                    }
                }
                continue;
            }
            match dbus::next_of(&mut self.streams).await {
                Some(msg) => {
                    if let Some(state) = dbus::active_state_in(&msg) {
                        let path = msg.header().path().map(|p| p.as_str().to_owned());
                        if let Some(w) = self
                            .units
                            .iter_mut()
                            .find(|w| Some(w.path.as_str()) == path.as_deref())
                        {
                            debug!(unit = %w.unit.name, state = %state, "unit state changed");
                            if state == "deactivating" {
                                w.saw_stopping = true;
                            }
                        }
                    }
                    self.dirty = true;
                }
                None => self.reconnect().await,
            }
        }
    }

    /// Connects again after the connection was lost, and watches the units on the new one.
    async fn reconnect(&mut self) {
        self.streams.clear();
        self.reconnects += 1;
        let route = &self.shared.route;
        warn!(route = %route, bus = %self.shared.address, attempt = self.reconnects, "bus connection lost");
        if self.reconnects > MAX_RECONNECTS {
            self.ended = Some(format!(
                "lost the connection to systemd on {}",
                self.shared.bus_name
            ));
            return;
        }
        let bus = match self.shared.bus().await {
            Ok(bus) => bus,
            Err(e) if self.reconnects == MAX_RECONNECTS => {
                self.ended = Some(format!("cannot watch the route's units any more: {e}"));
                return;
            }
            // The bus may be on its way back (a D-Bus restart): the next try is a moment later.
            Err(_) => {
                tokio::time::sleep(RECONNECT_PAUSE * self.reconnects).await;
                return;
            }
        };
        let mut streams = Vec::with_capacity(self.units.len());
        for w in &self.units {
            match bus.changes(&w.path).await {
                Ok(stream) => streams.push(stream),
                // Tried again on the next call (the streams stay empty).
                Err(_) => return,
            }
        }
        self.bus = bus;
        self.streams = streams;
        self.dirty = true;
    }

    /// Reads every unit's state; the cause of the first that has ended, if one has.
    async fn check(&mut self) -> zbus::Result<Option<String>> {
        for w in &mut self.units {
            let name = &w.unit.name;
            let state = self.bus.unit_state(&w.path, "ActiveState").await?;
            if matches!(
                state.as_str(),
                "active" | "activating" | "reloading" | "refreshing"
            ) {
                continue;
            }
            // A restart (or a start someone queued) passes through here; it is not an end.
            let job = self.bus.unit_job(&w.path).await;
            if job.as_deref().is_some_and(|j| j.contains("start")) {
                continue;
            }
            match state.as_str() {
                "failed" => {
                    let result = self.bus.unit_result(name, &w.path).await;
                    let result = result.unwrap_or_else(|| "failed".into());
                    return Ok(Some(format!("unit \"{name}\" failed: {result}")));
                }
                "deactivating" if job.as_deref() == Some("stop") => {
                    return Ok(Some(format!(
                        "unit \"{name}\" is stopping (stopped outside rouse)"
                    )));
                }
                // Stopping by itself (its ExecStop= runs after its process ended): wait for the end.
                "deactivating" => continue,
                _ => {}
            }
            if !w.saw_stopping
                && let Some((CLD_EXITED, status)) = self.bus.main_exit(name, &w.path).await
            {
                return Ok(Some(format!(
                    "unit \"{name}\" is {state}: its main process exited with status {status}"
                )));
            }
            return Ok(Some(format!(
                "unit \"{name}\" is {state} (stopped outside rouse)"
            )));
        }
        Ok(None)
    }
}
