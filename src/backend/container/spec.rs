//! What to send to create a missing container: `ports` and `volumes` as `podman create` writes
//! them, turned into a libpod SpecGenerator or a Docker create body.
//!
//! Pure translation, no I/O: every mistake in the config is reported here, as one line that
//! shows the form to write.

use serde_json::{Map, Value, json};

use crate::config::CreateSpec;

/// One published port: `[IP:][HOST:]CONTAINER[/PROTO]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Host address to bind ("" = all).
    pub host_ip: String,
    /// Host port (0 = the engine picks one).
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// Why a `ports` or `volumes` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A `ports` entry that is not `[IP:][HOST:]CONTAINER[/PROTO]`.
    #[error(
        "ports entry \"{0}\" is not [IP:]HOST:CONTAINER[/PROTO]: write e.g. \"127.0.0.1:9101:8080\""
    )]
    Port(String),
    /// A `volumes` entry that is not `SOURCE:DEST[:OPTIONS]`.
    #[error("volumes entry \"{0}\" is not SOURCE:DEST[:OPTIONS]: write e.g. \"/srv/www:/www:ro\"")]
    Volume(String),
}

/// Parses one `ports` entry.
pub fn parse_port(text: &str) -> Result<Port, SpecError> {
    let bad = || SpecError::Port(text.to_owned());
    let (addr, protocol) = match text.trim().split_once('/') {
        Some((addr, proto)) if matches!(proto, "tcp" | "udp" | "sctp") => (addr, proto),
        Some(_) => return Err(bad()),
        None => (text.trim(), "tcp"),
    };
    // An IPv6 host address is written in brackets: "[::1]:9101:8080".
    let (host_ip, rest) = match addr.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once(']').ok_or_else(bad)?;
            (ip, rest.strip_prefix(':').ok_or_else(bad)?)
        }
        None => ("", addr),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (host_ip, parts.as_slice()) {
        ("", [c]) => ("", "", *c),
        ("", [h, c]) => ("", *h, *c),
        ("", [ip, h, c]) => (*ip, *h, *c),
        (ip, [h, c]) => (ip, *h, *c),
        _ => return Err(bad()),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p > 0);
    Ok(Port {
        host_ip: ip.to_owned(),
        host_port: if host.is_empty() {
            0
        } else {
            port(host).ok_or_else(bad)?
        },
        container_port: port(container).ok_or_else(bad)?,
        protocol: protocol.to_owned(),
    })
}

/// One `volumes` entry split: source, destination, options.
fn parse_volume(text: &str) -> Result<(&str, &str, Vec<&str>), SpecError> {
    let mut parts = text.splitn(3, ':');
    let (Some(src), Some(dest)) = (parts.next(), parts.next()) else {
        return Err(SpecError::Volume(text.to_owned()));
    };
    if src.is_empty() || !dest.starts_with('/') {
        return Err(SpecError::Volume(text.to_owned()));
    }
    let options = parts
        .next()
        .map(|o| o.split(',').filter(|o| !o.is_empty()).collect())
        .unwrap_or_default();
    Ok((src, dest, options))
}

/// The body of libpod's `POST /libpod/containers/create`.
pub fn libpod(name: &str, spec: &CreateSpec) -> Result<Value, SpecError> {
    let mut body = Map::new();
    body.insert("name".into(), json!(name));
    body.insert("image".into(), json!(spec.image));
    if !spec.command.is_empty() {
        body.insert("command".into(), json!(spec.command));
    }
    if !spec.env.is_empty() {
        body.insert("env".into(), json!(spec.env));
    }
    let mut ports = Vec::new();
    for text in &spec.ports {
        let p = parse_port(text)?;
        ports.push(json!({
            "host_ip": p.host_ip,
            "host_port": p.host_port,
            "container_port": p.container_port,
            "protocol": p.protocol,
        }));
    }
    if !ports.is_empty() {
        body.insert("portmappings".into(), Value::Array(ports));
    }
    // A source that is a path is a bind mount; a bare word names a volume.
    let (mut mounts, mut volumes) = (Vec::new(), Vec::new());
    for text in &spec.volumes {
        let (src, dest, options) = parse_volume(text)?;
        if src.starts_with('/') || src.starts_with('.') {
            mounts.push(
                json!({"type": "bind", "source": src, "destination": dest, "options": options}),
            );
        } else {
            volumes.push(json!({"Name": src, "Dest": dest, "Options": options}));
        }
    }
    if !mounts.is_empty() {
        body.insert("mounts".into(), Value::Array(mounts));
    }
    if !volumes.is_empty() {
        body.insert("volumes".into(), Value::Array(volumes));
    }
    Ok(Value::Object(body))
}

