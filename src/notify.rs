//! Telling systemd how the service is doing (`sd_notify`): `READY=1` once rouse accepts
//! connections, `RELOADING=1` while it reloads its config, `STOPPING=1` when it begins to shut
//! down, `STATUS=` lines in between.
//!
//! The protocol is one datagram to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name written with a leading `@`). Without that variable, as when rouse runs outside
//! systemd or under `Type=simple`, every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// Sends `state` (e.g. `"READY=1"`) to systemd if it is listening; failures are only logged,
/// since a missing notification must never stop the proxy.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = result {
        debug!(state, error = %e, "cannot notify systemd");
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` is to be sent with
/// (`MONOTONIC_USEC=`, which `Type=notify-reload` requires).
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test's process sets the variable before any other thread reads it;
        // no other test reads NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1\nSTATUS=2 routes");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 routes");
    }
}
