//! The parts of systemd's D-Bus API rouse uses, the bus connection, and how failures read.
//!
//! Everything here is a thin call over one connection: the manager's methods, its `JobRemoved`
//! signal, unit properties, and each unit's `PropertiesChanged` signal. No decision about what a
//! route's units should do is taken here.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;

use zbus::export::futures_core::Stream;
use zbus::message::Type as MessageType;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{Connection, MatchRule, MessageStream, proxy};

use crate::config::BusAddress;

/// systemd's well-known name on a bus.
const SYSTEMD: &str = "org.freedesktop.systemd1";
/// The interface every unit object has.
pub(super) const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
/// A bus or systemd that does not answer a call within this is taken as unreachable (a job's
/// own duration is not bounded by it: jobs are waited for by their signal).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Signals queued per subscription before the connection stops reading (zbus's default is 64).
const SIGNAL_QUEUE: usize = 1024;

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(super) trait Manager {
    /// Asks systemd to send job and unit signals to this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// Queues a start job; returns its path.
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Queues a stop job; returns its path.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// Loads a unit (if it is not) and returns its object path, even for a unit that does not
    /// exist (its `LoadState` is then `not-found`).
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// A job finished: `result` is `done`, `canceled`, `timeout`, `failed`, `dependency` or
    /// `skipped`.
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// A connection to a bus where systemd answers.
#[derive(Clone)]
pub(super) struct Bus {
    /// The connection.
    pub conn: Connection,
    /// systemd's manager object on it.
    pub manager: ManagerProxy<'static>,
}

impl Bus {
    /// Connects to `address` and subscribes to systemd's signals.
    pub async fn connect(address: &BusAddress) -> zbus::Result<Bus> {
        let builder = match address {
            BusAddress::System => zbus::connection::Builder::system()?,
            BusAddress::User => zbus::connection::Builder::session()?,
            BusAddress::Address(a) => zbus::connection::Builder::address(a.as_str())?,
        };
        let conn = builder.method_timeout(CALL_TIMEOUT).build();
        let conn = match tokio::time::timeout(CALL_TIMEOUT, conn).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(zbus::Error::Failure(format!(
                    "no answer within {}s",
                    CALL_TIMEOUT.as_secs()
                )));
            }
        };
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let bus = Bus { conn, manager };
        bus.subscribe().await?;
        Ok(bus)
    }

    /// Subscribes to systemd's signals (again). Also a cheap check that the connection works.
    pub async fn subscribe(&self) -> zbus::Result<()> {
        match self.manager.subscribe().await {
            Err(e) if error_name(&e) == Some("org.freedesktop.systemd1.AlreadySubscribed") => {
                Ok(())
            }
            other => other,
        }
    }

    /// A property of the object at `path`.
    pub async fn property<T>(
        &self,
        path: &ObjectPath<'_>,
        iface: &str,
        name: &str,
    ) -> zbus::Result<T>
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::zvariant::Error>,
    {
        let reply = self
            .conn
            .call_method(
                Some(SYSTEMD),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, name),
            )
            .await?;
        let value: OwnedValue = reply.body().deserialize()?;
        T::try_from(value).map_err(|e| zbus::Error::Variant(e.into()))
    }

    /// A string property of a unit's `Unit` interface (`ActiveState`, `LoadState`).
    pub async fn unit_state(&self, path: &ObjectPath<'_>, name: &str) -> zbus::Result<String> {
        self.property(path, UNIT_IFACE, name).await
    }

    /// The `Result` of a unit's type (`exit-code`, `timeout`, …), if its type has one.
    pub async fn unit_result(&self, unit: &str, path: &ObjectPath<'_>) -> Option<String> {
        let iface = type_interface(unit)?;
        self.property(path, &iface, "Result").await.ok()
    }

    /// The type of the job queued on a unit (`start`, `stop`, `restart`, …), if one is.
    pub async fn unit_job(&self, path: &ObjectPath<'_>) -> Option<String> {
        let (id, job): (u32, OwnedObjectPath) =
            self.property(path, UNIT_IFACE, "Job").await.ok()?;
        if id == 0 {
            return None;
        }
        self.property(&job, "org.freedesktop.systemd1.Job", "JobType")
            .await
            .ok()
    }

    /// How a service's main process ended: `(code, status)`, code 1 (`CLD_EXITED`) meaning it
    /// exited by itself with `status`.
    pub async fn main_exit(&self, unit: &str, path: &ObjectPath<'_>) -> Option<(i32, i32)> {
        if !unit.ends_with(".service") {
            return None;
        }
        let iface = "org.freedesktop.systemd1.Service";
        let code = self.property(path, iface, "ExecMainCode").await.ok()?;
        let status = self.property(path, iface, "ExecMainStatus").await.ok()?;
        Some((code, status))
    }

    /// Every `JobRemoved` from now on; open it before queueing the jobs to wait for.
    pub async fn jobs(&self) -> zbus::Result<Jobs> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SYSTEMD)?
            .interface("org.freedesktop.systemd1.Manager")?
            .member("JobRemoved")?
            .path("/org/freedesktop/systemd1")?
            .build();
        let stream = MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE)).await?;
        Ok(Jobs {
            stream,
            bus: self.clone(),
            finished: HashMap::new(),
        })
    }

    /// Every `PropertiesChanged` of the unit at `path` from now on.
    pub async fn changes(&self, path: &ObjectPath<'_>) -> zbus::Result<MessageStream> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SYSTEMD)?
            .interface("org.freedesktop.DBus.Properties")?
            .member("PropertiesChanged")?
            .path(path.to_owned())?
            .build();
        MessageStream::for_match_rule(rule, &self.conn, Some(SIGNAL_QUEUE)).await
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JobEnd {
    /// `JobRemoved` said so (`done`, `failed`, …).
    Result(String),
    /// The job is gone without its signal having been seen; the unit's state tells the rest.
    Gone,
}

/// A subscription to `JobRemoved`, to wait for the jobs of one start or stop.
pub(super) struct Jobs {
    stream: MessageStream,
    bus: Bus,
    /// Jobs seen finishing before they were waited for.
    finished: HashMap<OwnedObjectPath, String>,
}

impl Jobs {
    /// How often a job that sends no signal is looked for, in case its signal was missed.
    const RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

    /// Waits for `job` to be removed; `None` if the connection was lost.
    pub async fn wait(&mut self, job: &OwnedObjectPath) -> Option<JobEnd> {
        if let Some(result) = self.finished.remove(job) {
            return Some(JobEnd::Result(result));
        }
        loop {
            let next = tokio::time::timeout(Self::RECHECK, next(&mut self.stream)).await;
            match next {
                Ok(Some(Ok(msg))) => {
                    let Some(signal) = JobRemoved::from_message(msg) else {
                        continue;
                    };
                    let Ok(args) = signal.args() else { continue };
                    if args.job.as_str() == job.as_str() {
                        return Some(JobEnd::Result(args.result.to_owned()));
                    }
                    if self.finished.len() < 4096 {
                        self.finished
                            .insert(args.job.to_owned().into(), args.result.to_owned());
                    }
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => return None,
                Err(_) => {
                    // A job object answers while it exists; once gone, its signal was missed.
                    let state: zbus::Result<String> = self
                        .bus
                        .property(job, "org.freedesktop.systemd1.Job", "State")
                        .await;
                    match state {
                        Ok(_) => {}
                        Err(e) if is_transport(&e) => return None,
                        Err(_) => return Some(JobEnd::Gone),
                    }
                }
            }
        }
    }
}

/// The next item of a signal stream (cancel-safe).
pub(super) async fn next(stream: &mut MessageStream) -> Option<zbus::Result<zbus::Message>> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// The next item of any of `streams`; `None` once all of them have ended (cancel-safe).
pub(super) async fn next_of(streams: &mut Vec<MessageStream>) -> Option<zbus::Message> {
    poll_fn(|cx| {
        let mut i = 0;
        while i < streams.len() {
            match Pin::new(&mut streams[i]).poll_next(cx) {
                std::task::Poll::Ready(Some(Ok(msg))) => return std::task::Poll::Ready(Some(msg)),
                // An error item is followed by the end of the stream; keep polling it until then.
                std::task::Poll::Ready(Some(Err(_))) => continue,
                std::task::Poll::Ready(None) => {
                    drop(streams.swap_remove(i));
                }
                std::task::Poll::Pending => i += 1,
            }
        }
        if streams.is_empty() {
            std::task::Poll::Ready(None)
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The `ActiveState` a `PropertiesChanged` signal carries, if it carries one.
pub(super) fn active_state_in(msg: &zbus::Message) -> Option<String> {
    let body = msg.body();
    let (iface, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
        body.deserialize().ok()?;
    if iface != UNIT_IFACE {
        return None;
    }
    String::try_from(changed.get("ActiveState")?.try_clone().ok()?).ok()
}

/// The D-Bus error name of a method error reply.
pub(super) fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        zbus::Error::FDO(fdo) => match &**fdo {
            zbus::fdo::Error::ZBus(inner) => error_name(inner),
            _ => None,
        },
        _ => None,
    }
}

/// The human part of a method error reply (or the whole error otherwise).
pub(super) fn error_text(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, text, _) => text.clone().unwrap_or_else(|| name.to_string()),
        other => other.to_string(),
    }
}

/// Whether the error is about the connection itself rather than what was asked.
pub(super) fn is_transport(e: &zbus::Error) -> bool {
    matches!(
        e,
        zbus::Error::InputOutput(_)
            | zbus::Error::Connection(..)
            | zbus::Error::Handshake(_)
            | zbus::Error::Address(_)
    )
}

/// The interface holding a unit's `Result` property, from its type suffix.
fn type_interface(unit: &str) -> Option<String> {
    let kind = unit.rsplit_once('.')?.1;
    let kind = match kind {
        "service" => "Service",
        "socket" => "Socket",
        "mount" => "Mount",
        "automount" => "Automount",
        "swap" => "Swap",
        "timer" => "Timer",
        "path" => "Path",
        "scope" => "Scope",
        _ => return None,
    };
    Some(format!("org.freedesktop.systemd1.{kind}"))
}

/// The bus as error messages name it: `the system bus`, `bus "unix:path=…"`.
pub(super) fn describe(address: &BusAddress) -> String {
    match address {
        BusAddress::System => "the system bus".into(),
        BusAddress::User => "the user bus".into(),
        BusAddress::Address(a) => format!("bus \"{a}\""),
    }
}
