//! The control plane's only door into the data plane (ARCHITECTURE.md D3): typed commands sent
//! over a channel with a wake-up, carried out by the event loop between batches, each answered
//! on its own one-shot channel. The API server and CLI clients never touch data-plane state.
//!
//! Limits: [`MAX_QUEUED`] commands waiting; a full queue is answered at once with an error.

use crate::sockets::{bind_unix_forward, ForwardBindError, UnixForwardListener};
use crate::unix_socket::{SocketFileError, SocketPlace};
use slipway_core::{ForwardHost, ForwardProto, Mac, PortForward};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Commands waiting for the event loop before new ones are refused.
pub const MAX_QUEUED: usize = 256;

/// A published port as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardInfo {
    pub id: u32,
    pub proto: ForwardProto,
    /// `tcp`, `udp` or `unix` (a unix socket listener).
    pub kind: &'static str,
    /// The address actually listened on.
    pub host: ForwardHost,
    pub guest_ip: std::net::IpAddr,
    pub guest_port: u16,
    /// Who made it.
    pub origin: ForwardOrigin,
}

/// Who made a forward: the owner (command line, the API socket) or a guest (through the guest
/// API, by its address). A guest may remove only the forwards it made itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardOrigin {
    Owner,
    Guest(Ipv4Addr),
}

impl ForwardOrigin {
    /// Whether a request from `self` may remove a forward made by `made_by`.
    pub fn may_remove(self, made_by: ForwardOrigin) -> bool {
        self == ForwardOrigin::Owner || self == made_by
    }
}

/// A forward to add. A unix forward comes with its socket bound already: the event loop does
/// no file-system work ([`ControlHandle::add_forwards`]).
#[derive(Debug)]
pub struct NewForward {
    pub rule: PortForward,
    pub origin: ForwardOrigin,
    pub bound: Option<UnixForwardListener>,
}

/// One live flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowReport {
    pub proto: ForwardProto,
    pub guest: SocketAddr,
    pub remote: SocketAddr,
    pub state: &'static str,
    pub bytes_from_guest: u64,
    pub bytes_to_guest: u64,
    pub age: Duration,
}

/// Network-wide counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReport {
    pub values: Vec<(&'static str, u64)>,
    pub drops: Vec<(&'static str, u64)>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The forward's host address is taken (or another forward has it).
    Conflict(String),
    /// The target is not a guest address of the network.
    NotAGuest(String),
    /// The caller may not do this (a guest removing a forward it did not make).
    Forbidden(String),
    NotFound(String),
    Other(String),
}

impl ControlError {
    /// The text for a person.
    pub fn message(&self) -> String {
        match self {
            ControlError::Conflict(m)
            | ControlError::NotAGuest(m)
            | ControlError::Forbidden(m)
            | ControlError::NotFound(m)
            | ControlError::Other(m) => m.clone(),
        }
    }
}

pub enum Command {
    /// Publish all of these, or none of them.
    AddForwards(
        Vec<NewForward>,
        oneshot::Sender<Result<Vec<ForwardInfo>, ControlError>>,
    ),
    /// Remove a forward, asked by the given origin (which may remove only its own unless it is
    /// the owner).
    RemoveForward(
        u32,
        ForwardOrigin,
        oneshot::Sender<Result<ForwardInfo, ControlError>>,
    ),
    ListForwards(oneshot::Sender<Vec<ForwardInfo>>),
    Leases(oneshot::Sender<Vec<(Ipv4Addr, Mac)>>),
    /// A connection that becomes a guest link (gvproxy's `/connect`); the answer is its port.
    AddLink(
        std::os::unix::net::UnixStream,
        LinkFraming,
        oneshot::Sender<Result<u16, ControlError>>,
    ),
    Flows(oneshot::Sender<Vec<FlowReport>>),
    Counters(oneshot::Sender<CounterReport>),
}

/// How frames are delimited on a stream handed over with [`Command::AddLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFraming {
    /// 2-byte little-endian lengths (hyperkit, stdio: gvproxy's default for `/connect`).
    Le16,
    /// 4-byte big-endian lengths (QEMU's stream sockets: gvproxy with `-listen-qemu`).
    Be32,
}

/// The sending side, shared by API connections.
#[derive(Clone)]
pub struct ControlHandle {
    tx: Arc<Mutex<mpsc::Sender<Command>>>,
    queued: Arc<AtomicUsize>,
    wake: Arc<dyn Fn() + Send + Sync>,
}

/// The event loop's side.
pub struct ControlQueue {
    rx: mpsc::Receiver<Command>,
    queued: Arc<AtomicUsize>,
}

/// A channel whose sender calls `wake` after each command.
pub fn channel(wake: Arc<dyn Fn() + Send + Sync>) -> (ControlHandle, ControlQueue) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        ControlHandle {
            tx: Arc::new(Mutex::new(tx)),
            queued: queued.clone(),
            wake,
        },
        ControlQueue { rx, queued },
    )
}

impl ControlHandle {
    /// Send a command built around its reply channel and wait for the answer.
    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ControlError> {
        let busy = || ControlError::Other("the network is busy; try again".into());
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let (reply, answer) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .map_err(|_| busy())?
            .send(make(reply))
            .is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ControlError::Other("the network has stopped".into()));
        }
        (self.wake)();
        answer
            .await
            .map_err(|_| ControlError::Other("the network has stopped".into()))
    }
}

impl ControlHandle {
    /// Publish `forwards` (all or none) for `origin`. The socket of each unix forward is bound
    /// first, on a thread for blocking work, at the place given with it (or at its path): the
    /// event loop never waits on the file system.
    pub async fn add_forwards(
        &self,
        forwards: Vec<(PortForward, Option<SocketPlace>)>,
        origin: ForwardOrigin,
        mode: u32,
    ) -> Result<Vec<ForwardInfo>, ControlError> {
        let prepared = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(forwards.len());
            for (rule, place) in forwards {
                let bound = match (&rule.host, place) {
                    (ForwardHost::Unix(_), _) if rule.proto != ForwardProto::Tcp => {
                        return Err(ForwardBindError::UnixNotTcp);
                    }
                    (ForwardHost::Unix(_), Some(place)) => Some(bind_unix_forward(&place, mode)?),
                    (ForwardHost::Unix(path), None) => {
                        Some(bind_unix_forward(&SocketPlace::of_path(path)?, mode)?)
                    }
                    (ForwardHost::Inet(_), _) => None,
                };
                out.push(NewForward {
                    rule,
                    origin,
                    bound,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| ControlError::Other(format!("binding the forward failed: {e}")))?
        .map_err(|e| match e {
            ForwardBindError::UnixSocket(SocketFileError::InUse(_)) => {
                ControlError::Conflict(e.to_string())
            }
            _ => ControlError::Other(e.to_string()),
        })?;
        self.call(|reply| Command::AddForwards(prepared, reply))
            .await?
    }
}

impl ControlQueue {
    /// The next waiting command, if any.
    pub fn try_next(&self) -> Option<Command> {
        let c = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(c)
    }
}
