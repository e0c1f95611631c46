//! One test per rejection, named for what it rejects, plus the defaults a user relies on.

use std::path::Path;
use std::time::Duration;

use super::*;

const LISTENER: &str = "[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:8080\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/rouse/rouse.toml"), text)
}

fn route(name: &str, host: &str, port: u16) -> String {
    format!("[[route]]\nname = \"{name}\"\nhosts = [\"{host}\"]\nupstream = \"127.0.0.1:{port}\"\n")
}

/// Asserts that `text` is rejected at `line` with a message containing `needle`.
fn rejects(text: &str, line: usize, needle: &str) {
    let err = parse(text).expect_err("config should be rejected");
    assert_eq!(err.line, line, "wrong line for: {err}");
    assert!(
        err.message.contains(needle),
        "message {:?} lacks {needle:?}",
        err.message
    );
    assert!(
        err.to_string()
            .starts_with(&format!("/etc/rouse/rouse.toml:{line}:")),
        "{err}"
    );
}

#[test]
fn accepts_a_minimal_config_with_defaults() {
    let c = parse(&format!("{LISTENER}{}", route("a", "a.example", 9101))).unwrap();
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(r.idle_timeout, Duration::from_secs(300));
    assert_eq!(r.start_timeout, Duration::from_secs(30));
    assert_eq!(r.max_pending, 1024);
    assert_eq!(r.ready, ReadyCheck::Tcp);
    assert!(matches!(r.backend, BackendConfig::None));
    assert_eq!(c.proxy.idle_exit, None);
}

#[test]
fn exec_backend_fields_are_read() {
    let text = format!(
        "{LISTENER}{}idle_timeout = \"250ms\"\nready = \"http:/healthz\"\n[route.backend]\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"true\"]\nenv = {{ A = \"1\" }}\nworking_dir = \"srv\"\nstop_signal = \"INT\"\nstop_timeout = \"3s\"\n",
        route("a", "a.example", 9101)
    );
    let c = parse(&text).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.idle_timeout, Duration::from_millis(250));
    assert_eq!(
        r.ready,
        ReadyCheck::Http {
            path: "/healthz".into()
        }
    );
    let BackendConfig::Exec(e) = &r.backend else {
        panic!("not exec")
    };
    assert_eq!(e.command, ["/bin/sh", "-c", "true"]);
    assert_eq!(e.env["A"], "1");
    assert_eq!(e.working_dir, Path::new("/etc/rouse/srv"));
    assert_eq!(e.stop_signal.number, libc::SIGINT);
    assert_eq!(e.stop_timeout, Duration::from_secs(3));
}

#[test]
fn rejects_unknown_keys() {
    rejects(
        &format!(
            "{LISTENER}{}colour = \"red\"\n",
            route("a", "a.example", 9101)
        ),
        8,
        "unknown key `colour`",
    );
}

#[test]
fn rejects_unknown_keys_in_backend() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"exec\"\ncommand = [\"x\"]\ncmd = 1\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 11, "unknown key `cmd`");
}

#[test]
fn rejects_duplicate_route_names() {
    let text = format!(
        "{LISTENER}{}{}",
        route("a", "a.example", 9101),
        route("a", "b.example", 9102)
    );
    rejects(&text, 9, "a route named \"a\" is already defined");
}

#[test]
fn rejects_a_host_claimed_by_two_routes() {
    let text = format!(
        "{LISTENER}{}{}",
        route("a", "a.example", 9101),
        route("b", "A.Example.", 9102)
    );
    rejects(&text, 10, "already claimed by route \"a\"");
}

#[test]
fn wildcard_host_must_start_with_star_dot() {
    rejects(
        &format!("{LISTENER}{}", route("a", "*example.com", 9101)),
        6,
        "\"*.example.com\"",
    );
    rejects(
        &format!("{LISTENER}{}", route("a", "a.*.example.com", 9101)),
        6,
        "whole first label",
    );
}

#[test]
fn rejects_a_host_with_a_port() {
    rejects(
        &format!("{LISTENER}{}", route("a", "a.example:80", 9101)),
        6,
        "hosts have no port",
    );
}

#[test]
fn rejects_an_unparseable_upstream() {
    let text = format!(
        "{LISTENER}[[route]]\nname = \"a\"\nhosts = [\"a.example\"]\nupstream = \"localhost\"\n"
    );
    rejects(&text, 7, "write IP:PORT");
}

