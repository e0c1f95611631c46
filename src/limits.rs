//! The process's limit on open descriptors.
//!
//! Every client connection and every upstream connection takes a descriptor, and the usual soft
//! limit (1024) would cap rouse far below `max_connections`. At start rouse raises its soft
//! limit to the hard one, as nginx's `worker_rlimit_nofile` and Go's runtime do. Backends get
//! the original soft limit back: a program that still uses `select()` breaks on descriptors
//! above 1024.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft limit rouse started with; `u64::MAX` until [`raise_nofile`] ran.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before, after).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    ORIGINAL_SOFT.store(before, Ordering::Relaxed);
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

/// In a forked child before exec: puts back the soft limit rouse started with. Only calls
/// async-signal-safe functions.
pub fn restore_nofile_in_child() {
    let original = ORIGINAL_SOFT.load(Ordering::Relaxed);
    if original == u64::MAX {
        return;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above; failure leaves the raised limit, which is harmless for most programs.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && original < lim.rlim_cur {
            lim.rlim_cur = original;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
