//! The calls rouse makes to a container engine, in its two dialects: podman's libpod API
//! (`/v4.0.0/libpod/...`) and the Docker Engine API (`/v1.41/...`, which podman serves too).
//!
//! Each call turns the engine's statuses into a small enum or struct; deciding what to do about
//! them (create, refuse, wait) is left to the backend in `container.rs`.

use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

pub use super::client::ApiError;
use super::client::{Client, Reply, encode};
use super::spec::{self, SpecError};
use crate::config::{CreateSpec, Engine};

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stop call may take: the engine answers only once its stop timeout has run out.
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// What a start call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReply {
    /// The engine started it.
    Started,
    /// It was running already.
    AlreadyRunning,
    /// No container has that name.
    Missing,
}

/// What a stop call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReply {
    /// The engine stopped it.
    Stopped,
    /// It was not running.
    NotRunning,
    /// No container has that name.
    Missing,
}

/// Why a create failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The config's `ports` or `volumes` cannot be used.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The image is not in the engine's store.
    #[error("image \"{image}\" not found: pull it first ({engine} pull {image})")]
    NoImage {
        /// Which API.
        engine: Engine,
        /// The image reference.
        image: String,
    },
    /// The engine refused.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The part of an inspect rouse looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Whether it runs.
    pub running: bool,
    /// Its last exit code.
    pub exit_code: i64,
    /// `starting`, `healthy` or `unhealthy`, if the container has a healthcheck.
    pub health: Option<String>,
    /// Output of the last healthcheck run, for an error message.
    pub health_output: String,
    /// How often its healthcheck runs.
    pub health_interval: Option<Duration>,
}

/// One container event that rouse cares about: a container's main process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The container's name.
    pub name: String,
    /// Its exit code, if the event carries one.
    pub code: Option<i64>,
}

/// One engine, in one dialect.
#[derive(Debug)]
pub struct Api {
    engine: Engine,
    client: Client,
}

impl Api {
    /// The API of `engine` at `socket`.
    pub fn new(engine: Engine, socket: &std::path::Path) -> Api {
        Api {
            engine,
            client: Client::new(engine, socket),
        }
    }

    /// Which dialect.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Where it is.
    pub fn socket(&self) -> &std::path::Path {
        self.client.socket()
    }

    fn path(&self, rest: &str) -> String {
        match self.engine {
            Engine::Podman => format!("/v4.0.0/libpod{rest}"),
            Engine::Docker => format!("/v1.41{rest}"),
        }
    }

