//! UDP by translation: one connected host socket per guest flow, expired when idle.
//!
//! Theory of operation: a guest datagram to `remote:port` finds (or opens) the flow for its
//! 4-tuple, whose host socket is connected to the translated destination, and is sent with one
//! `send`. Datagrams the host socket receives are read straight into the payload area of a frame
//! and sent to the guest from `remote:port` as the guest addressed it. An ICMP error the kernel
//! reports (ECONNREFUSED) becomes an ICMP (or ICMPv6) port unreachable for the guest.
//! Both families work alike; a flow's addresses are always of one family.
//!
//! Port forwards ([`UdpEngine::on_forward_readable`]): a datagram from a host client on a UDP
//! forward's listener opens (or refreshes) a flow for that client, keyed as the guest sees it
//! (the client's address, or the host alias for loopback clients); it has no socket of its own:
//! the guest's replies go back through the listener to the client (`sendto`). It expires like any
//! flow.
//!
//! Limits: [`UdpLimits::max_flows`] flows (a new flow beyond it is refused and counted),
//! idle expiry after [`UdpLimits::idle_timeout`], datagrams up to 65507 bytes over IPv4 and
//! 65527 over IPv6. A host datagram larger than the guest's family carries (an IPv6 client of a
//! forward to an IPv4 guest) is dropped and counted, not cut.

use super::{FlowKind, HostSockets, SocketRef};
use crate::config::Mac;
use crate::counters::{Counters, DropReason};
use crate::frames::{self, Unreachable};
use crate::hash::FastMap;
use slipway_wire::udp;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct UdpLimits {
    pub max_flows: usize,
    pub idle_timeout: Duration,
}

