//! The admin listener: `/metrics` (Prometheus text format), `/status` (JSON) and `/health`.
//!
//! It has a socket of its own (`[admin] bind`), served on the control thread, so nothing that
//! arrives on a public listener can reach it. It only reads: the routes' states and counters
//! ([`crate::stats`]), held requests and activity. The one thing it changes is asked for with
//! `POST /reload` (what `rouse reload` sends): the config is read again, exactly as on SIGHUP.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::activity::Activity;
use crate::hold::Gate;
use crate::lifecycle::State;
use crate::stats::START_BUCKETS;

/// What the admin listener may read of one route.
#[derive(Clone, Debug)]
pub struct RouteView {
    /// Route name.
    pub name: Arc<str>,
    /// Its gate: state, held requests, counters.
    pub gate: Gate,
    /// In-flight requests and open connections.
    pub activity: Arc<Activity>,
}

/// A request to reload the config, answered with what changed or why nothing did.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the admin listener reads.
#[derive(Debug)]
pub struct View {
    /// Every route, in config order (replaced whole by a reload).
    pub routes: ArcSwap<Vec<RouteView>>,
    /// Open client connections, all listeners together.
    pub connections: Arc<Activity>,
    /// Where `POST /reload` asks for a reload.
    pub reload: mpsc::Sender<ReloadRequest>,
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, view: Arc<View>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let view = view.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let view = view.clone();
                async move { Ok::<_, Infallible>(answer(&req, &view).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(peer = %peer, error = %e, "admin connection error");
            }
        });
    }
}

async fn answer(req: &Request<Incoming>, view: &View) -> Response<Full<Bytes>> {
    if req.uri().path() == "/reload" {
        return reload(req, view).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(view),
        ),
        "/status" => reply(StatusCode::OK, "application/json", status_json(view)),
        "/health" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status or /health (or POST /reload)\n".into(),
        ),
    }
}

