//! Host sockets: the driver's implementation of the core's [`HostSockets`] trait.
//!
//! Theory of operation: every host socket the engines ask for is created non-blocking and
//! close-on-exec and registered with the event loop for readable and writable readiness
//! (edge-triggered) under a token that encodes its [`SocketRef`]. TCP data toward the guest is
//! peeked, never read: with `SO_PEEK_OFF` (TCP from Linux 6.9, unix sockets always) the kernel
//! keeps the peek offset and one `recvmsg(MSG_PEEK)` scatters new bytes straight into frame
//! payloads; without it (TCP before Linux 6.9: Debian 12, Ubuntu 22.04/24.04, RHEL 9), the
//! already-sent prefix is peeked into a scratch buffer and skipped. On that path a peek that
//! finds nothing past what was sent cannot see the end of the stream (a peek returns 0 only on an
//! empty queue), so it asks `poll(POLLRDHUP)` whether the peer's FIN has arrived: if so, the end
//! of the stream follows the queued bytes and the peek reports it. The environment variable
//! `SLIPWAY_TEST_NO_TCP_PEEK_OFF=1` forces this path on any kernel (a test aid).
//! Acknowledged bytes are dropped with `recv(MSG_TRUNC)`, in batches: an acknowledgment of
//! less than [`DISCARD_BATCH_BYTES`] only moves the offset at which the next peek starts, until
//! [`DISCARD_BATCH_COUNT`] of them are pending or [`HostSocketTable::flush_deferred_discards`]
//! runs (the event loop calls it every [`DISCARD_FLUSH_INTERVAL`]). A request/response exchange
//! then costs one system call fewer per round trip, and a socket holds at most that much
//! acknowledged data for at most that long.
//!
//! A socket is closed without `EPOLL_CTL_DEL`: closing its only descriptor removes it from the
//! epoll set.
//!
//! Port forwards' listeners live here too, registered readable under `SocketRef { kind:
//! Listener, index: forward id }`: a TCP listener's clients are accepted straight into the flow
//! slots the TCP engine names, a UDP listener is read and written with `recvfrom`/`sendto`.
//! Binding one turns the kernel's refusal into advice ([`ForwardBindError`]).
//!
//! Limits: sockets are bounded by the engines' flow limits and the process's fd limit (raised to
//! its hard maximum at start-up).

use crate::unix_socket::{SocketFile, SocketFileError, SocketPlace};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slipway_core::flows::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use slipway_core::{ForwardHost, ForwardProto, PortForward};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Tokens at or above this value name host sockets.
pub const SOCKET_TOKEN_BASE: usize = 1 << 32;

pub fn token_for(id: SocketRef) -> Token {
    let kind = match id.kind {
        FlowKind::Tcp => 0usize,
        FlowKind::Udp => 1,
        FlowKind::Icmp => 2,
        FlowKind::Listener => 3,
    };
    Token(SOCKET_TOKEN_BASE + (kind << 28) + id.index as usize)
}

pub fn socket_ref(token: Token) -> Option<SocketRef> {
    let v = token.0.checked_sub(SOCKET_TOKEN_BASE)?;
    let kind = match v >> 28 {
        0 => FlowKind::Tcp,
        1 => FlowKind::Udp,
        2 => FlowKind::Icmp,
        3 => FlowKind::Listener,
        _ => return None,
    };
    Some(SocketRef {
        kind,
        index: (v & ((1 << 28) - 1)) as u32,
    })
}

struct TcpSock {
    fd: OwnedFd,
    /// A real TCP socket (discard with MSG_TRUNC); false for the unix stream to the DNS service.
    is_tcp: bool,
    /// The kernel's peek offset as we last left it; None when SO_PEEK_OFF is unavailable.
    peek_off: Option<usize>,
    /// Acknowledged bytes still at the head of the receive queue (a deferred discard); the
    /// engine's peek offsets count from behind them.
    undiscarded: usize,
    /// Acknowledgments folded into `undiscarded`.
    deferred: u8,
}

/// An acknowledgment of at least this much is discarded at once.
pub const DISCARD_BATCH_BYTES: usize = 64 * 1024;
/// This many smaller acknowledgments are discarded together.
pub const DISCARD_BATCH_COUNT: u8 = 8;
/// The longest a deferred discard waits.
pub const DISCARD_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Hands the guest's end of a DNS-over-TCP connection to the DNS service.
pub type DnsTcpHandler = Box<dyn FnMut(UnixStream)>;

pub struct HostSocketTable {
    registry: Registry,
    tcp: Vec<Option<TcpSock>>,
    udp: Vec<Option<OwnedFd>>,
    ping: Vec<Option<OwnedFd>>,
    listeners: Vec<Option<ForwardListener>>,
    /// Host unix sockets for gateway TCP ports (`TcpTarget::Unix`).
    unix_targets: std::collections::HashMap<u16, PathBuf>,
    /// The next port a unix forward's client appears under.
    next_unix_client_port: u16,
    scratch: Vec<u8>,
    dns_tcp: Option<DnsTcpHandler>,
    guest_api: Option<GuestApiHandler>,
    /// Local addresses outgoing sockets bind to (`--outbound-addr`, `--outbound-addr6`), for
    /// destinations other than loopback.
    outbound_v4: Option<std::net::Ipv4Addr>,
    outbound_v6: Option<std::net::Ipv6Addr>,
    /// TCP sockets that may hold a deferred discard (an entry per deferral that started one;
    /// entries of sockets closed since are harmless).
    deferred_discards: Vec<u32>,
    /// Try `SO_PEEK_OFF` on TCP sockets (false: the fallback of kernels before 6.9, forced).
    tcp_peek_off: bool,
}