    async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        self.client
            .call(method, &self.path(rest), body, CALL_TIMEOUT)
            .await
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), ApiError> {
        let reply = self.call(Method::GET, "/_ping", None).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(self.client.status_error(&reply))
        }
    }

    /// Starts a container.
    pub async fn start(&self, name: &str) -> Result<StartReply, ApiError> {
        let reply = self
            .call(
                Method::POST,
                &format!("/containers/{}/start", encode(name)),
                None,
            )
            .await?;
        match reply.status {
            StatusCode::NOT_MODIFIED => Ok(StartReply::AlreadyRunning),
            StatusCode::NOT_FOUND => Ok(StartReply::Missing),
            s if s.is_success() => Ok(StartReply::Started),
            _ => Err(self.client.status_error(&reply)),
        }
    }

    /// Stops a container; the engine answers once it has stopped (after its own stop timeout,
    /// and a kill, if it ignores the stop signal).
    pub async fn stop(&self, name: &str) -> Result<StopReply, ApiError> {
        let path = self.path(&format!("/containers/{}/stop", encode(name)));
        let reply = self
            .client
            .call(Method::POST, &path, None, STOP_CALL_TIMEOUT)
            .await?;
        match reply.status {
            StatusCode::NOT_MODIFIED => Ok(StopReply::NotRunning),
            StatusCode::NOT_FOUND => Ok(StopReply::Missing),
            s if s.is_success() => Ok(StopReply::Stopped),
            _ => Err(self.client.status_error(&reply)),
        }
    }

    /// Creates a container as `podman create` / `docker create` would. A container of that
    /// name created meanwhile (by another route) counts as created.
    pub async fn create(&self, name: &str, spec: &CreateSpec) -> Result<(), CreateError> {
        let reply = match self.engine {
            Engine::Podman => {
                self.call(
                    Method::POST,
                    "/containers/create",
                    Some(&spec::libpod(name, spec)?),
                )
                .await?
            }
            Engine::Docker => {
                let path = format!("/containers/create?name={}", encode(name));
                self.call(Method::POST, &path, Some(&spec::docker(spec)?))
                    .await?
            }
        };
        match reply.status {
            StatusCode::CONFLICT => Ok(()),
            s if s.is_success() => Ok(()),
            _ => {
                let message = reply.message();
                if message.contains("image not known") || message.contains("No such image") {
                    return Err(CreateError::NoImage {
                        engine: self.engine,
                        image: spec.image.clone(),
                    });
                }
                Err(self.client.status_error(&reply).into())
            }
        }
    }

    /// Inspects a container; `None` if there is none of that name.
    pub async fn inspect(&self, name: &str) -> Result<Option<State>, ApiError> {
        let reply = self
            .call(
                Method::GET,
                &format!("/containers/{}/json", encode(name)),
                None,
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(self.client.status_error(&reply));
        }
        let doc: Value =
            serde_json::from_slice(&reply.body).map_err(|e| ApiError::Json(e, self.engine))?;
        Ok(Some(parse_state(&doc)))
    }

    /// Whether healthchecks must be run by rouse: podman runs them from systemd timers, which
    /// do not exist where podman runs without systemd; running one more check is harmless.
    pub fn runs_healthchecks(&self) -> bool {
        self.engine == Engine::Podman || self.client.is_libpod()
    }

    /// Runs a container's healthcheck once (podman only); the result shows in the next inspect.
    pub async fn run_healthcheck(&self, name: &str) -> Result<(), ApiError> {
        let path = format!("/v4.0.0/libpod/containers/{}/healthcheck", encode(name));
        self.client
            .call(Method::GET, &path, None, CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// Opens the stream of events of these containers; resolves once the engine has answered.
    pub async fn events(&self, names: &[String]) -> Result<Incoming, ApiError> {
        let filters = serde_json::json!({"container": names, "type": ["container"]}).to_string();
        let query = match self.engine {
            Engine::Podman => format!("/events?stream=true&filters={}", encode(&filters)),
            Engine::Docker => format!("/events?filters={}", encode(&filters)),
        };
        self.client.stream(&self.path(&query), CALL_TIMEOUT).await
    }
}

/// The state rouse needs from an inspect document (libpod's and Docker's agree on these).
fn parse_state(doc: &Value) -> State {
    let state = &doc["State"];
    // libpod before 4.x called it "Healthcheck".
    let health = state.get("Health").or_else(|| state.get("Healthcheck"));
    let check = &doc["Config"]["Healthcheck"];
    let has_check = check["Test"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(Value::as_str)
        .is_some_and(|t| t != "NONE");
    let status = health
        .and_then(|h| h["Status"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    State {
        running: state["Running"].as_bool().unwrap_or(false),
        exit_code: state["ExitCode"].as_i64().unwrap_or(0),
        health: if has_check || status.is_some() {
            Some(status.unwrap_or_else(|| "starting".into()))
        } else {
            None
        },
        health_output: health
            .and_then(|h| h["Log"].as_array())
            .and_then(|log| log.last())
            .and_then(|last| last["Output"].as_str())
            .map(|o| o.trim().to_owned())
            .unwrap_or_default(),
        health_interval: check["Interval"]
            .as_u64()
            .filter(|&n| n > 0)
            .map(Duration::from_nanos),
    }
}

/// Reads one line of the event stream; `Some` if it says that a container's process ended.
pub fn parse_event(line: &[u8]) -> Option<Exit> {
    let event: Value = serde_json::from_slice(line).ok()?;
    if event["Type"].as_str().is_some_and(|t| t != "container") {
        return None;
    }
    let action = event["Action"]
        .as_str()
        .or_else(|| event["status"].as_str())?;
    // libpod says "died", Docker "die"; "stop" and "kill" only announce it (a kill may send
    // a signal the container survives), and its "die" follows within milliseconds.
    if action != "died" && action != "die" {
        return None;
    }
    let attributes = &event["Actor"]["Attributes"];
    let name = attributes["name"]
        .as_str()
        .or_else(|| event["Name"].as_str())?
        .to_owned();
    let code = ["exitCode", "containerExitCode"].iter().find_map(|k| {
        attributes[k]
            .as_str()
            .and_then(|c| c.parse().ok())
            .or_else(|| attributes[k].as_i64())
    });
    Some(Exit { name, code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn died_events_of_both_dialects_are_exits() {
        let libpod = br#"{"status":"died","Type":"container","Action":"died","Actor":{"ID":"ad8","Attributes":{"containerExitCode":"137","name":"blog"}}}"#;
        let docker = br#"{"status":"die","Type":"container","Action":"die","Actor":{"ID":"ad8","Attributes":{"exitCode":"0","name":"db"}}}"#;
        assert_eq!(
            parse_event(libpod),
            Some(Exit {
                name: "blog".into(),
                code: Some(137)
            })
        );
        assert_eq!(
            parse_event(docker),
            Some(Exit {
                name: "db".into(),
                code: Some(0)
            })
        );
    }

    #[test]
    fn other_events_are_not_exits() {
        for line in [
            &br#"{"Type":"container","Action":"start","Actor":{"Attributes":{"name":"blog"}}}"#[..],
            br#"{"Type":"container","Action":"exec_die","Actor":{"Attributes":{"name":"blog"}}}"#,
            br#"{"Type":"container","Action":"kill","Actor":{"Attributes":{"name":"blog"}}}"#,
            br#"not json"#,
        ] {
            assert_eq!(parse_event(line), None);
        }
    }

    #[test]
    fn health_is_read_from_state_and_config() {
        let doc = serde_json::json!({
            "State": {"Running": true, "ExitCode": 0, "Health": {"Status": "starting", "Log": [{"Output": "nope\n"}]}},
            "Config": {"Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000u64}},
        });
        let state = parse_state(&doc);
        assert_eq!(state.health.as_deref(), Some("starting"));
        assert_eq!(state.health_output, "nope");
        assert_eq!(state.health_interval, Some(Duration::from_secs(1)));
        let plain = serde_json::json!({"State": {"Running": false, "ExitCode": 137, "Health": {"Status": ""}}, "Config": {}});
        let state = parse_state(&plain);
        assert_eq!(
            (state.running, state.exit_code, state.health),
            (false, 137, None)
        );
    }
}