/// `POST /reload`: reads the config again and answers what changed (200) or why the config in
/// force stays (409).
async fn reload(req: &Request<Incoming>, view: &View) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only POST\n".into(),
        );
    }
    let (answer, answered) = oneshot::channel();
    if view.reload.send(answer).await.is_err() {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        );
    }
    match answered.await {
        Ok(Ok(changes)) => reply(
            StatusCode::OK,
            "text/plain",
            format!("reloaded: {changes}\n"),
        ),
        Ok(Err(why)) => reply(
            StatusCode::CONFLICT,
            "text/plain",
            format!("not reloaded, the config in force stays: {why}\n"),
        ),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// The state's name, as `/status` and the `state` label write it.
pub fn state_name(state: &State) -> &'static str {
    match state {
        State::Stopped => "stopped",
        State::Starting => "starting",
        State::Ready(_) => "ready",
        State::Stopping => "stopping",
        State::Failed(_) => "failed",
        State::Closed => "closed",
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// One route's figures, read once for a `/metrics` answer.
struct Row {
    label: String,
    up: bool,
    held: usize,
    active: usize,
    stats: crate::stats::Snapshot,
}

/// The per-route metrics that are one number each: name, type, help, and the value.
type Simple = (&'static str, &'static str, &'static str, fn(&Row) -> String);

const SIMPLE: [Simple; 8] = [
    (
        "rouse_requests_total",
        "counter",
        "Requests routed to the route.",
        |r| r.stats.requests.to_string(),
    ),
    (
        "rouse_held_requests",
        "gauge",
        "Requests waiting for the backend to start.",
        |r| r.held.to_string(),
    ),
    (
        "rouse_active",
        "gauge",
        "In-flight requests and open connections bound to the route.",
        |r| r.active.to_string(),
    ),
    (
        "rouse_backend_up",
        "gauge",
        "1 while the route's backend is ready.",
        |r| u8::from(r.up).to_string(),
    ),
    (
        "rouse_backend_starts_total",
        "counter",
        "Start attempts, failed ones included.",
        |r| r.stats.starts.to_string(),
    ),
    (
        "rouse_backend_start_failures_total",
        "counter",
        "Start attempts that failed.",
        |r| r.stats.failed_starts.to_string(),
    ),
    (
        "rouse_backend_stops_total",
        "counter",
        "Times a running backend stopped (idle, shutdown, or its own exit).",
        |r| r.stats.stops.to_string(),
    ),
    (
        "rouse_backend_running_seconds_total",
        "counter",
        "Time the backend has been ready.",
        |r| format!("{:.3}", r.stats.running_total.as_secs_f64()),
    ),
];

/// The Prometheus text exposition of every route's figures.
fn metrics(view: &View) -> String {
    let mut out = String::new();
    let routes: Vec<Row> = view
        .routes
        .load()
        .iter()
        .map(|r| {
            let (state, held) = r.gate.state();
            Row {
                label: label(&r.name),
                up: matches!(state, State::Ready(_)),
                held,
                active: r.activity.active(),
                stats: r.gate.stats().snapshot(),
            }
        })
        .collect();
    let mut family =
        |name: &str, kind: &str, help: &str, lines: &mut dyn Iterator<Item = String>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        };
    for (name, kind, help, value) in SIMPLE {
        family(
            name,
            kind,
            help,
            &mut routes
                .iter()
                .map(|r| format!("{name}{{route=\"{}\"}} {}", r.label, value(r))),
        );
    }
    family(
        "rouse_responses_total",
        "counter",
        "Responses sent, by status class.",
        &mut routes.iter().flat_map(|r| {
            r.stats.responses.iter().enumerate().map(move |(i, count)| {
                format!(
                    "rouse_responses_total{{route=\"{}\",class=\"{}xx\"}} {count}",
                    r.label,
                    i + 1
                )
            })
        }),
    );
    family(
        "rouse_backend_start_seconds",
        "histogram",
        "Time from the start of a backend to its first successful readiness probe.",
        &mut routes.iter().flat_map(|r| {
            let (n, s) = (&r.label, &r.stats);
            let mut cumulative = 0;
            let mut lines: Vec<String> = START_BUCKETS
                .iter()
                .zip(&s.start_buckets)
                .map(|(le, count)| {
                    cumulative += count;
                    format!("rouse_backend_start_seconds_bucket{{route=\"{n}\",le=\"{le}\"}} {cumulative}")
                })
                .collect();
            let total: u64 = s.start_buckets.iter().sum();
            lines.push(format!(
                "rouse_backend_start_seconds_bucket{{route=\"{n}\",le=\"+Inf\"}} {total}"
            ));
            lines.push(format!(
                "rouse_backend_start_seconds_sum{{route=\"{n}\"}} {:.6}",
                s.start_sum.as_secs_f64()
            ));
            lines.push(format!("rouse_backend_start_seconds_count{{route=\"{n}\"}} {total}"));
            lines
        }),
    );
    family(
        "rouse_connections_open",
        "gauge",
        "Open client connections, all listeners.",
        &mut std::iter::once(format!(
            "rouse_connections_open {}",
            view.connections.active()
        )),
    );
    out
}

/// One route in `/status`.
#[derive(Serialize)]
struct RouteStatus<'a> {
    name: &'a str,
    state: &'static str,
    /// Requests held for a start.
    held: usize,
    /// In-flight requests and open connections.
    active: usize,
    /// Seconds since the route last had anything active (absent while active).
    idle_for_s: Option<f64>,
    /// Seconds the backend has been ready (absent unless it is).
    uptime_s: Option<f64>,
    /// The last successful start, in milliseconds.
    last_start_ms: Option<f64>,
    requests: u64,
    starts: u64,
    failed_starts: u64,
    stops: u64,
}

/// `/status`: every route's state and figures, as JSON.
fn status_json(view: &View) -> String {
    let in_force = view.routes.load();
    let routes: Vec<RouteStatus<'_>> = in_force
        .iter()
        .map(|r| {
            let (state, held) = r.gate.state();
            let s = r.gate.stats().snapshot();
            RouteStatus {
                name: &r.name,
                state: state_name(&state),
                held,
                active: r.activity.active(),
                idle_for_s: r
                    .activity
                    .idle_since()
                    .map(|since| since.elapsed().as_secs_f64()),
                uptime_s: s.running_for.map(|d| d.as_secs_f64()),
                last_start_ms: s.last_start.map(|d| d.as_secs_f64() * 1000.0),
                requests: s.requests,
                starts: s.starts,
                failed_starts: s.failed_starts,
                stops: s.stops,
            }
        })
        .collect();
    let status = serde_json::json!({
        "connections": view.connections.active(),
        "routes": routes,
    });
    let mut text = serde_json::to_string_pretty(&status).unwrap_or_default();
    text.push('\n');
    text
}
