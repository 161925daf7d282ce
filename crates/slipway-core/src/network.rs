//! One virtual network: the switch, the gateway's services and the flow engines, wired in
//! data-path order. The driver feeds it frames, socket readiness and time, and drains its TX queue.
//!
//! Theory of operation: a frame from guest port P enters [`Network::on_guest_frame`]. The switch
//! learns its source MAC and forwards guest-to-guest traffic (copying it into the TX queue). Frames
//! for the gateway (its MAC, or broadcast) are dispatched by protocol: ARP for owned addresses;
//! IPv4 to the gateway itself (DHCP on UDP 67, DNS on UDP/TCP 53, ICMP echo); IPv4 to the
//! host-loopback alias or to outside addresses goes to the TCP, UDP and ICMP engines after address
//! translation (alias → 127.0.0.1) and the egress policy. Everything the network sends to guests is
//! built in the TX queue, which the driver flushes once per batch.
//!
//! Port forwards enter from the host side: the driver binds each forward's listener under
//! `SocketRef { kind: Listener, index: forward id }`; when it is readable the network finds the
//! guest's MAC (neighbour table, else DHCP lease; else an ARP request, while clients wait in the
//! kernel's backlog for up to [`FORWARD_GUEST_WAIT`]) and hands the clients to the TCP or UDP
//! engine.

use crate::config::{Mac, NetworkConfig};
use crate::counters::{Counters, DropReason};
use crate::flows::icmp::{PingCtx, PingEngine, PingKey};
use crate::flows::tcp::{FlowKey, TcpCtx, TcpEngine, TcpLimits};
use crate::flows::udp::{UdpCtx, UdpEngine, UdpKey, UdpLimits};
use crate::flows::{FlowKind, HostSockets, SocketRef, TcpTarget};
use crate::forward::{self, ForwardProto, PortForward};
use crate::frames;
use crate::gateway;
use crate::services::dhcp4::Dhcp4Server;
use crate::switch::{LearnError, Switch};
use crate::tx::{TxDest, TxQueue};
use slipway_wire::ethernet::{self, EthernetFrame};
use slipway_wire::{icmp, ipv4, udp, ArpPacket, Icmpv4Packet, Ipv4Packet, TcpSegment, UdpDatagram};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DNS_PORT: u16 = 53;
/// Where guests reach gvproxy's forwarder API on the gateway (when enabled).
pub const GUEST_API_PORT: u16 = 80;
/// Neighbour (IP → MAC) entries kept per network.
pub const MAX_NEIGHBORS: usize = 4096;
/// DNS queries waiting to be handed to the DNS service per batch.
pub const MAX_DNS_QUEUE: usize = 1024;
/// How often idle UDP and ping flows are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Port forwards per network.
pub const MAX_FORWARDS: usize = 4096;
/// How long clients of a forward wait for its guest to become reachable before they are refused.
pub const FORWARD_GUEST_WAIT: Duration = Duration::from_secs(3);
/// How often a forward waiting for its guest asks again (ARP) and looks for it.
const FORWARD_RETRY: Duration = Duration::from_millis(50);
const ARP_RETRY: Duration = Duration::from_millis(500);

/// A port forward the network serves; its listener is a host socket of the driver's.
#[derive(Debug, Clone)]
struct ForwardEntry {
    rule: PortForward,
    /// The guest address (the rule's, or the network's first guest address) and port.
    guest: (Ipv4Addr, u16),
    /// Clients have waited since then because the guest cannot be reached yet.
    waiting_since: Option<Duration>,
    last_arp: Option<Duration>,
}

/// Why a forward cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("{ip} is not a guest address of this network ({subnet}/{prefix}); give an address of the guest subnet")]
    NotAGuestAddress {
        ip: Ipv4Addr,
        subnet: Ipv4Addr,
        prefix: u8,
    },
    #[error("this network already has {MAX_FORWARDS} forwards; remove some first")]
    TooMany,
}

