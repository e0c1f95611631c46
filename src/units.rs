//! The systemd units `rouse units` writes for a config: the socket unit(s) that own the ports,
//! the service that runs rouse on them, and (on request) Quadlet `.container` files for the
//! config's podman containers.
//!
//! Only text is made here; `main.rs` writes it to files, refusing to overwrite without `--force`.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::{BackendConfig, Config, Engine};

/// One file to write: its name and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// File name, like `rouse.socket`.
    pub name: String,
    /// The unit text.
    pub text: String,
}

/// Where the units will run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The system manager (`/etc/systemd/system`).
    System,
    /// A user's manager (`~/.config/systemd/user`).
    User,
}

/// The units for `config`: sockets and service, plus Quadlet files when `quadlet` is set.
/// `binary` and `config_path` are the absolute paths the service will run with.
pub fn render(
    config: &Config,
    binary: &Path,
    config_path: &Path,
    scope: Scope,
    quadlet: bool,
) -> Vec<UnitFile> {
    let single = config.listeners.len() == 1;
    let socket_name = |listener: &str| {
        if single {
            "rouse.socket".to_owned()
        } else {
            format!("rouse-{listener}.socket")
        }
    };
    let mut files = Vec::new();
    for l in &config.listeners {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# Written by `rouse units` for {}.",
            config_path.display()
        );
        let _ = writeln!(
            text,
            "# systemd owns this port and hands it to rouse.service on the first connection;"
        );
        let _ = writeln!(
            text,
            "# FileDescriptorName= must equal the [[listener]] name in the config."
        );
        let _ = writeln!(text, "[Unit]\nDescription=rouse listener \"{}\"\n", l.name);
        let _ = writeln!(text, "[Socket]");
        let _ = writeln!(text, "ListenStream={}", l.bind);
        let _ = writeln!(text, "FileDescriptorName={}", l.name);
        let _ = writeln!(text, "Service=rouse.service");
        let _ = writeln!(text, "NoDelay=true");
        let _ = writeln!(text, "Backlog=4096");
        let _ = writeln!(text, "\n[Install]\nWantedBy=sockets.target");
        files.push(UnitFile {
            name: socket_name(&l.name),
            text,
        });
    }
    let sockets: Vec<String> = config
        .listeners
        .iter()
        .map(|l| socket_name(&l.name))
        .collect();
    files.push(UnitFile {
        name: "rouse.service".into(),
        text: service(config, binary, config_path, scope, &sockets),
    });
    if quadlet {
        files.extend(quadlet_files(config));
    }
    files
}

