//! rouse: a reverse proxy that starts a site's backend on the first request and stops it when
//! nobody uses it.
//!
//! One process, usually socket-activated by systemd, fronts many sites on one socket. Each
//! request's host picks a route; a route whose backend is stopped starts it, holds the request
//! (and every other one that arrives meanwhile) until the backend answers, then forwards. A
//! route with no requests and no open connections for its `idle_timeout` has its backend
//! stopped; with `idle_exit`, rouse itself exits once everything has been idle, and systemd
//! starts it again on the next connection.
//!
//! # Layout
//!
//! Requests flow listener → route → hold → proxy; the backend lifecycle runs beside them.
//!
//! - [`config`]: the TOML file, parsed and validated once into [`config::Config`].
//! - [`listen`]: sockets inherited from systemd (`LISTEN_FDS`), or bound.
//! - [`server`]: accept loops, HTTP/1.1 + HTTP/2 connections, dispatch, reload (the route table
//!   rebuilt and swapped), shutdown, `idle_exit`.
//! - [`route`]: host normalisation and the host → route lookup.
//! - [`hold`]: the gate where requests wait for a ready backend, bounded by `max_pending`.
//! - [`lifecycle`]: one supervisor per route: start once, probe, serve, stop when idle.
//! - [`ready`]: readiness probes (TCP connect, or an HTTP GET).
//! - [`activity`]: counters of in-flight requests and open connections, and the idle clock.
//! - [`stall`]: how long a client has kept a request body or a response waiting.
//! - [`stats`]: per-route counters (requests, responses, starts, stops) for the admin listener.
//! - [`admin`]: the admin listener: `/metrics` (Prometheus), `/status` (JSON), `/health`, and
//!   `POST /reload`.
//! - [`backend`]: the `Backend`/`Instance` traits and shared-resource claims; one file per kind:
//!   [`backend::exec`] (commands), [`backend::systemd`] (units over D-Bus),
//!   [`backend::container`] (podman and Docker containers over their REST APIs).
//! - [`proxy`]: the upstream connection pools and the body type; [`proxy::http`] forwards HTTP
//!   (HTTP/1.1 upstreams through a small client that runs in the request's own task, h2 ones
//!   through hyper's), [`proxy::tcp`] relays raw TCP and TLS passthrough (SNI read from the
//!   ClientHello).
//! - [`tls`]: certificates per SNI for `https` listeners, re-read on reload.
//! - [`error`]: every error a client can see, and its single mapping to a status code.
//! - [`limits`]: the open-descriptor limit, raised for rouse and restored for its backends.
//! - [`notify`]: `sd_notify` messages to systemd (`READY=1`, `STOPPING=1`, `STATUS=`).
//! - [`units`]: the systemd units `rouse units` writes for a config.
//! - [`static_site`]: a tiny file/text server for demos and tests (`rouse static`).

pub mod activity;
pub mod admin;
pub mod backend;
pub mod config;
pub mod error;
pub mod hold;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod notify;
pub mod proxy;
pub mod ready;
pub mod route;
pub mod server;
pub mod stall;
pub mod static_site;
pub mod stats;
pub mod tls;
pub mod units;
