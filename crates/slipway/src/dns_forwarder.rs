//! The gateway's DNS service: local names answered from the zone, everything else forwarded to
//! the host's resolvers.
//!
//! # Theory of operation
//!
//! The service runs on its own thread (`slipway-dns`) with a tokio current-thread runtime, so the
//! data plane never waits for DNS. The data plane hands it guest queries through a bounded queue
//! ([`DnsForwarder::query_udp`]) and gets answers back through the `on_reply` callback, called on
//! the DNS thread; a guest's TCP connection to port 53 of the gateway arrives as a connected unix
//! stream ([`DnsForwarder::serve_tcp`]) that this thread serves to the end.
//!
//! Every query first goes to [`LocalZone::answer`]: slipway's own names are answered at once. A
//! malformed query gets FORMERR, another opcode NOTIMP; responses and messages without a readable
//! header are dropped, never answered. Any other query is forwarded, byte for byte except for its id:
//!
//! 1. The upstream list is the configured one, or the `nameserver` lines of resolv.conf, which is
//!    `stat`ed before every forwarded query and re-read when its inode, size, mtime or ctime
//!    changed (a VPN that rewrites it takes effect with the next query). A file that cannot be
//!    read keeps the previous list.
//! 2. The query gets a fresh random id, unique among the queries in flight (SipHash keyed by
//!    std's per-process random keys, over a counter), and goes to the first upstream over a new
//!    connected UDP socket, so the kernel also picks a random source port and drops datagrams
//!    from other addresses. Only a reply with that id *and* the same question is accepted;
//!    anything else on the socket is counted and ignored until the attempt's deadline.
//! 3. On timeout, socket error (an ICMP port unreachable fails the attempt at once), SERVFAIL or
//!    REFUSED, the next upstream is tried. When all fail, the guest gets SERVFAIL.
//! 4. A truncated (TC) UDP reply is retried over TCP to the same upstream. Decision for UDP
//!    guests: the full answer is returned when it fits what the guest accepts over UDP (its EDNS
//!    payload size, or 512 bytes without EDNS), which happens when the upstream's own limit was
//!    the smaller one. Otherwise (or when the TCP retry fails) the guest gets the upstream's TC
//!    answer, exactly as a real resolver would send it: its stub resolver then repeats the query
//!    over TCP to the gateway (RFC 7766), and that TCP query is forwarded over TCP. slipway never
//!    truncates an answer itself.
//! 5. Queries that a guest sends over TCP are forwarded over TCP (one upstream connection per
//!    query), with the same failover. Several queries per guest connection are served
//!    concurrently (pipelining, RFC 7766); answers go back as they complete, possibly out of order.
//!
//! The reply's id is set back to the guest's before it leaves. Upstream replies are untrusted:
//! they are read into bounded buffers, parsed only through `hickory-proto` in the core, and a bad
//! one is an ignored reply or a failed attempt, never a panic.
//!
//! # Limits
//!
//! - Queue from the data plane: `max_in_flight` commands (`max_in_flight` is clamped to
//!   1..=[`MAX_IN_FLIGHT_LIMIT`], 4096; the queue holds at least 16); when it is full
//!   `query_udp` returns false and `serve_tcp` closes the stream, both counted as `dropped`.
//! - Forwarded queries in flight: `max_in_flight`; one more is answered SERVFAIL at once
//!   (`overloaded`). Each holds one upstream socket at a time, so the service uses at most
//!   `max_in_flight` upstream sockets plus [`MAX_TCP_CONNECTIONS`] (64) guest streams.
//! - Upstreams tried per query: [`MAX_UPSTREAMS`] (8), each for `timeout` (default 2 s) plus one
//!   TCP retry after a TC reply: a query is answered within 9 × `timeout`.
//! - UDP replies of up to 65535 bytes are read into one shared 64 KiB buffer; TCP messages are at
//!   most 65535 bytes by their length prefix.
//! - Guest TCP: at most 16 outstanding queries per connection ([`MAX_TCP_PIPELINE`]; further
//!   ones wait), 10 s without a new query ([`TCP_IDLE_TIMEOUT`]) closes it, and a guest that
//!   does not read its answers for 10 s is disconnected.
//! - resolv.conf: the first 64 KiB, at most 8 nameservers and 16 search domains; a scope on a
//!   link-local IPv6 nameserver is ignored, so such a nameserver is unreachable.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use slipway_core::services::dns::{
    self, formerr, is_reply_to, is_truncated, max_udp_response_len, message_id, notimp,
    response_code, servfail, set_message_id, DnsError, LocalZone,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpStream, UdpSocket, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::LocalSet;
use tokio::time::{timeout, timeout_at, Instant};

/// The most forwarded queries in flight (and queued commands) a forwarder allows.
pub const MAX_IN_FLIGHT_LIMIT: usize = 4096;
/// The shortest command queue, whatever `max_in_flight` is.
const MIN_QUEUE: usize = 16;
/// The most upstreams tried for one query.
pub const MAX_UPSTREAMS: usize = 8;
/// The most guest TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// The most outstanding queries on one guest TCP connection.
pub const MAX_TCP_PIPELINE: usize = 16;
/// A guest TCP connection without a new query for this long is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most search domains read from resolv.conf.
pub const MAX_SEARCH_DOMAINS: usize = 16;
/// The most of resolv.conf that is read.
const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;
/// The largest DNS message over UDP or TCP.
const MAX_MESSAGE: usize = 65535;
/// The smallest DNS message (a header).
const HEADER_LEN: usize = 12;