#[test]
fn rejects_an_unparseable_bind_address() {
    rejects(
        "[[listener]]\nname = \"http\"\nbind = \"8080\"\n",
        3,
        "write IP:PORT",
    );
}

#[test]
fn rejects_an_unparseable_duration() {
    let text = format!(
        "{LISTENER}{}idle_timeout = \"five minutes\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "like \"250ms\", \"30s\" or \"5m\"");
    let text = format!(
        "{LISTENER}{}start_timeout = \"30\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "not a duration");
}

#[test]
fn rejects_a_duration_of_the_wrong_type() {
    let text = format!(
        "{LISTENER}{}idle_timeout = 30\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "string");
}

#[test]
fn rejects_duplicate_listener_names() {
    rejects(
        &format!("{LISTENER}{LISTENER}{}", route("a", "a.example", 9101)),
        5,
        "already defined",
    );
}

#[test]
fn rejects_an_empty_command() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"exec\"\ncommand = []\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 10, "command is empty");
}

#[test]
fn rejects_exec_without_command() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"exec\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 9, "needs command");
}

#[test]
fn rejects_an_unknown_backend_kind() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"k8s\"\n",
        route("a", "a.example", 9101)
    );
    rejects(
        &text,
        9,
        "write kind = \"exec\", \"systemd\", \"podman\", \"docker\" or \"none\"",
    );
}

#[test]
fn rejects_an_unknown_stop_signal() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"exec\"\ncommand = [\"x\"]\nstop_signal = \"SIGFOO\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 11, "not a known signal");
}

#[test]
fn rejects_command_on_an_always_on_backend() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"none\"\ncommand = [\"x\"]\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 10, "not used by kind = \"none\"");
}

#[test]
fn rejects_a_malformed_ready_check() {
    let text = format!(
        "{LISTENER}{}ready = \"http:healthz\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "write \"tcp\" or \"http:/path\"");
}

#[test]
fn rejects_a_zero_max_pending() {
    let text = format!(
        "{LISTENER}{}max_pending = 0\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "positive");
}

#[test]
fn rejects_an_unsupported_listener_protocol() {
    let text = format!(
        "[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:1\"\nprotocol = \"gopher\"\n{}",
        route("a", "a.example", 9101)
    );
    rejects(
        &text,
        4,
        "write \"http\", \"https\", \"tcp\" or \"tls-passthrough\"",
    );
}

#[test]
fn rejects_a_config_without_listeners_or_routes() {
    rejects(&route("a", "a.example", 9101), 1, "no [[listener]]");
    rejects(LISTENER, 1, "no [[route]]");
}

#[test]
fn rejects_invalid_toml_with_its_location() {
    rejects(&format!("{LISTENER}[[route]\n"), 4, "");
}

#[test]
fn self_program_is_resolved_to_the_running_executable() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"exec\"\ncommand = [\"$ROUSE\", \"static\"]\n",
        route("a", "a.example", 9101)
    );
    let c = parse(&text).unwrap();
    let BackendConfig::Exec(e) = &c.routes[0].backend else {
        panic!("not exec")
    };
    assert_eq!(Path::new(&e.command[0]), std::env::current_exe().unwrap());
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
    assert_eq!(line_col("x", 0), (1, 1));
}

#[test]
fn systemd_backend_units_bus_and_group_are_read() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"systemd\"\nunit = \"blog\"\nalso = [\"db.service\"]\nbus = \"unix:path=/var/tmp/bus/system_bus_socket\"\n",
        route("a", "a.example", 9101)
    );
    let c = parse(&text).unwrap();
    let BackendConfig::Systemd(s) = &c.routes[0].backend else {
        panic!("not systemd")
    };
    assert_eq!(s.units, ["blog.service", "db.service"]);
    assert_eq!(
        s.bus,
        BusAddress::Address("unix:path=/var/tmp/bus/system_bus_socket".into())
    );
}

#[test]
fn systemd_bus_defaults_to_the_system_bus() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"systemd\"\nunit = \"blog.service\"\n",
        route("a", "a.example", 9101)
    );
    let BackendConfig::Systemd(s) = parse(&text).unwrap().routes[0].backend.clone() else {
        panic!("not systemd")
    };
    assert_eq!(s.bus, BusAddress::System);
}

