//! What a backend is to rouse: something that can be started, watched and stopped.
//!
//! Each kind of backend is one file under `backend/` implementing [`Backend`] (start) and
//! [`Instance`] (watch and stop one started backend). Everything the kinds share — coalescing
//! starts, probing readiness, timeouts, the idle stop — lives in [`crate::lifecycle`], so a
//! new kind never touches routing, holding or forwarding.

pub mod container;
pub mod exec;
pub mod systemd;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{BackendConfig, RouteConfig};
use crate::error::fmt_duration;

/// A boxed, sendable future: what the backend traits return, so they can be used as objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A kind of backend, configured for one route.
pub trait Backend: Send + Sync + 'static {
    /// Issues the start and resolves once the backend has been launched (not yet ready:
    /// readiness is probed by the lifecycle). Dropping the future must not leak what it began.
    fn start(&self) -> BoxFuture<'_, Result<Box<dyn Instance>, StartError>>;

    /// Whether the backend runs already (left by a rouse that was killed, or started by hand).
    /// At startup the route's supervisor then takes it over, so that it is stopped when idle
    /// like one rouse started. By default nothing is taken over.
    fn running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }

    /// Checks, without starting anything, that the backend can be found (for `rouse check`);
    /// returns one warning per problem. By default there is nothing to check.
    fn preflight(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
}

/// One started backend.
pub trait Instance: Send + 'static {
    /// Resolves when the backend ends on its own, with a one-line cause. Must be cancel-safe:
    /// the lifecycle polls it in a `select!` and calls it again later.
    fn exited(&mut self) -> BoxFuture<'_, String>;

    /// Stops the backend and resolves once it is gone (forcefully, if it does not go by itself).
    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<(), StopError>>;

    /// Leaves the backend running for the next rouse to take over (`on_exit = "leave"`);
    /// returns whether it was left. A kind that cannot outlive rouse stops it instead.
    fn leave(self: Box<Self>) -> BoxFuture<'static, Result<bool, StopError>> {
        let stop = self.stop();
        Box::pin(async move { stop.await.map(|()| false) })
    }
}

/// Why a start failed; shared by every request that was held on it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program could not be run at all.
    #[error("cannot run \"{program}\": {source}")]
    Spawn {
        /// The program as configured.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backend ended before it became ready.
    #[error("backend exited during start: {0}")]
    Exited(String),
    /// The backend was not ready within `start_timeout`.
    #[error("backend not ready after {}", fmt_duration(*.0))]
    Timeout(Duration),
    /// The service manager or container engine refused or failed the start, in its words
    /// (`unit "blog.service" failed: exit-code`).
    #[error("{0}")]
    Refused(String),
}

/// Why a stop did not go cleanly (the backend is gone all the same, or as good as).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StopError(pub String);

/// The backend a route's config describes, or `None` for an always-on upstream.
pub fn for_route(route: &RouteConfig, claims: &Arc<Claims>) -> Option<Box<dyn Backend>> {
    match &route.backend {
        BackendConfig::None => None,
        BackendConfig::Exec(cfg) => Some(Box::new(exec::Exec::new(&route.name, cfg.clone()))),
        BackendConfig::Systemd(cfg) => Some(Box::new(systemd::Systemd::new(
            &route.name,
            cfg.clone(),
            claims.clone(),
        ))),
        BackendConfig::Container(cfg) => Some(Box::new(container::Container::new(
            &route.name,
            cfg.clone(),
            claims.clone(),
        ))),
    }
}

/// Which routes hold each shared unit or container, so that one used by several routes is
/// stopped only when the last of them lets go.
///
/// Keys name the resource with where it lives (`systemd system blog.service`,
/// `podman /run/podman/podman.sock blog`), so equal names on different buses never collide.
#[derive(Debug, Default)]
pub struct Claims {
    held: Mutex<HashMap<String, usize>>,
}

impl Claims {
    /// Records that one more route uses `key`.
    pub fn claim(&self, key: &str) {
        *self
            .held
            .lock()
            .expect("claims lock")
            .entry(key.to_owned())
            .or_insert(0) += 1;
    }

    /// Records that a route no longer uses `key`; true if none does any more (stop it then).
    pub fn release(&self, key: &str) -> bool {
        let mut held = self.held.lock().expect("claims lock");
        match held.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                held.remove(key);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Claims;

    #[test]
    fn a_shared_resource_is_released_by_its_last_user_only() {
        let claims = Claims::default();
        claims.claim("systemd system db.service");
        claims.claim("systemd system db.service");
        assert!(!claims.release("systemd system db.service"));
        assert!(claims.release("systemd system db.service"));
    }
}
