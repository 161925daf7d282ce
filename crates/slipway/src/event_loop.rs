//! The data plane: one single-threaded readiness loop per virtual network (ARCHITECTURE.md D3).
//!
//! Theory of operation: one `epoll` (mio) wait returns a batch of events. Guest links are read
//! (many frames per wake-up) and each frame goes through the core [`Network`]; host sockets'
//! readiness goes to the flow engines. After the batch the core sends the ACKs it owes, DNS
//! queries are handed to the DNS service thread, timers run, and the TX queue is flushed: each
//! guest link gets all of its frames in one call (`writev`/`sendmmsg`). Work cut short by a budget
//! (a link with more frames, flows with more data than the TX budget) runs again before the
//! loop sleeps. DNS replies arrive from the DNS thread over a channel with a wake-up.
//!
//! Busy polling (`--busy-poll USEC`, off by default): while the waits between events stay short
//! (below [`SPIN_GAPS`] spins, as in a request/response exchange), the loop polls without
//! sleeping for up to that long before it blocks, so an answer that comes back within it costs no
//! wake-up. A wait that ended without events, or a long one, stops the spinning: an idle network
//! and sparse traffic never spin. Each spin yields the CPU between polls, so a peer that is
//! runnable on the same CPU (the client or server the spin waits for) runs at once, and spins that
//! catch nothing back off exponentially ([`SpinBackoff`]).
//!
//! Limits: [`READ_BUDGET`] frames per link per batch; the core's TX budget per flush.

use crate::control::{
    self, Command, ControlError, ControlHandle, ControlQueue, CounterReport, FlowReport,
    ForwardInfo, ForwardOrigin, LinkFraming,
};
use crate::dns_forwarder::{DnsClient, DnsForwarder, DnsReply};
use crate::link::{GuestLink, LinkListener, LinkStatus, QemuLink, StdioLink};
use crate::pcap::PcapWriter;
use crate::sockets::ForwardBindError;
use crate::sockets::{socket_ref, HostSocketTable, DISCARD_FLUSH_INTERVAL};
use crate::timer::LoopTimer;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slipway_core::network::ForwardError;
use slipway_core::offload::PartialCsum;
use slipway_core::tx::TxDest;
use slipway_core::{ForwardProto, Network, PortForward};
use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from one link per batch before other work gets a turn.
pub const READ_BUDGET: usize = 256;
/// `--busy-poll` spins only while the gaps between events are shorter than this many spins: a
/// request/response exchange keeps it spinning, sparse traffic never starts it, so the CPU spent
/// spinning stays a fraction of the time the loop would otherwise sleep.
const SPIN_GAPS: u32 = 4;
/// --busy-poll spins only after a batch that moved at most this many bytes of frames: request /
/// response traffic, not a bulk transfer (whose 64 KiB frames would make it spin on every wait).
const SPIN_MAX_BYTES: usize = 16 * 1024;
/// After spins that caught nothing, at most `2^SPIN_BACKOFF_MAX - 1` eligible waits in a row
/// sleep without spinning: traffic whose answers come just too late for the spin wastes at most
/// about 1/64 of the CPU it would.
const SPIN_BACKOFF_MAX: u32 = 6;
/// How soon queued output of a link is retried when the socket gives no writable signal.
const OUTPUT_RETRY: Duration = Duration::from_millis(1);
const WAKER: Token = Token(0);
const TIMER: Token = Token(1);
/// The longest the loop sleeps; deadlines closer than this wake it through [`LoopTimer`].
const MAX_SLEEP: Duration = Duration::from_millis(500);
const LISTENER_BASE: usize = 16;
const LINK_BASE: usize = 1 << 16;

fn control_error(e: AddForwardError) -> ControlError {
    let text = e.to_string();
    match e {
        AddForwardError::Rule(ForwardError::NotAGuestAddress { .. }) => {
            ControlError::NotAGuest(text)
        }
        AddForwardError::Bind(ForwardBindError::InUse { .. }) => ControlError::Conflict(text),
        _ => ControlError::Other(text),
    }
}

