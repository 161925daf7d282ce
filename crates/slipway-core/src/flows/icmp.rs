//! ICMP echo by translation through unprivileged ping sockets.
//!
//! Theory of operation: a guest echo request to a host-side address opens (or reuses) a ping
//! socket (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`) for the guest's (address, identifier,
//! destination). The kernel assigns the socket its own echo identifier; replies are read back,
//! the guest's identifier is restored, the checksum recomputed, and the reply is sent to the guest
//! from the address it pinged. If the host forbids ping sockets (`net.ipv4.ping_group_range`), the
//! driver logs how to allow them and the guest gets ICMP administratively prohibited.
//!
//! IPv6 works the same way with `IPPROTO_ICMPV6` ping sockets (echo request 128, reply 129); the
//! driver picks the socket family from the destination.
//!
//! Limits: [`MAX_PING_FLOWS`] flows, idle expiry after [`PING_IDLE`].

use super::{FlowKind, HostSockets, SocketRef};
use crate::config::Mac;
use crate::counters::DropReason;
use crate::frames;
use crate::frames::Unreachable;
use crate::hash::FastMap;
use slipway_wire::{icmp, icmpv6};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const MAX_PING_FLOWS: usize = 1024;
pub const PING_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingKey {
    pub guest_ip: IpAddr,
    pub ident: u16,
    pub remote_ip: IpAddr,
}

struct PingFlow {
    key: PingKey,
    guest_mac: Mac,
    last_active: Duration,
}

pub use super::DatagramCtx as PingCtx;

#[derive(Default)]
pub struct PingEngine {
    slots: Vec<Option<PingFlow>>,
    free: Vec<u32>,
    by_key: FastMap<PingKey, u32>,
    /// Set once the host refused a ping socket (so the driver logs the fix once).
    pub refused_by_host: bool,
}

impl PingEngine {
    fn sock(index: u32) -> SocketRef {
        SocketRef {
            kind: FlowKind::Icmp,
            index,
        }
    }

    /// An echo request from a guest to a host-side destination (`target` None: denied by policy).
    #[allow(clippy::too_many_arguments)]
    pub fn on_guest_echo(
        &mut self,
        ctx: &mut PingCtx<'_>,
        sockets: &mut dyn HostSockets,
        guest_mac: Mac,
        key: PingKey,
        target: Option<IpAddr>,
        message: &[u8],
        ip_packet: (&[u8], usize),
    ) {
        let deny = |ctx: &mut PingCtx<'_>| {
            ctx.unreachable(
                guest_mac,
                key.guest_ip,
                key.remote_ip,
                Unreachable::AdminProhibited,
                ip_packet,
            )
        };
        let Some(target) = target else {
            ctx.counters.drop(DropReason::EgressDenied);
            deny(ctx);
            return;
        };
        let index = match self.by_key.get(&key) {
            Some(&i) => i,
            None => {
                if self.by_key.len() >= MAX_PING_FLOWS {
                    ctx.counters.drop(DropReason::IcmpFlowTableFull);
                    return;
                }
                let index = match self.free.pop() {
                    Some(i) => i,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                if let Err(e) = sockets.ping_open(Self::sock(index), SocketAddr::new(target, 0)) {
                    self.free.push(index);
                    ctx.counters.drop(DropReason::IcmpSendFailed);
                    if matches!(e.kind(), io::ErrorKind::PermissionDenied) {
                        self.refused_by_host = true;
                    }
                    deny(ctx);
                    return;
                }
                self.slots[index as usize] = Some(PingFlow {
                    key,
                    guest_mac,
                    last_active: ctx.now,
                });
                self.by_key.insert(key, index);
                index
            }
        };
        if let Some(f) = self.slots[index as usize].as_mut() {
            f.last_active = ctx.now;
        }
        match sockets.ping_send(Self::sock(index), message) {
            Ok(_) => ctx.counters.icmp_echo_forwarded += 1,
            Err(_) => ctx.counters.drop(DropReason::IcmpSendFailed),
        }
    }

    pub fn on_socket_readable(
        &mut self,
        ctx: &mut PingCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
    ) {
        let Some(f) = self.slots.get_mut(index as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        let mut buf = [0u8; 2048];
        for _ in 0..64 {
            let n = match sockets.ping_recv(Self::sock(index), &mut buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let reply_type = if f.key.guest_ip.is_ipv4() {
                icmp::ECHO_REPLY
            } else {
                icmpv6::ECHO_REPLY
            };
            if n < icmp::HEADER_LEN || buf[0] != reply_type {
                continue;
            }
            let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
                return;
            };
            let seq = u16::from_be_bytes([buf[6], buf[7]]);
            f.last_active = ctx.now;
            let (rest, body) = (icmp::echo_rest(f.key.ident, seq), &buf[icmp::HEADER_LEN..n]);
            match (f.key.remote_ip, f.key.guest_ip) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => frames::push_icmp_v4(
                    ctx.tx,
                    dest,
                    f.guest_mac,
                    ctx.gateway_mac,
                    src,
                    dst,
                    icmp::ECHO_REPLY,
                    0,
                    rest,
                    body,
                ),
                (IpAddr::V6(src), IpAddr::V6(dst)) => frames::push_icmp_v6(
                    ctx.tx,
                    dest,
                    f.guest_mac,
                    ctx.gateway_mac,
                    src,
                    dst,
                    icmpv6::ECHO_REPLY,
                    0,
                    rest,
                    body,
                ),
                _ => {}
            }
        }
    }

    pub fn expire(&mut self, now: Duration, sockets: &mut dyn HostSockets) {
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|f| now.saturating_sub(f.last_active) >= PING_IDLE)
            {
                if let Some(f) = self.slots[i].take() {
                    self.by_key.remove(&f.key);
                    sockets.ping_close(Self::sock(i as u32));
                    self.free.push(i as u32);
                }
            }
        }
    }
}
