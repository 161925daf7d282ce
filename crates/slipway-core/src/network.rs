//! One virtual network: the switch, the gateway's services and the flow engines, wired in
//! data-path order. The driver feeds it frames, socket readiness and time, and drains its TX queue.
//!
//! Theory of operation: a frame from guest port P enters [`Network::on_guest_frame`]. The switch
//! learns its source MAC and forwards guest-to-guest traffic (copying it into the TX queue). Frames
//! for the gateway (its MAC, or broadcast/multicast) are dispatched by protocol: ARP for owned
//! addresses; IPv4 to the gateway itself (DHCP on UDP 67, DNS on UDP/TCP 53, ICMP echo); IPv6
//! neighbor and router solicitations, DHCPv6 (UDP 547), DNS and ICMPv6 echo to the gateway's own
//! addresses; IP of either family to the host-loopback alias or to outside addresses goes to the
//! TCP, UDP and ICMP engines after address translation (alias → 127.0.0.1 or ::1) and the egress
//! policy. Both families share the engines: a flow's key holds `IpAddr`s of one family, and frames
//! are built with the header of that family. Everything the network sends to guests is built in
//! the TX queue, which the driver flushes once per batch.
//!
//! A guest may not address the host's loopback (127.0.0.0/8, ::1), unspecified or IPv4-mapped
//! addresses directly: only the alias reaches the host's loopback, so `--no-host-loopback` holds
//! against a guest that writes its own packets.
//!
//! Port forwards enter from the host side: the driver binds each forward's listener under
//! `SocketRef { kind: Listener, index: forward id }`; when it is readable the network finds the
//! guest's MAC (neighbour table, else DHCP lease; else an ARP request or IPv6 neighbor
//! solicitation, while clients wait in the kernel's backlog for up to [`FORWARD_GUEST_WAIT`]) and
//! hands the clients to the TCP or UDP engine.

use crate::config::{Ipv6Config, Mac, NetworkConfig};
use crate::counters::{Counters, DropReason};
use crate::flows::icmp::{PingCtx, PingEngine, PingKey};
use crate::flows::tcp::{FlowKey, TcpCtx, TcpEngine, TcpLimits};
use crate::flows::udp::{UdpCtx, UdpEngine, UdpKey, UdpLimits};
use crate::flows::{FlowKind, HostSockets, SocketRef, TcpTarget};
use crate::forward::{self, ForwardProto, PortForward};
use crate::frames::{self, Unreachable};
use crate::gateway;
use crate::gateway::ndp::{self, Solicited};
use crate::hash::FastMap;
use crate::offload::RxChecksum;
use crate::services::dhcp4::Dhcp4Server;
use crate::services::dhcp6::{Dhcp6Config, Dhcp6Server};
use crate::switch::{LearnError, Switch};
use crate::tx::{TxDest, TxQueue};
use slipway_wire::ethernet::{self, EthernetFrame};
use slipway_wire::{
    icmp, icmpv6, ipv4, ipv6, udp, ArpPacket, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet,
    TcpSegment, UdpDatagram,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DHCP6_SERVER_PORT: u16 = 547;
pub const DHCP6_CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
pub const DHCP6_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
pub const DNS_PORT: u16 = 53;
/// Where guests reach gvproxy's forwarder API on the gateway (when enabled).
pub const GUEST_API_PORT: u16 = 80;
/// Neighbour (IP → MAC) entries kept per network (both families).
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
    guest: (IpAddr, u16),
    /// Clients have waited since then because the guest cannot be reached yet.
    waiting_since: Option<Duration>,
    last_arp: Option<Duration>,
}

/// Why a forward cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("{ip} is not a guest address of this network ({subnet}); give an address of the guest subnet")]
    NotAGuestAddress { ip: IpAddr, subnet: String },
    #[error("this network already has {MAX_FORWARDS} forwards; remove some first")]
    TooMany,
}

/// A DNS query a guest sent to the gateway over UDP, for the DNS service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    pub guest_mac: Mac,
    pub guest_ip: IpAddr,
    pub guest_port: u16,
    pub server_ip: IpAddr,
    pub payload: Vec<u8>,
}

