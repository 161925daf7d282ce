//! A deterministic simulated host for the flow engines: [`SimHost`] implements
//! `slipway_core::flows::HostSockets` in memory and never opens a real socket.
//!
//! It behaves like the kernel's non-blocking sockets as the engines see them: connects succeed
//! at once, later, or fail with a chosen errno; writes take what the send buffer has room for
//! and answer `WouldBlock` when it is full; peeks read from an offset into the bytes the "remote
//! application" sent and answer `WouldBlock` (or end of stream) past them; UDP and ping sockets
//! hand back queued datagrams. The fuzz script steers it through [`SimHost::control`].
//!
//! It also checks the contract the engines owe the driver, and panics with a message naming the
//! broken rule when an engine breaks it: no operation on a socket it never opened or already
//! closed, no second open of a live socket, no peek past or discard of more than the bytes the
//! host has queued (the engine may only have sent, and so only see acknowledged, bytes it read).
//!
//! Limits: [`MAX_HOST_QUEUE`] bytes queued per TCP socket, [`MAX_DATAGRAMS`] datagrams queued per
//! UDP or ping socket; written bytes are counted, not kept.

use slipway_core::flows::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

pub const MAX_HOST_QUEUE: usize = 1 << 20;
pub const MAX_DATAGRAMS: usize = 64;
/// Send-buffer space of a new TCP socket.
pub const DEFAULT_SEND_SPACE: usize = 212_992;

/// How the next connect (or UDP/ping open) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    Immediate,
    /// In progress; `tcp_connect_result` then gives Ok or this errno.
    Later(Option<i32>),
    /// Fails at once with this errno (None: an error without an OS code).
    Fail(Option<i32>),
}

/// Errnos the engines map to different guest-visible outcomes.
pub const ERRNOS: [Option<i32>; 8] = [
    Some(111), // ECONNREFUSED
    Some(104), // ECONNRESET
    Some(101), // ENETUNREACH
    Some(113), // EHOSTUNREACH
    Some(13),  // EACCES
    Some(1),   // EPERM
    Some(110), // ETIMEDOUT
    None,
];