/// Why a port could not be published.
#[derive(Debug, thiserror::Error)]
pub enum AddForwardError {
    #[error(transparent)]
    Rule(#[from] ForwardError),
    #[error(transparent)]
    Bind(#[from] ForwardBindError),
}

struct LinkSlot {
    link: Box<dyn GuestLink>,
    /// The read budget ran out: read again before sleeping.
    more_to_read: bool,
    /// The fd reported a hang-up: read until the link says `Closed`, since a short read that
    /// ends `read_frames` early would otherwise leave the end of stream unseen (no new edge).
    hung_up: bool,
    /// Registered for WRITABLE as well as READABLE: only while output is queued. A stream
    /// socket signals writability each time the guest's side reads what we wrote, which would
    /// otherwise wake the loop once per batch of frames sent, for nothing.
    writable_interest: bool,
}

pub struct Driver {
    poll: Poll,
    net: Network,
    sockets: HostSocketTable,
    listeners: Vec<Box<dyn LinkListener>>,
    links: Vec<Option<LinkSlot>>,
    dns: DnsForwarder,
    dns_replies: Receiver<DnsReply>,
    dns_streams: Rc<RefCell<Vec<UnixStream>>>,
    pcap: Option<PcapWriter>,
    start: Instant,
    stop: Arc<AtomicBool>,
    ping_hint_logged: bool,
    waker: Arc<Waker>,
    control: Option<ControlQueue>,
    /// Close a forward's listener while its guest is away (`--unpublish-while-away`).
    unpublish_while_away: bool,
    /// Forwards whose listener is closed until their guest returns.
    suspended: Vec<u32>,
    /// Forwards guests made through the guest API, by id (the rest are the owner's).
    guest_forwards: std::collections::HashMap<u32, std::net::Ipv4Addr>,
    next_resume_check: Duration,
    /// When deferred discards of acknowledged host data are next flushed.
    next_discard_flush: Duration,
    /// How long to keep polling after the last event before sleeping (`--busy-poll`).
    busy_poll: Duration,
    /// Spins that caught nothing make the next ones wait (for --busy-poll).
    spin_backoff: SpinBackoff,
    /// Bytes of frames read from guests and sent to them in the current batch (for --busy-poll).
    batch_bytes: usize,
    /// Wakes the loop for its deadlines; `None`: deadlines become `epoll_wait` timeouts.
    timer: Option<LoopTimer>,
}

/// How often suspended forwards look for their guest.
const RESUME_CHECK: Duration = Duration::from_millis(100);

impl Driver {
    /// Build the loop. `make_dns` starts the DNS service given the callback for its replies.
    pub fn new(
        net: Network,
        make_dns: impl FnOnce(Box<dyn Fn(DnsReply) + Send + Sync>) -> io::Result<DnsForwarder>,
        pcap: Option<PcapWriter>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel::<DnsReply>();
        let tx = std::sync::Mutex::new(tx);
        let w = waker.clone();
        let dns = make_dns(Box::new(move |reply| {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(reply);
            }
            let _ = w.wake();
        }))?;
        // Guest TCP connections to the gateway's port 53 are handed to the DNS service after the
        // batch in which they were accepted.
        let dns_streams: Rc<RefCell<Vec<UnixStream>>> = Rc::default();
        let queue = dns_streams.clone();
        let timer = match LoopTimer::new().and_then(|t| {
            poll.registry()
                .register(&mut SourceFd(&t.raw_fd()), TIMER, Interest::READABLE)
                .map(|()| t)
        }) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("no timerfd ({e}); deadlines become poll timeouts");
                None
            }
        };
        let sockets = HostSocketTable::new(
            poll.registry().try_clone()?,
            Some(Box::new(move |s| queue.borrow_mut().push(s))),
        );
        Ok(Self {
            poll,
            net,
            sockets,
            listeners: Vec::new(),
            links: Vec::new(),
            dns,
            dns_replies: rx,
            dns_streams,
            pcap,
            start: Instant::now(),
            stop,
            ping_hint_logged: false,
            waker,
            control: None,
            unpublish_while_away: false,
            suspended: Vec::new(),
            guest_forwards: Default::default(),
            next_resume_check: Duration::ZERO,
            next_discard_flush: Duration::ZERO,
            busy_poll: Duration::ZERO,
            spin_backoff: SpinBackoff::default(),
            batch_bytes: 0,
            timer,
        })
    }

    /// The control plane's handle (see [`crate::control`]); commands run between batches.
    /// Stops the loop from another thread at once (the stop flag, then a wake-up).
    pub fn stopper(&self) -> Arc<dyn Fn() + Send + Sync> {
        let (stop, w) = (self.stop.clone(), self.waker.clone());
        Arc::new(move || {
            stop.store(true, Ordering::Relaxed);
            let _ = w.wake();
        })
    }

    pub fn control(&mut self) -> ControlHandle {
        let w = self.waker.clone();
        let (handle, queue) = control::channel(Arc::new(move || {
            let _ = w.wake();
        }));
        self.control = Some(queue);
        handle
    }

    fn forward_info(&self, id: u32, rule: &PortForward, guest: (IpAddr, u16)) -> ForwardInfo {
        ForwardInfo {
            id,
            proto: rule.proto,
            kind: rule.kind(),
            host: self
                .sockets
                .forward_local_addr(id)
                .unwrap_or_else(|| rule.host.clone()),
            guest_ip: guest.0,
            guest_port: guest.1,
            origin: self.forward_origin(id),
        }
    }

    fn forward_origin(&self, id: u32) -> ForwardOrigin {
        match self.guest_forwards.get(&id) {
            Some(ip) => ForwardOrigin::Guest(*ip),
            None => ForwardOrigin::Owner,
        }
    }

    pub fn forward_infos(&self) -> Vec<ForwardInfo> {
        self.net
            .forwards()
            .iter()
            .map(|(id, rule, guest)| self.forward_info(*id, rule, *guest))
            .collect()
    }

    fn handle_controls(&mut self) {
        while let Some(cmd) = self.control.as_ref().and_then(|q| q.try_next()) {
            self.handle_control(cmd);
        }
    }

    fn handle_control(&mut self, cmd: Command) {
        match cmd {
            Command::AddForwards(forwards, reply) => {
                let mut added = Vec::new();
                let mut failure = None;
                for new in forwards {
                    match self.add_forward_from(new.rule, new.origin, new.bound) {
                        Ok(id) => added.push(id),
                        Err(e) => {
                            failure = Some(control_error(e));
                            break;
                        }
                    }
                }
                let result = match failure {
                    Some(e) => {
                        for id in added {
                            self.remove_forward(id);
                        }
                        Err(e)
                    }
                    None => {
                        let all = self.forward_infos();
                        Ok(all.into_iter().filter(|f| added.contains(&f.id)).collect())
                    }
                };
                let _ = reply.send(result);
            }
            Command::RemoveForward(id, caller, reply) => {
                let info = self.forward_infos().into_iter().find(|f| f.id == id);
                let result = match info {
                    Some(info) if !caller.may_remove(info.origin) => {
                        Err(ControlError::Forbidden(format!(
                            "forward {id} ({}/{}) was not made by this guest; a guest may remove only its own forwards",
                            info.host, info.kind
                        )))
                    }
                    Some(info) => {
                        self.remove_forward(id);
                        tracing::info!("no longer forwarding {}/{}", info.host, info.kind);
                        Ok(info)
                    }
                    None => Err(ControlError::NotFound(format!("no forward with id {id}"))),
                };
                let _ = reply.send(result);
            }
            Command::ListForwards(reply) => {
                let _ = reply.send(self.forward_infos());
            }
            Command::AddLink(stream, framing, reply) => {
                let link: io::Result<Box<dyn GuestLink>> = match framing {
                    LinkFraming::Be32 => stream.set_nonblocking(true).map(|()| {
                        Box::new(QemuLink::from_stream(
                            mio::net::UnixStream::from_std(stream),
                            "api /connect",
                        )) as Box<dyn GuestLink>
                    }),
                    LinkFraming::Le16 => stream.try_clone().and_then(|output| {
                        StdioLink::from_fds(stream.into(), output.into(), "api /connect")
                            .map(|l| Box::new(l) as Box<dyn GuestLink>)
                    }),
                };
                let result = link
                    .map_err(|e| ControlError::Other(format!("cannot use the connection: {e}")))
                    .and_then(|l| {
                        self.add_link(l)
                            .map_err(|e| ControlError::Other(format!("cannot add the link: {e}")))
                    });
                let _ = reply.send(result);
            }
            Command::Leases(reply) => {
                let now = self.now();
                let _ = reply.send(self.net.dhcp().leases(now));
            }
            Command::Flows(reply) => {
                let now = self.now();
                let mut out: Vec<FlowReport> = self
                    .net
                    .tcp()
                    .flows()
                    .into_iter()
                    .map(|f| FlowReport {
                        proto: ForwardProto::Tcp,
                        guest: SocketAddr::new(f.key.guest_ip, f.key.guest_port),
                        remote: SocketAddr::new(f.key.remote_ip, f.key.remote_port),
                        state: f.state,
                        bytes_from_guest: f.bytes_from_guest,
                        bytes_to_guest: f.bytes_to_guest,
                        age: now.saturating_sub(f.opened),
                    })
                    .collect();
                out.extend(self.net.udp().flows().into_iter().map(|f| FlowReport {
                    proto: ForwardProto::Udp,
                    guest: SocketAddr::new(f.key.guest_ip, f.key.guest_port),
                    remote: SocketAddr::new(f.key.remote_ip, f.key.remote_port),
                    state: "active",
                    bytes_from_guest: f.bytes_from_guest,
                    bytes_to_guest: f.bytes_to_guest,
                    age: now.saturating_sub(f.opened),
                }));
                let _ = reply.send(out);
            }
            Command::Counters(reply) => {
                let c = self.net.counters();
                let _ = reply.send(CounterReport {
                    values: c.values().to_vec(),
                    drops: c.drops().collect(),
                });
            }
        }
    }

    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn add_listener(&mut self, mut l: Box<dyn LinkListener>) -> io::Result<()> {
        let token = Token(LISTENER_BASE + self.listeners.len());
        self.poll
            .registry()
            .register(l.source(), token, Interest::READABLE)?;
        tracing::info!("listening for guests on {}", l.describe());
        self.listeners.push(l);
        Ok(())
    }

    /// Publish a port: bind the host listener and add the forward to the network. Nothing is
    /// left behind when either step fails. Returns the forward's id.
    /// The owner's forwards at start-up (a unix socket is bound here, before the loop runs).
    pub fn add_forward(&mut self, rule: PortForward) -> Result<u32, AddForwardError> {
        self.add_forward_from(rule, ForwardOrigin::Owner, None)
    }

    /// A forward made by `origin`; a unix forward's socket may come `bound` already.
    fn add_forward_from(
        &mut self,
        rule: PortForward,
        origin: ForwardOrigin,
        bound: Option<crate::sockets::UnixForwardListener>,
    ) -> Result<u32, AddForwardError> {
        let id = self.net.add_forward(rule.clone())?;
        if let Err(e) = self.sockets.bind_forward(id, &rule, bound) {
            self.net.remove_forward(id);
            return Err(e.into());
        }
        match origin {
            ForwardOrigin::Guest(ip) => self.guest_forwards.insert(id, ip),
            ForwardOrigin::Owner => self.guest_forwards.remove(&id),
        };
        let guest = self
            .net
            .forwards()
            .into_iter()
            .find(|f| f.0 == id)
            .map(|f| f.2);
        if let Some((ip, port)) = guest {
            tracing::info!(
                "forwarding {}/{} to {}",
                self.sockets
                    .forward_local_addr(id)
                    .unwrap_or_else(|| rule.host.clone()),
                rule.kind(),
                SocketAddr::new(ip, port)
            );
        }
        Ok(id)
    }

    /// Guest connections to the gateway's API port go to `handler` (see `--guest-api`).
    pub fn set_guest_api(&mut self, handler: crate::sockets::GuestApiHandler) {
        self.sockets.set_guest_api(handler);
    }

    /// Guest connections to the gateway's TCP `port` go to the host unix socket `path` (the
    /// port must also be in the network's `gateway_unix_ports`).
    pub fn set_unix_target(&mut self, port: u16, path: std::path::PathBuf) {
        self.sockets.set_unix_target(port, path);
    }

    /// Local addresses for outgoing host sockets (`--outbound-addr`, `--outbound-addr6`).
    pub fn set_outbound(&mut self, v4: Option<std::net::Ipv4Addr>, v6: Option<std::net::Ipv6Addr>) {
        self.sockets.set_outbound(v4, v6);
    }

    /// Stop a forward; returns what it was.
    pub fn remove_forward(&mut self, id: u32) -> Option<PortForward> {
        let rule = self.net.remove_forward(id)?;
        self.sockets.close_forward(id);
        self.guest_forwards.remove(&id);
        self.suspended.retain(|&s| s != id);
        Some(rule)
    }

    /// Close forwards' listeners while their guest is disconnected, and open them again when it
    /// is back (instead of keeping them open and refusing clients after a wait).
    /// Keep polling for `d` after the last event before sleeping (zero: never spin).
    pub fn set_busy_poll(&mut self, d: Duration) {
        self.busy_poll = d;
    }

    /// Poll without sleeping until an event arrives or `until` passes (or a stop is asked);
    /// true when events arrived.
    fn spin(&mut self, events: &mut Events, until: Duration) -> io::Result<bool> {
        loop {
            match self.poll.poll(events, Some(Duration::ZERO)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if !events.is_empty() {
                return Ok(true);
            }
            if self.now() >= until || self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            // Hand the CPU to anything runnable here (the peer this spin waits for may be it).
            // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
            unsafe { libc::sched_yield() };
        }
    }

    pub fn set_unpublish_while_away(&mut self, on: bool) {
        self.unpublish_while_away = on;
    }

    /// A guest left: close the listeners of forwards that can no longer reach their guest.
    fn suspend_unreachable_forwards(&mut self) {
        for (id, rule, guest) in self.net.forwards() {
            if self.suspended.contains(&id) || self.net.forward_guest_reachable(id) != Some(false) {
                continue;
            }
            self.sockets.close_forward(id);
            self.suspended.push(id);
            tracing::info!(
                "{}/{} closed while {}:{} is away",
                rule.host,
                rule.kind(),
                guest.0,
                guest.1
            );
        }
    }

    /// Listen again for forwards whose guest is back.
    fn resume_forwards(&mut self) {
        let forwards = self.net.forwards();
        let mut still = Vec::new();
        for id in std::mem::take(&mut self.suspended) {
            let Some((_, rule, guest)) = forwards.iter().find(|f| f.0 == id) else {
                continue;
            };
            if self.net.forward_guest_reachable(id) != Some(true) {
                still.push(id);
                continue;
            }
            match self.sockets.bind_forward(id, rule, None) {
                Ok(()) => tracing::info!(
                    "{}/{} open again: {}:{} is back",
                    rule.host,
                    rule.kind(),
                    guest.0,
                    guest.1
                ),
                Err(e) => {
                    tracing::warn!("cannot listen again for a returning guest: {e}");
                    still.push(id);
                }
            }
        }
        self.suspended = still;
    }

    /// Attach a guest link; returns its switch port.
    pub fn add_link(&mut self, mut link: Box<dyn GuestLink>) -> io::Result<u16> {
        let port = self
            .net
            .port_up()
            .ok_or_else(|| io::Error::other("the switch has no free port"))?;
        let token = Token(LINK_BASE + usize::from(port));
        self.poll
            .registry()
            .register(link.source(), token, Interest::READABLE)?;
        let offload = link.offloads_checksum();
        self.net.set_checksum_offload(port, offload);
        let offload = if offload { ", checksum offload" } else { "" };
        tracing::info!("guest link up: {} (port {port}{offload})", link.describe());
        let i = usize::from(port);
        if self.links.len() <= i {
            self.links.resize_with(i + 1, || None);
        }
        // Frames already buffered by a handshake may be waiting: read once right away.
        self.links[i] = Some(LinkSlot {
            link,
            more_to_read: true,
            hung_up: false,
            writable_interest: false,
        });
        Ok(port)
    }

    fn remove_link(&mut self, port: u16, why: &str) {
        if let Some(mut slot) = self.links.get_mut(usize::from(port)).and_then(|s| s.take()) {
            let _ = self.poll.registry().deregister(slot.link.source());
            let c = slot.link.counters();
            tracing::info!(
                "guest link down: {} ({why}); frames in {} out {}, dropped (queue full) {}",
                slot.link.describe(),
                c.frames_in,
                c.frames_out,
                c.dropped_queue_full
            );
            self.net.port_down(port);
            if self.unpublish_while_away {
                self.suspend_unreachable_forwards();
            }
        }
    }

    fn read_link(&mut self, now: Duration, port: u16) {
        let Some(slot) = self
            .links
            .get_mut(usize::from(port))
            .and_then(|s| s.as_mut())
        else {
            return;
        };
        let net = &mut self.net;
        let sockets = &mut self.sockets;
        let pcap = &mut self.pcap;
        let mut frames = 0usize;
        let mut bytes = 0usize;
        let result = slot.link.read_frames(READ_BUDGET, &mut |frame, csum| {
            frames += 1;
            bytes += frame.len();
            if let Some(p) = pcap.as_mut() {
                p.record(frame);
            }
            net.on_guest_frame_with(now, port, frame, csum, sockets);
        });
        slot.more_to_read = frames >= READ_BUDGET || slot.hung_up;
        self.batch_bytes += bytes;
        match result {
            Ok(LinkStatus::Open) => {}
            Ok(LinkStatus::Closed) => self.remove_link(port, "guest disconnected"),
            Err(e) => {
                tracing::warn!("closing guest link on port {port}: {e}");
                self.remove_link(port, "protocol error");
            }
        }
    }

    fn accept(&mut self, i: usize) {
        let links = match self.listeners[i].accept() {
            Ok(links) => links,
            Err(e) => {
                tracing::warn!(
                    "accepting a guest on {} failed: {e}",
                    self.listeners[i].describe()
                );
                return;
            }
        };
        for link in links {
            if let Err(e) = self.add_link(link) {
                tracing::warn!("cannot attach guest: {e}");
            }
        }
    }

    /// Ask for WRITABLE events on exactly the links with queued output. Re-registering reports
    /// a link that is writable already at once, so no wake-up is lost.
    fn update_link_interest(&mut self) {
        for (i, slot) in self.links.iter_mut().enumerate() {
            let Some(slot) = slot.as_mut() else {
                continue;
            };
            let want = slot.link.has_pending_output();
            if want == slot.writable_interest {
                continue;
            }
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let token = Token(LINK_BASE + i);
            match self
                .poll
                .registry()
                .reregister(slot.link.source(), token, interest)
            {
                Ok(()) => slot.writable_interest = want,
                // Still retried on the OUTPUT_RETRY tick while output is queued.
                Err(e) => tracing::debug!("re-registering guest link on port {i} failed: {e}"),
            }
        }
    }

    /// Send every queued frame to its link(s), then let the core continue work that waited for room.
    /// `now` is the batch's time: a flush moves frames already built, so one clock read per
    /// batch is close enough for the send times the core records.
    fn flush(&mut self, now: Duration) {
        for _round in 0..64 {
            if self.net.tx().is_empty() {
                break;
            }
            if let Some(p) = self.pcap.as_mut() {
                for (_, f) in self.net.tx().frames() {
                    p.record(f);
                }
            }
            // Each run of frames to one destination goes to the link(s) in one call. A short run
            // is gathered on the stack, so a round trip's flush allocates nothing; a long one
            // (bulk traffic) moves to a vector.
            let mut run = Run::default();
            let mut dest = None;
            for (d, f, c) in self.net.tx().frames_with_csum() {
                self.batch_bytes += f.len();
                if dest.is_some_and(|prev| prev != d) {
                    run.send(&mut self.links, dest);
                }
                dest = Some(d);
                run.push(f, c);
            }
            run.send(&mut self.links, dest);
            self.net.clear_tx();
            self.net.after_flush(now, &mut self.sockets);
        }
        if let Some(p) = self.pcap.as_mut() {
            p.flush();
        }
    }

    fn deliver_dns(&mut self) {
        for stream in self.dns_streams.borrow_mut().drain(..) {
            self.dns.serve_tcp(stream);
        }
        while let Ok(reply) = self.dns_replies.try_recv() {
            self.net.on_dns_reply(
                (
                    reply.client.guest_mac,
                    reply.client.guest_ip,
                    reply.client.guest_port,
                ),
                reply.client.server_ip,
                &reply.payload,
            );
        }
        for q in self.net.take_dns_queries() {
            let client = DnsClient {
                guest_mac: q.guest_mac,
                guest_ip: q.guest_ip,
                guest_port: q.guest_port,
                server_ip: q.server_ip,
            };
            if !self.dns.query_udp(client, q.payload) {
                tracing::debug!("DNS queue full; query dropped");
            }
        }
    }

    /// Run until the stop flag is set.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // How long the last wait lasted before events came (for --busy-poll); MAX after a wait
        // that ended without any.
        let mut last_gap = Duration::MAX;
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.now();
            let busy =
                self.net.has_pending_work() || self.links.iter().flatten().any(|s| s.more_to_read);
            // Datagram sockets do not signal writability when their peer drains: retry queued
            // output on a short tick instead.
            let backlog = self
                .links
                .iter()
                .flatten()
                .any(|s| s.link.has_pending_output());
            let mut deadline = self.net.next_deadline();
            if self.sockets.has_deferred_discards() {
                deadline = deadline.min(self.next_discard_flush);
            }
            if !self.suspended.is_empty() {
                deadline = deadline.min(self.next_resume_check);
            }
            let mut wait = WaitState {
                now,
                deadline,
                busy,
                backlog,
                timer: self.timer.is_some(),
                busy_poll: self.busy_poll,
                last_gap,
                batch_bytes: self.batch_bytes,
            };
            let mut plan = plan_wait(&wait);
            if plan.set_timer {
                if let Some(Err(e)) = self.timer.as_mut().map(|t| t.fire_by(now, deadline)) {
                    tracing::warn!("the loop's timerfd failed ({e}); using poll timeouts");
                    self.timer = None;
                    wait.timer = false;
                    plan = plan_wait(&wait);
                }
            }
            let spin = !plan.spin_for.is_zero() && self.spin_backoff.admit();
            let timeout = plan.timeout;
            let spun = spin && self.spin(&mut events, now + plan.spin_for)?;
            if spin {
                self.spin_backoff.record(spun);
            }
            if !spun {
                let left = if spin {
                    timeout.saturating_sub(self.now().saturating_sub(now))
                } else {
                    timeout
                };
                match self.poll.poll(&mut events, Some(left)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            let waited = now;
            let now = self.now();
            self.batch_bytes = 0;
            last_gap = if events.is_empty() {
                Duration::MAX
            } else {
                now.saturating_sub(waited)
            };
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                } else if t == TIMER {
                    if let Some(timer) = self.timer.as_mut() {
                        timer.fired();
                    }
                } else if let Some(id) = socket_ref(t) {
                    if ev.is_read_closed() || ev.is_error() {
                        self.net.on_socket_hangup(id);
                    }
                    let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                    let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                    self.net
                        .on_socket_event(now, id, readable, writable, &mut self.sockets);
                } else if t.0 >= LINK_BASE {
                    let port = (t.0 - LINK_BASE) as u16;
                    if ev.is_writable() {
                        if let Some(slot) = self
                            .links
                            .get_mut(usize::from(port))
                            .and_then(|s| s.as_mut())
                        {
                            if let Err(e) = slot.link.flush() {
                                tracing::warn!("guest link on port {port} failed: {e}");
                                self.remove_link(port, "write failed");
                                continue;
                            }
                        }
                    }
                    if ev.is_read_closed() || ev.is_error() {
                        if let Some(slot) = self
                            .links
                            .get_mut(usize::from(port))
                            .and_then(|s| s.as_mut())
                        {
                            slot.hung_up = true;
                        }
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        self.read_link(now, port);
                    }
                } else if t.0 >= LISTENER_BASE {
                    self.accept(t.0 - LISTENER_BASE);
                }
            }
            if backlog {
                for port in 0..self.links.len() as u16 {
                    let failed = match self.links[usize::from(port)].as_mut() {
                        Some(slot) if slot.link.has_pending_output() => slot.link.flush().err(),
                        _ => None,
                    };
                    if let Some(e) = failed {
                        tracing::warn!("guest link on port {port} failed: {e}");
                        self.remove_link(port, "write failed");
                    }
                }
            }
            // Links whose read budget ran out last time.
            for port in 0..self.links.len() as u16 {
                if self.links[usize::from(port)]
                    .as_ref()
                    .is_some_and(|s| s.more_to_read)
                {
                    self.read_link(now, port);
                }
            }
            // The batch keeps the time read after the wait. A deadline that passes while it
            // works is seen by the next turn's fresh clock read.
            self.handle_controls();
            if !self.suspended.is_empty() && now >= self.next_resume_check {
                self.next_resume_check = now + RESUME_CHECK;
                self.resume_forwards();
            }
            self.net.end_of_batch(now, &mut self.sockets);
            self.deliver_dns();
            if self.net.next_deadline() <= now {
                self.net.on_timers(now, &mut self.sockets);
            }
            self.flush(now);
            if now >= self.next_discard_flush {
                self.next_discard_flush = now + DISCARD_FLUSH_INTERVAL;
                self.sockets.flush_deferred_discards();
            }
            self.update_link_interest();
            if !self.ping_hint_logged && self.net.ping_refused_by_host() {
                self.ping_hint_logged = true;
                tracing::warn!(
                    "the host refuses unprivileged ICMP sockets, so guests cannot ping outside addresses; \
                     allow them with: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""
                );
            }
        }
        // Unix socket forwards leave no socket file behind.
        for f in self.forward_infos() {
            self.remove_forward(f.id);
        }
        crate::unix_socket::wait_for_removals();
        self.log_counters();
        Ok(())
    }

    pub fn log_counters(&self) {
        let c = self.net.counters();
        tracing::info!(
            "frames from guests {}, TCP flows opened {} closed {}, UDP flows {}, DNS queries {}",
            c.frames_from_guests,
            c.tcp_flows_opened,
            c.tcp_flows_closed,
            c.udp_flows_opened,
            c.dns_queries
        );
        let d = self.dns.counters();
        tracing::info!(
            "DNS: {} UDP and {} TCP queries, {} answered locally, {} forwarded, {} upstream timeouts, {} SERVFAIL, {} dropped",
            d.udp_queries,
            d.tcp_queries,
            d.local_answers,
            d.forwarded,
            d.upstream_timeouts,
            d.servfail,
            d.dropped
        );
        for (reason, n) in c.drops() {
            tracing::info!("dropped {reason}: {n}");
        }
    }
}