/// Set to 1 to use the peek path of kernels without TCP `SO_PEEK_OFF` on any kernel (a test
/// aid: CI runs tests on both paths).
pub const NO_TCP_PEEK_OFF_ENV: &str = "SLIPWAY_TEST_NO_TCP_PEEK_OFF";

/// Hands a guest's connection to the gateway's API port (and the guest's address) to the API.
pub type GuestApiHandler = Box<dyn FnMut(UnixStream, std::net::Ipv4Addr) -> bool>;

/// The host side of one port forward.
enum ForwardListener {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    /// A unix stream socket whose clients become TCP connections to the guest; its file is
    /// removed (off this thread) when the forward ends.
    Unix(UnixForwardListener),
}

impl ForwardListener {
    fn fd(&self) -> RawFd {
        match self {
            ForwardListener::Tcp(l) => l.as_raw_fd(),
            ForwardListener::Udp(u) => u.as_raw_fd(),
            ForwardListener::Unix(u) => u.listener.as_raw_fd(),
        }
    }
}

/// The listening socket of a unix forward and the file it made. Bound off the event loop
/// ([`bind_unix_forward`]); when dropped on the loop it goes to
/// [`crate::unix_socket::remove_later`].
#[derive(Debug)]
pub struct UnixForwardListener {
    listener: std::os::unix::net::UnixListener,
    file: Option<SocketFile>,
}

impl UnixForwardListener {
    pub fn path(&self) -> PathBuf {
        self.file.as_ref().map(SocketFile::path).unwrap_or_default()
    }
}

impl Drop for UnixForwardListener {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            crate::unix_socket::remove_later(file);
        }
    }
}

/// Bind a unix forward's listener at `place` with file mode `mode` (less the umask): a stale
/// socket there is replaced, a live one or any other kind of file refused. File-system work:
/// call it off the event loop.
pub fn bind_unix_forward(
    place: &SocketPlace,
    mode: u32,
) -> Result<UnixForwardListener, ForwardBindError> {
    let (socket, file) = place.bind(Type::STREAM, mode)?;
    let io = |e| ForwardBindError::UnixSocket(SocketFileError::io_at(place.path(), e));
    socket.listen(LISTEN_BACKLOG).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    Ok(UnixForwardListener {
        listener: OwnedFd::from(socket).into(),
        file: Some(file),
    })
}

/// Ports under which clients of unix socket forwards appear to guests (with the host alias).
const UNIX_CLIENT_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// The mode of the socket files of unix forwards the owner makes (less the umask, as `bind`).
pub const UNIX_FORWARD_MODE: u32 = 0o777;

/// Pending connections a TCP forward's listener queues in the kernel.
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Why a forward's host address could not be bound, said so that a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum ForwardBindError {
    #[error("{proto} port {addr} is already in use by another process (or another forward); choose another host port")]
    InUse {
        proto: ForwardProto,
        addr: SocketAddr,
    },
    #[error("binding {proto} port {addr} is not permitted: ports below 1024 need root or CAP_NET_BIND_SERVICE (or a lower net.ipv4.ip_unprivileged_port_start); choose a port of 1024 or more")]
    Privileged {
        proto: ForwardProto,
        addr: SocketAddr,
    },
    #[error("{ip} is not an address of this host; listen on 127.0.0.1, ::1, 0.0.0.0, :: or one of the host's own addresses", ip = addr.ip())]
    NotLocal { addr: SocketAddr },
    #[error(transparent)]
    UnixSocket(#[from] SocketFileError),
    #[error("a unix socket forward carries TCP only")]
    UnixNotTcp,
    #[error("cannot listen on {proto} {addr}: {source}")]
    Other {
        proto: ForwardProto,
        addr: SocketAddr,
        source: io::Error,
    },
}

impl ForwardBindError {
    fn new(proto: ForwardProto, addr: SocketAddr, e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EADDRINUSE) => Self::InUse { proto, addr },
            Some(libc::EACCES) | Some(libc::EPERM) => Self::Privileged { proto, addr },
            Some(libc::EADDRNOTAVAIL) => Self::NotLocal { addr },
            _ => Self::Other {
                proto,
                addr,
                source: e,
            },
        }
    }
}

fn slot<T>(v: &mut Vec<Option<T>>, index: u32) -> &mut Option<T> {
    let i = index as usize;
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    &mut v[i]
}

fn not_open() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such host socket")
}

