//! Listening sockets: inherited from systemd socket activation, or bound here.
//!
//! systemd passes sockets as file descriptors 3, 4, … with `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES` (the units' `FileDescriptorName=`); each is matched to the `[[listener]]` of
//! the same name. A listener no inherited socket matches is bound to its `bind` address.
//! This module only produces sockets; it never accepts on them.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

use tracing::info;

use crate::config::ListenerConfig;

/// The first file descriptor systemd passes.
const SD_LISTEN_FDS_START: RawFd = 3;
/// Backlog of sockets bound here; systemd's default for `.socket` units is larger than std's.
const BACKLOG: i32 = 4096;

/// A listening socket ready to accept, and the listener it serves.
#[derive(Debug)]
pub struct Bound {
    /// The listener's config.
    pub config: ListenerConfig,
    /// The socket.
    pub socket: TcpListener,
    /// Whether it came from systemd (else rouse bound it).
    pub inherited: bool,
}

/// Why the sockets could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// `LISTEN_FDS` / `LISTEN_FDNAMES` are malformed or do not fit the config.
    #[error("socket activation: {0}")]
    Activation(String),
    /// An inherited file descriptor is not a listening TCP socket.
    #[error("socket activation: file descriptor {fd} (\"{name}\") is not a listening TCP socket")]
    NotTcpListener {
        /// The descriptor.
        fd: RawFd,
        /// Its name.
        name: String,
    },
    /// Binding failed.
    #[error("listener \"{name}\": cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Opens every configured listener: inherited where systemd passed a socket, bound otherwise.
pub fn open(listeners: &[ListenerConfig]) -> Result<Vec<Bound>, ListenError> {
    let mut inherited = inherited_by_listener(listeners, &Activation::from_env()?)?;
    let mut bound = Vec::with_capacity(listeners.len());
    for l in listeners {
        let (socket, was_inherited) = match inherited.remove(&l.name) {
            Some(socket) => (socket, true),
            None => (bind(l)?, false),
        };
        socket
            .set_nonblocking(true)
            .map_err(|source| ListenError::Bind {
                name: l.name.clone(),
                addr: l.bind,
                source,
            })?;
        let addr = socket
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        info!(listener = %l.name, addr = %addr, inherited = was_inherited, "listening");
        bound.push(Bound {
            config: l.clone(),
            socket,
            inherited: was_inherited,
        });
    }
    Ok(bound)
}

/// What systemd passed in the environment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Activation {
    fds: usize,
    names: Option<Vec<String>>,
}

impl Activation {
    fn from_env() -> Result<Activation, ListenError> {
        let var = |name| std::env::var(name).ok();
        Activation::parse(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        )
    }

    fn parse(
        pid: Option<&str>,
        fds: Option<&str>,
        names: Option<&str>,
        my_pid: u32,
    ) -> Result<Activation, ListenError> {
        let (Some(pid), Some(fds)) = (pid, fds) else {
            return Ok(Activation::default());
        };
        // Sockets meant for another process (our parent) are not ours to take.
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return Ok(Activation::default());
        }
        let fds: usize = fds.trim().parse().map_err(|_| {
            ListenError::Activation(format!("LISTEN_FDS=\"{fds}\" is not a number"))
        })?;
        let names = names
            .filter(|n| !n.is_empty())
            .map(|n| n.split(':').map(str::to_owned).collect::<Vec<_>>());
        if let Some(names) = &names
            && names.len() != fds
        {
            return Err(ListenError::Activation(format!(
                "LISTEN_FDNAMES has {} names for {fds} sockets",
                names.len()
            )));
        }
        Ok(Activation { fds, names })
    }
}