fn service(
    config: &Config,
    binary: &Path,
    config_path: &Path,
    scope: Scope,
    sockets: &[String],
) -> String {
    let sockets = sockets.join(" ");
    let longest_stop = config
        .routes
        .iter()
        .filter_map(|r| match &r.backend {
            BackendConfig::Exec(e) => Some(e.stop_timeout.as_secs()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Room for the drain and the slowest backend stop, plus a margin for units and containers.
    let stop_sec = config.proxy.drain_timeout.as_secs() + longest_stop + 30;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `rouse units` for {}.",
        config_path.display()
    );
    let _ = writeln!(t, "[Unit]");
    let _ = writeln!(
        t,
        "Description=rouse: starts sites on their first request, stops them when idle"
    );
    let _ = writeln!(t, "Requires={sockets}");
    let _ = writeln!(t, "After={sockets} network.target");
    let _ = writeln!(t, "\n[Service]");
    let _ = writeln!(t, "Type=notify");
    let _ = writeln!(t, "Sockets={sockets}");
    let _ = writeln!(
        t,
        "ExecStartPre={} check -c {}",
        binary.display(),
        config_path.display()
    );
    let _ = writeln!(
        t,
        "ExecStart={} serve -c {}",
        binary.display(),
        config_path.display()
    );
    let _ = writeln!(
        t,
        "# systemctl reload: the config is checked first; if it is valid, rouse reads it again."
    );
    let _ = writeln!(
        t,
        "ExecReload={} check -c {}",
        binary.display(),
        config_path.display()
    );
    let _ = writeln!(t, "ExecReload=/bin/kill -HUP $MAINPID");
    let _ = writeln!(
        t,
        "# rouse stops the backends it started on SIGTERM; then anything left in the cgroup is killed."
    );
    let _ = writeln!(t, "KillMode=mixed");
    let _ = writeln!(t, "TimeoutStopSec={stop_sec}");
    let _ = writeln!(t, "Restart=on-failure");
    let _ = writeln!(t, "Environment=RUST_LOG=info");
    let _ = writeln!(t, "LimitNOFILE=65536");
    let _ = writeln!(
        t,
        "# Hardening that still lets rouse run commands, reach D-Bus and the podman socket."
    );
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
    ] {
        let _ = writeln!(t, "{line}");
    }
    let wanted_by = match scope {
        Scope::System => "multi-user.target",
        Scope::User => "default.target",
    };
    let _ = writeln!(t, "\n[Install]\nWantedBy={wanted_by}\nAlso={sockets}");
    t
}

/// A Quadlet `.container` file for each podman route that says how to create its container.
fn quadlet_files(config: &Config) -> Vec<UnitFile> {
    let mut files = Vec::new();
    for route in &config.routes {
        let BackendConfig::Container(c) = &route.backend else {
            continue;
        };
        let (Engine::Podman, Some(spec)) = (c.engine, &c.create) else {
            continue;
        };
        let name = &c.containers[0];
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# Written by `rouse units` for route \"{}\".",
            route.name
        );
        let _ = writeln!(
            t,
            "# Quadlet turns this into {name}.service. To let systemd own the container, use"
        );
        let _ = writeln!(
            t,
            "# kind = \"systemd\" and unit = \"{name}.service\" for the route. No install section:"
        );
        let _ = writeln!(t, "# rouse starts it on demand.");
        let _ = writeln!(
            t,
            "[Unit]\nDescription=rouse site \"{}\" (container {name})\n",
            route.name
        );
        let _ = writeln!(t, "[Container]");
        let _ = writeln!(t, "ContainerName={name}");
        let _ = writeln!(t, "Image={}", spec.image);
        if !spec.command.is_empty() {
            let _ = writeln!(
                t,
                "Exec={}",
                spec.command
                    .iter()
                    .map(|a| quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        for p in &spec.ports {
            let _ = writeln!(t, "PublishPort={p}");
        }
        for v in &spec.volumes {
            let _ = writeln!(t, "Volume={v}");
        }
        for (k, v) in &spec.env {
            let _ = writeln!(t, "Environment={}", quote(&format!("{k}={v}")));
        }
        let _ = writeln!(
            t,
            "\n[Service]\nTimeoutStartSec={}",
            route.start_timeout.as_secs().max(1)
        );
        files.push(UnitFile {
            name: format!("{name}.container"),
            text: t,
        });
    }
    files
}

/// Quotes a word for a unit file's command line when it needs it.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=@,+".contains(c))
    {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("/etc/rouse/rouse.toml"), text).unwrap()
    }

    const ROUTE: &str = "[[route]]\nname = \"blog\"\nhosts = [\"blog.example\"]\nupstream = \"127.0.0.1:9101\"\n[route.backend]\nkind = \"podman\"\ncontainer = \"blog\"\nimage = \"localhost/httpd:latest\"\ncommand = [\"/bin/httpd\", \"-f\", \"-p\", \"8080\"]\nports = [\"127.0.0.1:9101:8080\"]\nvolumes = [\"/srv/blog:/www:ro\"]\n";

    #[test]
    fn one_listener_gives_rouse_socket_named_for_it() {
        let c = config(&format!(
            "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n{ROUTE}"
        ));
        let files = render(
            &c,
            &PathBuf::from("/usr/local/bin/rouse"),
            &c.path,
            Scope::System,
            false,
        );
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["rouse.socket", "rouse.service"]);
        assert!(
            files[0]
                .text
                .contains("ListenStream=0.0.0.0:80\nFileDescriptorName=http\n")
        );
        let service = &files[1].text;
        assert!(service.contains("Type=notify\n"));
        assert!(
            service.contains("ExecStart=/usr/local/bin/rouse serve -c /etc/rouse/rouse.toml\n")
        );
        assert!(service.contains("Requires=rouse.socket\n"));
        assert!(service.contains(
            "ExecReload=/usr/local/bin/rouse check -c /etc/rouse/rouse.toml\nExecReload=/bin/kill -HUP $MAINPID\n"
        ));
        assert!(service.contains("WantedBy=multi-user.target\n"));
    }

    #[test]
    fn several_listeners_get_one_socket_unit_each() {
        let c = config(&format!(
            "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n[[listener]]\nname = \"alt\"\nbind = \"0.0.0.0:8080\"\n{ROUTE}"
        ));
        let files = render(&c, Path::new("/bin/rouse"), &c.path, Scope::User, false);
        assert_eq!(files[0].name, "rouse-http.socket");
        assert!(files[1].text.contains("FileDescriptorName=alt\n"));
        assert!(
            files[2]
                .text
                .contains("Sockets=rouse-http.socket rouse-alt.socket\n")
        );
        assert!(files[2].text.contains("WantedBy=default.target\n"));
    }

    #[test]
    fn quadlet_files_describe_the_container_to_create() {
        let c = config(&format!(
            "[[listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n{ROUTE}"
        ));
        let files = render(&c, Path::new("/bin/rouse"), &c.path, Scope::System, true);
        let q = files
            .iter()
            .find(|f| f.name == "blog.container")
            .expect("a .container file");
        for line in [
            "ContainerName=blog\n",
            "Image=localhost/httpd:latest\n",
            "Exec=/bin/httpd -f -p 8080\n",
            "PublishPort=127.0.0.1:9101:8080\n",
            "Volume=/srv/blog:/www:ro\n",
        ] {
            assert!(q.text.contains(line), "missing {line:?} in\n{}", q.text);
        }
        assert!(!q.text.contains("[Install]"));
    }
}