fn cvt(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

impl HostSocketTable {
    pub fn new(registry: Registry, dns_tcp: Option<DnsTcpHandler>) -> Self {
        Self {
            registry,
            tcp: Vec::new(),
            udp: Vec::new(),
            ping: Vec::new(),
            listeners: Vec::new(),
            unix_targets: Default::default(),
            next_unix_client_port: *UNIX_CLIENT_PORTS.start(),
            scratch: Vec::new(),
            dns_tcp,
            guest_api: None,
            outbound_v4: None,
            outbound_v6: None,
            deferred_discards: Vec::new(),
            tcp_peek_off: !forced_no_peek_off(),
        }
    }

    /// Whether TCP sockets try `SO_PEEK_OFF` (tests of the fallback turn it off).
    pub fn set_tcp_peek_off(&mut self, on: bool) {
        self.tcp_peek_off = on;
    }

    /// True when some socket holds acknowledged data not yet discarded.
    pub fn has_deferred_discards(&self) -> bool {
        !self.deferred_discards.is_empty()
    }

    /// Discard every deferred acknowledgment now.
    pub fn flush_deferred_discards(&mut self) {
        let mut list = std::mem::take(&mut self.deferred_discards);
        for &index in &list {
            if let Some(sock) = self.tcp.get_mut(index as usize).and_then(|s| s.as_mut()) {
                // An error surfaces as the socket's next readiness event.
                let _ = discard_now(sock, &mut self.scratch);
            }
        }
        list.clear();
        self.deferred_discards = list;
    }

    /// Outgoing sockets to non-loopback destinations bind to these local addresses first.
    pub fn set_outbound(&mut self, v4: Option<std::net::Ipv4Addr>, v6: Option<std::net::Ipv6Addr>) {
        self.outbound_v4 = v4;
        self.outbound_v6 = v6;
    }

    /// Bind `s` to the outbound address for `dst`'s family, if one is set and `dst` is not
    /// loopback (the host-loopback alias needs no chosen source).
    fn bind_outbound(&self, s: &Socket, dst: &SocketAddr) -> io::Result<()> {
        if dst.ip().is_loopback() {
            return Ok(());
        }
        let local = match dst {
            SocketAddr::V4(_) => self.outbound_v4.map(std::net::IpAddr::V4),
            SocketAddr::V6(_) => self.outbound_v6.map(std::net::IpAddr::V6),
        };
        if let Some(ip) = local {
            s.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        Ok(())
    }

    /// A non-blocking, close-on-exec datagram socket (UDP or ICMP echo) connected to `dst`.
    fn open_connected_dgram(&self, dst: SocketAddr, proto: Protocol) -> io::Result<OwnedFd> {
        let s = Socket::new(
            domain_of(&dst),
            Type::DGRAM.nonblocking().cloexec(),
            Some(proto),
        )?;
        self.bind_outbound(&s, &dst)?;
        s.connect(&SockAddr::from(dst))?;
        Ok(OwnedFd::from(s))
    }

    /// Bind forward `id`'s host address and register its listener (non-blocking, close-on-exec;
    /// TCP with SO_REUSEADDR, `[::]` dual-stack as the kernel's default has it).
    /// A unix forward's socket may come `bound` already (see [`bind_unix_forward`]).
    pub fn bind_forward(
        &mut self,
        id: u32,
        rule: &PortForward,
        bound: Option<UnixForwardListener>,
    ) -> Result<(), ForwardBindError> {
        let addr = match &rule.host {
            ForwardHost::Inet(a) => *a,
            ForwardHost::Unix(path) => return self.open_unix_forward(id, rule.proto, path, bound),
        };
        let err = |e| ForwardBindError::new(rule.proto, addr, e);
        let (ty, proto) = match rule.proto {
            ForwardProto::Tcp => (Type::STREAM, Protocol::TCP),
            ForwardProto::Udp => (Type::DGRAM, Protocol::UDP),
        };
        let s =
            Socket::new(domain_of(&addr), ty.nonblocking().cloexec(), Some(proto)).map_err(err)?;
        if rule.proto == ForwardProto::Tcp {
            s.set_reuse_address(true).map_err(err)?;
        }
        s.bind(&SockAddr::from(addr)).map_err(err)?;
        let listener = match rule.proto {
            ForwardProto::Tcp => {
                s.listen(LISTEN_BACKLOG).map_err(err)?;
                ForwardListener::Tcp(s.into())
            }
            ForwardProto::Udp => ForwardListener::Udp(s.into()),
        };
        self.add_listener(id, listener).map_err(err)
    }

    fn add_listener(&mut self, id: u32, listener: ForwardListener) -> io::Result<()> {
        let sref = SocketRef {
            kind: FlowKind::Listener,
            index: id,
        };
        self.registry.register(
            &mut SourceFd(&listener.fd()),
            token_for(sref),
            Interest::READABLE,
        )?;
        *slot(&mut self.listeners, id) = Some(listener);
        Ok(())
    }

    /// A unix forward: `bound` if its socket was bound off the event loop (the API's forwards),
    /// else bound here (at start-up, and when a suspended forward opens again).
    fn open_unix_forward(
        &mut self,
        id: u32,
        proto: ForwardProto,
        path: &Path,
        bound: Option<UnixForwardListener>,
    ) -> Result<(), ForwardBindError> {
        if proto != ForwardProto::Tcp {
            return Err(ForwardBindError::UnixNotTcp);
        }
        let l = match bound {
            Some(l) => l,
            None => bind_unix_forward(&SocketPlace::of_path(path)?, UNIX_FORWARD_MODE)?,
        };
        let io = |e| ForwardBindError::UnixSocket(SocketFileError::io_at(path.to_owned(), e));
        self.add_listener(id, ForwardListener::Unix(l)).map_err(io)
    }

    /// Guest connections to the gateway's API port go to `handler` (false: refused, busy).
    pub fn set_guest_api(&mut self, handler: GuestApiHandler) {
        self.guest_api = Some(handler);
    }

    /// Connections of the guest to the gateway's TCP `port` go to the unix socket at `path`.
    pub fn set_unix_target(&mut self, port: u16, path: PathBuf) {
        self.unix_targets.insert(port, path);
    }

    /// The local address forward `id` listens on (the real port when 0 was asked for).
    pub fn forward_local_addr(&self, id: u32) -> Option<ForwardHost> {
        match self.listeners.get(id as usize)?.as_ref()? {
            ForwardListener::Tcp(l) => l.local_addr().ok().map(ForwardHost::Inet),
            ForwardListener::Udp(u) => u.local_addr().ok().map(ForwardHost::Inet),
            ForwardListener::Unix(u) => Some(ForwardHost::Unix(u.path())),
        }
    }

    /// Stop listening for forward `id`.
    pub fn close_forward(&mut self, id: u32) {
        if let Some(l) = self.listeners.get_mut(id as usize).and_then(|s| s.take()) {
            self.deregister(l.fd());
            // A unix forward's file is removed on another thread (UnixForwardListener's drop).
        }
    }

    fn udp_listener(&self, listener: SocketRef) -> io::Result<&std::net::UdpSocket> {
        match self.listeners.get(listener.index as usize) {
            Some(Some(ForwardListener::Udp(u))) => Ok(u),
            _ => Err(not_open()),
        }
    }

    fn register(&self, fd: RawFd, id: SocketRef) -> io::Result<()> {
        self.registry.register(
            &mut SourceFd(&fd),
            token_for(id),
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    fn deregister(&self, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
    }

    fn tcp_sock(&mut self, id: SocketRef) -> io::Result<&mut TcpSock> {
        self.tcp
            .get_mut(id.index as usize)
            .and_then(|s| s.as_mut())
            .ok_or_else(not_open)
    }

    fn open_tcp_fd(&mut self, id: SocketRef, fd: OwnedFd, is_tcp: bool) -> io::Result<()> {
        // SAFETY: fd is a valid socket we own; the option value is a properly sized c_int.
        let peek = (self.tcp_peek_off || !is_tcp)
            && unsafe {
                let zero: libc::c_int = 0;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PEEK_OFF,
                    &zero as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            };
        self.register(fd.as_raw_fd(), id)?;
        *slot(&mut self.tcp, id.index) = Some(TcpSock {
            fd,
            is_tcp,
            peek_off: peek.then_some(0),
            undiscarded: 0,
            deferred: 0,
        });
        Ok(())
    }
}

fn domain_of(addr: &SocketAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

impl HostSockets for HostSocketTable {
    fn tcp_connect(&mut self, id: SocketRef, target: TcpTarget) -> io::Result<ConnectProgress> {
        match target {
            TcpTarget::DnsService => {
                let (ours, theirs) = UnixStream::pair()?;
                ours.set_nonblocking(true)?;
                let Some(handler) = self.dns_tcp.as_mut() else {
                    return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
                };
                handler(theirs);
                self.open_tcp_fd(id, OwnedFd::from(ours), false)?;
                Ok(ConnectProgress::Connected)
            }
            TcpTarget::GuestApi(IpAddr::V6(_)) => {
                // gvproxy's guest API has no IPv6 form.
                Err(io::Error::from_raw_os_error(libc::ECONNREFUSED))
            }
            TcpTarget::GuestApi(IpAddr::V4(guest)) => {
                let (ours, theirs) = UnixStream::pair()?;
                ours.set_nonblocking(true)?;
                theirs.set_nonblocking(true)?;
                let refused = || io::Error::from_raw_os_error(libc::ECONNREFUSED);
                let handler = self.guest_api.as_mut().ok_or_else(refused)?;
                if !handler(theirs, guest) {
                    return Err(refused());
                }
                self.open_tcp_fd(id, OwnedFd::from(ours), false)?;
                Ok(ConnectProgress::Connected)
            }
            TcpTarget::Unix(port) => {
                let path = self
                    .unix_targets
                    .get(&port)
                    .cloned()
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::ECONNREFUSED))?;
                let s = Socket::new(Domain::UNIX, Type::STREAM.nonblocking().cloexec(), None)?;
                let progress = match s.connect(&SockAddr::unix(&path)?) {
                    Ok(()) => ConnectProgress::Connected,
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                        ConnectProgress::InProgress
                    }
                    // No such socket, nobody listening, or its backlog full: refused.
                    Err(_) => return Err(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
                };
                self.open_tcp_fd(id, OwnedFd::from(s), false)?;
                Ok(progress)
            }
            TcpTarget::Host(addr) => {
                let s = Socket::new(
                    domain_of(&addr),
                    Type::STREAM.nonblocking().cloexec(),
                    Some(Protocol::TCP),
                )?;
                s.set_tcp_nodelay(true)?;
                self.bind_outbound(&s, &addr)?;
                let progress = match s.connect(&SockAddr::from(addr)) {
                    Ok(()) => ConnectProgress::Connected,
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                        if addr.ip().is_loopback() {
                            loopback_connect_progress(&s)?
                        } else {
                            ConnectProgress::InProgress
                        }
                    }
                    Err(e) => return Err(e),
                };
                self.open_tcp_fd(id, OwnedFd::from(s), true)?;
                Ok(progress)
            }
        }
    }

    fn tcp_connect_result(&mut self, id: SocketRef) -> io::Result<()> {
        let fd = self.tcp_sock(id)?.fd.as_raw_fd();
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd, pointers to properly sized locals.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        Ok(())
    }

    fn tcp_write(&mut self, id: SocketRef, data: &[u8]) -> io::Result<usize> {
        send_nonblocking(self.tcp_sock(id)?.fd.as_raw_fd(), data)
    }

    fn tcp_peek(
        &mut self,
        id: SocketRef,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> io::Result<usize> {
        let sock = self
            .tcp
            .get_mut(id.index as usize)
            .and_then(|s| s.as_mut())
            .ok_or_else(not_open)?;
        let fd = sock.fd.as_raw_fd();
        let offset = offset + sock.undiscarded;
        if let Some(current) = sock.peek_off {
            if current != offset {
                let v = offset as libc::c_int;
                // SAFETY: valid fd; c_int option value.
                let r = unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_PEEK_OFF,
                        &v as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                sock.peek_off = Some(offset);
            }
            // SAFETY: msghdr points at the caller's iovecs (IoSliceMut is ABI-compatible with iovec).
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = bufs.as_mut_ptr() as *mut libc::iovec;
                msg.msg_iovlen = bufs.len();
                cvt(libc::recvmsg(
                    fd,
                    &mut msg,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                ))?
            };
            sock.peek_off = Some(offset + n);
            return Ok(n);
        }
        // No SO_PEEK_OFF: peek the sent prefix plus the wanted bytes, copy out the tail.
        let want: usize = bufs.iter().map(|b| b.len()).sum();
        self.scratch.resize(offset + want, 0);
        // SAFETY: valid fd, scratch is offset + want bytes long.
        let n = cvt(unsafe {
            libc::recv(
                fd,
                self.scratch.as_mut_ptr() as *mut libc::c_void,
                offset + want,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        })?;
        if n == 0 {
            return Ok(0);
        }
        if n <= offset {
            // Nothing new. If the peer's FIN has arrived, the stream ends after these bytes.
            if n == offset && peer_shut_down(fd)? {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut src = &self.scratch[offset..n];
        let mut copied = 0;
        for b in bufs.iter_mut() {
            if src.is_empty() {
                break;
            }
            let k = b.len().min(src.len());
            b[..k].copy_from_slice(&src[..k]);
            src = &src[k..];
            copied += k;
        }
        Ok(copied)
    }

    fn tcp_discard(&mut self, id: SocketRef, len: usize) -> io::Result<()> {
        let sock = self
            .tcp
            .get_mut(id.index as usize)
            .and_then(|s| s.as_mut())
            .ok_or_else(not_open)?;
        sock.undiscarded += len;
        sock.deferred = sock.deferred.saturating_add(1);
        if sock.undiscarded < DISCARD_BATCH_BYTES && sock.deferred < DISCARD_BATCH_COUNT {
            if sock.deferred == 1 {
                self.deferred_discards.push(id.index);
            }
            return Ok(());
        }
        discard_now(sock, &mut self.scratch)
    }

    fn tcp_send_space(&mut self, id: SocketRef) -> usize {
        let Ok(sock) = self.tcp_sock(id) else {
            return 0;
        };
        let fd = sock.fd.as_raw_fd();
        // SO_MEMINFO reports the send buffer and the memory queued in it exactly as the kernel
        // judges them when a write arrives (truesize, not payload).
        let mut info = [0u32; 9];
        let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
        // SAFETY: valid fd; the kernel writes at most `len` bytes into `info`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 || (len as usize) < 6 * 4 {
            return 0;
        }
        let (sndbuf, queued) = (info[3] as usize, info[5] as usize);
        // Queued memory includes per-buffer overhead; keep a quarter in reserve so a guest that
        // fills the window rarely meets a refused write (each costs it a retransmission).
        sndbuf.saturating_sub(queued) / 4 * 3
    }

    fn tcp_shutdown_write(&mut self, id: SocketRef) {
        if let Ok(s) = self.tcp_sock(id) {
            // SAFETY: valid fd.
            unsafe { libc::shutdown(s.fd.as_raw_fd(), libc::SHUT_WR) };
        }
    }

    fn tcp_close(&mut self, id: SocketRef, abort: bool) {
        if let Some(s) = self.tcp.get_mut(id.index as usize).and_then(|s| s.take()) {
            // No EPOLL_CTL_DEL: dropping the only descriptor takes it out of the epoll set.
            let fd = s.fd.as_raw_fd();
            if abort {
                let l = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: valid fd; linger struct.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &l as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
            }
        }
    }

    fn udp_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<()> {
        let fd = self.open_connected_dgram(dst, Protocol::UDP)?;
        self.registry.register(
            &mut SourceFd(&fd.as_raw_fd()),
            token_for(id),
            Interest::READABLE,
        )?;
        *slot(&mut self.udp, id.index) = Some(fd);
        Ok(())
    }

    fn udp_send(&mut self, id: SocketRef, payload: &[u8]) -> io::Result<usize> {
        send_nonblocking(fd_in(&self.udp, id)?, payload)
    }

    fn udp_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        recv_nonblocking(fd_in(&self.udp, id)?, buf)
    }

    fn udp_close(&mut self, id: SocketRef) {
        if let Some(fd) = self.udp.get_mut(id.index as usize).and_then(|s| s.take()) {
            self.deregister(fd.as_raw_fd());
        }
    }

    fn ping_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<u16> {
        let proto = if dst.is_ipv4() {
            Protocol::ICMPV4
        } else {
            Protocol::ICMPV6
        };
        let fd = self.open_connected_dgram(dst, proto)?;
        // The kernel's echo identifier for this socket is its local "port".
        let ident = socket2::SockRef::from(&fd)
            .local_addr()?
            .as_socket()
            .map_or(0, |a| a.port());
        self.registry.register(
            &mut SourceFd(&fd.as_raw_fd()),
            token_for(id),
            Interest::READABLE,
        )?;
        *slot(&mut self.ping, id.index) = Some(fd);
        Ok(ident)
    }

    fn ping_send(&mut self, id: SocketRef, message: &[u8]) -> io::Result<usize> {
        send_nonblocking(fd_in(&self.ping, id)?, message)
    }

    fn ping_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        recv_nonblocking(fd_in(&self.ping, id)?, buf)
    }

    fn ping_close(&mut self, id: SocketRef) {
        if let Some(fd) = self.ping.get_mut(id.index as usize).and_then(|s| s.take()) {
            self.deregister(fd.as_raw_fd());
        }
    }

    fn tcp_accept(&mut self, listener: SocketRef, id: SocketRef) -> io::Result<SocketAddr> {
        // std's accept is accept4(SOCK_CLOEXEC).
        match self.listeners.get(listener.index as usize) {
            Some(Some(ForwardListener::Tcp(l))) => {
                let (stream, client) = l.accept()?;
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                self.open_tcp_fd(id, OwnedFd::from(stream), true)?;
                Ok(client)
            }
            Some(Some(ForwardListener::Unix(u))) => {
                let (stream, _) = u.listener.accept()?;
                stream.set_nonblocking(true)?;
                self.open_tcp_fd(id, OwnedFd::from(stream), false)?;
                // A unix client has no address: it appears as a loopback client (the host
                // alias, to the guest) with a port of its own.
                let port = self.next_unix_client_port;
                self.next_unix_client_port = if port == *UNIX_CLIENT_PORTS.end() {
                    *UNIX_CLIENT_PORTS.start()
                } else {
                    port + 1
                };
                Ok(SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port))
            }
            _ => Err(not_open()),
        }
    }

    fn udp_recv_from(
        &mut self,
        listener: SocketRef,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        self.udp_listener(listener)?.recv_from(buf)
    }

    fn udp_send_to(
        &mut self,
        listener: SocketRef,
        to: SocketAddr,
        payload: &[u8],
    ) -> io::Result<usize> {
        self.udp_listener(listener)?.send_to(payload, to)
    }
}

/// Whether [`NO_TCP_PEEK_OFF_ENV`] asks for the fallback (said once in the log).
fn forced_no_peek_off() -> bool {
    let forced = std::env::var_os(NO_TCP_PEEK_OFF_ENV).is_some_and(|v| v == "1");
    if forced {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "{NO_TCP_PEEK_OFF_ENV}=1: TCP data is peeked without SO_PEEK_OFF, as on kernels before 6.9 (a test aid)"
            )
        });
    }
    forced
}

