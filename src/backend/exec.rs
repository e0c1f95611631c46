//! `kind = "exec"`: a plain command, run in its own process group.
//!
//! The command's output is logged line by line; the last stderr line is kept so that a start
//! failure can name its cause. Stopping signals the whole process group (so helpers the command
//! spawned go too), waits `stop_timeout`, then kills the group. If rouse itself dies, even by
//! SIGKILL, the kernel sends the command SIGTERM (`PR_SET_PDEATHSIG`).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Backend, BoxFuture, Instance, StartError, StopError};
use crate::config::ExecConfig;

/// Variables of socket activation that belong to rouse, never to its backends.
const SOCKET_ACTIVATION_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];
/// Longest stderr line kept for an error message, in bytes.
const MAX_CAUSE_LEN: usize = 300;
/// How long to wait for the last output after the process exits.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// A command backend.
pub struct Exec {
    route: Arc<str>,
    cfg: ExecConfig,
}

impl Exec {
    /// A backend running `cfg.command` for `route`.
    pub fn new(route: &str, cfg: ExecConfig) -> Exec {
        Exec {
            route: route.into(),
            cfg,
        }
    }

    fn spawn(&self) -> Result<Box<dyn Instance>, StartError> {
        let cfg = &self.cfg;
        let mut cmd = Command::new(&cfg.command[0]);
        cmd.args(&cfg.command[1..])
            .current_dir(&cfg.working_dir)
            .envs(&cfg.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a stop reaches everything it spawned and a Ctrl-C on rouse's
            // terminal does not reach it behind rouse's back.
            .process_group(0);
        for var in SOCKET_ACTIVATION_VARS {
            cmd.env_remove(var);
        }
        let rouse = std::process::id();
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions
        // (prctl, getppid, getrlimit, setrlimit) and allocates nothing on its success path.
        unsafe {
            cmd.pre_exec(move || {
                // If rouse dies, even by SIGKILL, the backend gets SIGTERM: no orphan keeps
                // running with nobody to stop it. (It follows the thread that spawned it, the
                // control thread, which lives as long as rouse.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // rouse died before the line above: nobody would send the signal.
                if u32::try_from(libc::getppid()).ok() != Some(rouse) {
                    libc::_exit(1);
                }
                crate::limits::restore_nofile_in_child();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            program: cfg.command[0].clone(),
            source,
        })?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        debug!(route = %self.route, pid, "backend spawned");
        let last_stderr = Arc::new(Mutex::new(None));
        let stdout = child
            .stdout
            .take()
            .map(|out| tokio::spawn(log_lines(self.route.clone(), "stdout", out, None)));
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(log_lines(
                self.route.clone(),
                "stderr",
                err,
                Some(last_stderr.clone()),
            ))
        });
        Ok(Box::new(Running {
            child,
            pgid: pid,
            readers: [stdout, stderr].into_iter().flatten().collect(),
            last_stderr,
            stop_signal: cfg.stop_signal.number,
            stop_timeout: cfg.stop_timeout,
            route: self.route.clone(),
        }))
    }
}

impl Backend for Exec {
    fn start(&self) -> BoxFuture<'_, Result<Box<dyn Instance>, StartError>> {
        Box::pin(async move { self.spawn() })
    }
}

/// A running command.
struct Running {
    child: Child,
    pgid: i32,
    readers: Vec<JoinHandle<()>>,
    last_stderr: Arc<Mutex<Option<String>>>,
    stop_signal: i32,
    stop_timeout: Duration,
    route: Arc<str>,
}

impl Running {
    /// Signals the whole process group; a group that is already gone is not an error.
    fn signal_group(&self, signal: i32) {
        if self.pgid <= 0 {
            return;
        }
        // SAFETY: killpg has no memory effects; the group is the one this process created.
        let rc = unsafe { libc::killpg(self.pgid, signal) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                warn!(route = %self.route, pgid = self.pgid, error = %err, "cannot signal backend");
            }
        }
    }

    /// Waits briefly for the output readers, so the last stderr line is known.
    async fn drain_output(&mut self) {
        for reader in self.readers.drain(..) {
            let abort = reader.abort_handle();
            if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
                // A grandchild still holds the pipe open; its output is no longer ours.
                abort.abort();
            }
        }
    }
}

impl Instance for Running {
    fn exited(&mut self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let status = match self.child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("cannot wait for the process: {e}"),
            };
            // Whatever the leader left behind in its group goes with it.
            self.signal_group(libc::SIGKILL);
            self.drain_output().await;
            match self.last_stderr.lock().expect("stderr lock").take() {
                Some(line) => format!("{status}: {line}"),
                None => status,
            }
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StopError>> {
        Box::pin(async move {
            self.signal_group(self.stop_signal);
            let result = match tokio::time::timeout(self.stop_timeout, self.child.wait()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(StopError(format!("cannot wait for the process: {e}"))),
                Err(_) => {
                    self.signal_group(libc::SIGKILL);
                    let _ = self.child.wait().await;
                    Err(StopError(format!(
                        "still running {} after the stop signal: killed",
                        crate::error::fmt_duration(self.stop_timeout)
                    )))
                }
            };
            self.signal_group(libc::SIGKILL);
            self.drain_output().await;
            result
        })
    }
}

/// Logs each line of a backend's output; keeps the last non-empty one when asked.
async fn log_lines(
    route: Arc<str>,
    stream: &'static str,
    out: impl AsyncRead + Unpin,
    keep_last: Option<Arc<Mutex<Option<String>>>>,
) {
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(route = %route, stream, line = %line, "backend output");
        if let Some(keep) = &keep_last {
            let line: String = line.chars().filter(|c| !c.is_control()).collect();
            if !line.trim().is_empty() {
                *keep.lock().expect("stderr lock") = Some(truncate(line.trim(), MAX_CAUSE_LEN));
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