/// What the loop knows before it waits (see [`plan_wait`]).
struct WaitState {
    now: Duration,
    /// The earliest deadline (core timers, deferred discards, suspended forwards).
    deadline: Duration,
    /// Work is left over: do not sleep.
    busy: bool,
    /// A link has queued output that no writable event will announce.
    backlog: bool,
    /// The loop's timerfd exists.
    timer: bool,
    busy_poll: Duration,
    /// How long the last wait lasted before events came; MAX after one that ended without.
    last_gap: Duration,
    /// Bytes of frames the last batch moved.
    batch_bytes: usize,
}

#[derive(Debug, PartialEq)]
struct WaitPlan {
    /// The `epoll_wait` timeout.
    timeout: Duration,
    /// Set the timerfd for the deadline (the timeout is then the long safety one).
    set_timer: bool,
    /// Spin this long before sleeping (`--busy-poll`); zero: do not spin.
    spin_for: Duration,
}

/// How the loop waits: a deadline closer than [`MAX_SLEEP`] goes on the timerfd when there is
/// one, else it becomes the timeout; queued link output caps the timeout at [`OUTPUT_RETRY`].
/// `--busy-poll` spins while events come close together (the last wait was shorter than
/// SPIN_GAPS spins) and the last batch was small (request/response, not bulk), never past the
/// deadline or the timeout.
fn plan_wait(w: &WaitState) -> WaitPlan {
    let until_deadline = w.deadline.saturating_sub(w.now);
    let mut timeout = until_deadline.min(MAX_SLEEP);
    let mut set_timer = false;
    if w.busy || timeout.is_zero() {
        timeout = Duration::ZERO;
    } else if until_deadline < MAX_SLEEP && w.timer {
        set_timer = true;
        timeout = MAX_SLEEP;
    }
    if w.backlog {
        timeout = timeout.min(OUTPUT_RETRY);
    }
    let spin = !w.busy_poll.is_zero()
        && !timeout.is_zero()
        && w.last_gap < w.busy_poll * SPIN_GAPS
        && w.batch_bytes <= SPIN_MAX_BYTES;
    let spin_for = if spin {
        w.busy_poll.min(timeout).min(until_deadline)
    } else {
        Duration::ZERO
    };
    WaitPlan {
        timeout,
        set_timer,
        spin_for,
    }
}