/// The body of Docker's `POST /containers/create?name=NAME`.
pub fn docker(spec: &CreateSpec) -> Result<Value, SpecError> {
    let mut body = Map::new();
    body.insert("Image".into(), json!(spec.image));
    if !spec.command.is_empty() {
        body.insert("Cmd".into(), json!(spec.command));
    }
    if !spec.env.is_empty() {
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        body.insert("Env".into(), json!(env));
    }
    let (mut exposed, mut bindings) = (Map::new(), Map::new());
    for text in &spec.ports {
        let p = parse_port(text)?;
        let key = format!("{}/{}", p.container_port, p.protocol);
        exposed.insert(key.clone(), json!({}));
        let host_port = if p.host_port == 0 {
            String::new()
        } else {
            p.host_port.to_string()
        };
        let binding = json!({"HostIp": p.host_ip, "HostPort": host_port});
        match bindings.get_mut(&key) {
            Some(Value::Array(list)) => list.push(binding),
            _ => {
                bindings.insert(key, json!([binding]));
            }
        }
    }
    for text in &spec.volumes {
        parse_volume(text)?;
    }
    let mut host = Map::new();
    if !bindings.is_empty() {
        body.insert("ExposedPorts".into(), Value::Object(exposed));
        host.insert("PortBindings".into(), Value::Object(bindings));
    }
    if !spec.volumes.is_empty() {
        host.insert("Binds".into(), json!(spec.volumes));
    }
    body.insert("HostConfig".into(), Value::Object(host));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(ip: &str, host: u16, container: u16, proto: &str) -> Port {
        Port {
            host_ip: ip.into(),
            host_port: host,
            container_port: container,
            protocol: proto.into(),
        }
    }

    #[test]
    fn ports_are_parsed_as_podman_create_takes_them() {
        assert_eq!(
            parse_port("127.0.0.1:9101:8080"),
            Ok(port("127.0.0.1", 9101, 8080, "tcp"))
        );
        assert_eq!(parse_port("9101:8080/udp"), Ok(port("", 9101, 8080, "udp")));
        assert_eq!(parse_port("8080"), Ok(port("", 0, 8080, "tcp")));
        assert_eq!(
            parse_port("127.0.0.1::8080"),
            Ok(port("127.0.0.1", 0, 8080, "tcp"))
        );
        assert_eq!(
            parse_port("[::1]:9101:8080"),
            Ok(port("::1", 9101, 8080, "tcp"))
        );
    }

    #[test]
    fn malformed_ports_are_rejected_with_the_form_to_write() {
        for bad in ["", "x:80", "1:2:3:4", "80/icmp", "70000", "[::1:80", "0"] {
            let err = parse_port(bad).unwrap_err().to_string();
            assert!(err.contains("[IP:]HOST:CONTAINER"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn libpod_spec_has_ports_binds_and_named_volumes() {
        let spec = CreateSpec {
            image: "localhost/blog".into(),
            command: vec!["/bin/httpd".into(), "-f".into()],
            env: [("A".to_owned(), "b".to_owned())].into(),
            ports: vec!["127.0.0.1:9101:8080".into()],
            volumes: vec!["/srv:/www:ro".into(), "data:/data".into()],
        };
        let body = libpod("blog", &spec).unwrap();
        assert_eq!(body["name"], "blog");
        assert_eq!(body["env"]["A"], "b");
        assert_eq!(body["portmappings"][0]["host_port"], 9101);
        assert_eq!(body["portmappings"][0]["container_port"], 8080);
        assert_eq!(body["mounts"][0]["source"], "/srv");
        assert_eq!(body["mounts"][0]["options"][0], "ro");
        assert_eq!(body["volumes"][0]["Name"], "data");
    }

    #[test]
    fn docker_spec_has_port_bindings_and_binds() {
        let spec = CreateSpec {
            image: "blog".into(),
            env: [("A".to_owned(), "b".to_owned())].into(),
            ports: vec!["127.0.0.1:9101:8080".into()],
            volumes: vec!["/srv:/www:ro".into()],
            ..CreateSpec::default()
        };
        let body = docker(&spec).unwrap();
        assert_eq!(body["Env"][0], "A=b");
        assert!(body["ExposedPorts"]["8080/tcp"].is_object());
        let binding = &body["HostConfig"]["PortBindings"]["8080/tcp"][0];
        assert_eq!(
            (binding["HostIp"].as_str(), binding["HostPort"].as_str()),
            (Some("127.0.0.1"), Some("9101"))
        );
        assert_eq!(body["HostConfig"]["Binds"][0], "/srv:/www:ro");
        assert!(body.get("Cmd").is_none());
    }

    #[test]
    fn a_volume_without_destination_is_rejected() {
        assert!(matches!(
            docker(&CreateSpec {
                volumes: vec!["/srv".into()],
                ..CreateSpec::default()
            }),
            Err(SpecError::Volume(_))
        ));
    }
}