fn os_error(errno: Option<i32>) -> io::Error {
    match errno {
        Some(e) => io::Error::from_raw_os_error(e),
        None => io::Error::other("simulated failure"),
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

#[derive(Debug, Default)]
pub struct SimTcp {
    pub connected: bool,
    pending_result: Option<i32>,
    pub send_space: usize,
    pub written: u64,
    /// Bytes the remote application sent, not yet discarded by the engine.
    pub queue: VecDeque<u8>,
    pub eof: bool,
    /// The next write/peek fails with ECONNRESET.
    pub reset: bool,
    pub shut_wr: bool,
}

#[derive(Debug, Default)]
pub struct SimDgram {
    pub inbox: VecDeque<Vec<u8>>,
    /// The next send or receive fails with this errno.
    pub error: Option<i32>,
    pub sent: u64,
}

#[derive(Debug)]
pub struct SimHost {
    pub tcp: BTreeMap<u32, SimTcp>,
    pub udp: BTreeMap<u32, SimDgram>,
    pub ping: BTreeMap<u32, SimDgram>,
    pub connect_mode: ConnectMode,
    /// Errno for the next UDP/ping opens (None: they succeed).
    pub open_error: Option<Option<i32>>,
    /// Bytes written to and discarded from all TCP sockets, closed ones included.
    pub tcp_written: u64,
    pub tcp_discarded: u64,
    next_ident: u16,
    /// Port-forward listeners by forward id: TCP clients waiting to be accepted, and UDP
    /// datagrams from clients.
    pub backlog: BTreeMap<u32, VecDeque<SocketAddr>>,
    pub listener_inbox: BTreeMap<u32, VecDeque<(SocketAddr, Vec<u8>)>>,
    /// Replies sent through UDP listeners.
    pub listener_sent: u64,
}

impl Default for SimHost {
    fn default() -> Self {
        Self {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            ping: BTreeMap::new(),
            connect_mode: ConnectMode::Immediate,
            open_error: None,
            tcp_written: 0,
            tcp_discarded: 0,
            next_ident: 0x4000,
            backlog: BTreeMap::new(),
            listener_inbox: BTreeMap::new(),
            listener_sent: 0,
        }
    }
}

/// A change the fuzz script makes on the host side of one socket.
#[derive(Debug, Clone, Copy)]
pub enum HostAction<'a> {
    /// The remote application sends `len` bytes (a counting pattern starting at `seed`).
    TcpSend { len: usize, seed: u8 },
    /// The remote application closes its side (end of stream after the queued bytes).
    TcpEof,
    /// The send buffer now has this much free space.
    TcpSendSpace(usize),
    /// The connection is reset by the peer.
    TcpReset,
    /// A datagram arrives on a UDP socket (`len` bytes, or `bytes` when given).
    UdpDatagram { len: usize, bytes: &'a [u8] },
    /// The next UDP operation fails with this errno (ICMP error from the peer).
    UdpError(Option<i32>),
    /// An ICMP message arrives on a ping socket.
    PingReply(&'a [u8]),
}

impl SimHost {
    /// Every open socket, in a stable order (for choosing one by index).
    pub fn sockets(&self) -> Vec<SocketRef> {
        let tcp = self.tcp.keys().map(|&index| SocketRef {
            kind: FlowKind::Tcp,
            index,
        });
        let udp = self.udp.keys().map(|&index| SocketRef {
            kind: FlowKind::Udp,
            index,
        });
        let ping = self.ping.keys().map(|&index| SocketRef {
            kind: FlowKind::Icmp,
            index,
        });
        let listeners = self
            .backlog
            .keys()
            .chain(self.listener_inbox.keys())
            .map(|&index| SocketRef {
                kind: FlowKind::Listener,
                index,
            });
        tcp.chain(udp).chain(ping).chain(listeners).collect()
    }

    /// A host client (address from `seed`) for forward listener `id`: a TCP client waiting in
    /// the backlog, or (with `datagram`) a UDP datagram from it.
    fn listener_client(&mut self, index: u32, seed: u8, datagram: Option<&[u8]>) {
        let client = SocketAddr::new(
            match seed % 4 {
                0 => std::net::Ipv4Addr::LOCALHOST.into(),
                1 => std::net::Ipv4Addr::new(198, 51, 100, seed).into(),
                2 => std::net::Ipv6Addr::LOCALHOST.into(),
                _ => std::net::Ipv4Addr::new(192, 168, 127, seed).into(),
            },
            40000 + u16::from(seed >> 2),
        );
        if let Some(bytes) = datagram {
            if let Some(q) = self.listener_inbox.get_mut(&index) {
                if q.len() < MAX_DATAGRAMS {
                    q.push_back((client, bytes.to_vec()));
                }
            }
        } else if let Some(q) = self.backlog.get_mut(&index) {
            if q.len() < MAX_DATAGRAMS {
                q.push_back(client);
            }
        }
    }

    /// Apply a host-side change; ignored when the socket is of another kind.
    pub fn control(&mut self, id: SocketRef, action: HostAction<'_>) {
        match (id.kind, action) {
            (FlowKind::Listener, HostAction::TcpSend { seed, .. }) => {
                self.listener_client(id.index, seed, None)
            }
            (FlowKind::Listener, HostAction::UdpDatagram { len, bytes }) => {
                let d = if bytes.is_empty() {
                    vec![0x5a; len]
                } else {
                    bytes.to_vec()
                };
                self.listener_client(id.index, len as u8, Some(&d));
            }
            (FlowKind::Tcp, _) => {
                let Some(s) = self.tcp.get_mut(&id.index) else {
                    return;
                };
                match action {
                    HostAction::TcpSend { len, seed } => {
                        let len = len.min(MAX_HOST_QUEUE - s.queue.len());
                        if !s.eof {
                            s.queue.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
                        }
                    }
                    HostAction::TcpEof => s.eof = true,
                    HostAction::TcpSendSpace(n) => s.send_space = n,
                    HostAction::TcpReset => s.reset = true,
                    _ => {}
                }
            }
            (FlowKind::Udp, HostAction::UdpDatagram { len, bytes }) => {
                if let Some(s) = self.udp.get_mut(&id.index) {
                    if s.inbox.len() < MAX_DATAGRAMS {
                        let d = if bytes.is_empty() {
                            vec![0x5a; len]
                        } else {
                            bytes.to_vec()
                        };
                        s.inbox.push_back(d);
                    }
                }
            }
            (FlowKind::Udp, HostAction::UdpError(e)) => {
                if let Some(s) = self.udp.get_mut(&id.index) {
                    s.error = Some(e.unwrap_or(111));
                }
            }
            (FlowKind::Icmp, HostAction::PingReply(bytes)) => {
                if let Some(s) = self.ping.get_mut(&id.index) {
                    if s.inbox.len() < MAX_DATAGRAMS {
                        s.inbox.push_back(bytes.to_vec());
                    }
                }
            }
            _ => {}
        }
    }

    fn tcp_mut(&mut self, id: SocketRef, op: &str) -> &mut SimTcp {
        assert_eq!(id.kind, FlowKind::Tcp, "TCP {op} on a {:?} socket", id.kind);
        match self.tcp.get_mut(&id.index) {
            Some(s) => s,
            None => panic!(
                "engine contract: TCP {op} on socket {} that is not open",
                id.index
            ),
        }
    }

    fn dgram_mut(&mut self, id: SocketRef, op: &str) -> &mut SimDgram {
        let table = match id.kind {
            FlowKind::Udp => &mut self.udp,
            FlowKind::Icmp => &mut self.ping,
            FlowKind::Tcp | FlowKind::Listener => {
                panic!("engine contract: {op} on a {:?} socket", id.kind)
            }
        };
        match table.get_mut(&id.index) {
            Some(s) => s,
            None => panic!(
                "engine contract: {op} on {:?} socket {} that is not open",
                id.kind, id.index
            ),
        }
    }
}

impl HostSockets for SimHost {
    fn tcp_connect(&mut self, id: SocketRef, _target: TcpTarget) -> io::Result<ConnectProgress> {
        assert_eq!(id.kind, FlowKind::Tcp);
        assert!(
            !self.tcp.contains_key(&id.index),
            "engine contract: TCP socket {} opened twice",
            id.index
        );
        let (connected, pending_result, progress) = match self.connect_mode {
            ConnectMode::Immediate => (true, None, ConnectProgress::Connected),
            ConnectMode::Later(r) => (false, r, ConnectProgress::InProgress),
            ConnectMode::Fail(e) => return Err(os_error(e)),
        };
        let s = SimTcp {
            connected,
            pending_result,
            send_space: DEFAULT_SEND_SPACE,
            ..Default::default()
        };
        self.tcp.insert(id.index, s);
        Ok(progress)
    }

    fn tcp_connect_result(&mut self, id: SocketRef) -> io::Result<()> {
        let s = self.tcp_mut(id, "connect result");
        match s.pending_result.take() {
            Some(e) if !s.connected => Err(io::Error::from_raw_os_error(e)),
            _ => {
                s.connected = true;
                Ok(())
            }
        }
    }

    fn tcp_write(&mut self, id: SocketRef, data: &[u8]) -> io::Result<usize> {
        let s = self.tcp_mut(id, "write");
        if !s.connected {
            return Err(would_block());
        }
        if s.reset {
            return Err(io::Error::from_raw_os_error(104));
        }
        if s.shut_wr {
            return Err(io::Error::from_raw_os_error(32)); // EPIPE
        }
        let n = data.len().min(s.send_space);
        if n == 0 && !data.is_empty() {
            return Err(would_block());
        }
        s.send_space -= n;
        s.written += n as u64;
        self.tcp_written += n as u64;
        Ok(n)
    }

    fn tcp_peek(
        &mut self,
        id: SocketRef,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> io::Result<usize> {
        let s = self.tcp_mut(id, "peek");
        if s.reset {
            return Err(io::Error::from_raw_os_error(104));
        }
        assert!(
            offset <= s.queue.len(),
            "engine contract: peek at offset {offset} past the {} bytes the host has queued",
            s.queue.len()
        );
        if offset == s.queue.len() {
            return if s.eof { Ok(0) } else { Err(would_block()) };
        }
        let mut src = s.queue.range(offset..);
        let mut n = 0;
        'fill: for buf in bufs.iter_mut() {
            for byte in buf.iter_mut() {
                let Some(&b) = src.next() else { break 'fill };
                *byte = b;
                n += 1;
            }
        }
        Ok(n)
    }

    fn tcp_discard(&mut self, id: SocketRef, len: usize) -> io::Result<()> {
        let s = self.tcp_mut(id, "discard");
        assert!(
            len <= s.queue.len(),
            "engine contract: discard of {len} bytes, only {} queued (the guest acknowledged bytes never read)",
            s.queue.len()
        );
        s.queue.drain(..len);
        self.tcp_discarded += len as u64;
        Ok(())
    }

    fn tcp_send_space(&mut self, id: SocketRef) -> usize {
        self.tcp_mut(id, "send space").send_space
    }

    fn tcp_shutdown_write(&mut self, id: SocketRef) {
        self.tcp_mut(id, "shutdown").shut_wr = true;
    }

    fn tcp_close(&mut self, id: SocketRef, _abort: bool) {
        // A connect that failed at once left no socket: closing it is the driver's no-op.
        self.tcp.remove(&id.index);
    }

    fn udp_open(&mut self, id: SocketRef, _dst: SocketAddr) -> io::Result<()> {
        assert_eq!(id.kind, FlowKind::Udp);
        assert!(
            !self.udp.contains_key(&id.index),
            "engine contract: UDP socket {} opened twice",
            id.index
        );
        if let Some(e) = self.open_error {
            return Err(os_error(e));
        }
        self.udp.insert(id.index, SimDgram::default());
        Ok(())
    }

    fn udp_send(&mut self, id: SocketRef, payload: &[u8]) -> io::Result<usize> {
        let s = self.dgram_mut(id, "udp send");
        if let Some(e) = s.error.take() {
            return Err(io::Error::from_raw_os_error(e));
        }
        s.sent += 1;
        Ok(payload.len())
    }

    fn udp_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.dgram_mut(id, "udp recv");
        if let Some(e) = s.error.take() {
            return Err(io::Error::from_raw_os_error(e));
        }
        let Some(d) = s.inbox.pop_front() else {
            return Err(would_block());
        };
        // Like recv(2) on a datagram socket: the rest of a datagram that does not fit is lost.
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }

    fn udp_close(&mut self, id: SocketRef) {
        assert!(
            self.udp.remove(&id.index).is_some(),
            "engine contract: UDP socket {} closed but not open",
            id.index
        );
    }

    fn ping_open(&mut self, id: SocketRef, _dst: SocketAddr) -> io::Result<u16> {
        assert_eq!(id.kind, FlowKind::Icmp);
        assert!(
            !self.ping.contains_key(&id.index),
            "engine contract: ping socket {} opened twice",
            id.index
        );
        if let Some(e) = self.open_error {
            return Err(match e {
                Some(1) | Some(13) => io::ErrorKind::PermissionDenied.into(),
                e => os_error(e),
            });
        }
        self.ping.insert(id.index, SimDgram::default());
        self.next_ident = self.next_ident.wrapping_add(1);
        Ok(self.next_ident)
    }

    fn ping_send(&mut self, id: SocketRef, message: &[u8]) -> io::Result<usize> {
        let s = self.dgram_mut(id, "ping send");
        s.sent += 1;
        Ok(message.len())
    }

    fn ping_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.dgram_mut(id, "ping recv");
        let Some(d) = s.inbox.pop_front() else {
            return Err(would_block());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }

    fn ping_close(&mut self, id: SocketRef) {
        assert!(
            self.ping.remove(&id.index).is_some(),
            "engine contract: ping socket {} closed but not open",
            id.index
        );
    }

    fn tcp_accept(&mut self, listener: SocketRef, id: SocketRef) -> io::Result<SocketAddr> {
        assert_eq!(
            listener.kind,
            FlowKind::Listener,
            "accept on a {:?} socket",
            listener.kind
        );
        assert_eq!(id.kind, FlowKind::Tcp);
        let client = self
            .backlog
            .get_mut(&listener.index)
            .and_then(|q| q.pop_front())
            .ok_or_else(would_block)?;
        assert!(
            !self.tcp.contains_key(&id.index),
            "engine contract: accepted into TCP socket {} that is open",
            id.index
        );
        let s = SimTcp {
            connected: true,
            send_space: DEFAULT_SEND_SPACE,
            ..Default::default()
        };
        self.tcp.insert(id.index, s);
        Ok(client)
    }

    fn udp_recv_from(
        &mut self,
        listener: SocketRef,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        assert_eq!(listener.kind, FlowKind::Listener);
        let (from, d) = self
            .listener_inbox
            .get_mut(&listener.index)
            .and_then(|q| q.pop_front())
            .ok_or_else(would_block)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok((n, from))
    }

    fn udp_send_to(
        &mut self,
        listener: SocketRef,
        _to: SocketAddr,
        payload: &[u8],
    ) -> io::Result<usize> {
        assert_eq!(listener.kind, FlowKind::Listener);
        assert!(
            self.listener_inbox.contains_key(&listener.index),
            "engine contract: sendto on UDP listener {} that does not exist",
            listener.index
        );
        self.listener_sent += payload.len() as u64;
        Ok(payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(index: u32) -> SocketRef {
        SocketRef {
            kind: FlowKind::Tcp,
            index,
        }
    }

    #[test]
    fn tcp_socket_behaves_like_a_nonblocking_kernel_socket() {
        let mut h = SimHost::default();
        let id = tcp(3);
        let target = TcpTarget::Host("127.0.0.1:80".parse().unwrap());
        assert_eq!(
            h.tcp_connect(id, target).unwrap(),
            ConnectProgress::Connected
        );
        h.control(id, HostAction::TcpSendSpace(4));
        assert_eq!(h.tcp_write(id, b"hello").unwrap(), 4);
        assert_eq!(
            h.tcp_write(id, b"o").unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        h.control(id, HostAction::TcpSend { len: 5, seed: 10 });
        let mut a = [0u8; 2];
        let mut b = [0u8; 8];
        let n = h
            .tcp_peek(
                id,
                1,
                &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)],
            )
            .unwrap();
        assert_eq!((n, a, &b[..2]), (4, [11, 12], &[13, 14][..]));
        assert_eq!(
            h.tcp_peek(id, 5, &mut [IoSliceMut::new(&mut b)])
                .unwrap_err()
                .kind(),
            io::ErrorKind::WouldBlock
        );
        h.control(id, HostAction::TcpEof);
        assert_eq!(
            h.tcp_peek(id, 5, &mut [IoSliceMut::new(&mut b)]).unwrap(),
            0
        );
        h.tcp_discard(id, 5).unwrap();
        h.tcp_close(id, false);
        assert!(h.tcp.is_empty());
        h.connect_mode = ConnectMode::Later(Some(111));
        assert_eq!(
            h.tcp_connect(id, target).unwrap(),
            ConnectProgress::InProgress
        );
        assert_eq!(
            h.tcp_connect_result(id).unwrap_err().raw_os_error(),
            Some(111)
        );
    }

    #[test]
    #[should_panic(expected = "engine contract: discard")]
    fn discarding_unread_bytes_breaks_the_contract() {
        let mut h = SimHost::default();
        let id = tcp(0);
        h.tcp_connect(id, TcpTarget::DnsService).unwrap();
        h.tcp_discard(id, 1).unwrap();
    }

    #[test]
    #[should_panic(expected = "not open")]
    fn writing_a_closed_socket_breaks_the_contract() {
        let mut h = SimHost::default();
        let _ = h.tcp_write(tcp(7), b"x");
    }
}