/// Who sent a UDP query; opaque to the forwarder and returned with the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsClient {
    pub guest_mac: [u8; 6],
    pub guest_ip: IpAddr,
    pub guest_port: u16,
    pub server_ip: IpAddr,
}

/// A DNS message for a guest, to send as a UDP datagram to `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReply {
    pub client: DnsClient,
    pub payload: Vec<u8>,
}

pub struct DnsForwarderConfig {
    /// Upstream resolvers; empty → read nameservers from `resolv_conf` and re-read it when it
    /// changes.
    pub upstreams: Vec<SocketAddr>,
    /// Default /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// The port of nameservers read from `resolv_conf` (the file has no port syntax): 53 unless a
    /// test points it at a local server.
    pub resolv_conf_port: u16,
    /// Per upstream attempt; default 2 s.
    pub timeout: Duration,
    /// The names answered locally; the API may change it while the forwarder runs.
    pub zone: Arc<RwLock<LocalZone>>,
    /// Forwarded queries in flight (and the queue length); default 1024, at most 4096.
    pub max_in_flight: usize,
}

impl DnsForwarderConfig {
    /// Defaults: upstreams from /etc/resolv.conf, 2 s per attempt, 1024 queries in flight.
    pub fn new(zone: Arc<RwLock<LocalZone>>) -> Self {
        Self {
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            resolv_conf_port: 53,
            timeout: Duration::from_secs(2),
            zone,
            max_in_flight: 1024,
        }
    }
}

/// What the DNS service has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsCounters {
    /// Queries received from guests over UDP.
    pub udp_queries: u64,
    /// Queries received from guests over TCP.
    pub tcp_queries: u64,
    /// Queries answered from the local zone.
    pub local_answers: u64,
    /// Queries forwarded upstream.
    pub forwarded: u64,
    /// Upstream attempts that timed out.
    pub upstream_timeouts: u64,
    /// Upstream attempts that failed with a socket error (refused, unreachable, reset, ...).
    pub upstream_errors: u64,
    /// Upstream replies with SERVFAIL or REFUSED (the next upstream is tried).
    pub upstream_failures: u64,
    /// Upstream messages ignored: wrong id or question (spoofed, late or unrelated).
    pub ignored_replies: u64,
    /// Truncated UDP replies retried over TCP.
    pub tcp_retries: u64,
    /// SERVFAIL answers sent to guests (all upstreams failed, none configured, or overload).
    pub servfail: u64,
    /// Forwarded queries that found no upstream to ask.
    pub no_upstream: u64,
    /// Forwarded queries refused because `max_in_flight` were already in flight.
    pub overloaded: u64,
    /// FORMERR answers sent to guests.
    pub formerr: u64,
    /// NOTIMP answers sent to guests.
    pub notimp: u64,
    /// Guest messages dropped without an answer (responses, unparseable headers).
    pub malformed: u64,
    /// Queries and TCP streams dropped because the queue was full.
    pub dropped: u64,
    /// Guest TCP connections accepted.
    pub tcp_connections: u64,
    /// Guest TCP connections closed at once (too many, or the stream was unusable).
    pub tcp_rejected: u64,
}

#[derive(Default)]
struct Counters {
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
    local_answers: AtomicU64,
    forwarded: AtomicU64,
    upstream_timeouts: AtomicU64,
    upstream_errors: AtomicU64,
    upstream_failures: AtomicU64,
    ignored_replies: AtomicU64,
    tcp_retries: AtomicU64,
    servfail: AtomicU64,
    no_upstream: AtomicU64,
    overloaded: AtomicU64,
    formerr: AtomicU64,
    notimp: AtomicU64,
    malformed: AtomicU64,
    dropped: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_rejected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> DnsCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCounters {
            udp_queries: get(&self.udp_queries),
            tcp_queries: get(&self.tcp_queries),
            local_answers: get(&self.local_answers),
            forwarded: get(&self.forwarded),
            upstream_timeouts: get(&self.upstream_timeouts),
            upstream_errors: get(&self.upstream_errors),
            upstream_failures: get(&self.upstream_failures),
            ignored_replies: get(&self.ignored_replies),
            tcp_retries: get(&self.tcp_retries),
            servfail: get(&self.servfail),
            no_upstream: get(&self.no_upstream),
            overloaded: get(&self.overloaded),
            formerr: get(&self.formerr),
            notimp: get(&self.notimp),
            malformed: get(&self.malformed),
            dropped: get(&self.dropped),
            tcp_connections: get(&self.tcp_connections),
            tcp_rejected: get(&self.tcp_rejected),
        }
    }
}

enum Command {
    Udp(DnsClient, Vec<u8>),
    Tcp(std::os::unix::net::UnixStream),
}