/// Whether the peer of the connected stream `fd` has shut down its sending side (its FIN has
/// arrived: no byte will follow those queued).
fn peer_shut_down(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    if unsafe { libc::poll(&mut pfd, 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0)
}

/// The fd of an open datagram socket in `table`.
/// A non-blocking connect to loopback has usually finished by the time `connect()` returns
/// (the handshake runs in the caller's softirq): look once, so the guest's SYN-ACK goes out in
/// this batch instead of after another trip through the event loop.
fn loopback_connect_progress(s: &Socket) -> io::Result<ConnectProgress> {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    if r == 1 && pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
        // Refused (nobody listens on that port): the error the caller turns into a RST.
        return Err(s
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(if r == 1 && pfd.revents & libc::POLLOUT != 0 {
        ConnectProgress::Connected
    } else {
        ConnectProgress::InProgress
    })
}

/// Drop a socket's acknowledged bytes (`undiscarded`) from its receive queue.
fn discard_now(sock: &mut TcpSock, scratch: &mut Vec<u8>) -> io::Result<()> {
    let len = std::mem::take(&mut sock.undiscarded);
    sock.deferred = 0;
    let fd = sock.fd.as_raw_fd();
    let mut left = len;
    while left > 0 {
        let n = if sock.is_tcp {
            // SAFETY: on TCP, MSG_TRUNC with a null buffer drops bytes from the receive queue.
            cvt(unsafe {
                libc::recv(
                    fd,
                    std::ptr::null_mut(),
                    left,
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            })?
        } else {
            // Unix streams have no discard: read into scratch space.
            let chunk = left.min(1 << 16);
            scratch.resize(chunk.max(scratch.len()), 0);
            // SAFETY: valid fd; scratch holds at least `chunk` bytes.
            cvt(unsafe {
                libc::recv(
                    fd,
                    scratch.as_mut_ptr() as *mut libc::c_void,
                    chunk,
                    libc::MSG_DONTWAIT,
                )
            })?
        };
        if n == 0 {
            break;
        }
        left -= n.min(left);
    }
    // The kernel moves the peek offset back by what was consumed.
    if let Some(off) = sock.peek_off.as_mut() {
        *off = off.saturating_sub(len);
    }
    Ok(())
}

fn fd_in(table: &[Option<OwnedFd>], id: SocketRef) -> io::Result<RawFd> {
    table
        .get(id.index as usize)
        .and_then(|s| s.as_ref())
        .map(|fd| fd.as_raw_fd())
        .ok_or_else(not_open)
}

fn send_nonblocking(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: fd is an open socket of ours; the pointer and length describe `data`.
    cvt(unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    })
}

fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: fd is an open socket of ours; the pointer and length describe `buf`.
    cvt(unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tokens_round_trip() {
        for kind in [
            FlowKind::Tcp,
            FlowKind::Udp,
            FlowKind::Icmp,
            FlowKind::Listener,
        ] {
            for index in [0u32, 1, 65535, (1 << 28) - 1] {
                let id = SocketRef { kind, index };
                assert_eq!(socket_ref(token_for(id)), Some(id));
            }
        }
        assert_eq!(socket_ref(Token(5)), None);
    }

    /// The peek-offset bookkeeping the TCP engine relies on, against a real kernel socket.
    fn peek_and_discard_sequence(table: &mut HostSocketTable, id: SocketRef, mut peer: impl Write) {
        peer.write_all(b"0123456789").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut a = [0u8; 4];
        let n = table
            .tcp_peek(id, 0, &mut [IoSliceMut::new(&mut a)])
            .unwrap();
        assert_eq!(&a[..n], b"0123");
        let (mut b, mut c) = ([0u8; 2], [0u8; 2]);
        let n = table
            .tcp_peek(
                id,
                4,
                &mut [IoSliceMut::new(&mut b), IoSliceMut::new(&mut c)],
            )
            .unwrap();
        assert_eq!((n, &b, &c), (4, b"45", b"67"));
        table.tcp_discard(id, 3).unwrap();
        // Offset 5 past the new head is "8".
        let mut d = [0u8; 8];
        let n = table
            .tcp_peek(id, 5, &mut [IoSliceMut::new(&mut d)])
            .unwrap();
        assert_eq!(&d[..n], b"89");
        // Rewind (retransmission) to the head.
        let n = table
            .tcp_peek(id, 0, &mut [IoSliceMut::new(&mut d)])
            .unwrap();
        assert_eq!(&d[..n], b"3456789");
        drop(peer);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let n = table
            .tcp_peek(id, 7, &mut [IoSliceMut::new(&mut d)])
            .unwrap();
        assert_eq!(n, 0, "end of stream after all data");
        table.tcp_close(id, false);
    }

    /// Bytes in a socket's receive queue (SIOCINQ).
    fn queued(table: &HostSocketTable, id: SocketRef) -> usize {
        let fd = table.tcp[id.index as usize]
            .as_ref()
            .unwrap()
            .fd
            .as_raw_fd();
        let mut n: libc::c_int = 0;
        // SAFETY: valid fd; FIONREAD writes one c_int.
        assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
        n as usize
    }

    #[test]
    fn small_discards_are_deferred_and_batched_without_moving_the_stream() {
        let poll = mio::Poll::new().unwrap();
        let mut table = HostSocketTable::new(poll.registry().try_clone().unwrap(), None);
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let id = SocketRef {
            kind: FlowKind::Tcp,
            index: 1,
        };
        table.open_tcp_fd(id, OwnedFd::from(ours), false).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        theirs.write_all(&data).unwrap();
        // Acknowledge one byte at a time: the first DISCARD_BATCH_COUNT - 1 stay queued.
        let mut head = 0usize;
        for _ in 0..DISCARD_BATCH_COUNT - 1 {
            table.tcp_discard(id, 1).unwrap();
            head += 1;
            let mut b = [0u8; 4];
            let n = table
                .tcp_peek(id, 0, &mut [IoSliceMut::new(&mut b)])
                .unwrap();
            assert_eq!(
                &b[..n],
                &data[head..head + 4],
                "peeks start behind the deferred bytes"
            );
        }
        assert_eq!(queued(&table, id), 100, "nothing discarded yet");
        assert!(table.has_deferred_discards());
        table.tcp_discard(id, 1).unwrap();
        head += 1;
        assert_eq!(queued(&table, id), 100 - head, "the batch went at once");
        // A flush drops what is pending; the stream position is unchanged.
        table.tcp_discard(id, 2).unwrap();
        head += 2;
        assert_eq!(queued(&table, id), 100 - head + 2);
        table.flush_deferred_discards();
        assert!(!table.has_deferred_discards());
        assert_eq!(queued(&table, id), 100 - head);
        let mut b = [0u8; 4];
        let n = table
            .tcp_peek(id, 1, &mut [IoSliceMut::new(&mut b)])
            .unwrap();
        assert_eq!(&b[..n], &data[head + 1..head + 5]);
        // A large acknowledgment is discarded at once.
        let big = vec![7u8; DISCARD_BATCH_BYTES];
        theirs.set_nonblocking(false).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| theirs.write_all(&big).unwrap());
            let mut got = 0;
            while got < DISCARD_BATCH_BYTES + 100 - head {
                got = queued(&table, id);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        table.tcp_discard(id, DISCARD_BATCH_BYTES).unwrap();
        assert_eq!(queued(&table, id), 100 - head);
        table.tcp_close(id, false);
        assert_eq!(table.deferred_discards.len(), 0);
    }

    #[test]
    fn peek_offset_tracks_discards_on_unix_streams() {
        let poll = mio::Poll::new().unwrap();
        let mut table = HostSocketTable::new(poll.registry().try_clone().unwrap(), None);
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let id = SocketRef {
            kind: FlowKind::Tcp,
            index: 3,
        };
        table.open_tcp_fd(id, OwnedFd::from(ours), false).unwrap();
        peek_and_discard_sequence(&mut table, id, theirs);
    }

    #[test]
    fn loopback_connects_finish_at_once_and_refusals_are_errors_at_once() {
        let poll = mio::Poll::new().unwrap();
        let mut table = HostSocketTable::new(poll.registry().try_clone().unwrap(), None);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = TcpTarget::Host(listener.local_addr().unwrap());
        // The loopback handshake runs inside connect() unless softirqs were deferred to
        // ksoftirqd (a loaded machine): most of the attempts must have finished.
        let mut connected = 0;
        for index in 0..20 {
            let id = SocketRef {
                kind: FlowKind::Tcp,
                index,
            };
            if table.tcp_connect(id, target).unwrap() == ConnectProgress::Connected {
                connected += 1;
            }
            listener.accept().unwrap();
            table.tcp_close(id, true);
        }
        assert!(connected >= 10, "{connected} of 20 connected at once");
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let id = SocketRef {
            kind: FlowKind::Tcp,
            index: 30,
        };
        match table.tcp_connect(id, TcpTarget::Host(closed)) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED)),
            Ok(p) => assert_eq!(
                p,
                ConnectProgress::InProgress,
                "a refused connect never succeeds"
            ),
        }
    }

    #[test]
    fn peek_offset_tracks_discards_on_tcp_loopback() {
        tcp_loopback_peeks(true);
    }

    /// Kernels before 6.9 (no TCP SO_PEEK_OFF): the same sequence, the end of the stream seen
    /// behind bytes already sent and behind a deferred discard.
    #[test]
    fn peeks_without_peek_off_track_discards_and_see_the_end_of_the_stream() {
        tcp_loopback_peeks(false);
    }

    /// A table with `peek_off` as asked and one host TCP socket at `index`, connected to a
    /// loopback peer (returned with the poll the table registers with).
    fn connected_table(
        peek_off: bool,
        index: u32,
    ) -> (mio::Poll, HostSocketTable, SocketRef, std::net::TcpStream) {
        let poll = mio::Poll::new().unwrap();
        let mut table = HostSocketTable::new(poll.registry().try_clone().unwrap(), None);
        table.set_tcp_peek_off(peek_off);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let id = SocketRef {
            kind: FlowKind::Tcp,
            index,
        };
        let progress = table
            .tcp_connect(id, TcpTarget::Host(listener.local_addr().unwrap()))
            .unwrap();
        let (peer, _) = listener.accept().unwrap();
        if progress == ConnectProgress::InProgress {
            std::thread::sleep(std::time::Duration::from_millis(20));
            table.tcp_connect_result(id).unwrap();
        }
        (poll, table, id, peer)
    }

    fn tcp_loopback_peeks(peek_off: bool) {
        let (_poll, mut table, id, peer) = connected_table(peek_off, 7);
        if !peek_off {
            assert_eq!(table.tcp[7].as_ref().unwrap().peek_off, None);
        }
        peek_and_discard_sequence(&mut table, id, peer);
    }

    /// "Answer, then close" on the fallback path: the reply is sent, then acknowledged in a
    /// deferred discard, and the peek that follows reports the end of the stream (the FIN the
    /// guest must get) instead of "nothing yet".
    #[test]
    fn without_peek_off_a_reply_then_close_ends_the_stream() {
        let (_poll, mut table, id, mut peer) = connected_table(false, 2);
        peer.write_all(b"hi\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = [0u8; 16];
        let n = table
            .tcp_peek(id, 0, &mut [IoSliceMut::new(&mut b)])
            .unwrap();
        assert_eq!(&b[..n], b"hi\n");
        // Still open: nothing new is "would block", not the end.
        let e = table
            .tcp_peek(id, 3, &mut [IoSliceMut::new(&mut b)])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(peer);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            table
                .tcp_peek(id, 3, &mut [IoSliceMut::new(&mut b)])
                .unwrap(),
            0
        );
        // Acknowledged but not yet discarded (deferred): still the end.
        table.tcp_discard(id, 3).unwrap();
        assert!(table.has_deferred_discards());
        assert_eq!(
            table
                .tcp_peek(id, 0, &mut [IoSliceMut::new(&mut b)])
                .unwrap(),
            0
        );
        table.tcp_close(id, false);
    }
}
