//! Flows: guest connections translated onto host sockets.
//!
//! Each engine (TCP, UDP, ICMP echo) keeps a bounded table of flows keyed by the guest's 4-tuple
//! and acts on host sockets only through [`HostSockets`], which the driver implements with real
//! non-blocking sockets registered in its event loop (token = [`SocketRef`]) and tests implement
//! with simulated ones. Readiness comes back through the engines' `on_socket_*` methods.

pub mod icmp;
pub mod tcp;
pub mod udp;

use crate::config::Mac;
use crate::counters::Counters;
use crate::frames;
use crate::switch::Switch;
use crate::tx::TxQueue;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the datagram engines (UDP, ICMP echo) need from the network for one call.
pub struct DatagramCtx<'a> {
    pub now: Duration,
    pub tx: &'a mut TxQueue,
    pub switch: &'a Switch,
    pub counters: &'a mut Counters,
    pub gateway_mac: Mac,
}

impl DatagramCtx<'_> {
    /// Tell the guest that its packet `ip_packet` (header length `header_len`) from `guest` to
    /// `remote` could not be delivered (ICMP or ICMPv6 destination unreachable).
    pub fn unreachable(
        &mut self,
        guest_mac: Mac,
        guest: IpAddr,
        remote: IpAddr,
        why: frames::Unreachable,
        ip_packet: (&[u8], usize),
    ) {
        if let Some(dest) = frames::dest_for(self.switch, self.counters, &guest_mac) {
            frames::push_unreachable(
                self.tx,
                dest,
                guest_mac,
                self.gateway_mac,
                remote,
                guest,
                why,
                ip_packet.0,
                ip_packet.1,
            );
        }
    }
}

/// Which engine a host socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    Tcp,
    Udp,
    Icmp,
    /// A port forward's host listener (TCP or UDP); the index is the forward's id.
    Listener,
}

/// Names one host socket: the engine and the flow's slot in that engine's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketRef {
    pub kind: FlowKind,
    pub index: u32,
}

/// Where a guest TCP connection goes on the host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpTarget {
    /// A real host socket connected to this address.
    Host(SocketAddr),
    /// slipway's own DNS-over-TCP service (the guest connected to the gateway's port 53).
    DnsService,
    /// The host unix socket configured for this TCP port of the gateway
    /// ([`NetworkConfig::gateway_unix_ports`](crate::NetworkConfig)).
    Unix(u16),
    /// gvproxy's forwarder API served to guests at the gateway's port 80; carries the guest's
    /// address (an empty host in an expose request means the caller).
    GuestApi(IpAddr),
}

/// Outcome of starting a non-blocking connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProgress {
    Connected,
    InProgress,
}

/// The host-socket operations the engines need. All calls are non-blocking; `WouldBlock` is a
/// normal answer. Sockets are created registered for readable and writable readiness (edge
/// triggered) under their [`SocketRef`].
pub trait HostSockets {
    fn tcp_connect(&mut self, id: SocketRef, target: TcpTarget) -> io::Result<ConnectProgress>;
    /// The result of a connect that was in progress (`SO_ERROR`).
    fn tcp_connect_result(&mut self, id: SocketRef) -> io::Result<()>;
    /// Write guest payload; returns how many bytes the kernel accepted.
    fn tcp_write(&mut self, id: SocketRef, data: &[u8]) -> io::Result<usize>;
    /// Peek received data starting `offset` bytes past the head of the receive queue into the
    /// buffers in order (scatter). Ok(0) with non-empty buffers means end of stream at `offset`.
    fn tcp_peek(
        &mut self,
        id: SocketRef,
        offset: usize,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> io::Result<usize>;
    /// Drop `len` bytes from the head of the receive queue (the guest acknowledged them).
    fn tcp_discard(&mut self, id: SocketRef, len: usize) -> io::Result<()>;
    /// Free space in the socket's send buffer: the window advertised to the guest.
    fn tcp_send_space(&mut self, id: SocketRef) -> usize;
    fn tcp_shutdown_write(&mut self, id: SocketRef);
    /// Close the socket; `abort` resets the connection (SO_LINGER 0).
    fn tcp_close(&mut self, id: SocketRef, abort: bool);

    /// Open a UDP socket connected to `dst`.
    fn udp_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<()>;
    fn udp_send(&mut self, id: SocketRef, payload: &[u8]) -> io::Result<usize>;
    fn udp_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize>;
    fn udp_close(&mut self, id: SocketRef);

    /// Open an unprivileged ICMP echo ("ping") socket connected to `dst`; returns the echo
    /// identifier the kernel assigned (replies carry it).
    fn ping_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<u16>;
    /// Send an ICMP echo request message (header included; the kernel sets id and checksum).
    fn ping_send(&mut self, id: SocketRef, message: &[u8]) -> io::Result<usize>;
    /// Receive an ICMP message (header included).
    fn ping_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize>;
    fn ping_close(&mut self, id: SocketRef);

    /// Accept one client waiting on the TCP forward `listener` as the socket of flow `id`
    /// (registered like a connected socket); returns the client's address. `WouldBlock` when no
    /// client is waiting.
    fn tcp_accept(&mut self, listener: SocketRef, id: SocketRef) -> io::Result<SocketAddr> {
        let _ = (listener, id);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Receive one datagram on the UDP forward `listener`, with its sender.
    fn udp_recv_from(
        &mut self,
        listener: SocketRef,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        let _ = (listener, buf);
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Send a guest's reply from the UDP forward `listener` to its client `to`.
    fn udp_send_to(
        &mut self,
        listener: SocketRef,
        to: SocketAddr,
        payload: &[u8],
    ) -> io::Result<usize> {
        let _ = (listener, to, payload);
        Err(io::ErrorKind::Unsupported.into())
    }
}