/// The IP layer of a packet from a guest, either family, for the engines.
#[derive(Clone, Copy)]
struct IpInfo<'a> {
    src: IpAddr,
    dst: IpAddr,
    /// The upper-layer header and data.
    payload: &'a [u8],
    /// The whole packet and its header length (quoted in ICMP errors).
    packet: &'a [u8],
    header_len: usize,
    /// The link vouches for the TCP/UDP checksum (offload): skip verifying it.
    l4_checksum_trusted: bool,
}

pub struct Network {
    cfg: NetworkConfig,
    switch: Switch,
    tx: TxQueue,
    counters: Counters,
    dhcp: Dhcp4Server,
    /// DHCPv6 (IPv6 on): stateless information and addresses for guests that ask.
    dhcp6: Option<Dhcp6Server>,
    tcp: TcpEngine,
    udp: UdpEngine,
    ping: PingEngine,
    neighbors: FastMap<IpAddr, Mac>,
    dns_queries: Vec<DnsQuery>,
    next_sweep: Duration,
    /// When the next unsolicited router advertisement goes out (IPv6 on).
    next_ra: Option<Duration>,
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
            dhcp6: cfg.ipv6.as_ref().map(|v6| {
                Dhcp6Server::new(Dhcp6Config {
                    server_mac: cfg.gateway_mac,
                    prefix: v6.prefix,
                    pool_start: v6.pool_start,
                    pool_end: v6.pool_end,
                    dns_servers: if cfg.dns_service {
                        vec![v6.dns_server]
                    } else {
                        Vec::new()
                    },
                    search_domains: cfg.search_domains.clone(),
                    preferred_lifetime: cfg.lease_time,
                    valid_lifetime: cfg.lease_time * 2,
                })
            }),
            tcp: TcpEngine::new(tcp_limits, seed),
            udp: UdpEngine::new(udp_limits),
            ping: PingEngine::default(),
            neighbors: FastMap::default(),
            dns_queries: Vec::new(),
            next_sweep: SWEEP_INTERVAL,
            next_ra: cfg.ipv6.as_ref().map(|_| Duration::ZERO),
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
    pub fn dhcp6(&self) -> Option<&Dhcp6Server> {
        self.dhcp6.as_ref()
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
        let ip = rule.guest_ip.unwrap_or(IpAddr::V4(self.cfg.pool_start));
        if !self.is_guest_address(ip) {
            let subnet = match (ip, &self.cfg.ipv6) {
                (IpAddr::V6(_), Some(v6)) => format!("{}/64", v6.prefix),
                (IpAddr::V6(_), None) => "IPv6 is off".to_string(),
                _ => format!("{}/{}", self.cfg.subnet, self.cfg.prefix),
            };
            return Err(ForwardError::NotAGuestAddress { ip, subnet });
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

    /// True for an address a guest of this network may hold (not ours, not the subnet's network
    /// or broadcast address).
    fn is_guest_address(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => {
                self.cfg.in_subnet(ip)
                    && !self.cfg.owns(ip)
                    && ip != self.cfg.subnet
                    && ip != self.cfg.broadcast()
            }
            IpAddr::V6(ip) => self
                .cfg
                .ipv6
                .as_ref()
                .is_some_and(|v6| v6.in_prefix(ip) && ip != v6.prefix && !self.cfg.owns6(ip)),
        }
    }

    /// The forwards: id, rule and the guest address and port it reaches.
    pub fn forwards(&self) -> Vec<(u32, PortForward, (IpAddr, u16))> {
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
    fn reachable_guest(&self, ip: IpAddr) -> Option<Mac> {
        let mac = self.neighbors.get(&ip).copied().or_else(|| match ip {
            IpAddr::V4(v4) => self.dhcp.holder_of(v4),
            IpAddr::V6(v6) => self.dhcp6.as_ref()?.holder_of(v6),
        })?;
        self.switch.port_of(&mac).is_some().then_some(mac)
    }

    /// The address under which a guest (second argument) sees a host client (first) of a
    /// forward: always of the guest's family.
    fn client_view(&self) -> impl Fn(IpAddr, IpAddr) -> IpAddr + Copy {
        let alias4 = self.cfg.host_loopback_alias.unwrap_or(self.cfg.gateway);
        let (subnet, mask) = (
            u32::from(self.cfg.subnet),
            crate::config::prefix_mask_v4(self.cfg.prefix),
        );
        let v6 = self
            .cfg
            .ipv6
            .as_ref()
            .map(|v6| (v6.host_loopback_alias.unwrap_or(v6.gateway), v6.prefix));
        move |client, guest| {
            let alias = match (guest, v6) {
                (IpAddr::V6(_), Some((alias6, _))) => IpAddr::V6(alias6),
                _ => IpAddr::V4(alias4),
            };
            // A client whose address lies inside the guest subnet could not be routed back.
            match forward::guest_visible_client(client, alias) {
                IpAddr::V4(v) if u32::from(v) & mask == subnet => alias,
                IpAddr::V6(v)
                    if v6.is_some_and(|(_, p)| u128::from(v) >> 64 == u128::from(p) >> 64) =>
                {
                    alias
                }
                v => v,
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
            match guest_ip {
                IpAddr::V4(ip) => {
                    let mut frame = [0u8; 42];
                    gateway::arp::request(&self.cfg, ip, &mut frame);
                    self.tx.push_copy(TxDest::Flood { except: None }, &frame);
                }
                IpAddr::V6(ip) => self.solicit_neighbor(ip),
            }
        }
        let at = now + FORWARD_RETRY;
        self.forward_retry_at = Some(self.forward_retry_at.map_or(at, |t| t.min(at)));
    }

    /// Ask who has the IPv6 address `ip` (a neighbor solicitation to its solicited-node group).
    fn solicit_neighbor(&mut self, ip: Ipv6Addr) {
        let group = ipv6::solicited_node(ip);
        let mut body = [0u8; ndp::NA_BODY];
        ndp::neighbor_solicit(self.cfg.gateway_mac, ip, &mut body);
        frames::push_icmp_v6(
            &mut self.tx,
            TxDest::Flood { except: None },
            ipv6::multicast_mac(group),
            self.cfg.gateway_mac,
            self.cfg.gateway_link_local(),
            group,
            icmpv6::NEIGHBOR_SOLICIT,
            0,
            [0; 4],
            &body,
        );
    }

    /// A guest link came up: its switch port. None when the switch is full. With IPv6 on, a
    /// router advertisement follows at once so that a guest that solicited before the link
    /// was up configures itself.
    pub fn port_up(&mut self) -> Option<u16> {
        let port = self.switch.port_up()?;
        if self.cfg.ipv6.is_some() {
            self.next_ra = Some(Duration::ZERO);
        }
        Some(port)
    }

    pub fn port_down(&mut self, port: u16) {
        self.switch.port_down(port);
        self.tx.set_offload(port, false);
    }

    /// Whether the link on `port` finishes TCP checksums itself ([`crate::offload`]): data
    /// segments to it then leave the payload unsummed. Off for a new port.
    pub fn set_checksum_offload(&mut self, port: u16, on: bool) {
        self.tx.set_offload(port, on);
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
        self.on_guest_frame_with(now, port, frame, RxChecksum::Unverified, sockets);
    }

    /// [`on_guest_frame`](Self::on_guest_frame) with what the link knows about the frame's
    /// TCP/UDP checksum ([`crate::offload`]).
    pub fn on_guest_frame_with(
        &mut self,
        now: Duration,
        port: u16,
        frame: &[u8],
        csum: RxChecksum,
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
        // A copy to another guest gets its partial checksum finished: that guest's link may
        // not offload, and a frame from another machine is owed a whole checksum.
        let copy = |tx: &mut TxQueue, dest: TxDest| {
            tx.push_with(dest, frame.len(), |b| {
                b.copy_from_slice(frame);
                if let RxChecksum::Partial(p) = csum {
                    p.complete(b);
                }
                frame.len()
            })
        };
        if let Some(p) = fwd.to_port {
            copy(&mut self.tx, TxDest::Port(p));
        }
        if fwd.flood {
            copy(&mut self.tx, TxDest::Flood { except: Some(port) });
        }
        if !fwd.to_gateway {
            return;
        }
        match eth.ethertype() {
            ethernet::ETHERTYPE_ARP => self.on_arp(eth.src(), eth.payload()),
            ethernet::ETHERTYPE_IPV4 => {
                self.on_ipv4(now, eth.src(), eth.dst(), eth.payload(), csum, sockets)
            }
            ethernet::ETHERTYPE_IPV6 => {
                self.on_ipv6(now, eth.src(), eth.dst(), eth.payload(), csum, sockets)
            }
            _ => self.counters.drop(DropReason::UnknownEthertype),
        }
    }

    fn learn_neighbor(&mut self, ip: IpAddr, mac: Mac) {
        if let Some(m) = self.neighbors.get_mut(&ip) {
            *m = mac;
        } else if self.neighbors.len() < MAX_NEIGHBORS {
            self.neighbors.insert(ip, mac);
        } else {
            self.counters.drop(DropReason::NeighborTableFull);
        }
    }

    /// The MAC of a guest address, from ARP, neighbor discovery and IP traffic seen.
    pub fn neighbor(&self, ip: IpAddr) -> Option<Mac> {
        self.neighbors.get(&ip).copied()
    }

    fn on_arp(&mut self, src_mac: Mac, payload: &[u8]) {
        let Ok(pkt) = ArpPacket::new_checked(payload) else {
            self.counters.drop(DropReason::ArpMalformed);
            return;
        };
        if let Some((ip, mac)) = gateway::arp::sender_binding(&self.cfg, &pkt) {
            if mac == src_mac {
                self.learn_neighbor(IpAddr::V4(ip), mac);
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
        csum: RxChecksum,
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
            self.learn_neighbor(IpAddr::V4(src), src_mac);
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
        let l4_start = ethernet::HEADER_LEN + ip.header_len();
        let info = IpInfo {
            src: src.into(),
            dst: dst.into(),
            payload: ip.payload(),
            packet: ip.packet(),
            header_len: ip.header_len(),
            l4_checksum_trusted: csum.trusted(ip.protocol(), l4_start),
        };
        match ip.protocol() {
            ipv4::PROTO_TCP => self.on_tcp(now, src_mac, &info, sockets),
            ipv4::PROTO_UDP => self.on_udp(now, src_mac, &info, sockets),
            ipv4::PROTO_ICMP => self.on_icmp(now, src_mac, &ip, sockets),
            _ => self.counters.drop(DropReason::UnknownIpProtocol),
        }
    }

    fn on_ipv6(
        &mut self,
        now: Duration,
        src_mac: Mac,
        dst_mac: Mac,
        payload: &[u8],
        csum: RxChecksum,
        sockets: &mut dyn HostSockets,
    ) {
        let Some(v6) = self.cfg.ipv6.clone() else {
            self.counters.drop(DropReason::Ipv6Disabled);
            return;
        };
        let ip = match Ipv6Packet::new_checked(payload) {
            Ok(ip) => ip,
            Err(_) => {
                self.counters.drop(DropReason::Ipv6Malformed);
                return;
            }
        };
        if ip.is_fragment() {
            self.counters.drop(DropReason::Ipv6Fragment);
            return;
        }
        let (src, dst) = (ip.src(), ip.dst());
        if src.is_multicast() {
            self.counters.drop(DropReason::Ipv6Malformed);
            return;
        }
        if ip.next_header() == ipv6::NEXT_ICMPV6 {
            let Ok(msg) = Icmpv6Packet::new_checked(ip.payload(), src, dst) else {
                self.counters.drop(DropReason::Icmpv6Malformed);
                return;
            };
            match msg.msg_type() {
                icmpv6::ROUTER_SOLICIT | icmpv6::NEIGHBOR_SOLICIT => {
                    self.on_solicitation(src_mac, &ip, &msg, &v6);
                    return;
                }
                icmpv6::NEIGHBOR_ADVERT => {
                    self.on_neighbor_advert(src_mac, &ip, &msg, &v6);
                    return;
                }
                icmpv6::ROUTER_ADVERT | icmpv6::REDIRECT => {
                    // There is one router on this network.
                    self.counters.drop(DropReason::NdpNotForUs);
                    return;
                }
                icmpv6::MLD_QUERY | icmpv6::MLD_REPORT | icmpv6::MLD_DONE | icmpv6::MLD2_REPORT => {
                    self.counters.drop(DropReason::MulticastNotRouted);
                    return;
                }
                _ => {}
            }
        }
        if ip.next_header() == ipv6::NEXT_UDP && dst == DHCP6_SERVERS {
            if let Ok(u) = UdpDatagram::new_checked(ip.payload()) {
                if u.dst_port() == DHCP6_SERVER_PORT {
                    let trusted =
                        csum.trusted(ipv6::NEXT_UDP, ethernet::HEADER_LEN + ip.header_len());
                    self.on_dhcp6(now, src_mac, &ip, &u, trusted);
                    return;
                }
            }
        }
        if dst.is_multicast() || ethernet::is_multicast(&dst_mac) {
            self.counters.drop(DropReason::MulticastNotRouted);
            return;
        }
        if src.is_unspecified() {
            self.counters.drop(DropReason::Ipv6Malformed);
            return;
        }
        if (v6.in_prefix(src) || ipv6::is_link_local(&src)) && !self.cfg.owns6(src) {
            self.learn_neighbor(IpAddr::V6(src), src_mac);
        }
        if !self.cfg.owns6(dst) && (v6.in_prefix(dst) || ipv6::is_link_local(&dst)) {
            // Another guest's address (or a link-local one not ours) sent to the router's MAC.
            self.counters.drop(DropReason::Ipv6NotForGateway);
            return;
        }
        let l4_start = ethernet::HEADER_LEN + ip.header_len();
        let info = IpInfo {
            src: src.into(),
            dst: dst.into(),
            payload: ip.payload(),
            packet: ip.packet(),
            header_len: ip.header_len(),
            l4_checksum_trusted: csum.trusted(ip.next_header(), l4_start),
        };
        match ip.next_header() {
            ipv6::NEXT_TCP => self.on_tcp(now, src_mac, &info, sockets),
            ipv6::NEXT_UDP => self.on_udp(now, src_mac, &info, sockets),
            ipv6::NEXT_ICMPV6 => self.on_icmpv6(now, src_mac, &info, sockets),
            _ => self.counters.drop(DropReason::UnknownIpProtocol),
        }
    }

    /// A router or neighbor solicitation from a guest.
    fn on_solicitation(
        &mut self,
        src_mac: Mac,
        ip: &Ipv6Packet<'_>,
        msg: &Icmpv6Packet<'_>,
        v6: &Ipv6Config,
    ) {
        let (src, dst) = (ip.src(), ip.dst());
        let Some(what) = ndp::check_solicitation(&self.cfg, ip.hop_limit(), src, dst, msg) else {
            self.counters.drop(DropReason::NdpInvalid);
            return;
        };
        if !src.is_unspecified() {
            if let Some(mac) = msg.nd_options().link_layer_addr(icmpv6::OPT_SOURCE_LL_ADDR) {
                if mac == src_mac && !self.cfg.owns6(src) {
                    self.learn_neighbor(IpAddr::V6(src), mac);
                }
            }
        }
        // Answer the soliciting node directly, or all nodes when it has no address yet.
        let (to, to_mac) = if src.is_unspecified() {
            (ndp::ALL_NODES, ipv6::multicast_mac(ndp::ALL_NODES))
        } else {
            (src, src_mac)
        };
        let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &src_mac) else {
            return;
        };
        match what {
            Solicited::Router => self.send_router_advert(dest, to, to_mac, v6),
            Solicited::Neighbor { target, dad } => {
                let mut body = [0u8; ndp::NA_BODY];
                ndp::neighbor_advert(self.cfg.gateway_mac, target, &mut body);
                frames::push_icmp_v6(
                    &mut self.tx,
                    dest,
                    to_mac,
                    self.cfg.gateway_mac,
                    target,
                    to,
                    icmpv6::NEIGHBOR_ADVERT,
                    0,
                    ndp::neighbor_advert_rest(!dad),
                    &body,
                );
            }
            Solicited::NotOurs => self.counters.drop(DropReason::NdpNotForUs),
        }
    }

    fn send_router_advert(&mut self, dest: TxDest, to: Ipv6Addr, to_mac: Mac, v6: &Ipv6Config) {
        let mut body = [0u8; ndp::MAX_RA_BODY];
        let n = ndp::router_advert(&self.cfg, v6, &mut body);
        let rest = ndp::router_advert_rest(self.serves_dhcp6());
        frames::push_icmp_v6(
            &mut self.tx,
            dest,
            to_mac,
            self.cfg.gateway_mac,
            self.cfg.gateway_link_local(),
            to,
            icmpv6::ROUTER_ADVERT,
            0,
            rest,
            &body[..n],
        );
    }

    /// DHCPv6 answers information requests (the RA's "other configuration" flag).
    fn serves_dhcp6(&self) -> bool {
        self.dhcp6.is_some()
    }

    /// A neighbor advertisement from a guest teaches the neighbour table.
    fn on_neighbor_advert(
        &mut self,
        src_mac: Mac,
        ip: &Ipv6Packet<'_>,
        msg: &Icmpv6Packet<'_>,
        v6: &Ipv6Config,
    ) {
        let valid = ip.hop_limit() == 255
            && msg.code() == 0
            && msg.nd_options().valid()
            && msg.nd_target().is_some_and(|t| !t.is_multicast());
        let Some(target) = msg.nd_target().filter(|_| valid) else {
            self.counters.drop(DropReason::NdpInvalid);
            return;
        };
        if self.cfg.owns6(target) {
            // A guest claims one of our addresses: ours win (we answer solicitations for it).
            self.counters.drop(DropReason::NdpNotForUs);
            return;
        }
        let mac = msg
            .nd_options()
            .link_layer_addr(icmpv6::OPT_TARGET_LL_ADDR)
            .unwrap_or(src_mac);
        if mac == src_mac && (v6.in_prefix(target) || ipv6::is_link_local(&target)) {
            self.learn_neighbor(IpAddr::V6(target), mac);
        }
    }

    /// A DHCPv6 message to All_DHCP_Relay_Agents_and_Servers, port 547: the reply goes from the
    /// gateway's link-local address, port 547, to the client's address, port 546.
    fn on_dhcp6(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &Ipv6Packet<'_>,
        u: &UdpDatagram<'_>,
        checksum_trusted: bool,
    ) {
        let src = ip.src();
        if !checksum_trusted && !u.verify(src.into(), ip.dst().into()) {
            self.counters.drop(DropReason::UdpBadChecksum);
            return;
        }
        let Some(server) = self.dhcp6.as_mut() else {
            self.counters.drop(DropReason::Dhcp6Dropped);
            return;
        };
        // Clients send from their link-local address (RFC 8415 §13.1); no reply can reach ::.
        if src.is_unspecified() {
            self.counters.drop(DropReason::Dhcp6Dropped);
            return;
        }
        let reply = match server.handle(now, src_mac, u.payload()) {
            Ok(Some(reply)) => reply,
            Ok(None) => return,
            Err(_) => {
                self.counters.drop(DropReason::Dhcp6Dropped);
                return;
            }
        };
        let on_link =
            ipv6::is_link_local(&src) || self.cfg.ipv6.as_ref().is_some_and(|v6| v6.in_prefix(src));
        if on_link && !self.cfg.owns6(src) {
            self.learn_neighbor(IpAddr::V6(src), src_mac);
        }
        if let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &src_mac) {
            frames::push_udp(
                &mut self.tx,
                dest,
                src_mac,
                self.cfg.gateway_mac,
                (self.cfg.gateway_link_local().into(), DHCP6_SERVER_PORT),
                (src.into(), DHCP6_CLIENT_PORT),
                &reply,
            );
        }
    }

    /// ICMPv6 to one of the gateway's addresses or beyond (everything but neighbor discovery).
    fn on_icmpv6(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &IpInfo<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let (IpAddr::V6(src), IpAddr::V6(dst)) = (ip.src, ip.dst) else {
            return;
        };
        // The checksum was verified by on_ipv6.
        let Ok(msg) = Icmpv6Packet::new_checked(ip.payload, src, dst) else {
            self.counters.drop(DropReason::Icmpv6Malformed);
            return;
        };
        if msg.msg_type() != icmpv6::ECHO_REQUEST || msg.code() != 0 {
            self.counters.drop(DropReason::IcmpUnsupportedType);
            return;
        }
        if self.cfg.owns6(dst) {
            if let Some(dest) = frames::dest_for(&self.switch, &mut self.counters, &src_mac) {
                frames::push_icmp_v6(
                    &mut self.tx,
                    dest,
                    src_mac,
                    self.cfg.gateway_mac,
                    dst,
                    src,
                    icmpv6::ECHO_REPLY,
                    0,
                    icmp::echo_rest(msg.echo_ident(), msg.echo_seq()),
                    msg.payload(),
                );
            }
            return;
        }
        let key = PingKey {
            guest_ip: ip.src,
            ident: msg.echo_ident(),
            remote_ip: ip.dst,
        };
        let target = self.translate(ip.dst);
        let (mut ctx, ping) = self.ping_ctx(now);
        ping.on_guest_echo(
            &mut ctx,
            sockets,
            src_mac,
            key,
            target,
            msg.as_bytes(),
            (ip.packet, ip.header_len),
        );
    }

    /// Host-side address for a guest destination: the alias becomes the host's loopback. None =
    /// refused: by the egress policy, or because the guest addressed the host's loopback,
    /// an unspecified or an IPv4-mapped address directly (only the alias reaches loopback).
    fn translate(&self, dst: IpAddr) -> Option<IpAddr> {
        let alias6 = self.cfg.ipv6.as_ref().and_then(|v6| v6.host_loopback_alias);
        let host = match dst {
            IpAddr::V4(d) if Some(d) == self.cfg.host_loopback_alias => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            IpAddr::V6(d) if Some(d) == alias6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V4(d) if d.is_loopback() || d.is_unspecified() => return None,
            IpAddr::V6(d)
                if d.is_loopback()
                    || d.is_unspecified()
                    || d.to_ipv4_mapped().is_some()
                    || ipv6::is_link_local(&d) =>
            {
                return None
            }
            d => d,
        };
        if self.cfg.egress_allow.is_empty()
            || self.cfg.egress_allow.iter().any(|c| c.contains(host))
        {
            Some(host)
        } else {
            None
        }
    }

    /// True for the gateway's own addresses (IPv4 gateway; IPv6 gateway and link-local).
    fn is_gateway(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4 == self.cfg.gateway,
            IpAddr::V6(v6) => {
                self.cfg.ipv6.as_ref().is_some_and(|c| c.gateway == v6)
                    || v6 == self.cfg.gateway_link_local()
            }
        }
    }

    fn is_dns_server(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4 == self.cfg.dns_server,
            IpAddr::V6(v6) => self.cfg.ipv6.as_ref().is_some_and(|c| c.dns_server == v6),
        }
    }

    fn is_alias(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => Some(v4) == self.cfg.host_loopback_alias,
            IpAddr::V6(v6) => self
                .cfg
                .ipv6
                .as_ref()
                .is_some_and(|c| Some(v6) == c.host_loopback_alias),
        }
    }