/// Exponential back-off of `--busy-poll`: after `n` spins in a row that caught nothing, the next
/// `2^n - 1` eligible waits (n at most [`SPIN_BACKOFF_MAX`]) sleep at once; a spin that catches
/// an event starts over.
#[derive(Debug, Default)]
struct SpinBackoff {
    misses: u32,
    skip: u32,
}

impl SpinBackoff {
    /// May this eligible wait spin? A refused one counts towards the back-off.
    fn admit(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// The spin that [`SpinBackoff::admit`] allowed caught events (`true`) or ran out.
    fn record(&mut self, caught: bool) {
        if caught {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(SPIN_BACKOFF_MAX);
            self.skip = (1 << self.misses) - 1;
        }
    }
}

/// Runs of up to this many frames are gathered on the stack for `send_frames`.
const SHORT_RUN: usize = 16;

/// A run of frames to one destination, with their partial checksums. A short run is gathered
/// on the stack, so a round trip's flush allocates nothing; a long one (bulk traffic) moves to
/// vectors.
struct Run<'a> {
    short: [&'a [u8]; SHORT_RUN],
    short_csum: [Option<PartialCsum>; SHORT_RUN],
    long: Vec<&'a [u8]>,
    long_csum: Vec<Option<PartialCsum>>,
    len: usize,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            short: [&[]; SHORT_RUN],
            short_csum: [None; SHORT_RUN],
            long: Vec::new(),
            long_csum: Vec::new(),
            len: 0,
        }
    }
}