#[test]
fn rejects_systemd_without_unit() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"systemd\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 9, "needs unit = ");
}

#[test]
fn rejects_a_malformed_bus() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"systemd\"\nunit = \"a.service\"\nbus = \"sessionbus\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 11, "is not a bus");
}

#[test]
fn podman_backend_with_create_spec_is_read() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"podman\"\ncontainer = \"blog\"\nalso = [\"blog-db\"]\nsocket = \"unix:///run/user/1000/podman/podman.sock\"\nimage = \"localhost/httpd:latest\"\ncommand = [\"/bin/httpd\", \"-f\"]\nports = [\"127.0.0.1:9101:8080\"]\nvolumes = [\"/srv:/www:ro\"]\nenv = {{ TZ = \"UTC\" }}\n",
        route("a", "a.example", 9101)
    );
    let BackendConfig::Container(c) = parse(&text).unwrap().routes[0].backend.clone() else {
        panic!("not a container")
    };
    assert_eq!(c.engine, Engine::Podman);
    assert_eq!(c.containers, ["blog", "blog-db"]);
    assert_eq!(c.socket, Path::new("/run/user/1000/podman/podman.sock"));
    let spec = c.create.expect("create spec");
    assert_eq!(spec.image, "localhost/httpd:latest");
    assert_eq!(spec.ports, ["127.0.0.1:9101:8080"]);
    assert_eq!(spec.volumes, ["/srv:/www:ro"]);
    assert_eq!(spec.env["TZ"], "UTC");
}

#[test]
fn docker_socket_defaults_to_the_docker_socket() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"docker\"\ncontainer = \"blog\"\n",
        route("a", "a.example", 9101)
    );
    let BackendConfig::Container(c) = parse(&text).unwrap().routes[0].backend.clone() else {
        panic!("not a container")
    };
    assert_eq!(c.engine, Engine::Docker);
    assert_eq!(c.socket, Path::new("/var/run/docker.sock"));
    assert!(c.create.is_none());
}

#[test]
fn rejects_keys_of_another_backend_kind() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"podman\"\ncontainer = \"blog\"\nunit = \"blog.service\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 11, "unit is not used by kind = \"podman\"");
}