/// A DNS query a guest sent to the gateway over UDP, for the DNS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    pub guest_mac: Mac,
    pub guest_ip: Ipv4Addr,
    pub guest_port: u16,
    pub server_ip: Ipv4Addr,
    pub payload: Vec<u8>,
}

pub struct Network {
    cfg: NetworkConfig,
    switch: Switch,
    tx: TxQueue,
    counters: Counters,
    dhcp: Dhcp4Server,
    tcp: TcpEngine,
    udp: UdpEngine,
    ping: PingEngine,
    neighbors: HashMap<Ipv4Addr, Mac>,
    dns_queries: Vec<DnsQuery>,
    next_sweep: Duration,
    forwards: Vec<Option<ForwardEntry>>,
    /// Forwards whose listener may hold more clients than one wake-up took (serve after flush).
    forwards_ready: Vec<u32>,
    /// When forwards waiting for their guest are looked at again.
    forward_retry_at: Option<Duration>,
}

impl Network {
    pub fn new(cfg: NetworkConfig, seed: u64) -> Self {
        Self::with_limits(cfg, seed, TcpLimits::default(), UdpLimits::default())
    }

    pub fn with_limits(
        cfg: NetworkConfig,
        seed: u64,
        tcp_limits: TcpLimits,
        udp_limits: UdpLimits,
    ) -> Self {
        Self {
            switch: Switch::new(cfg.gateway_mac),
            tx: TxQueue::new(),
            counters: Counters::default(),
            dhcp: Dhcp4Server::new(&cfg),
            tcp: TcpEngine::new(tcp_limits, seed),
            udp: UdpEngine::new(udp_limits),
            ping: PingEngine::default(),
            neighbors: HashMap::new(),
            dns_queries: Vec::new(),
            next_sweep: SWEEP_INTERVAL,
            forwards: Vec::new(),
            forwards_ready: Vec::new(),
            forward_retry_at: None,
            cfg,
        }
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.cfg
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn dhcp(&self) -> &Dhcp4Server {
        &self.dhcp
    }
    pub fn dhcp_mut(&mut self) -> &mut Dhcp4Server {
        &mut self.dhcp
    }
    pub fn tcp(&self) -> &TcpEngine {
        &self.tcp
    }
    pub fn udp(&self) -> &UdpEngine {
        &self.udp
    }
    pub fn ping_refused_by_host(&self) -> bool {
        self.ping.refused_by_host
    }

    /// Add a port forward; returns its id, under which the driver registers the listener
    /// (`SocketRef { kind: Listener, index: id }`). A rule without a guest address targets the
    /// network's first guest address (the first address of the DHCP pool).
    pub fn add_forward(&mut self, rule: PortForward) -> Result<u32, ForwardError> {
        let ip = rule.guest_ip.unwrap_or(self.cfg.pool_start);
        if !self.cfg.in_subnet(ip)
            || self.cfg.owns(ip)
            || ip == self.cfg.subnet
            || ip == self.cfg.broadcast()
        {
            return Err(ForwardError::NotAGuestAddress {
                ip,
                subnet: self.cfg.subnet,
                prefix: self.cfg.prefix,
            });
        }
        let entry = ForwardEntry {
            guest: (ip, rule.guest_port),
            rule,
            waiting_since: None,
            last_arp: None,
        };
        let id = match self.forwards.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.forwards.len() < MAX_FORWARDS => {
                self.forwards.push(None);
                self.forwards.len() - 1
            }
            None => return Err(ForwardError::TooMany),
        };
        self.forwards[id] = Some(entry);
        Ok(id as u32)
    }

    /// Remove forward `id` (the driver closes its listener). Connections it accepted go on;
    /// UDP clients' flows end.
    pub fn remove_forward(&mut self, id: u32) -> Option<PortForward> {
        let entry = self.forwards.get_mut(id as usize)?.take()?;
        if entry.rule.proto == ForwardProto::Udp {
            self.udp.forget_listener(id);
        }
        self.forwards_ready.retain(|&i| i != id);
        Some(entry.rule)
    }