impl<'a> Run<'a> {
    fn push(&mut self, frame: &'a [u8], csum: Option<PartialCsum>) {
        if self.len < SHORT_RUN {
            self.short[self.len] = frame;
            self.short_csum[self.len] = csum;
        } else {
            if self.long.is_empty() {
                self.long.extend_from_slice(&self.short);
                self.long_csum.extend_from_slice(&self.short_csum);
            }
            self.long.push(frame);
            self.long_csum.push(csum);
        }
        self.len += 1;
    }

    /// Hand the run to its destination's link(s) and start a new one.
    fn send(&mut self, links: &mut [Option<LinkSlot>], dest: Option<TxDest>) {
        let (frames, csum) = if self.long.is_empty() {
            (&self.short[..self.len], &self.short_csum[..self.len])
        } else {
            (&self.long[..], &self.long_csum[..])
        };
        match dest {
            _ if frames.is_empty() => {}
            None => {}
            Some(TxDest::Port(p)) => send_to(links, p, frames, csum),
            Some(TxDest::Flood { except }) => {
                // Flooded frames never carry a partial checksum.
                for p in 0..links.len() as u16 {
                    if Some(p) != except {
                        send_to(links, p, frames, &[]);
                    }
                }
            }
        }
        self.long.clear();
        self.long_csum.clear();
        self.len = 0;
    }
}