impl Default for UdpLimits {
    fn default() -> Self {
        Self {
            max_flows: 4096,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The largest UDP payload of either family (IPv6's 65535 - 8; IPv4's is 65507).
const MAX_DATAGRAM: usize = 65527;
const MAX_DATAGRAM_V4: usize = 65507;

/// The largest UDP payload one IP packet of `guest`'s family can carry.
fn max_payload(guest: IpAddr) -> usize {
    if guest.is_ipv4() {
        MAX_DATAGRAM_V4
    } else {
        MAX_DATAGRAM
    }
}
/// Datagrams read from one socket per readiness event before yielding to other work.
const READ_BUDGET: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpKey {
    pub guest_ip: IpAddr,
    pub guest_port: u16,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
}

struct UdpFlow {
    key: UdpKey,
    guest_mac: Mac,
    last_active: Duration,
    /// A forwarded flow: the forward's listener (its index) and the client behind it.
    via: Option<(u32, SocketAddr)>,
    opened: Duration,
    bytes_from_guest: u64,
    bytes_to_guest: u64,
}

/// A summary of one UDP flow for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpFlowInfo {
    pub key: UdpKey,
    /// A forward's client (true) or a flow the guest opened.
    pub forwarded: bool,
    pub bytes_from_guest: u64,
    pub bytes_to_guest: u64,
    pub opened: Duration,
}

pub use super::DatagramCtx as UdpCtx;

pub struct UdpEngine {
    limits: UdpLimits,
    slots: Vec<Option<UdpFlow>>,
    free: Vec<u32>,
    by_key: FastMap<UdpKey, u32>,
    pending_reads: Vec<u32>,
    /// UDP forwards whose listener read stopped at the TX budget: (listener, guest MAC, guest).
    pending_forward_reads: Vec<(SocketRef, Mac, (IpAddr, u16))>,
}

impl UdpEngine {
    pub fn new(limits: UdpLimits) -> Self {
        Self {
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: FastMap::default(),
            pending_reads: Vec::new(),
            pending_forward_reads: Vec::new(),
        }
    }

    pub fn flow_count(&self) -> usize {
        self.by_key.len()
    }

    pub fn flows(&self) -> Vec<UdpFlowInfo> {
        self.slots
            .iter()
            .flatten()
            .map(|f| UdpFlowInfo {
                key: f.key,
                forwarded: f.via.is_some(),
                bytes_from_guest: f.bytes_from_guest,
                bytes_to_guest: f.bytes_to_guest,
                opened: f.opened,
            })
            .collect()
    }

    fn sock(index: u32) -> SocketRef {
        SocketRef {
            kind: FlowKind::Udp,
            index,
        }
    }

    /// A datagram from a guest. `target` is the translated host destination (None: refused by
    /// policy, answered with ICMP administratively prohibited). `ip_packet` is quoted in errors.
    #[allow(clippy::too_many_arguments)]
    pub fn on_guest_datagram(
        &mut self,
        ctx: &mut UdpCtx<'_>,
        sockets: &mut dyn HostSockets,
        guest_mac: Mac,
        key: UdpKey,
        target: Option<SocketAddr>,
        payload: &[u8],
        ip_packet: (&[u8], usize),
    ) {
        if let Some(&index) = self.by_key.get(&key) {
            if let Some(f) = self.slots[index as usize].as_mut() {
                if let Some((listener, client)) = f.via {
                    // A reply to a forwarded client: back through the listener, whatever the
                    // egress policy says (the client came to us).
                    f.last_active = ctx.now;
                    f.guest_mac = guest_mac;
                    f.bytes_from_guest += payload.len() as u64;
                    if sockets
                        .udp_send_to(listener_ref(listener), client, payload)
                        .is_err()
                    {
                        ctx.counters.drop(DropReason::UdpSendFailed);
                    }
                    return;
                }
            }
        }
        let Some(target) = target else {
            ctx.counters.drop(DropReason::EgressDenied);
            ctx.unreachable(
                guest_mac,
                key.guest_ip,
                key.remote_ip,
                Unreachable::AdminProhibited,
                ip_packet,
            );
            return;
        };
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                if self.by_key.len() >= self.limits.max_flows {
                    ctx.counters.drop(DropReason::UdpFlowTableFull);
                    return;
                }
                let index = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                if let Err(e) = sockets.udp_open(Self::sock(index), target) {
                    self.free.push(index);
                    ctx.counters.drop(DropReason::UdpSendFailed);
                    let code = match e.kind() {
                        io::ErrorKind::PermissionDenied => Unreachable::AdminProhibited,
                        _ => Unreachable::Net,
                    };
                    ctx.unreachable(guest_mac, key.guest_ip, key.remote_ip, code, ip_packet);
                    return;
                }
                self.slots[index as usize] = Some(UdpFlow {
                    key,
                    guest_mac,
                    last_active: ctx.now,
                    via: None,
                    opened: ctx.now,
                    bytes_from_guest: 0,
                    bytes_to_guest: 0,
                });
                self.by_key.insert(key, index);
                ctx.counters.udp_flows_opened += 1;
                index
            }
        };
        if let Some(f) = self.slots[index as usize].as_mut() {
            f.last_active = ctx.now;
            f.guest_mac = guest_mac;
            f.bytes_from_guest += payload.len() as u64;
        }
        match sockets.udp_send(Self::sock(index), payload) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(111) => {
                // ECONNREFUSED from an earlier ICMP error: tell the guest.
                ctx.counters.drop(DropReason::UdpClosedPort);
                ctx.unreachable(
                    guest_mac,
                    key.guest_ip,
                    key.remote_ip,
                    Unreachable::Port,
                    ip_packet,
                );
            }
            Err(_) => ctx.counters.drop(DropReason::UdpSendFailed),
        }
    }

    /// The host socket of flow `index` is readable: forward what it received to the guest.
    pub fn on_socket_readable(
        &mut self,
        ctx: &mut UdpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
    ) {
        let Some(f) = self.slots.get_mut(index as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
            return;
        };
        let hdr = frames::eth_ip_len(f.key.guest_ip) + udp::HEADER_LEN;
        for _ in 0..READ_BUDGET {
            if ctx.tx.over_budget() {
                if !self.pending_reads.contains(&index) {
                    self.pending_reads.push(index);
                }
                return;
            }
            let buf = ctx.tx.reserve(hdr + MAX_DATAGRAM);
            match sockets.udp_recv(Self::sock(index), &mut buf[hdr..]) {
                Ok(n) if n > max_payload(f.key.guest_ip) => {
                    ctx.tx.finish(0);
                    ctx.counters.drop(DropReason::UdpDatagramTooLarge);
                }
                Ok(n) => {
                    frames::write_udp_in_place(
                        &mut buf[..hdr + n],
                        f.guest_mac,
                        ctx.gateway_mac,
                        (f.key.remote_ip, f.key.remote_port),
                        (f.key.guest_ip, f.key.guest_port),
                        n,
                        None,
                    );
                    ctx.tx.commit_at(dest, 0, hdr + n);
                    ctx.tx.finish(hdr + n);
                    f.last_active = ctx.now;
                    f.bytes_to_guest += n as u64;
                }
                Err(e) => {
                    ctx.tx.finish(0);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        ctx.counters.drop(DropReason::UdpClosedPort);
                        continue;
                    }
                    return;
                }
            }
        }
        if !self.pending_reads.contains(&index) {
            self.pending_reads.push(index);
        }
    }

    /// Datagrams are waiting on the UDP forward `listener` to `guest`: send each to the guest
    /// from its client's visible address (`visible`), opening a flow per client.
    pub fn on_forward_readable(
        &mut self,
        ctx: &mut UdpCtx<'_>,
        sockets: &mut dyn HostSockets,
        listener: SocketRef,
        guest_mac: Mac,
        guest: (IpAddr, u16),
        visible: impl Fn(IpAddr, IpAddr) -> IpAddr,
    ) {
        let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &guest_mac) else {
            return;
        };
        let hdr = frames::eth_ip_len(guest.0) + udp::HEADER_LEN;
        for _ in 0..READ_BUDGET {
            if ctx.tx.over_budget() {
                break;
            }
            let buf = ctx.tx.reserve(hdr + MAX_DATAGRAM);
            let (n, client) = match sockets.udp_recv_from(listener, &mut buf[hdr..]) {
                Ok((n, _)) if n > max_payload(guest.0) => {
                    ctx.tx.finish(0);
                    ctx.counters.drop(DropReason::UdpDatagramTooLarge);
                    continue;
                }
                Ok(got) => got,
                Err(e) => {
                    ctx.tx.finish(0);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        ctx.counters.drop(DropReason::UdpClosedPort);
                        continue;
                    }
                    return;
                }
            };
            let key = UdpKey {
                guest_ip: guest.0,
                guest_port: guest.1,
                remote_ip: visible(client.ip(), guest.0),
                remote_port: client.port(),
            };
            let via = Some((listener.index, client));
            let ok = match self.by_key.get(&key) {
                Some(&i) => match self.slots[i as usize].as_mut() {
                    Some(f) if f.via == via => {
                        f.last_active = ctx.now;
                        f.bytes_to_guest += n as u64;
                        true
                    }
                    // The guest already has a flow of its own with this 4-tuple.
                    _ => false,
                },
                None if self.by_key.len() >= self.limits.max_flows => {
                    ctx.counters.drop(DropReason::UdpFlowTableFull);
                    ctx.tx.finish(0);
                    continue;
                }
                None => {
                    let index = match self.free.pop() {
                        Some(i) => i,
                        None => {
                            self.slots.push(None);
                            (self.slots.len() - 1) as u32
                        }
                    };
                    self.slots[index as usize] = Some(UdpFlow {
                        key,
                        guest_mac,
                        last_active: ctx.now,
                        via,
                        opened: ctx.now,
                        bytes_from_guest: 0,
                        bytes_to_guest: n as u64,
                    });
                    self.by_key.insert(key, index);
                    ctx.counters.udp_flows_opened += 1;
                    true
                }
            };
            if !ok {
                ctx.counters.drop(DropReason::ForwardFlowClash);
                ctx.tx.finish(0);
                continue;
            }
            frames::write_udp_in_place(
                &mut buf[..hdr + n],
                guest_mac,
                ctx.gateway_mac,
                (key.remote_ip, key.remote_port),
                (key.guest_ip, key.guest_port),
                n,
                None,
            );
            ctx.tx.commit_at(dest, 0, hdr + n);
            ctx.tx.finish(hdr + n);
            ctx.counters.forwarded_datagrams += 1;
        }
        // Budget exhausted: read on after the next flush.
        if !self.pending_forward_reads.iter().any(|p| p.0 == listener) {
            self.pending_forward_reads
                .push((listener, guest_mac, guest));
        }
    }

    /// Drop the datagrams waiting on `listener` (its guest cannot be reached), counted.
    pub fn refuse_forwarded(
        &mut self,
        ctx: &mut UdpCtx<'_>,
        sockets: &mut dyn HostSockets,
        listener: SocketRef,
    ) {
        for _ in 0..READ_BUDGET {
            let buf = ctx.tx.reserve(MAX_DATAGRAM);
            let got = sockets.udp_recv_from(listener, buf);
            ctx.tx.finish(0);
            match got {
                Ok(_) => ctx.counters.drop(DropReason::ForwardGuestUnreachable),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {}
            }
        }
    }

    /// A UDP forward was removed: forget its clients' flows.
    pub fn forget_listener(&mut self, listener: u32) {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|f| f.via.is_some_and(|(l, _)| l == listener))
            {
                if let Some(f) = self.slots[i].take() {
                    self.by_key.remove(&f.key);
                    self.free.push(i as u32);
                }
            }
        }
        self.pending_forward_reads.retain(|p| p.0.index != listener);
    }

    /// True when the guest has a flow with this 4-tuple (replies to forwarded clients among them).
    pub fn has_flow(&self, key: &UdpKey) -> bool {
        self.by_key.contains_key(key)
    }

    /// Continue reads that were cut short by a budget.
    pub fn resume_reads(
        &mut self,
        ctx: &mut UdpCtx<'_>,
        sockets: &mut dyn HostSockets,
        visible: impl Fn(IpAddr, IpAddr) -> IpAddr + Copy,
    ) {
        let list = std::mem::take(&mut self.pending_reads);
        for index in list {
            self.on_socket_readable(ctx, sockets, index);
        }
        let list = std::mem::take(&mut self.pending_forward_reads);
        for (listener, mac, guest) in list {
            self.on_forward_readable(ctx, sockets, listener, mac, guest, visible);
        }
    }

    pub fn has_pending_reads(&self) -> bool {
        !self.pending_reads.is_empty() || !self.pending_forward_reads.is_empty()
    }

    /// Close flows idle longer than the limit.
    pub fn expire(
        &mut self,
        now: Duration,
        counters: &mut Counters,
        sockets: &mut dyn HostSockets,
    ) {
        let timeout = self.limits.idle_timeout;
        for i in 0..self.slots.len() {
            let expired = self.slots[i]
                .as_ref()
                .is_some_and(|f| now.saturating_sub(f.last_active) >= timeout);
            if expired {
                if let Some(f) = self.slots[i].take() {
                    self.by_key.remove(&f.key);
                    if f.via.is_none() {
                        sockets.udp_close(Self::sock(i as u32));
                    }
                    self.free.push(i as u32);
                    counters.udp_flows_expired += 1;
                }
            }
        }
    }
}

fn listener_ref(index: u32) -> SocketRef {
    SocketRef {
        kind: FlowKind::Listener,
        index,
    }
}