/// Matches inherited sockets to listeners by name, taking ownership of the descriptors.
fn inherited_by_listener(
    listeners: &[ListenerConfig],
    activation: &Activation,
) -> Result<HashMap<String, TcpListener>, ListenError> {
    let mut out = HashMap::new();
    if activation.fds == 0 {
        return Ok(out);
    }
    let listener_names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    let names: Vec<String> = match &activation.names {
        Some(names) => names.clone(),
        None if activation.fds == 1 && listeners.len() == 1 => vec![listeners[0].name.clone()],
        None => {
            return Err(ListenError::Activation(format!(
                "{} sockets were passed without names (LISTEN_FDNAMES is unset) and the config has {} listeners; set FileDescriptorName= in the .socket unit to the listener names: {}",
                activation.fds,
                listeners.len(),
                listener_names.join(", ")
            )));
        }
    };
    // A single socket for a single listener is meant for it, whatever its unit called it.
    let lone = activation.fds == 1 && listeners.len() == 1;
    for (i, name) in names.iter().enumerate() {
        let fd = SD_LISTEN_FDS_START + i as RawFd;
        let listener = if listener_names.contains(&name.as_str()) {
            name.clone()
        } else if lone {
            listeners[0].name.clone()
        } else {
            return Err(ListenError::Activation(format!(
                "the socket named \"{name}\" matches no [[listener]] (listeners: {}); set FileDescriptorName= to a listener name",
                listener_names.join(", ")
            )));
        };
        if out.contains_key(&listener) {
            return Err(ListenError::Activation(format!(
                "two sockets are named \"{listener}\"; give each its own FileDescriptorName="
            )));
        }
        out.insert(listener, take_listening_fd(fd, name)?);
    }
    Ok(out)
}

/// Takes ownership of inherited descriptor `fd` after checking it is a listening TCP socket.
fn take_listening_fd(fd: RawFd, name: &str) -> Result<TcpListener, ListenError> {
    let int_opt = |level, opt| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len point to valid, correctly sized storage.
        let rc = unsafe { libc::getsockopt(fd, level, opt, (&raw mut value).cast(), &raw mut len) };
        (rc == 0).then_some(value)
    };
    let is_stream = int_opt(libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM);
    let is_listening = int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1);
    let is_inet = matches!(
        int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN),
        Some(libc::AF_INET | libc::AF_INET6)
    );
    if !(is_stream && is_listening && is_inet) {
        return Err(ListenError::NotTcpListener {
            fd,
            name: name.to_owned(),
        });
    }
    // systemd passes the descriptors inheritable; backends must not get them.
    // SAFETY: fcntl on a descriptor we were handed; no memory is involved.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: systemd handed this descriptor to this process, and nothing else owns it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

fn bind(l: &ListenerConfig) -> Result<TcpListener, ListenError> {
    listen_on(l.bind).map_err(|source| ListenError::Bind {
        name: l.name.clone(),
        addr: l.bind,
        source,
    })
}

/// A TCP socket listening on `addr` with a deep accept queue ([`BACKLOG`]), so that a burst of
/// connections (a cold route's held requests, all released at once) is queued, not dropped.
pub fn listen_on(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_for_another_pid_are_ignored() {
        let a = Activation::parse(Some("1"), Some("2"), Some("a:b"), 42).unwrap();
        assert_eq!(a, Activation::default());
    }

    #[test]
    fn names_must_match_the_socket_count() {
        let err = Activation::parse(Some("42"), Some("2"), Some("http"), 42).unwrap_err();
        assert!(err.to_string().contains("1 names for 2 sockets"), "{err}");
    }

    #[test]
    fn several_unnamed_sockets_for_several_listeners_are_refused() {
        let l = |name: &str| ListenerConfig {
            name: name.into(),
            bind: "127.0.0.1:1".parse().unwrap(),
            protocol: crate::config::Protocol::Http,
            tls: None,
            route: None,
        };
        let a = Activation {
            fds: 2,
            names: None,
        };
        let err = inherited_by_listener(&[l("http"), l("alt")], &a).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("FileDescriptorName=") && msg.contains("http, alt"),
            "{msg}"
        );
    }
}