    fn on_tcp(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &IpInfo<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let Ok(seg) = TcpSegment::new_checked(ip.payload) else {
            self.counters.drop(DropReason::TcpMalformed);
            return;
        };
        if !ip.l4_checksum_trusted && !seg.verify(ip.src, ip.dst) {
            self.counters.drop(DropReason::TcpBadChecksum);
            return;
        }
        let key = FlowKey {
            guest_ip: ip.src,
            guest_port: seg.src_port(),
            remote_ip: ip.dst,
            remote_port: seg.dst_port(),
        };
        let (dst, port) = (ip.dst, seg.dst_port());
        let gateway_service = if self.is_dns_server(dst) && port == DNS_PORT && self.cfg.dns_service
        {
            Some(TcpTarget::DnsService)
        } else if self.is_gateway(dst) {
            // The gateway's own TCP services: the guest API and ports forwarded to host unix
            // sockets.
            match port {
                GUEST_API_PORT if self.cfg.guest_api => Some(TcpTarget::GuestApi(ip.src)),
                p if self.cfg.gateway_unix_ports.contains(&p) => Some(TcpTarget::Unix(p)),
                _ => None,
            }
        } else {
            None
        };
        let target = if gateway_service.is_some() {
            gateway_service
        } else if (self.is_gateway(dst) || self.is_dns_server(dst)) && !self.is_alias(dst) {
            // Other ports of the gateway's own addresses are refused with RST.
            None
        } else {
            self.translate(dst)
                .map(|h| TcpTarget::Host(SocketAddr::new(h, port)))
        };
        let (mut ctx, engine) = self.tcp_ctx(now);
        engine.on_guest_segment(&mut ctx, sockets, src_mac, key, &seg, target);
    }