fn send_to(
    links: &mut [Option<LinkSlot>],
    port: u16,
    frames: &[&[u8]],
    csum: &[Option<PartialCsum>],
) {
    if let Some(slot) = links.get_mut(usize::from(port)).and_then(|s| s.as_mut()) {
        let sent = if csum.iter().any(|c| c.is_some()) {
            slot.link.send_frames_with(frames, csum)
        } else {
            slot.link.send_frames(frames)
        };
        if let Err(e) = sent {
            tracing::debug!("sending to port {port} failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Idle loop with a timerfd, a delayed ACK due in 2 ms, no busy polling.
    fn idle() -> WaitState {
        WaitState {
            now: ms(1000),
            deadline: ms(1002),
            busy: false,
            backlog: false,
            timer: true,
            busy_poll: Duration::ZERO,
            last_gap: Duration::MAX,
            batch_bytes: 0,
        }
    }

    #[test]
    fn a_near_deadline_goes_on_the_timer_not_into_the_timeout() {
        let p = plan_wait(&idle());
        assert!(p.set_timer);
        assert_eq!(p.timeout, MAX_SLEEP);
        assert_eq!(p.spin_for, Duration::ZERO);
    }

    #[test]
    fn without_a_timer_the_deadline_is_the_timeout() {
        let p = plan_wait(&WaitState {
            timer: false,
            ..idle()
        });
        assert!(!p.set_timer);
        assert_eq!(p.timeout, ms(2));
    }

    #[test]
    fn a_far_deadline_sleeps_the_safety_timeout_and_a_due_one_does_not_sleep() {
        let far = plan_wait(&WaitState {
            deadline: ms(1000) + ms(60_000),
            ..idle()
        });
        assert_eq!((far.timeout, far.set_timer), (MAX_SLEEP, false));
        let due = plan_wait(&WaitState {
            deadline: ms(999),
            ..idle()
        });
        assert_eq!((due.timeout, due.set_timer), (Duration::ZERO, false));
        let busy = plan_wait(&WaitState {
            busy: true,
            ..idle()
        });
        assert_eq!((busy.timeout, busy.set_timer), (Duration::ZERO, false));
    }

    #[test]
    fn queued_link_output_is_retried_on_the_short_tick() {
        let p = plan_wait(&WaitState {
            backlog: true,
            ..idle()
        });
        assert!(p.set_timer);
        assert_eq!(p.timeout, OUTPUT_RETRY);
    }

    #[test]
    fn busy_poll_spins_after_small_batches_only() {
        let rr = WaitState {
            busy_poll: us(50),
            last_gap: us(30),
            batch_bytes: 80,
            ..idle()
        };
        assert_eq!(plan_wait(&rr).spin_for, us(50));
        // A bulk batch (64 KiB frames), a long gap, or no --busy-poll: no spin.
        for w in [
            WaitState {
                batch_bytes: 65_536,
                ..rr
            },
            WaitState {
                last_gap: ms(5),
                ..rr
            },
            WaitState {
                busy_poll: Duration::ZERO,
                ..rr
            },
        ] {
            assert_eq!(plan_wait(&w).spin_for, Duration::ZERO);
        }
        // Never past the deadline.
        let near = WaitState {
            deadline: ms(1000) + us(20),
            ..rr
        };
        assert_eq!(plan_wait(&near).spin_for, us(20));
    }

    #[test]
    fn spins_that_catch_nothing_back_off_and_one_that_catches_starts_over() {
        let mut b = SpinBackoff::default();
        // After each of eight misses in a row: how many eligible waits are refused a spin.
        let mut refused = Vec::new();
        assert!(b.admit());
        for _ in 0..8 {
            b.record(false);
            let mut n = 0;
            while !b.admit() {
                n += 1;
            }
            // The wait that was admitted spins and misses again: the next round records it.
            refused.push(n);
        }
        assert_eq!(refused, [1, 3, 7, 15, 31, 63, 63, 63]);
        b.record(true);
        assert!(b.admit());
        b.record(true);
        assert!(
            b.admit(),
            "a spin that caught events does not hold back the next one"
        );
    }
}