/// The handle of the DNS thread. Dropping it stops the thread (queries in flight are abandoned).
pub struct DnsForwarder {
    commands: Option<mpsc::Sender<Command>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl DnsForwarder {
    /// Starts the DNS thread. `on_reply` is called on that thread with every UDP answer.
    pub fn spawn(
        cfg: DnsForwarderConfig,
        on_reply: Box<dyn Fn(DnsReply) + Send + Sync>,
    ) -> io::Result<Self> {
        if cfg.timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the DNS upstream timeout must be longer than zero",
            ));
        }
        let max_in_flight = cfg.max_in_flight.clamp(1, MAX_IN_FLIGHT_LIMIT);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (commands, receiver) = mpsc::channel(max_in_flight.max(MIN_QUEUE));
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("slipway-dns".into())
            .spawn(move || {
                let service = Rc::new(Service::new(cfg, max_in_flight, thread_counters, on_reply));
                LocalSet::new().block_on(&runtime, service.run(receiver));
            })?;
        Ok(Self {
            commands: Some(commands),
            counters,
            thread: Some(thread),
        })
    }

    /// Queue a UDP query from a guest; false when the queue is full (the caller counts a drop).
    pub fn query_udp(&self, client: DnsClient, payload: Vec<u8>) -> bool {
        self.send(Command::Udp(client, payload))
    }

    /// Serve DNS over TCP (2-byte length framing, RFC 7766, several queries per connection,
    /// pipelined OK) on this already-connected stream until EOF or an idle timeout. The other
    /// end is connected to the guest's TCP connection to the gateway's port 53. The stream is
    /// closed at once when the queue is full.
    pub fn serve_tcp(&self, stream: std::os::unix::net::UnixStream) {
        self.send(Command::Tcp(stream));
    }

    pub fn counters(&self) -> DnsCounters {
        self.counters.snapshot()
    }

    fn send(&self, command: Command) -> bool {
        let sent = self
            .commands
            .as_ref()
            .is_some_and(|c| c.try_send(command).is_ok());
        if !sent {
            bump(&self.counters.dropped);
        }
        sent
    }
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        // Closing the queue ends the service loop; the runtime then drops every task.
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The nameservers and search list of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

/// Parse nameserver (IPv4/IPv6, optional scope ignored) and search/domain lines.
pub fn read_resolv_conf(path: &Path) -> io::Result<ResolvConf> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_RESOLV_CONF_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(parse_resolv_conf(&String::from_utf8_lossy(&bytes)))
}

/// The resolv.conf(5) lines slipway uses; everything else (options, sortlist) is ignored, as are
/// lines it cannot read. The last `search` or `domain` line wins, as in glibc.
fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(word) = words.next() else { continue };
                let addr = word.split('%').next().unwrap_or(word);
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    let server = SocketAddr::new(ip, 53);
                    if conf.nameservers.len() < MAX_UPSTREAMS && !conf.nameservers.contains(&server)
                    {
                        conf.nameservers.push(server);
                    }
                }
            }
            Some("search") | Some("domain") => {
                conf.search = words
                    .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                    .filter(|w| !w.is_empty() && w.len() <= dns::MAX_NAME_LEN)
                    .take(MAX_SEARCH_DOMAINS)
                    .collect();
            }
            _ => {}
        }
    }
    conf
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

enum Upstreams {
    Fixed(Vec<SocketAddr>),
    ResolvConf {
        path: PathBuf,
        port: u16,
        stamp: Option<FileStamp>,
        servers: Vec<SocketAddr>,
    },
}

impl Upstreams {
    /// The upstreams to try now, re-reading resolv.conf when it changed.
    fn current(&mut self) -> Vec<SocketAddr> {
        match self {
            Upstreams::Fixed(list) => list.iter().take(MAX_UPSTREAMS).copied().collect(),
            Upstreams::ResolvConf {
                path,
                port,
                stamp,
                servers,
            } => {
                if let Ok(now) = FileStamp::of(path) {
                    if *stamp != Some(now) {
                        if let Ok(conf) = read_resolv_conf(path) {
                            *servers = conf
                                .nameservers
                                .iter()
                                .map(|s| SocketAddr::new(s.ip(), *port))
                                .collect();
                            *stamp = Some(now);
                        }
                    }
                }
                servers.clone()
            }
        }
    }
}

/// How a guest query reached the gateway.
#[derive(Debug, Clone, Copy)]
enum Transport {
    /// Over UDP; the guest accepts answers of up to `limit` bytes.
    Udp {
        limit: usize,
    },
    Tcp,
}

/// What to do with a guest message.
enum Disposition {
    Reply(Vec<u8>),
    Forward,
    Drop,
}

/// Why one upstream attempt failed.
enum AttemptError {
    Timeout,
    Io,
}

/// The state of the DNS thread.
struct Service {
    zone: Arc<RwLock<LocalZone>>,
    upstreams: RefCell<Upstreams>,
    timeout: Duration,
    max_in_flight: usize,
    in_flight_ids: RefCell<HashSet<u16>>,
    id_keys: RandomState,
    id_counter: Cell<u64>,
    tcp_connections: Cell<usize>,
    /// The receive buffer of every upstream UDP socket (one runtime thread: one read at a time).
    scratch: RefCell<Vec<u8>>,
    counters: Arc<Counters>,
    on_reply: Box<dyn Fn(DnsReply) + Send + Sync>,
}

/// One forwarded query in flight: its upstream id, released on drop.
struct InFlight {
    service: Rc<Service>,
    id: u16,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.service.in_flight_ids.borrow_mut().remove(&self.id);
    }
}

/// One guest TCP connection, released on drop.
struct TcpSlot(Rc<Service>);

impl Drop for TcpSlot {
    fn drop(&mut self) {
        self.0.tcp_connections.set(self.0.tcp_connections.get() - 1);
    }
}

impl Service {
    fn new(
        cfg: DnsForwarderConfig,
        max_in_flight: usize,
        counters: Arc<Counters>,
        on_reply: Box<dyn Fn(DnsReply) + Send + Sync>,
    ) -> Self {
        let upstreams = if cfg.upstreams.is_empty() {
            Upstreams::ResolvConf {
                path: cfg.resolv_conf,
                port: cfg.resolv_conf_port,
                stamp: None,
                servers: Vec::new(),
            }
        } else {
            Upstreams::Fixed(cfg.upstreams)
        };
        Self {
            zone: cfg.zone,
            upstreams: RefCell::new(upstreams),
            timeout: cfg.timeout,
            max_in_flight,
            in_flight_ids: RefCell::new(HashSet::new()),
            id_keys: RandomState::new(),
            id_counter: Cell::new(0),
            tcp_connections: Cell::new(0),
            scratch: RefCell::new(vec![0; MAX_MESSAGE]),
            counters,
            on_reply,
        }
    }