    /// The forwards: id, rule and the guest address and port it reaches.
    pub fn forwards(&self) -> Vec<(u32, PortForward, (Ipv4Addr, u16))> {
        self.forwards
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as u32, e.rule.clone(), e.guest)))
            .collect()
    }

    /// Whether forward `id`'s guest can be reached now (None: no such forward).
    pub fn forward_guest_reachable(&self, id: u32) -> Option<bool> {
        let e = self.forwards.get(id as usize)?.as_ref()?;
        Some(self.reachable_guest(e.guest.0).is_some())
    }

    /// The MAC of the guest at `ip` if it can be reached now (known and on a switch port).
    fn reachable_guest(&self, ip: Ipv4Addr) -> Option<Mac> {
        let mac = self
            .neighbors
            .get(&ip)
            .copied()
            .or_else(|| self.dhcp.holder_of(ip))?;
        self.switch.port_of(&mac).is_some().then_some(mac)
    }

    /// The address under which guests see a host client of a forward.
    fn client_view(&self) -> impl Fn(IpAddr) -> Ipv4Addr + Copy {
        let alias = self.cfg.host_loopback_alias.unwrap_or(self.cfg.gateway);
        let (subnet, mask) = (
            u32::from(self.cfg.subnet),
            crate::config::prefix_mask_v4(self.cfg.prefix),
        );
        move |ip| {
            let v = forward::guest_visible_client(ip, alias);
            // A client whose address lies inside the guest subnet could not be routed back.
            if u32::from(v) & mask == subnet {
                alias
            } else {
                v
            }
        }
    }

    /// Clients may be waiting on forward `id`'s listener.
    fn serve_forward(&mut self, now: Duration, id: u32, sockets: &mut dyn HostSockets) {
        let Some(entry) = self.forwards.get(id as usize).and_then(|e| e.as_ref()) else {
            return;
        };
        let (proto, guest) = (entry.rule.proto, entry.guest);
        let listener = SocketRef {
            kind: FlowKind::Listener,
            index: id,
        };
        let visible = self.client_view();
        let Some(mac) = self.reachable_guest(guest.0) else {
            self.forward_waits(now, id, sockets);
            return;
        };
        if let Some(e) = self.forwards[id as usize].as_mut() {
            e.waiting_since = None;
        }
        match proto {
            ForwardProto::Tcp => {
                let (mut ctx, engine) = self.tcp_ctx(now);
                let n = engine.accept_forwarded(&mut ctx, sockets, listener, mac, guest, visible);
                engine.refresh_deadline(now);
                if n >= crate::flows::tcp::ACCEPT_BUDGET && !self.forwards_ready.contains(&id) {
                    self.forwards_ready.push(id);
                }
            }
            ForwardProto::Udp => {
                let (mut ctx, udp) = self.udp_ctx(now);
                udp.on_forward_readable(&mut ctx, sockets, listener, mac, guest, visible);
            }
        }
    }

    /// Forward `id`'s guest cannot be reached: ask for it with ARP and let clients wait in the
    /// backlog, for at most [`FORWARD_GUEST_WAIT`]; then refuse them.
    fn forward_waits(&mut self, now: Duration, id: u32, sockets: &mut dyn HostSockets) {
        let Some(e) = self.forwards[id as usize].as_mut() else {
            return;
        };
        let since = *e.waiting_since.get_or_insert(now);
        let (proto, guest_ip) = (e.rule.proto, e.guest.0);
        if now.saturating_sub(since) >= FORWARD_GUEST_WAIT {
            e.waiting_since = None;
            let listener = SocketRef {
                kind: FlowKind::Listener,
                index: id,
            };
            match proto {
                ForwardProto::Tcp => {
                    let (mut ctx, engine) = self.tcp_ctx(now);
                    engine.refuse_forwarded(&mut ctx, sockets, listener);
                }
                ForwardProto::Udp => {
                    let (mut ctx, udp) = self.udp_ctx(now);
                    udp.refuse_forwarded(&mut ctx, sockets, listener);
                }
            }
            return;
        }
        if e.last_arp
            .is_none_or(|t| now.saturating_sub(t) >= ARP_RETRY)
        {
            e.last_arp = Some(now);
            let mut frame = [0u8; 42];
            gateway::arp::request(&self.cfg, guest_ip, &mut frame);
            self.tx.push_copy(TxDest::Flood { except: None }, &frame);
        }
        let at = now + FORWARD_RETRY;
        self.forward_retry_at = Some(self.forward_retry_at.map_or(at, |t| t.min(at)));
    }

    /// A guest link came up: its switch port. None when the switch is full.
    pub fn port_up(&mut self) -> Option<u16> {
        self.switch.port_up()
    }

    pub fn port_down(&mut self, port: u16) {
        self.switch.port_down(port);
    }

    /// Frames for guests built since the last [`clear_tx`](Self::clear_tx).
    pub fn tx(&self) -> &TxQueue {
        &self.tx
    }

    /// The driver sent the TX queue: count it and empty it.
    pub fn clear_tx(&mut self) {
        self.counters.frames_to_guests += self.tx.len() as u64;
        self.counters.bytes_to_guests += self.tx.frames().map(|(_, f)| f.len() as u64).sum::<u64>();
        self.tx.clear();
    }

    /// DNS queries for the DNS service (drain after each batch).
    pub fn take_dns_queries(&mut self) -> std::vec::Drain<'_, DnsQuery> {
        self.dns_queries.drain(..)
    }

    fn tcp_ctx(&mut self, now: Duration) -> (TcpCtx<'_>, &mut TcpEngine) {
        (
            TcpCtx {
                now,
                tx: &mut self.tx,
                switch: &self.switch,
                counters: &mut self.counters,
                gateway_mac: self.cfg.gateway_mac,
                mtu: self.cfg.mtu,
            },
            &mut self.tcp,
        )
    }

    fn udp_ctx(&mut self, now: Duration) -> (UdpCtx<'_>, &mut UdpEngine) {
        let ctx = UdpCtx {
            now,
            tx: &mut self.tx,
            switch: &self.switch,
            counters: &mut self.counters,
            gateway_mac: self.cfg.gateway_mac,
        };
        (ctx, &mut self.udp)
    }

    fn ping_ctx(&mut self, now: Duration) -> (PingCtx<'_>, &mut PingEngine) {
        let ctx = PingCtx {
            now,
            tx: &mut self.tx,
            switch: &self.switch,
            counters: &mut self.counters,
            gateway_mac: self.cfg.gateway_mac,
        };
        (ctx, &mut self.ping)
    }

    /// One Ethernet frame from the guest on `port`.
    pub fn on_guest_frame(
        &mut self,
        now: Duration,
        port: u16,
        frame: &[u8],
        sockets: &mut dyn HostSockets,
    ) {
        self.counters.frames_from_guests += 1;
        self.counters.bytes_from_guests += frame.len() as u64;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop(DropReason::EthernetTruncated);
            return;
        };
        let fwd = match self.switch.forward(port, eth.src(), eth.dst()) {
            Ok(f) => f,
            Err(LearnError::BadSourceMac) => {
                self.counters.drop(DropReason::BadSourceMac);
                return;
            }
            Err(LearnError::TableFull) => {
                self.counters.drop(DropReason::MacTableFull);
                return;
            }
        };
        if let Some(p) = fwd.to_port {
            self.tx.push_copy(TxDest::Port(p), frame);
        }
        if fwd.flood {
            self.tx
                .push_copy(TxDest::Flood { except: Some(port) }, frame);
        }
        if !fwd.to_gateway {
            return;
        }
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => self.on_arp(eth.src(), eth.payload()),
            ethernet::ETHERTYPE_IPV4 => {
                self.on_ipv4(now, eth.src(), eth.dst(), eth.payload(), sockets)
            }
            ethernet::ETHERTYPE_IPV6 => self.counters.drop(DropReason::Ipv6Unsupported),
            _ => self.counters.drop(DropReason::UnknownEthertype),
        }
    }

    fn learn_neighbor(&mut self, ip: Ipv4Addr, mac: Mac) {
        if let Some(m) = self.neighbors.get_mut(&ip) {
            *m = mac;
        } else if self.neighbors.len() < MAX_NEIGHBORS {
            self.neighbors.insert(ip, mac);
        } else {
            self.counters.drop(DropReason::NeighborTableFull);
        }
    }

    /// The MAC of a guest address, from ARP and IP traffic seen or DHCP leases.
    pub fn neighbor(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.neighbors.get(&ip).copied()
    }

    fn on_arp(&mut self, src_mac: Mac, payload: &[u8]) {
        let Ok(pkt) = ArpPacket::new_checked(payload) else {
            self.counters.drop(DropReason::ArpMalformed);
            return;
        };
        if let Some((ip, mac)) = gateway::arp::sender_binding(&self.cfg, &pkt) {
            if mac == src_mac {
                self.learn_neighbor(ip, mac);
            }
        }
        let mut out = [0u8; 42];
        if gateway::arp::reply_to(&self.cfg, &pkt, &mut out) {
            if let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &src_mac) {
                self.tx.push_copy(dest, &out);
            }
        } else if pkt.operation() == slipway_wire::arp::OP_REQUEST {
            self.counters.drop(DropReason::ArpNotForUs);
        }
    }

    fn on_ipv4(
        &mut self,
        now: Duration,
        src_mac: Mac,
        dst_mac: Mac,
        payload: &[u8],
        sockets: &mut dyn HostSockets,
    ) {
        let ip = match Ipv4Packet::new_checked(payload) {
            Ok(ip) => ip,
            Err(_) => {
                self.counters.drop(DropReason::Ipv4Malformed);
                return;
            }
        };
        if ip.is_fragment() {
            self.counters.drop(DropReason::Ipv4Fragment);
            return;
        }
        let (src, dst) = (ip.src(), ip.dst());
        // DHCP arrives from 0.0.0.0 or the client's address, to broadcast or to us.
        if ip.protocol() == ipv4::PROTO_UDP {
            if let Ok(u) = UdpDatagram::new_checked(ip.payload()) {
                if u.dst_port() == DHCP_SERVER_PORT
                    && (dst == Ipv4Addr::BROADCAST || dst == self.cfg.gateway)
                {
                    self.on_dhcp(now, src_mac, u.payload());
                    return;
                }
            }
        }
        if ethernet::is_multicast(&dst_mac) {
            // Other broadcast/multicast (mDNS, SSDP, ...) is not routed off the segment.
            self.counters.drop(DropReason::UdpNotRouted);
            return;
        }
        if self.cfg.in_subnet(src) && !self.cfg.owns(src) {
            self.learn_neighbor(src, src_mac);
        }
        if dst == self.cfg.broadcast()
            || dst.is_multicast()
            || dst.is_broadcast()
            || dst.is_unspecified()
        {
            self.counters.drop(DropReason::UdpNotRouted);
            return;
        }
        if self.cfg.in_subnet(dst) && !self.cfg.owns(dst) {
            // Another guest's address sent to the router's MAC: not ours to route.
            self.counters.drop(DropReason::Ipv4NotForGateway);
            return;
        }
        match ip.protocol() {
            ipv4::PROTO_TCP => self.on_tcp(now, src_mac, &ip, sockets),
            ipv4::PROTO_UDP => self.on_udp(now, src_mac, &ip, sockets),
            ipv4::PROTO_ICMP => self.on_icmp(now, src_mac, &ip, sockets),
            _ => self.counters.drop(DropReason::UnknownIpProtocol),
        }
    }

    /// Host-side address for a guest destination: the alias becomes the host's loopback. None =
    /// the egress policy refuses it.
    fn translate(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let host = if Some(dst) == self.cfg.host_loopback_alias {
            Ipv4Addr::LOCALHOST
        } else {
            dst
        };
        if self.cfg.egress_allow.is_empty()
            || self
                .cfg
                .egress_allow
                .iter()
                .any(|c| c.contains(IpAddr::V4(host)))
        {
            Some(host)
        } else {
            None
        }
    }

    fn on_tcp(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &Ipv4Packet<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let Ok(seg) = TcpSegment::new_checked(ip.payload()) else {
            self.counters.drop(DropReason::TcpMalformed);
            return;
        };
        if !seg.verify_v4(ip.src(), ip.dst()) {
            self.counters.drop(DropReason::TcpBadChecksum);
            return;
        }
        let key = FlowKey {
            guest_ip: ip.src(),
            guest_port: seg.src_port(),
            remote_ip: ip.dst(),
            remote_port: seg.dst_port(),
        };
        let (dst, port) = (ip.dst(), seg.dst_port());
        let gateway_service =
            if dst == self.cfg.dns_server && port == DNS_PORT && self.cfg.dns_service {
                Some(TcpTarget::DnsService)
            } else if dst == self.cfg.gateway {
                // The gateway's own TCP services: the guest API and ports forwarded to host unix
                // sockets.
                match port {
                    GUEST_API_PORT if self.cfg.guest_api => Some(TcpTarget::GuestApi(ip.src())),
                    p if self.cfg.gateway_unix_ports.contains(&p) => Some(TcpTarget::Unix(p)),
                    _ => None,
                }
            } else {
                None
            };
        let target = if gateway_service.is_some() {
            gateway_service
        } else if (dst == self.cfg.gateway || dst == self.cfg.dns_server)
            && Some(dst) != self.cfg.host_loopback_alias
        {
            // Other ports of the gateway's own addresses are refused with RST.
            None
        } else {
            self.translate(dst)
                .map(|h| TcpTarget::Host(SocketAddr::new(h.into(), port)))
        };
        let (mut ctx, engine) = self.tcp_ctx(now);
        engine.on_guest_segment(&mut ctx, sockets, src_mac, key, &seg, target);
    }

    fn on_udp(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &Ipv4Packet<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let Ok(u) = UdpDatagram::new_checked(ip.payload()) else {
            self.counters.drop(DropReason::UdpMalformed);
            return;
        };
        if !u.verify_v4(ip.src(), ip.dst()) {
            self.counters.drop(DropReason::UdpBadChecksum);
            return;
        }
        let key = UdpKey {
            guest_ip: ip.src(),
            guest_port: u.src_port(),
            remote_ip: ip.dst(),
            remote_port: u.dst_port(),
        };
        // A reply to a forward's client that appears as the gateway (host alias off).
        let dst = ip.dst();
        let is_dns = dst == self.cfg.dns_server && u.dst_port() == DNS_PORT && self.cfg.dns_service;
        let gateway_only = (dst == self.cfg.gateway || dst == self.cfg.dns_server)
            && Some(dst) != self.cfg.host_loopback_alias;
        if (is_dns || gateway_only) && !self.udp.has_flow(&key) {
            if is_dns {
                self.counters.dns_queries += 1;
                if self.dns_queries.len() >= MAX_DNS_QUEUE {
                    self.counters.drop(DropReason::DnsQueueFull);
                    return;
                }
                self.dns_queries.push(DnsQuery {
                    guest_mac: src_mac,
                    guest_ip: ip.src(),
                    guest_port: u.src_port(),
                    server_ip: ip.dst(),
                    payload: u.payload().to_vec(),
                });
            } else {
                self.counters.drop(DropReason::UdpClosedPort);
                let (mut ctx, _) = self.udp_ctx(now);
                ctx.unreachable(
                    src_mac,
                    ip.src(),
                    ip.dst(),
                    icmp::CODE_PORT_UNREACHABLE,
                    (ip.packet(), ip.header_len()),
                );
            }
            return;
        }
        let target = self
            .translate(ip.dst())
            .map(|h| SocketAddr::new(h.into(), u.dst_port()));
        let (mut ctx, udp) = self.udp_ctx(now);
        udp.on_guest_datagram(
            &mut ctx,
            sockets,
            src_mac,
            key,
            target,
            u.payload(),
            (ip.packet(), ip.header_len()),
        );
    }

    fn on_icmp(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &Ipv4Packet<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let Ok(msg) = Icmpv4Packet::new_checked(ip.payload()) else {
            self.counters.drop(DropReason::IcmpMalformed);
            return;
        };
        if !gateway::icmp::is_echo_request(&msg) {
            self.counters.drop(DropReason::IcmpUnsupportedType);
            return;
        }
        if self.cfg.owns(ip.dst()) {
            if let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &src_mac) {
                frames::push_icmp_v4(
                    &mut self.tx,
                    dest,
                    src_mac,
                    self.cfg.gateway_mac,
                    ip.dst(),
                    ip.src(),
                    icmp::ECHO_REPLY,
                    0,
                    icmp::echo_rest(msg.echo_ident(), msg.echo_seq()),
                    msg.payload(),
                );
            }
            return;
        }
        let key = PingKey {
            guest_ip: ip.src(),
            ident: msg.echo_ident(),
            remote_ip: ip.dst(),
        };
        let target = self.translate(ip.dst());
        let (mut ctx, ping) = self.ping_ctx(now);
        ping.on_guest_echo(
            &mut ctx,
            sockets,
            src_mac,
            key,
            target,
            msg.as_bytes(),
            (ip.packet(), ip.header_len()),
        );
    }

    fn on_dhcp(&mut self, now: Duration, src_mac: Mac, payload: &[u8]) {
        match self.dhcp.handle(now, src_mac, payload) {
            Ok(Some(reply)) => {
                if !ethernet::is_multicast(&reply.dst_mac) {
                    self.learn_neighbor(reply.dst_ip, reply.dst_mac);
                }
                let dest = if ethernet::is_multicast(&reply.dst_mac) {
                    frames::dest_for(&self.switch, &mut self.counters, &src_mac)
                } else {
                    frames::dest_for(&self.switch, &mut self.counters, &reply.dst_mac)
                };
                if let Some(dest) = dest {
                    frames::push_udp_v4(
                        &mut self.tx,
                        dest,
                        reply.dst_mac,
                        self.cfg.gateway_mac,
                        (self.cfg.gateway, DHCP_SERVER_PORT),
                        (reply.dst_ip, DHCP_CLIENT_PORT),
                        &reply.payload,
                    );
                }
            }
            Ok(None) => {}
            Err(_) => self.counters.drop(DropReason::DhcpDropped),
        }
    }

    /// A reply from the DNS service for a guest's UDP query.
    pub fn on_dns_reply(
        &mut self,
        query_from: (Mac, Ipv4Addr, u16),
        server_ip: Ipv4Addr,
        payload: &[u8],
    ) {
        let (mac, ip, port) = query_from;
        let max = usize::from(self.cfg.mtu).saturating_sub(ipv4::HEADER_LEN + udp::HEADER_LEN);
        // slipway does not fragment: an answer larger than one frame goes out truncated (TC),
        // and the guest's resolver asks again over TCP.
        let cut;
        let payload = if payload.len() > max {
            self.counters.drop(DropReason::DnsReplyTruncated);
            match crate::services::dns::truncated_response(payload) {
                Some(c) if c.len() <= max => {
                    cut = c;
                    &cut[..]
                }
                _ => return,
            }
        } else {
            payload
        };
        if let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &mac) {
            frames::push_udp_v4(
                &mut self.tx,
                dest,
                mac,
                self.cfg.gateway_mac,
                (server_ip, DNS_PORT),
                (ip, port),
                payload,
            );
        }
    }

    /// A host socket's peer closed its sending side (EPOLLRDHUP); call before the readiness.
    pub fn on_socket_hangup(&mut self, id: SocketRef) {
        if id.kind == FlowKind::Tcp {
            self.tcp.on_socket_hangup(id.index);
        }
    }

    /// Readiness of a host socket.
    pub fn on_socket_event(
        &mut self,
        now: Duration,
        id: SocketRef,
        readable: bool,
        writable: bool,
        sockets: &mut dyn HostSockets,
    ) {
        match id.kind {
            FlowKind::Tcp => {
                let (mut ctx, engine) = self.tcp_ctx(now);
                engine.on_socket_event(&mut ctx, sockets, id.index, readable, writable);
                engine.refresh_deadline(now);
            }
            FlowKind::Udp if readable => {
                let (mut ctx, udp) = self.udp_ctx(now);
                udp.on_socket_readable(&mut ctx, sockets, id.index);
            }
            FlowKind::Icmp if readable => {
                let (mut ctx, ping) = self.ping_ctx(now);
                ping.on_socket_readable(&mut ctx, sockets, id.index);
            }
            FlowKind::Listener if readable => self.serve_forward(now, id.index, sockets),
            _ => {}
        }
    }

    /// End of a batch of guest frames: send the ACKs owed.
    pub fn end_of_batch(&mut self, now: Duration, sockets: &mut dyn HostSockets) {
        let (mut ctx, engine) = self.tcp_ctx(now);
        engine.flush_acks(&mut ctx, sockets);
        engine.refresh_deadline(now);
    }

    /// After the driver flushed the TX queue: continue work that stopped at the TX budget.
    pub fn after_flush(&mut self, now: Duration, sockets: &mut dyn HostSockets) {
        if self.tcp.has_pending_pushes() {
            let (mut ctx, engine) = self.tcp_ctx(now);
            engine.resume_pushes(&mut ctx, sockets);
            engine.refresh_deadline(now);
        }
        if self.udp.has_pending_reads() {
            let visible = self.client_view();
            let (mut ctx, udp) = self.udp_ctx(now);
            udp.resume_reads(&mut ctx, sockets, visible);
        }
        for id in std::mem::take(&mut self.forwards_ready) {
            self.serve_forward(now, id, sockets);
        }
    }

    /// True when work is waiting for the next flush (the driver should not sleep).
    pub fn has_pending_work(&self) -> bool {
        self.tcp.has_pending_pushes()
            || self.udp.has_pending_reads()
            || !self.forwards_ready.is_empty()
    }

    /// The next time [`on_timers`](Self::on_timers) must run.
    pub fn next_deadline(&self) -> Duration {
        let mut next = self.next_sweep;
        if let Some(d) = self.tcp.next_deadline() {
            next = next.min(d);
        }
        if let Some(d) = self.forward_retry_at {
            next = next.min(d);
        }
        next
    }

    pub fn on_timers(&mut self, now: Duration, sockets: &mut dyn HostSockets) {
        if self.forward_retry_at.is_some_and(|t| t <= now) {
            self.forward_retry_at = None;
            let waiting: Vec<u32> = self
                .forwards
                .iter()
                .enumerate()
                .filter(|(_, e)| e.as_ref().is_some_and(|e| e.waiting_since.is_some()))
                .map(|(i, _)| i as u32)
                .collect();
            for id in waiting {
                self.serve_forward(now, id, sockets);
            }
        }
        if self.tcp.next_deadline().is_some_and(|d| d <= now) {
            let (mut ctx, engine) = self.tcp_ctx(now);
            engine.on_timers(&mut ctx, sockets);
        }
        if now >= self.next_sweep {
            let (mut ctx, engine) = self.tcp_ctx(now);
            engine.expire_idle(&mut ctx, sockets);
            self.udp.expire(now, &mut self.counters, sockets);
            self.ping.expire(now, sockets);
            self.next_sweep = now + SWEEP_INTERVAL;
        }
    }
}