    fn on_udp(
        &mut self,
        now: Duration,
        src_mac: Mac,
        ip: &IpInfo<'_>,
        sockets: &mut dyn HostSockets,
    ) {
        let Ok(u) = UdpDatagram::new_checked(ip.payload) else {
            self.counters.drop(DropReason::UdpMalformed);
            return;
        };
        if !ip.l4_checksum_trusted && !u.verify(ip.src, ip.dst) {
            self.counters.drop(DropReason::UdpBadChecksum);
            return;
        }
        let key = UdpKey {
            guest_ip: ip.src,
            guest_port: u.src_port(),
            remote_ip: ip.dst,
            remote_port: u.dst_port(),
        };
        // A reply to a forward's client that appears as the gateway (host alias off).
        let dst = ip.dst;
        let is_dns = self.is_dns_server(dst) && u.dst_port() == DNS_PORT && self.cfg.dns_service;
        let gateway_only = (self.is_gateway(dst) || self.is_dns_server(dst)) && !self.is_alias(dst);
        if (is_dns || gateway_only) && !self.udp.has_flow(&key) {
            if is_dns {
                self.counters.dns_queries += 1;
                if self.dns_queries.len() >= MAX_DNS_QUEUE {
                    self.counters.drop(DropReason::DnsQueueFull);
                    return;
                }
                self.dns_queries.push(DnsQuery {
                    guest_mac: src_mac,
                    guest_ip: ip.src,
                    guest_port: u.src_port(),
                    server_ip: ip.dst,
                    payload: u.payload().to_vec(),
                });
            } else {
                self.counters.drop(DropReason::UdpClosedPort);
                let (mut ctx, _) = self.udp_ctx(now);
                ctx.unreachable(
                    src_mac,
                    ip.src,
                    ip.dst,
                    Unreachable::Port,
                    (ip.packet, ip.header_len),
                );
            }
            return;
        }
        let target = self
            .translate(ip.dst)
            .map(|h| SocketAddr::new(h, u.dst_port()));
        let (mut ctx, udp) = self.udp_ctx(now);
        udp.on_guest_datagram(
            &mut ctx,
            sockets,
            src_mac,
            key,
            target,
            u.payload(),
            (ip.packet, ip.header_len),
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
            guest_ip: ip.src().into(),
            ident: msg.echo_ident(),
            remote_ip: ip.dst().into(),
        };
        let target = self.translate(ip.dst().into());
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
                    self.learn_neighbor(IpAddr::V4(reply.dst_ip), reply.dst_mac);
                }
                let dest = if ethernet::is_multicast(&reply.dst_mac) {
                    frames::dest_for(&self.switch, &mut self.counters, &src_mac)
                } else {
                    frames::dest_for(&self.switch, &mut self.counters, &reply.dst_mac)
                };
                if let Some(dest) = dest {
                    frames::push_udp(
                        &mut self.tx,
                        dest,
                        reply.dst_mac,
                        self.cfg.gateway_mac,
                        (self.cfg.gateway.into(), DHCP_SERVER_PORT),
                        (reply.dst_ip.into(), DHCP_CLIENT_PORT),
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
        query_from: (Mac, IpAddr, u16),
        server_ip: IpAddr,
        payload: &[u8],
    ) {
        let (mac, ip, port) = query_from;
        if ip.is_ipv4() != server_ip.is_ipv4() {
            return;
        }
        let ip_header = frames::eth_ip_len(ip) - ethernet::HEADER_LEN;
        let max = usize::from(self.cfg.mtu).saturating_sub(ip_header + udp::HEADER_LEN);
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
            frames::push_udp(
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
        if let Some(d) = self.next_ra {
            next = next.min(d);
        }
        next
    }

    pub fn on_timers(&mut self, now: Duration, sockets: &mut dyn HostSockets) {
        if self.next_ra.is_some_and(|t| t <= now) {
            self.next_ra = Some(now + ndp::RA_INTERVAL);
            if let Some(v6) = self.cfg.ipv6.clone() {
                if self.switch.ports_up().next().is_some() {
                    let to_mac = ipv6::multicast_mac(ndp::ALL_NODES);
                    let dest = TxDest::Flood { except: None };
                    self.send_router_advert(dest, ndp::ALL_NODES, to_mac, &v6);
                }
            }
        }
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