    async fn run(self: Rc<Self>, mut commands: mpsc::Receiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Udp(client, payload) => self.handle_udp(client, payload),
                Command::Tcp(stream) => self.accept_tcp(stream),
            }
        }
    }

    fn handle_udp(self: &Rc<Self>, client: DnsClient, query: Vec<u8>) {
        bump(&self.counters.udp_queries);
        match self.classify(&query) {
            Disposition::Reply(payload) => (self.on_reply)(DnsReply { client, payload }),
            Disposition::Drop => {}
            Disposition::Forward => {
                let limit = max_udp_response_len(&query);
                let service = self.clone();
                tokio::task::spawn_local(async move {
                    if let Some(payload) = service.forward(query, Transport::Udp { limit }).await {
                        (service.on_reply)(DnsReply { client, payload });
                    }
                });
            }
        }
    }

    /// Answers from the zone, or the error reply for a message that is not a usable query.
    fn classify(&self, query: &[u8]) -> Disposition {
        let answer = self
            .zone
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .answer(query);
        let (reply, counter) = match answer {
            Ok(Some(reply)) => (Some(reply), &self.counters.local_answers),
            Ok(None) => return Disposition::Forward,
            Err(DnsError::NotImplemented(_)) => (notimp(query), &self.counters.notimp),
            Err(DnsError::NotAQuery) => (None, &self.counters.malformed),
            Err(_) => (formerr(query), &self.counters.formerr),
        };
        match reply {
            Some(reply) => {
                bump(counter);
                Disposition::Reply(reply)
            }
            None => {
                bump(&self.counters.malformed);
                Disposition::Drop
            }
        }
    }

    /// A fresh upstream id, or None when `max_in_flight` queries are already in flight.
    fn begin(self: &Rc<Self>) -> Option<InFlight> {
        let mut ids = self.in_flight_ids.borrow_mut();
        if ids.len() >= self.max_in_flight {
            return None;
        }
        // At most 4096 of 65536 ids are taken, so a random one is free with probability ≥ 15/16.
        let mut id = self.random_u16();
        let mut tries = 0;
        while !ids.insert(id) {
            tries += 1;
            id = if tries < 64 {
                self.random_u16()
            } else {
                id.wrapping_add(1)
            };
        }
        Some(InFlight {
            service: self.clone(),
            id,
        })
    }

    fn random_u16(&self) -> u16 {
        let n = self.id_counter.get();
        self.id_counter.set(n.wrapping_add(1));
        let mut hasher = self.id_keys.build_hasher();
        hasher.write_u64(n);
        hasher.finish() as u16
    }

    fn servfail_to(&self, query: &[u8]) -> Option<Vec<u8>> {
        bump(&self.counters.servfail);
        servfail(query)
    }

    /// The answer for the guest (with the guest's id) to a query that is not local.
    async fn forward(self: &Rc<Self>, query: Vec<u8>, transport: Transport) -> Option<Vec<u8>> {
        bump(&self.counters.forwarded);
        let Some(in_flight) = self.begin() else {
            bump(&self.counters.overloaded);
            return self.servfail_to(&query);
        };
        let upstreams = self.upstreams.borrow_mut().current();
        if upstreams.is_empty() {
            bump(&self.counters.no_upstream);
            return self.servfail_to(&query);
        }
        let guest_id = message_id(&query)?;
        let mut upstream_query = query.clone();
        set_message_id(&mut upstream_query, in_flight.id);
        for upstream in upstreams {
            let attempt = match transport {
                Transport::Udp { .. } => self.ask_udp(upstream, &upstream_query).await,
                Transport::Tcp => self.ask_tcp(upstream, &upstream_query).await,
            };
            let reply = match attempt {
                Ok(reply) if !is_failure(&reply) => reply,
                Ok(_) => {
                    bump(&self.counters.upstream_failures);
                    continue;
                }
                Err(error) => {
                    self.count_attempt_error(error);
                    continue;
                }
            };
            let mut reply = match transport {
                Transport::Udp { limit } if is_truncated(&reply) => {
                    bump(&self.counters.tcp_retries);
                    match self.ask_tcp(upstream, &upstream_query).await {
                        Ok(full) if !is_failure(&full) && full.len() <= limit => full,
                        Ok(_) => reply,
                        Err(error) => {
                            self.count_attempt_error(error);
                            reply
                        }
                    }
                }
                _ => reply,
            };
            set_message_id(&mut reply, guest_id);
            return Some(reply);
        }
        self.servfail_to(&query)
    }

    fn count_attempt_error(&self, error: AttemptError) {
        match error {
            AttemptError::Timeout => bump(&self.counters.upstream_timeouts),
            AttemptError::Io => bump(&self.counters.upstream_errors),
        }
    }

    /// One UDP attempt: the first datagram that answers `query` within the timeout.
    async fn ask_udp(&self, upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, AttemptError> {
        let deadline = Instant::now() + self.timeout;
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let exchange = async {
            let socket = UdpSocket::bind(local).await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            loop {
                // ERROR too: an ICMP port unreachable is only an error event, which the readable
                // path of tokio never reports, so it is collected here.
                let ready = socket.ready(Interest::READABLE | Interest::ERROR).await?;
                if ready.is_error() {
                    let error = socket.take_error()?;
                    return Err(error.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
                }
                let received = {
                    let mut buffer = self.scratch.borrow_mut();
                    match socket.try_recv(&mut buffer) {
                        Ok(n) => Some(buffer[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                        Err(e) => return Err(e),
                    }
                };
                match received {
                    Some(reply) if is_reply_to(query, &reply) => return Ok(reply),
                    Some(_) => bump(&self.counters.ignored_replies),
                    None => {}
                }
            }
        };
        match timeout_at(deadline, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AttemptError::Io),
            Err(_) => Err(AttemptError::Timeout),
        }
    }

    /// One TCP attempt: a new connection carrying `query` and its answer, within the timeout.
    async fn ask_tcp(&self, upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, AttemptError> {
        let exchange = async {
            let mut stream = TcpStream::connect(upstream).await?;
            stream.write_all(&frame(query)?).await?;
            loop {
                let Some(reply) = read_frame(&mut stream).await? else {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                };
                if is_reply_to(query, &reply) {
                    return Ok(reply);
                }
                bump(&self.counters.ignored_replies);
            }
        };
        match timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(AttemptError::Io),
            Err(_) => Err(AttemptError::Timeout),
        }
    }

    fn accept_tcp(self: &Rc<Self>, stream: std::os::unix::net::UnixStream) {
        if self.tcp_connections.get() >= MAX_TCP_CONNECTIONS {
            bump(&self.counters.tcp_rejected);
            return;
        }
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| UnixStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(_) => {
                bump(&self.counters.tcp_rejected);
                return;
            }
        };
        bump(&self.counters.tcp_connections);
        self.tcp_connections.set(self.tcp_connections.get() + 1);
        let slot = TcpSlot(self.clone());
        tokio::task::spawn_local(self.clone().serve_connection(stream, slot));
    }

    /// Reads queries from a guest TCP connection and answers each as soon as it is ready.
    async fn serve_connection(self: Rc<Self>, stream: UnixStream, _slot: TcpSlot) {
        let (mut reader, writer) = stream.into_split();
        let (answers, pending) = mpsc::channel::<Vec<u8>>(MAX_TCP_PIPELINE);
        let writer = tokio::task::spawn_local(write_answers(writer, pending));
        let pipeline = Arc::new(Semaphore::new(MAX_TCP_PIPELINE));
        while !answers.is_closed() {
            let Ok(permit) = pipeline.clone().acquire_owned().await else {
                break;
            };
            let query = match timeout(TCP_IDLE_TIMEOUT, read_frame(&mut reader)).await {
                Ok(Ok(Some(query))) => query,
                _ => break,
            };
            bump(&self.counters.tcp_queries);
            match self.classify(&query) {
                Disposition::Reply(answer) => {
                    if answers.send(answer).await.is_err() {
                        break;
                    }
                }
                // The framing is probably lost: close the connection.
                Disposition::Drop => break,
                Disposition::Forward => {
                    let service = self.clone();
                    let answers = answers.clone();
                    tokio::task::spawn_local(async move {
                        if let Some(answer) = service.forward(query, Transport::Tcp).await {
                            let _ = answers.send(answer).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
        // The writer ends once every outstanding query has sent its answer.
        drop(answers);
        let _ = writer.await;
    }
}

/// Writes answers to a guest TCP connection until all senders are gone, then shuts it down.
async fn write_answers(mut writer: OwnedWriteHalf, mut pending: mpsc::Receiver<Vec<u8>>) {
    while let Some(answer) = pending.recv().await {
        let Ok(framed) = frame(&answer) else { continue };
        match timeout(TCP_IDLE_TIMEOUT, writer.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = writer.shutdown().await;
}

/// SERVFAIL and REFUSED mean "ask someone else".
fn is_failure(reply: &[u8]) -> bool {
    matches!(
        response_code(reply),
        Some(ResponseCode::ServFail) | Some(ResponseCode::Refused)
    )
}

/// A DNS message with its 2-byte TCP length prefix.
fn frame(message: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "DNS message too long"))?;
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    Ok(framed)
}

/// The next length-prefixed DNS message; None at a clean end of stream. Messages shorter than a
/// header are an error.
async fn read_frame(source: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match source.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len < HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "DNS message shorter than a header",
        ));
    }
    let mut message = vec![0; len];
    source.read_exact(&mut message).await?;
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use slipway_core::NetworkConfig;
    use std::io::Write;
    use std::net::{TcpListener, UdpSocket as StdUdpSocket};
    use std::str::FromStr;
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc as std_mpsc;
    use std::sync::Mutex;
    use std::time::Instant as StdInstant;

    const TEST_TIMEOUT: Duration = Duration::from_millis(200);

    type Handler = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

    /// A DNS server on a loopback address, run by the test.
    struct FakeUpstream {
        addr: SocketAddr,
        udp_seen: Arc<Mutex<Vec<Vec<u8>>>>,
        tcp_seen: Arc<Mutex<Vec<Vec<u8>>>>,
        stop: Arc<AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl Drop for FakeUpstream {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    impl FakeUpstream {
        fn start(addr: &str, udp: Handler, tcp: Handler) -> FakeUpstream {
            Self::try_start(addr.parse().unwrap(), udp, tcp).expect("bind a loopback port")
        }

        fn try_start(addr: SocketAddr, udp: Handler, tcp: Handler) -> io::Result<FakeUpstream> {
            let udp_socket = StdUdpSocket::bind(addr)?;
            let addr = udp_socket.local_addr()?;
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            udp_socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let stop = Arc::new(AtomicBool::new(false));
            let udp_seen = Arc::new(Mutex::new(Vec::new()));
            let tcp_seen = Arc::new(Mutex::new(Vec::new()));
            let mut threads = Vec::new();
            {
                let (stop, seen) = (stop.clone(), udp_seen.clone());
                threads.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65535];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = udp_socket.recv_from(&mut buf) else {
                            continue;
                        };
                        seen.lock().unwrap().push(buf[..n].to_vec());
                        if let Some(reply) = udp(&buf[..n]) {
                            let _ = udp_socket.send_to(&reply, from);
                        }
                    }
                }));
            }
            {
                let (stop, seen) = (stop.clone(), tcp_seen.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((mut conn, _)) = listener.accept() else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let mut len = [0u8; 2];
                        while conn.read_exact(&mut len).is_ok() {
                            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if conn.read_exact(&mut msg).is_err() {
                                break;
                            }
                            seen.lock().unwrap().push(msg.clone());
                            if let Some(reply) = tcp(&msg) {
                                let _ = conn.write_all(&frame(&reply).unwrap());
                            }
                        }
                    }
                }));
            }
            Ok(FakeUpstream {
                addr,
                udp_seen,
                tcp_seen,
                stop,
                threads,
            })
        }

        fn udp_count(&self) -> usize {
            self.udp_seen.lock().unwrap().len()
        }

        fn tcp_count(&self) -> usize {
            self.tcp_seen.lock().unwrap().len()
        }
    }

    fn silent() -> Handler {
        Arc::new(|_| None)
    }

    fn answering(ips: Vec<Ipv4Addr>) -> Handler {
        Arc::new(move |q| Some(answer(q, &ips, false)))
    }

    fn rcode(code: ResponseCode) -> Handler {
        Arc::new(move |q| {
            let mut m = Message::from_vec(q).unwrap();
            m.metadata.message_type = MessageType::Response;
            m.metadata.response_code = code;
            Some(m.to_vec().unwrap())
        })
    }

    /// A response to `query` with A records for `ips` (TTL 60), TC set when `truncated`.
    fn answer(query: &[u8], ips: &[Ipv4Addr], truncated: bool) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.metadata.truncation = truncated;
        r.add_query(q.queries[0].clone());
        for ip in ips {
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(A(*ip)),
            ));
        }
        r.to_vec().unwrap()
    }

    fn query(id: u16, name: &str, edns_payload: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
        if let Some(size) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(size);
            m.set_edns(edns);
        }
        m.to_vec().unwrap()
    }

    fn client(port: u16) -> DnsClient {
        DnsClient {
            guest_mac: [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee],
            guest_ip: "192.168.127.2".parse().unwrap(),
            guest_port: port,
            server_ip: "192.168.127.1".parse().unwrap(),
        }
    }

    fn config(upstreams: Vec<SocketAddr>) -> DnsForwarderConfig {
        let zone = Arc::new(RwLock::new(LocalZone::new(&NetworkConfig::default())));
        DnsForwarderConfig {
            upstreams,
            timeout: TEST_TIMEOUT,
            ..DnsForwarderConfig::new(zone)
        }
    }

    fn start(cfg: DnsForwarderConfig) -> (DnsForwarder, std_mpsc::Receiver<DnsReply>) {
        let (tx, rx) = std_mpsc::channel();
        let tx = Mutex::new(tx);
        let forwarder = DnsForwarder::spawn(
            cfg,
            Box::new(move |reply| {
                let _ = tx.lock().unwrap().send(reply);
            }),
        )
        .unwrap();
        (forwarder, rx)
    }

    fn ask(forwarder: &DnsForwarder, rx: &std_mpsc::Receiver<DnsReply>, q: Vec<u8>) -> Message {
        assert!(forwarder.query_udp(client(40000), q));
        let reply = rx.recv_timeout(Duration::from_secs(5)).expect("a reply");
        assert_eq!(reply.client, client(40000));
        Message::from_vec(&reply.payload).unwrap()
    }

    fn a_records(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn resolv_conf_parsing() {
        let conf = parse_resolv_conf(
            "# generated\n; comment\nnameserver 127.0.0.53\nnameserver fe80::1%eth0 # x\n\
             nameserver bogus\nnameserver\nnameserver 127.0.0.53\noptions edns0 trust-ad\n\
             domain first.example\nsearch Corp.Example. lab.example\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.search, vec!["corp.example", "lab.example"]);
        let many: String = (1..=20)
            .map(|i| format!("nameserver 127.0.0.{i}\n"))
            .collect();
        assert_eq!(parse_resolv_conf(&many).nameservers.len(), MAX_UPSTREAMS);
        assert_eq!(parse_resolv_conf("\u{0}\u{ff}garbage").nameservers, vec![]);
    }

    #[test]
    fn local_names_are_answered_without_upstream() {
        let up = FakeUpstream::start("127.0.0.1:0", silent(), silent());
        let cfg = config(vec![up.addr]);
        let zone = cfg.zone.clone();
        let (f, rx) = start(cfg);
        let r = ask(&f, &rx, query(7, "host.docker.internal.", None));
        assert_eq!(r.metadata.id, 7);
        assert!(r.metadata.authoritative);
        assert_eq!(a_records(&r), vec![ip("192.168.127.254")]);
        // The zone is shared: a record the API adds later is answered at once.
        zone.write()
            .unwrap()
            .add("db.test", "10.3.3.3".parse().unwrap())
            .unwrap();
        let r = ask(&f, &rx, query(8, "DB.test.", None));
        assert_eq!(a_records(&r), vec![ip("10.3.3.3")]);
        assert_eq!(up.udp_count(), 0);
        let c = f.counters();
        assert_eq!((c.udp_queries, c.local_answers, c.forwarded), (2, 2, 0));
    }

    #[test]
    fn id_is_rewritten_and_mapped_back_ignoring_spoofed_replies() {
        // The test is the upstream: before the real answer it sends one with the wrong id, one
        // with the right id but another question, and garbage.
        let socket = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (f, rx) = start(config(vec![addr]));
        let mut seen_ids = Vec::new();
        for guest_id in [0x4242u16, 0x4242, 0x4242] {
            assert!(f.query_udp(client(40000), query(guest_id, "www.example.", None)));
            let mut buf = vec![0u8; 65535];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            let q = buf[..n].to_vec();
            let id = message_id(&q).unwrap();
            seen_ids.push(id);
            let mut wrong_id = answer(&q, &[ip("6.6.6.6")], false);
            set_message_id(&mut wrong_id, id.wrapping_add(1));
            let mut other = answer(&query(0, "evil.example.", None), &[ip("6.6.6.6")], false);
            set_message_id(&mut other, id);
            socket.send_to(&wrong_id, from).unwrap();
            socket.send_to(&other, from).unwrap();
            socket.send_to(b"garbage", from).unwrap();
            socket
                .send_to(&answer(&q, &[ip("10.9.8.7")], false), from)
                .unwrap();
            let reply = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            let m = Message::from_vec(&reply.payload).unwrap();
            assert_eq!(m.metadata.id, guest_id);
            assert_eq!(a_records(&m), vec![ip("10.9.8.7")]);
        }
        assert!(
            seen_ids.iter().any(|&id| id != 0x4242),
            "upstream ids {seen_ids:?} are not fresh"
        );
        let c = f.counters();
        assert_eq!(c.forwarded, 3);
        assert_eq!(c.ignored_replies, 9);
    }

    #[test]
    fn timeout_fails_over_to_the_next_upstream() {
        let dead = FakeUpstream::start("127.0.0.1:0", silent(), silent());
        let good = FakeUpstream::start("127.0.0.1:0", answering(vec![ip("10.0.0.2")]), silent());
        let (f, rx) = start(config(vec![dead.addr, good.addr]));
        let started = StdInstant::now();
        let r = ask(&f, &rx, query(1, "a.example.", None));
        assert_eq!(a_records(&r), vec![ip("10.0.0.2")]);
        assert!(started.elapsed() >= TEST_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(dead.udp_count(), 1);
        assert_eq!(f.counters().upstream_timeouts, 1);
    }

    #[test]
    fn all_upstreams_failing_give_servfail_in_bounded_time() {
        let silent_up = FakeUpstream::start("127.0.0.1:0", silent(), silent());
        let servfail_up =
            FakeUpstream::start("127.0.0.1:0", rcode(ResponseCode::ServFail), silent());
        let refused_up = FakeUpstream::start("127.0.0.1:0", rcode(ResponseCode::Refused), silent());
        // A port nobody listens on: ICMP port unreachable fails the attempt at once.
        let closed = {
            let s = StdUdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let (f, rx) = start(config(vec![
            closed,
            silent_up.addr,
            servfail_up.addr,
            refused_up.addr,
        ]));
        let started = StdInstant::now();
        let r = ask(&f, &rx, query(99, "b.example.", None));
        assert_eq!(r.metadata.id, 99);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(r.queries.len(), 1);
        assert!(
            started.elapsed() < TEST_TIMEOUT * 4,
            "{:?}",
            started.elapsed()
        );
        let c = f.counters();
        assert_eq!(c.upstream_timeouts, 1);
        assert_eq!(c.upstream_errors, 1);
        assert_eq!(c.upstream_failures, 2);
        assert_eq!(c.servfail, 1);
        assert_eq!(refused_up.udp_count(), 1);
    }

    #[test]
    fn truncated_udp_answers_are_retried_over_tcp() {
        let few: Vec<Ipv4Addr> = (1..=3).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
        let many: Vec<Ipv4Addr> = (1..=60).map(|i| Ipv4Addr::new(10, 0, 2, i)).collect();
        let udp: Handler = Arc::new(|q| Some(answer(q, &[], true)));
        let tcp: Handler = {
            let (few, many) = (few.clone(), many.clone());
            Arc::new(move |q| {
                let m = Message::from_vec(q).unwrap();
                let big = m.queries[0].name().to_ascii().starts_with("big");
                Some(answer(q, if big { &many } else { &few }, false))
            })
        };
        let up = FakeUpstream::start("127.0.0.1:0", udp, tcp);
        let (f, rx) = start(config(vec![up.addr]));

        // The full answer fits the guest's EDNS size: the guest gets it over UDP.
        let r = ask(&f, &rx, query(5, "small.example.", Some(1232)));
        assert!(!r.metadata.truncation);
        assert_eq!(a_records(&r), few);
        assert_eq!(r.metadata.id, 5);
        assert_eq!((up.udp_count(), up.tcp_count()), (1, 1));

        // Too big for a guest without EDNS (512 bytes): the guest gets the TC answer.
        let r = ask(&f, &rx, query(6, "big.example.", None));
        assert!(r.metadata.truncation);
        assert_eq!(r.metadata.id, 6);
        assert!(r.answers.is_empty());
        assert_eq!((up.udp_count(), up.tcp_count()), (2, 2));
        assert_eq!(f.counters().tcp_retries, 2);

        // The guest then retries over TCP to the gateway, which forwards over TCP directly.
        let (mut guest, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        f.serve_tcp(ours);
        guest
            .write_all(&frame(&query(6, "big.example.", None)).unwrap())
            .unwrap();
        let r = read_answer(&mut guest);
        assert_eq!(r.metadata.id, 6);
        assert_eq!(a_records(&r), many);
        assert_eq!((up.udp_count(), up.tcp_count()), (2, 3));
    }

    fn read_answer(stream: &mut std::os::unix::net::UnixStream) -> Message {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).unwrap();
        Message::from_vec(&msg).unwrap()
    }

    #[test]
    fn tcp_serves_pipelined_queries_until_eof() {
        // The upstream answers over TCP only after a delay, so the local answer overtakes it.
        let tcp: Handler = Arc::new(|q| {
            std::thread::sleep(Duration::from_millis(50));
            Some(answer(q, &[ip("10.7.7.7")], false))
        });
        let up = FakeUpstream::start("127.0.0.1:0", silent(), tcp);
        let (f, _rx) = start(config(vec![up.addr]));
        let (mut guest, ours) = std::os::unix::net::UnixStream::pair().unwrap();
        f.serve_tcp(ours);
        let mut both = frame(&query(1, "remote.example.", None)).unwrap();
        both.extend(frame(&query(2, "gateway.slipway.internal.", None)).unwrap());
        guest.write_all(&both).unwrap();
        let first = read_answer(&mut guest);
        let second = read_answer(&mut guest);
        assert_eq!(first.metadata.id, 2, "answers go back as they complete");
        assert_eq!(a_records(&first), vec![ip("192.168.127.1")]);
        assert_eq!(second.metadata.id, 1);
        assert_eq!(a_records(&second), vec![ip("10.7.7.7")]);
        assert_eq!(up.udp_count(), 0);
        // EOF from the guest closes the connection from our side too.
        guest.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        guest.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let c = f.counters();
        assert_eq!((c.tcp_connections, c.tcp_queries), (1, 2));
    }

    #[test]
    fn resolv_conf_is_reread_when_it_changes() {
        // Two upstreams on the same port of two loopback addresses, because resolv.conf has no
        // port syntax: the forwarder's port override points at them.
        let (a, b) = (0..20)
            .find_map(|_| {
                let a =
                    FakeUpstream::start("127.0.0.1:0", answering(vec![ip("10.0.0.1")]), silent());
                let b_addr = SocketAddr::new("127.0.0.2".parse().unwrap(), a.addr.port());
                let b = FakeUpstream::try_start(b_addr, answering(vec![ip("10.0.0.2")]), silent())
                    .ok()?;
                Some((a, b))
            })
            .expect("a port free on 127.0.0.1 and 127.0.0.2");
        let dir = std::env::temp_dir().join(format!("slipway-dns-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let mut cfg = config(vec![]);
        cfg.resolv_conf = path.clone();
        cfg.resolv_conf_port = a.addr.port();
        let (f, rx) = start(cfg);
        let r = ask(&f, &rx, query(1, "x.example.", None));
        assert_eq!(a_records(&r), vec![ip("10.0.0.1")]);
        // Replace the file the way resolvconf and VPN clients do: write a new one and rename it.
        let next = dir.join("resolv.conf.new");
        std::fs::write(&next, "search lab.example\nnameserver 127.0.0.2\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let r = ask(&f, &rx, query(2, "x.example.", None));
        assert_eq!(a_records(&r), vec![ip("10.0.0.2")]);
        // Rewrite in place: also noticed.
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        let r = ask(&f, &rx, query(3, "x.example.", None));
        assert_eq!(a_records(&r), vec![ip("10.0.0.1")]);
        assert_eq!((a.udp_count(), b.udp_count()), (2, 1));
        // An empty file: no upstream, SERVFAIL.
        std::fs::write(&path, "# nothing\n").unwrap();
        let r = ask(&f, &rx, query(4, "x.example.", None));
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(f.counters().no_upstream, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn overload_answers_servfail_and_bad_messages_are_handled() {
        let up = FakeUpstream::start("127.0.0.1:0", silent(), silent());
        let mut cfg = config(vec![up.addr]);
        cfg.max_in_flight = 1;
        let (f, rx) = start(cfg);
        assert!(f.query_udp(client(1), query(1, "slow.example.", None)));
        // Give the first query time to be taken off the queue and go in flight.
        std::thread::sleep(Duration::from_millis(50));
        let r = ask(&f, &rx, query(2, "slow2.example.", None));
        assert_eq!(r.metadata.id, 2);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(f.counters().overloaded, 1);
        // The first one times out and gets SERVFAIL too.
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(message_id(&first.payload), Some(1));
        // A truncated question: FORMERR. A response: dropped.
        let q = query(3, "c.example.", None);
        let r = ask(&f, &rx, q[..14].to_vec());
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(f.query_udp(client(1), resp));
        assert!(f.query_udp(client(1), b"x".to_vec()));
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        let c = f.counters();
        assert_eq!((c.formerr, c.malformed), (1, 2));
    }

    #[test]
    fn dropping_the_handle_stops_the_thread() {
        let up = FakeUpstream::start("127.0.0.1:0", silent(), silent());
        let (f, _rx) = start(config(vec![up.addr]));
        assert!(f.query_udp(client(1), query(1, "pending.example.", None)));
        let started = StdInstant::now();
        drop(f);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