#[test]
fn rejects_a_container_socket_that_is_not_a_unix_path() {
    let text = format!(
        "{LISTENER}{}[route.backend]\nkind = \"podman\"\ncontainer = \"blog\"\nsocket = \"tcp://host:2375\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 11, "not a unix socket");
}

#[test]
fn h2_upstream_with_its_ca_is_read() {
    let text = format!(
        "{LISTENER}{}upstream_protocol = \"h2\"\nupstream_ca = \"ca.pem\"\n",
        route("a", "a.example", 9101)
    );
    let r = &parse(&text).unwrap().routes[0];
    assert_eq!(r.upstream_protocol, UpstreamProtocol::H2);
    assert_eq!(
        r.upstream_ca.as_deref(),
        Some(Path::new("/etc/rouse/ca.pem"))
    );
}

#[test]
fn rejects_upstream_ca_without_h2() {
    let text = format!(
        "{LISTENER}{}upstream_ca = \"ca.pem\"\n",
        route("a", "a.example", 9101)
    );
    rejects(&text, 8, "only used with upstream_protocol = \"h2\"");
}

#[test]
fn rejects_a_tcp_listener_without_route() {
    let text = format!(
        "[[listener]]\nname = \"db\"\nbind = \"127.0.0.1:5432\"\nprotocol = \"tcp\"\n{}",
        route("a", "a.example", 9101)
    );
    rejects(&text, 2, "route = \"NAME\"");
}

#[test]
fn rejects_a_tcp_listener_naming_an_unknown_route() {
    let text = format!(
        "[[listener]]\nname = \"db\"\nbind = \"127.0.0.1:5432\"\nprotocol = \"tcp\"\nroute = \"pg\"\n{}",
        route("a", "a.example", 9101)
    );
    rejects(&text, 5, "route \"pg\" is not defined");
}

#[test]
fn a_route_served_only_by_a_tcp_listener_needs_no_hosts() {
    let text = "[[listener]]\nname = \"db\"\nbind = \"127.0.0.1:5432\"\nprotocol = \"tcp\"\nroute = \"pg\"\n[[route]]\nname = \"pg\"\nupstream = \"127.0.0.1:15432\"\n";
    let c = parse(text).unwrap();
    assert_eq!(c.listeners[0].route, Some(0));
    assert!(c.routes[0].hosts.is_empty());
}

#[test]
fn rejects_tls_on_a_plain_listener() {
    let text = format!(
        "[[listener]]\nname = \"h\"\nbind = \"127.0.0.1:1\"\ntls = {{ cert = \"a.pem\", key = \"a.key\" }}\n{}",
        route("a", "a.example", 9101)
    );
    rejects(&text, 4, "only for protocol = \"https\"");
}

#[test]
fn client_limits_have_defaults_and_can_be_set() {
    let c = parse(&format!("{LISTENER}{}", route("a", "a.example", 9101))).unwrap();
    assert_eq!(c.proxy.body_timeout, Duration::from_secs(60));
    assert_eq!(c.proxy.max_uri_bytes, 8192);
    assert_eq!(c.proxy.max_connections, 10_000);
    let c = parse(&format!(
        "[proxy]\nbody_timeout = \"5s\"\nmax_uri_bytes = 2048\nmax_connections = 3\n{LISTENER}{}",
        route("a", "a.example", 9101)
    ))
    .unwrap();
    assert_eq!(c.proxy.body_timeout, Duration::from_secs(5));
    assert_eq!(c.proxy.max_uri_bytes, 2048);
    assert_eq!(c.proxy.max_connections, 3);
}

#[test]
fn max_uri_bytes_must_be_at_least_256() {
    rejects(
        &format!("[proxy]\nmax_uri_bytes = 100\n{LISTENER}"),
        2,
        "max_uri_bytes must be at least 256",
    );
}

#[test]
fn max_connections_must_be_positive() {
    rejects(
        &format!("[proxy]\nmax_connections = 0\n{LISTENER}"),
        2,
        "max_connections",
    );
}

#[test]
fn passive_paths_must_start_with_a_slash() {
    rejects(
        &format!(
            "{LISTENER}{}passive_paths = [\"healthz\"]\n",
            route("a", "a.example", 9101)
        ),
        8,
        "passive path \"healthz\" must start with /",
    );
}

#[test]
fn passive_requests_match_by_path_prefix_or_user_agent() {
    let c = parse(&format!(
        "{LISTENER}{}passive_paths = [\"/healthz\", \"/status/*\"]\npassive_user_agents = [\"UptimeRobot\"]\nstarting_page = \"2s\"\n",
        route("a", "a.example", 9101)
    ))
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.starting_page, Some(Duration::from_secs(2)));
    let p = &r.passive;
    assert!(p.matches("/healthz", None));
    assert!(!p.matches("/healthz/deep", None));
    assert!(p.matches("/status/db", None));
    assert!(!p.matches("/", Some(b"Mozilla/5.0")));
    assert!(p.matches("/", Some(b"Mozilla/5.0 (compatible; uptimerobot/2.0)")));
}

#[test]
fn admin_bind_must_not_be_a_listener_address() {
    rejects(
        &format!(
            "{LISTENER}{}[admin]\nbind = \"127.0.0.1:8080\"\n",
            route("a", "a.example", 9101)
        ),
        9,
        "admin bind 127.0.0.1:8080 is listener \"http\"'s address",
    );
    let c = parse(&format!(
        "{LISTENER}{}[admin]\nbind = \"127.0.0.1:9900\"\n",
        route("a", "a.example", 9101)
    ))
    .unwrap();
    assert_eq!(c.admin, Some("127.0.0.1:9900".parse().unwrap()));
}

#[test]
fn on_exit_must_be_stop_or_leave() {
    rejects(
        &format!("[proxy]\non_exit = \"keep\"\n{LISTENER}"),
        2,
        "on_exit = \"keep\" is not an option: write \"stop\" or \"leave\"",
    );
    let c = parse(&format!(
        "[proxy]\non_exit = \"leave\"\n{LISTENER}{}",
        route("a", "a.example", 9101)
    ))
    .unwrap();
    assert_eq!(c.proxy.on_exit, OnExit::Leave);
}
