//! Target `network_frames`: a script of operations against one whole `Network`, the data path
//! from the switch through the gateway's services to the TCP, UDP and ICMP engines, with a
//! simulated host ([`SimHost`]) and virtual time.
//!
//! Input: one byte picks the network plan ([`plan`]), then operations. Each starts with a byte
//! whose low nibble is the operation and whose high nibble (`arg`) modifies it:
//!
//! | op    | what                                                                               |
//! |-------|------------------------------------------------------------------------------------|
//! | 0–7   | a guest frame: `[len: u16 LE] [bytes]` on port `op & 1`; `op & 2` fixes the IPv4 total length or IPv6 payload length, and the UDP length, to the frame; `op & 4` delivers it twice. `arg & 1` keeps the checksums as given (else the IPv4 header's and the TCP, UDP, ICMP or ICMPv6 checksum are fixed, past IPv6 extension headers); `arg & 2` sets TCP seq/ack (either family) to continue the connection the network has with that guest port (with a SACK option, the ack and the block edges as given count back from the gateway's next byte); `arg & 4` sets the MACs (port's guest → gateway); `arg & 8` ends the batch after it |
//! | 8     | end of batch                                                                       |
//! | 9     | drain the TX queue (checking every frame the gateway built), then `after_flush`    |
//! | 10    | advance time by [`STEPS`]`[arg]` (arg ≥ 12: to the next deadline), run timers      |
//! | 11    | socket readiness: `[pick]`; `arg & 1` readable, `arg & 2` writable, `arg & 4` an arbitrary (maybe stale) socket reference |
//! | 12    | a host-side change on socket `[pick]` (see [`host_action`]); `arg & 8` then signals it readable and writable |
//! | 13    | how the next host connects/opens end (see [`set_mode`])                            |
//! | 14    | answer the queued DNS queries; `arg & 1` with a reply too large for the link       |
//! | 15    | port `arg & 1` goes down and comes up again                                        |
//!
//! After the script the harness ends the batch, drains, and runs the timers through the next
//! deadlines and then a day later, when no UDP or ping flow may be left open.
//!
//! Port 1 offloads checksums (a TAP device with a vnet header): a TCP or UDP checksum the
//! harness fixed on a frame to it is left partial and claimed as such
//! ([`RxChecksum::Partial`]), and the gateway's frames to it may carry partial checksums, which
//! the drain completes before checking.
//!
//! Oracles: every frame the gateway built (source MAC = gateway MAC) parses through the checked
//! views with valid IPv4 or IPv6 headers and TCP/UDP/ICMP/ICMPv6 checksums; the engines keep
//! the socket contract [`SimHost`] checks; idle UDP and ping flows expire.

use crate::input::Cursor;
use crate::sim::{ConnectMode, HostAction, SimHost, ERRNOS};
use slipway_core::config::{IpCidr, Mac, NetworkConfig};
use slipway_core::flows::tcp::TcpLimits;
use slipway_core::flows::udp::UdpLimits;
use slipway_core::flows::{FlowKind, SocketRef};
use slipway_core::offload::{PartialCsum, RxChecksum};
use slipway_core::tx::TxDest;
use slipway_core::Network;
use slipway_wire::{checksum, ethernet, ipv4, ipv6, tcp};
use slipway_wire::{
    ArpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpSegment,
    UdpDatagram,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Operations run per input at most.
pub const MAX_OPS: usize = 4096;
/// The guest MAC used on each of the two ports when the script asks the harness to set MACs.
pub const GUEST_MACS: [Mac; 2] = [[2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]];

pub const STEPS: [Duration; 12] = [
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(10),
    Duration::from_secs(31),
    Duration::from_secs(61),
    Duration::from_secs(3600),
];

/// Network plans (all dual-stack but 5): 0 the default; 1 an egress allow-list of both
/// families, the minimum MTU and tiny flow tables; 2 a jumbo MTU without host-loopback aliases;
/// 3 a /29 with a search list; 4 slirp4netns's plan (gateway and alias one address, DNS
/// apart, in both families); 5 IPv6 off.
pub fn plan(which: u8) -> (NetworkConfig, TcpLimits, UdpLimits) {
    let mut cfg = NetworkConfig::default();
    let mut tcp = TcpLimits::default();
    let mut udp = UdpLimits::default();
    match which % 6 {
        0 => {}
        1 => {
            cfg.mtu = 576;
            cfg.egress_allow = vec![
                cidr([127, 0, 0, 0], 8),
                cidr([10, 0, 0, 0], 8),
                "::1/128".parse().expect("a prefix"),
                "2001:db8::/32".parse().expect("a prefix"),
            ];
            tcp.max_flows = 4;
            tcp.max_pending_connects = 2;
            tcp.max_retries = 3;
            udp.max_flows = 3;
            udp.idle_timeout = Duration::from_secs(5);
        }
        2 => {
            cfg.mtu = 9000;
            cfg.host_loopback_alias = None;
            if let Some(v6) = cfg.ipv6.as_mut() {
                v6.host_loopback_alias = None;
            }
            cfg.static_leases = vec![(GUEST_MACS[0], Ipv4Addr::new(192, 168, 127, 50))];
        }
        3 => {
            cfg = NetworkConfig::from_subnet(cidr([10, 0, 2, 0], 29)).expect("valid plan");
            cfg.search_domains = vec!["example.test".into()];
            cfg.dns_records = vec![(
                "db.example.test".into(),
                IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3)),
            )];
        }
        4 => {
            cfg = NetworkConfig::slirp4netns(cidr([10, 0, 2, 0], 24)).expect("valid plan");
            cfg.ipv6 = Some(slipway_core::config::Ipv6Config::slirp4netns());
        }
        _ => cfg.ipv6 = None,
    }
    (cfg, tcp, udp)
}

/// Rewrite the edges of the SACK blocks in TCP options `opts` as `next - edge`; returns whether
/// there was a SACK option. (The walk mirrors the wire crate's and stops where it would.)
fn relativise_sack(opts: &mut [u8], next: u32) -> bool {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                if kind == 5 {
                    for edge in opts[i + 2..i + len].chunks_exact_mut(4) {
                        let e = u32::from_be_bytes([edge[0], edge[1], edge[2], edge[3]]);
                        edge.copy_from_slice(&next.wrapping_sub(e).to_be_bytes());
                    }
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

fn cidr(a: [u8; 4], prefix: u8) -> IpCidr {
    IpCidr::new(IpAddr::V4(Ipv4Addr::from(a)), prefix).expect("valid prefix")
}

/// What the harness saw of one TCP connection, to continue it on the guest's behalf.
#[derive(Debug, Clone, Copy, Default)]
struct Conn {
    /// Next sequence number the gateway will send (what the guest should acknowledge).
    gw_next: u32,
    /// The gateway's last acknowledgement (the guest's next byte as the gateway sees it).
    gw_ack: u32,
    /// Where the guest continues.
    guest_next: u32,
}

/// (guest ip, guest port, remote ip, remote port), either family.
type ConnKey = (IpAddr, u16, IpAddr, u16);

struct Harness {
    net: Network,
    host: SimHost,
    now: Duration,
    ports: [u16; 2],
    gateway_mac: Mac,
    mtu: u16,
    conns: HashMap<ConnKey, Conn>,
    /// Frames of the current TX queue already looked at.
    /// What the link tells the core of the checksum of the frame `prepare` built last: on the
    /// offloading port (side 1) a fixed TCP/UDP checksum is turned partial, as a guest kernel
    /// with a TAP vnet header sends it.
    claim: RxChecksum,
    observed: usize,
    /// Frames built by the gateway that passed [`check_gateway_frame`] (router advertisements,
    /// which the network sends on its own, counted apart).
    gateway_frames: usize,
    router_adverts: usize,
    #[cfg(feature = "dns")]
    zone: slipway_core::services::dns::LocalZone,
}

pub fn run(data: &[u8]) {
    script(data).finish();
}

/// Run the script of `data`, without the final checks.
fn script(data: &[u8]) -> Harness {
    let mut input = Cursor::new(data);
    let (cfg, tcp_limits, udp_limits) = plan(input.byte_or_zero());
    let mut h = Harness::new(cfg, tcp_limits, udp_limits);
    for _ in 0..MAX_OPS {
        let Some(op) = input.byte() else { break };
        h.op(op, &mut input);
    }
    h
}

impl Harness {
    fn new(cfg: NetworkConfig, tcp_limits: TcpLimits, udp_limits: UdpLimits) -> Self {
        #[cfg(feature = "dns")]
        let zone = slipway_core::services::dns::LocalZone::new(&cfg);
        let gateway_mac = cfg.gateway_mac;
        let mtu = cfg.mtu;
        let mut net = Network::with_limits(cfg, 0x5eed, tcp_limits, udp_limits);
        // Two port forwards to the first guest address, whose clients the script brings in
        // (socket actions on the Listener sockets).
        let mut host = SimHost::default();
        for spec in ["8080:80", "5353:53/udp"] {
            let rule = slipway_core::forward::parse_publish(spec)
                .expect("a valid spec")
                .remove(0);
            let udp = rule.proto == slipway_core::ForwardProto::Udp;
            let id = net.add_forward(rule).expect("the first guest address");
            if udp {
                host.listener_inbox.insert(id, Default::default());
            } else {
                host.backlog.insert(id, Default::default());
            }
        }
        let ports = [
            net.port_up().expect("a port"),
            net.port_up().expect("a port"),
        ];
        net.set_checksum_offload(ports[1], true);
        Self {
            net,
            host,
            now: Duration::from_secs(1),
            ports,
            gateway_mac,
            mtu,
            conns: HashMap::new(),
            observed: 0,
            claim: RxChecksum::Unverified,
            gateway_frames: 0,
            router_adverts: 0,
            #[cfg(feature = "dns")]
            zone,
        }
    }

    fn op(&mut self, op: u8, input: &mut Cursor<'_>) {
        let arg = op >> 4;
        match op & 0x0f {
            kind @ 0..=7 => {
                let bytes = input.record();
                let side = usize::from(kind & 1);
                let frame = self.prepare(bytes, side, kind & 2 != 0, arg);
                let times = if kind & 4 != 0 { 2 } else { 1 };
                let claim = self.claim;
                for _ in 0..times {
                    self.net.on_guest_frame_with(
                        self.now,
                        self.ports[side],
                        &frame,
                        claim,
                        &mut self.host,
                    );
                    self.observe();
                }
                if arg & 8 != 0 {
                    self.end_of_batch();
                }
            }
            8 => self.end_of_batch(),
            9 => self.drain(),
            10 => {
                self.now = match STEPS.get(usize::from(arg)) {
                    Some(step) => self.now + *step,
                    None => self.now.max(self.net.next_deadline()),
                };
                self.net.on_timers(self.now, &mut self.host);
                self.observe();
            }
            11 => {
                let pick = input.byte_or_zero();
                let id = if arg & 4 != 0 {
                    arbitrary_ref(pick, arg)
                } else {
                    self.pick(pick)
                };
                if let Some(id) = id {
                    self.net.on_socket_event(
                        self.now,
                        id,
                        arg & 1 != 0,
                        arg & 2 != 0,
                        &mut self.host,
                    );
                    self.observe();
                }
            }
            12 => {
                let pick = input.byte_or_zero();
                let action = host_action(arg & 7, input);
                if let Some(id) = self.pick(pick) {
                    self.host.control(id, action);
                    if arg & 8 != 0 {
                        self.net
                            .on_socket_event(self.now, id, true, true, &mut self.host);
                        self.observe();
                    }
                }
            }
            13 => set_mode(&mut self.host, arg, input.byte_or_zero()),
            14 => self.answer_dns(arg & 1 != 0),
            _ => {
                let side = usize::from(arg & 1);
                self.net.port_down(self.ports[side]);
                self.ports[side] = self.net.port_up().expect("a port was just freed");
                self.net.set_checksum_offload(self.ports[side], side == 1);
            }
        }
    }

    fn pick(&self, pick: u8) -> Option<SocketRef> {
        let all = self.host.sockets();
        (!all.is_empty()).then(|| all[usize::from(pick) % all.len()])
    }

    fn end_of_batch(&mut self) {
        self.net.end_of_batch(self.now, &mut self.host);
        self.observe();
    }

    /// The frame as the script asks for it: MACs set, lengths and checksums fixed, TCP numbers
    /// continued, for IPv4 and IPv6 alike.
    fn prepare(&mut self, bytes: &[u8], side: usize, fix_lengths: bool, arg: u8) -> Vec<u8> {
        self.claim = RxChecksum::Unverified;
        let mut f = bytes.to_vec();
        if arg & 4 != 0 && f.len() >= ethernet::HEADER_LEN {
            f[0..6].copy_from_slice(&self.gateway_mac);
            f[6..12].copy_from_slice(&GUEST_MACS[side]);
        }
        if f.len() < ethernet::HEADER_LEN {
            return f;
        }
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        let l3 = &mut f[ethernet::HEADER_LEN..];
        let fixed = match ethertype {
            ethernet::ETHERTYPE_IPV4 => self.prepare_ipv4(l3, fix_lengths, arg),
            ethernet::ETHERTYPE_IPV6 => self.prepare_ipv6(l3, fix_lengths, arg),
            _ => None,
        };
        // On the offloading port, leave a fixed TCP/UDP checksum partial and say so.
        if let (1, Some((start, field, acc))) = (side, fixed) {
            if field != 2 {
                let at = ethernet::HEADER_LEN + start + field;
                f[at..at + 2].copy_from_slice(&checksum::partial_field(acc).to_be_bytes());
                self.claim = RxChecksum::Partial(PartialCsum {
                    start: (ethernet::HEADER_LEN + start) as u16,
                    offset: field as u16,
                });
            }
        }
        f
    }

    /// [`prepare`](Self::prepare) for an IPv4 packet (`p`: from its header to the frame's end).
    /// Returns where it fixed an L4 checksum: (L4 start in `p`, field offset, pseudo-header sum).
    fn prepare_ipv4(&mut self, p: &mut [u8], fix_lengths: bool, arg: u8) -> Option<Fixed> {
        if p.len() < ipv4::HEADER_LEN {
            return None;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let ip_len = p.len();
        if ihl < ipv4::HEADER_LEN || ihl > ip_len {
            return None;
        }
        let proto = p[9];
        if fix_lengths && ip_len <= usize::from(u16::MAX) {
            p[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            if proto == ipv4::PROTO_UDP && ip_len - ihl >= 8 {
                p[ihl + 4..ihl + 6].copy_from_slice(&((ip_len - ihl) as u16).to_be_bytes());
            }
        }
        let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if total < ihl || total > ip_len {
            return None;
        }
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        if arg & 2 != 0 && proto == ipv4::PROTO_TCP && total - ihl >= tcp::HEADER_LEN {
            self.continue_tcp(&mut p[ihl..total], src.into(), dst.into());
        }
        if arg & 1 == 0 {
            p[10..12].fill(0);
            let c = checksum::checksum(&p[..ihl]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            let seg = &mut p[ihl..total];
            let acc = match proto {
                ipv4::PROTO_ICMP => Some(0),
                ipv4::PROTO_TCP | ipv4::PROTO_UDP => {
                    Some(checksum::pseudo_v4(src, dst, proto, seg.len() as u16))
                }
                _ => None,
            };
            if let Some(acc) = acc {
                let field = fix_l4_checksum(seg, proto, acc)?;
                // A partial checksum runs to the frame's end: claimed only when the packet does.
                return (total == ip_len).then_some((ihl, field, acc));
            }
        }
        None
    }

    /// [`prepare`](Self::prepare) for an IPv6 packet: the payload length (and UDP length) set
    /// to the frame, the upper layer found past any extension headers, its checksum (TCP, UDP,
    /// ICMPv6) fixed over the IPv6 pseudo-header. Fragments are left as they are.
    fn prepare_ipv6(&mut self, p: &mut [u8], fix_lengths: bool, arg: u8) -> Option<Fixed> {
        if p.len() < ipv6::HEADER_LEN {
            return None;
        }
        if fix_lengths && p.len() - ipv6::HEADER_LEN <= usize::from(u16::MAX) {
            let len = (p.len() - ipv6::HEADER_LEN) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
        }
        let Ok(ip) = Ipv6Packet::new_checked(p) else {
            return None;
        };
        if ip.is_fragment() {
            return None;
        }
        let (src, dst, next) = (ip.src(), ip.dst(), ip.next_header());
        let (upper, end) = (ip.header_len(), ip.packet().len());
        let seg = &mut p[upper..end];
        if fix_lengths && next == ipv6::NEXT_UDP && seg.len() >= 8 {
            let len = seg.len() as u16;
            seg[4..6].copy_from_slice(&len.to_be_bytes());
        }
        if arg & 2 != 0 && next == ipv6::NEXT_TCP && seg.len() >= tcp::HEADER_LEN {
            self.continue_tcp(seg, src.into(), dst.into());
        }
        if arg & 1 == 0 && matches!(next, ipv6::NEXT_TCP | ipv6::NEXT_UDP | ipv6::NEXT_ICMPV6) {
            let acc = checksum::pseudo_v6(src, dst, next, seg.len() as u32);
            let field = fix_l4_checksum(seg, next, acc)?;
            return (end == p.len()).then_some((upper, field, acc));
        }
        None
    }

    /// Set seq and ack of a guest TCP segment `seg` from `src` to `dst` to continue the
    /// connection the harness saw, and note where the guest goes on.
    fn continue_tcp(&mut self, seg: &mut [u8], src: IpAddr, dst: IpAddr) {
        let key = (
            src,
            u16::from_be_bytes([seg[0], seg[1]]),
            dst,
            u16::from_be_bytes([seg[2], seg[3]]),
        );
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        seg[4..8].copy_from_slice(&c.guest_next.to_be_bytes());
        let header_len = (usize::from(seg[12] >> 4) * 4).clamp(tcp::HEADER_LEN, seg.len());
        // With a SACK option, the ACK and the block edges as given count back from the
        // gateway's next byte (so a seed can acknowledge part and SACK a range above it);
        // otherwise everything sent is acknowledged.
        let back = u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]);
        let ack = if relativise_sack(&mut seg[tcp::HEADER_LEN..header_len], c.gw_next) {
            c.gw_next.wrapping_sub(back)
        } else {
            c.gw_next
        };
        seg[8..12].copy_from_slice(&ack.to_be_bytes());
        let flags = seg[13];
        let len = (seg.len() - header_len) as u32
            + u32::from(flags & tcp::SYN != 0)
            + u32::from(flags & tcp::FIN != 0);
        c.guest_next = c.guest_next.wrapping_add(len);
    }

    /// Look at frames the network queued since the last look: learn TCP numbers from the
    /// gateway's segments (and where the guest will continue after ours).
    fn observe(&mut self) {
        let gw = self.gateway_mac;
        let mut seen = 0;
        for (_, frame) in self.net.tx().frames().skip(self.observed) {
            seen += 1;
            let Ok(eth) = EthernetFrame::new_checked(frame) else {
                continue;
            };
            if eth.src() != gw {
                continue;
            }
            let Some((src, dst, l4)) = tcp_of(eth.ethertype(), eth.payload()) else {
                continue;
            };
            let Ok(seg) = TcpSegment::new_checked(l4) else {
                continue;
            };
            let key = (dst, seg.dst_port(), src, seg.src_port());
            let flags = seg.flags();
            if flags & tcp::RST != 0 {
                self.conns.remove(&key);
                continue;
            }
            let mut len = seg.payload().len() as u32;
            len += u32::from(flags & tcp::SYN != 0) + u32::from(flags & tcp::FIN != 0);
            let next = seg.seq().wrapping_add(len);
            if self.conns.len() >= 1024 && !self.conns.contains_key(&key) {
                self.conns.clear();
            }
            let c = self.conns.entry(key).or_default();
            if flags & tcp::SYN != 0 {
                *c = Conn {
                    gw_next: next,
                    gw_ack: seg.ack(),
                    guest_next: seg.ack(),
                };
                continue;
            }
            if (next.wrapping_sub(c.gw_next) as i32) > 0 {
                c.gw_next = next;
            }
            if flags & tcp::ACK != 0 {
                // A repeated acknowledgement below where the guest went on: go back to it, as a
                // guest's TCP retransmits after duplicate ACKs.
                if seg.ack() == c.gw_ack || (c.guest_next.wrapping_sub(seg.ack()) as i32) < 0 {
                    c.guest_next = seg.ack();
                }
                c.gw_ack = seg.ack();
            }
        }
        self.observed += seen;
    }

    /// Check every frame the gateway built, then empty the queue as the driver's flush does.
    fn drain(&mut self) {
        self.observe();
        for (dest, frame, csum) in self.net.tx().frames_with_csum() {
            let mut whole;
            let frame = match csum {
                Some(c) => {
                    assert_eq!(
                        dest,
                        TxDest::Port(self.ports[1]),
                        "a partial checksum to a port that does not offload"
                    );
                    whole = frame.to_vec();
                    assert!(
                        c.complete(&mut whole),
                        "a partial checksum outside its frame"
                    );
                    &whole[..]
                }
                None => frame,
            };
            if check_gateway_frame(frame, self.gateway_mac) {
                if is_router_advert(frame) {
                    self.router_adverts += 1;
                } else {
                    self.gateway_frames += 1;
                }
            }
        }
        self.net.clear_tx();
        self.observed = 0;
        self.net.after_flush(self.now, &mut self.host);
        self.observe();
    }

    fn answer_dns(&mut self, too_large: bool) {
        let queries: Vec<_> = self.net.take_dns_queries().collect();
        for q in queries {
            let reply = if too_large {
                vec![0u8; usize::from(self.mtu)]
            } else {
                self.dns_reply(&q.payload)
            };
            self.net
                .on_dns_reply((q.guest_mac, q.guest_ip, q.guest_port), q.server_ip, &reply);
        }
        self.observe();
    }

    #[cfg(feature = "dns")]
    fn dns_reply(&self, query: &[u8]) -> Vec<u8> {
        use slipway_core::services::dns;
        match self.zone.answer(query) {
            Ok(Some(answer)) => answer,
            // Not a local name: the forwarder would ask upstream; here upstream fails.
            _ => dns::servfail(query).unwrap_or_default(),
        }
    }

    #[cfg(not(feature = "dns"))]
    fn dns_reply(&self, query: &[u8]) -> Vec<u8> {
        // The query echoed with QR set: some bytes of the right size for the reply path.
        let mut r = query.to_vec();
        if let Some(b) = r.get_mut(2) {
            *b |= 0x80;
        }
        r
    }

    fn finish(&mut self) {
        self.end_of_batch();
        self.drain();
        for _ in 0..64 {
            let next = self.net.next_deadline();
            if next <= self.now {
                self.now += Duration::from_millis(1);
            } else {
                self.now = next;
            }
            self.net.on_timers(self.now, &mut self.host);
            self.drain();
        }
        self.now += Duration::from_secs(86_400);
        self.net.on_timers(self.now, &mut self.host);
        self.drain();
        assert_eq!(
            self.net.udp().flow_count(),
            0,
            "UDP flows still open a day after the last datagram"
        );
        assert!(
            self.host.udp.is_empty(),
            "UDP sockets still open a day after the last datagram"
        );
        assert!(
            self.host.ping.is_empty(),
            "ping sockets still open a day after the last echo"
        );
    }
}

/// A socket reference that may name no socket at all.
fn arbitrary_ref(pick: u8, arg: u8) -> Option<SocketRef> {
    let kind = match arg & 3 {
        0 => FlowKind::Tcp,
        1 => FlowKind::Listener,
        2 => FlowKind::Udp,
        _ => FlowKind::Icmp,
    };
    Some(SocketRef {
        kind,
        index: u32::from(pick),
    })
}

/// A host-side change, its parameters read from the input:
/// 0 the remote sends `[len: u16 LE] [seed]` bytes; 1 it closes; 2 send space becomes
/// `[u16 LE] × 8`; 3 reset; 4 a UDP datagram of `[len: u16 LE]` bytes; 5 a UDP datagram
/// `[record]`; 6 a UDP error `[errno pick]`; 7 a ping reply `[record]`.
pub fn host_action<'a>(which: u8, input: &mut Cursor<'a>) -> HostAction<'a> {
    match which {
        0 => {
            let len = usize::from(input.u16_le());
            HostAction::TcpSend {
                len,
                seed: input.byte_or_zero(),
            }
        }
        1 => HostAction::TcpEof,
        2 => HostAction::TcpSendSpace(usize::from(input.u16_le()) * 8),
        3 => HostAction::TcpReset,
        4 => HostAction::UdpDatagram {
            len: usize::from(input.u16_le()),
            bytes: &[],
        },
        5 => HostAction::UdpDatagram {
            len: 0,
            bytes: input.record(),
        },
        6 => HostAction::UdpError(ERRNOS[usize::from(input.byte_or_zero()) % ERRNOS.len()]),
        _ => HostAction::PingReply(input.record()),
    }
}

/// arg 0: connects succeed at once; 1: later; 2: later with an error; 3: fail at once;
/// 4: UDP and ping opens succeed; 5 and up: they fail. Errors are `ERRNOS[errno_pick]`.
pub fn set_mode(host: &mut SimHost, arg: u8, errno_pick: u8) {
    let errno = ERRNOS[usize::from(errno_pick) % ERRNOS.len()];
    match arg {
        0 => host.connect_mode = ConnectMode::Immediate,
        1 => host.connect_mode = ConnectMode::Later(None),
        2 => host.connect_mode = ConnectMode::Later(Some(errno.unwrap_or(111))),
        3 => host.connect_mode = ConnectMode::Fail(errno),
        4 => host.open_error = None,
        _ => host.open_error = Some(errno),
    }
}

/// Write the checksum of an upper-layer packet (`proto`: TCP, UDP, ICMP or ICMPv6) whose
/// pseudo-header sum is `acc` (0 for ICMPv4). Too short a packet is left alone.
/// Where `prepare` fixed an L4 checksum: L4 start in the IP packet, field offset, pseudo sum.
type Fixed = (usize, usize, u64);

/// Fix the checksum of `seg`; returns the field's offset (None: too short to have one).
fn fix_l4_checksum(seg: &mut [u8], proto: u8, acc: u64) -> Option<usize> {
    let at = match proto {
        ipv4::PROTO_TCP if seg.len() >= tcp::HEADER_LEN => 16,
        ipv4::PROTO_UDP if seg.len() >= 8 => 6,
        ipv4::PROTO_ICMP | ipv6::NEXT_ICMPV6 if seg.len() >= 4 => 2,
        _ => return None,
    };
    seg[at..at + 2].fill(0);
    let mut c = checksum::finish(checksum::sum(seg, acc));
    if proto == ipv4::PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Some(at)
}

/// The addresses and TCP bytes of an IPv4 or IPv6 packet carrying TCP.
fn tcp_of(ethertype: u16, l3: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            (ip.protocol() == ipv4::PROTO_TCP)
                .then(|| (ip.src().into(), ip.dst().into(), ip.payload()))
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            (ip.next_header() == ipv6::NEXT_TCP && !ip.is_fragment())
                .then(|| (ip.src().into(), ip.dst().into(), ip.payload()))
        }
        _ => None,
    }
}

/// An ICMPv6 router advertisement (Ethernet, 40-byte IPv6 header, type 134).
fn is_router_advert(frame: &[u8]) -> bool {
    frame.len() > 54
        && frame[12..14] == ethernet::ETHERTYPE_IPV6.to_be_bytes()
        && frame[20] == ipv6::NEXT_ICMPV6
        && frame[54] == slipway_wire::icmpv6::ROUTER_ADVERT
}

/// A frame slipway built must pass its own checked views with valid checksums. Returns false
/// for a guest's frame the switch forwarded (not checked).
fn check_gateway_frame(frame: &[u8], gateway_mac: Mac) -> bool {
    let eth = EthernetFrame::new_checked(frame)
        .expect("the network queued a frame shorter than Ethernet");
    if eth.src() != gateway_mac {
        return false;
    }
    match eth.ethertype() {
        ethernet::ETHERTYPE_ARP => {
            ArpPacket::new_checked(eth.payload()).expect("the gateway built a bad ARP packet");
        }
        ethernet::ETHERTYPE_IPV4 => {
            let ip = match Ipv4Packet::new_checked(eth.payload()) {
                Ok(ip) => ip,
                Err(e) => panic!(
                    "the gateway built a bad IPv4 packet ({e}): {:02x?}",
                    &frame[..frame.len().min(64)]
                ),
            };
            let (src, dst) = (ip.src(), ip.dst());
            match ip.protocol() {
                ipv4::PROTO_TCP => {
                    let seg = TcpSegment::new_checked(ip.payload())
                        .expect("the gateway built a bad TCP header");
                    assert!(
                        seg.verify_v4(src, dst),
                        "the gateway built a TCP segment with a bad checksum"
                    );
                }
                ipv4::PROTO_UDP => {
                    let u = UdpDatagram::new_checked(ip.payload())
                        .expect("the gateway built a bad UDP header");
                    assert!(
                        u.verify_v4(src, dst),
                        "the gateway built a UDP datagram with a bad checksum"
                    );
                }
                ipv4::PROTO_ICMP => {
                    Icmpv4Packet::new_checked(ip.payload())
                        .expect("the gateway built an ICMP message with a bad checksum");
                }
                p => panic!("the gateway built an IPv4 packet of protocol {p}"),
            }
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = match Ipv6Packet::new_checked(eth.payload()) {
                Ok(ip) => ip,
                Err(e) => panic!(
                    "the gateway built a bad IPv6 packet ({e}): {:02x?}",
                    &frame[..frame.len().min(80)]
                ),
            };
            let (src, dst) = (IpAddr::V6(ip.src()), IpAddr::V6(ip.dst()));
            match ip.next_header() {
                ipv6::NEXT_TCP => {
                    let seg = TcpSegment::new_checked(ip.payload())
                        .expect("the gateway built a bad TCP header");
                    assert!(
                        seg.verify(src, dst),
                        "the gateway built a TCP segment with a bad checksum"
                    );
                }
                ipv6::NEXT_UDP => {
                    let u = UdpDatagram::new_checked(ip.payload())
                        .expect("the gateway built a bad UDP header");
                    assert!(
                        u.verify(src, dst),
                        "the gateway built a UDP datagram with a bad checksum"
                    );
                }
                ipv6::NEXT_ICMPV6 => {
                    Icmpv6Packet::new_checked(ip.payload(), ip.src(), ip.dst())
                        .expect("the gateway built an ICMPv6 message with a bad checksum");
                }
                p => panic!("the gateway built an IPv6 packet of next header {p}"),
            }
        }
        t => panic!("the gateway built a frame of ethertype {t:#06x}"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for (_, input) in crate::seeds::network_frames() {
            run(&input);
        }
    }

    /// Inputs that once crashed run clean (the smoke run feeds them to the fuzzer too).
    #[test]
    fn regressions_pass() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/network_frames");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("the regressions folder") {
            run(&std::fs::read(entry.expect("an entry").path()).expect("a readable input"));
            n += 1;
        }
        assert!(n >= 5, "{n} regression inputs");
    }

    /// Each seed must reach the path it was written for; otherwise the fuzzer starts from
    /// nothing deeper than a parser's error exit.
    #[test]
    fn seeds_reach_their_paths() {
        use crate::seeds::{guest6, guest_link_local, DHCP6_FIRST};
        use slipway_core::counters::DropReason;
        // Router advertisements the network sends on its own over a script's run.
        let mut empty = script(&[0]);
        empty.finish();
        let unsolicited = empty.router_adverts;
        assert!(unsolicited >= 1, "the advert after port_up");
        for (name, input) in crate::seeds::network_frames() {
            let mut h = script(&input);
            h.finish();
            let c = h.net.counters().clone();
            let built = h.gateway_frames;
            match name {
                "arp" => assert_eq!(built, 2, "ARP replies for the gateway and the alias"),
                "dhcp" => assert_eq!(built, 2, "DHCP OFFER and ACK"),
                "udp" => {
                    assert_eq!((c.udp_flows_opened, c.udp_flows_expired), (1, 1));
                    assert_eq!(built, 1, "the host's datagram reached the guest");
                }
                "dns" => {
                    assert_eq!(c.dns_queries, 1);
                    assert!(
                        built >= 2,
                        "a DNS reply and a SYN-ACK from port 53, got {built}"
                    );
                }
                "ping" => {
                    assert_eq!(c.icmp_echo_forwarded, 1);
                    assert_eq!(built, 2, "the gateway's own echo reply and the host's");
                }
                "connect_failures" => {
                    assert_eq!(c.dropped(DropReason::TcpConnectFailed), 2);
                    assert_eq!(built, 2, "an RST and an ICMP unreachable");
                }
                // (The ACK of the guest's small request rides on the host's answer: delayed ACK.)
                "tcp_session" => assert!(built >= 4, "SYN-ACK, data, FIN and ACKs, got {built}"),
                "tcp_sack_session" => {
                    assert_eq!((c.tcp_flows_opened, c.tcp_flows_closed), (1, 1));
                    assert_eq!(c.dropped(DropReason::TcpBadSackBlock), 1);
                    // SYN-ACK, 5 data segments, the hole again, FIN, the ACK of the guest's FIN.
                    assert_eq!(built, 9, "got {built}");
                }
                "ipv6_router_solicitation" => {
                    assert_eq!(
                        h.router_adverts,
                        unsolicited + 2,
                        "one advert per solicitation"
                    );
                    assert_eq!(built, 0);
                    let ll = guest_link_local().into();
                    assert_eq!(h.net.neighbor(ll), Some(GUEST_MACS[0]));
                }
                "ipv6_neighbor_discovery" => {
                    assert_eq!(
                        built, 3,
                        "advertisements for the gateway, alias and link-local"
                    );
                    assert_eq!(
                        c.dropped(DropReason::NdpNotForUs),
                        1,
                        "another guest's address"
                    );
                    assert_eq!(h.net.neighbor(guest6().into()), Some(GUEST_MACS[0]));
                }
                "ipv6_tcp_session" => {
                    assert_eq!((c.tcp_flows_opened, c.tcp_flows_closed), (1, 1));
                    assert_eq!(
                        h.host.tcp_written, 11,
                        "the guest's payload reached the host"
                    );
                    assert_eq!(
                        h.host.tcp_discarded, 100,
                        "the guest acknowledged the host's data"
                    );
                    // (The ACK of the small request rides on the host's data: delayed ACK.)
                    assert!(built >= 4, "SYN-ACK, data, FIN and ACKs, got {built}");
                }
                "ipv6_udp" => {
                    assert_eq!((c.udp_flows_opened, c.udp_flows_expired), (1, 1));
                    assert_eq!(built, 1, "the host's datagram reached the guest");
                }
                "ipv6_ping" => {
                    assert_eq!(c.icmp_echo_forwarded, 1);
                    assert_eq!(built, 2, "the gateway's own echo reply and the host's");
                }
                "ipv6_dhcp6" => {
                    assert_eq!(
                        built,
                        2,
                        "a Reply to each, {:?}",
                        c.drops().collect::<Vec<_>>()
                    );
                    let dhcp6 = h.net.dhcp6().expect("DHCPv6 on");
                    assert_eq!(dhcp6.holder_of(DHCP6_FIRST), Some(GUEST_MACS[0]));
                }
                other => panic!("no expectation for seed {other}"),
            }
        }
    }

    /// With `arg & 1` clear the harness repairs the checksums a mutation broke, and with
    /// `op & 2` the length fields, for IPv6 as for IPv4 (past extension headers), so mutated
    /// frames still reach the engines.
    #[test]
    fn prepare_fixes_ipv6_checksums_and_lengths() {
        use crate::seeds;
        let (cfg, tcp_limits, udp_limits) = plan(0);
        let mut h = Harness::new(cfg, tcp_limits, udp_limits);
        let guest = seeds::guest6();
        let alias: std::net::Ipv6Addr = "fd00:5119::fe".parse().unwrap();
        let frames = [
            seeds::tcp6_frame(alias, 1, 2, 3, 4, tcp::ACK, None, b"tcp"),
            seeds::udp6_frame(h.gateway_mac, (guest, 1), (alias, 2), b"udp"),
            seeds::echo6_request(alias, 1, 2),
            seeds::mld2_report(),
        ];
        let l4_of = |f: &[u8]| {
            let ip = Ipv6Packet::new_checked(&f[ethernet::HEADER_LEN..]).expect("IPv6");
            (ip.src(), ip.dst(), ip.next_header(), ip.payload().to_vec())
        };
        let valid = |f: &[u8]| {
            let (src, dst, next, l4) = l4_of(f);
            match next {
                ipv6::NEXT_TCP => {
                    TcpSegment::new_checked(&l4).is_ok_and(|s| s.verify(src.into(), dst.into()))
                }
                ipv6::NEXT_UDP => {
                    UdpDatagram::new_checked(&l4).is_ok_and(|u| u.verify(src.into(), dst.into()))
                }
                _ => Icmpv6Packet::new_checked(&l4, src, dst).is_ok(),
            }
        };
        for f in frames {
            assert!(valid(&f));
            // The last byte changed: the checksum no longer holds; fixed unless asked not to.
            let mut bad = f.clone();
            *bad.last_mut().unwrap() ^= 0x55;
            assert!(!valid(&bad));
            assert!(valid(&h.prepare(&bad, 0, false, 0)));
            assert!(
                !valid(&h.prepare(&bad, 0, false, 1)),
                "arg & 1 keeps checksums"
            );
            // Two bytes appended: lengths and checksum follow with `op & 2`.
            let mut longer = bad.clone();
            longer.extend_from_slice(&[1, 2]);
            let fixed = h.prepare(&longer, 0, true, 0);
            assert!(valid(&fixed));
            assert_eq!(l4_of(&fixed).3.len(), l4_of(&f).3.len() + 2);
        }
    }

    /// The SACK seed must reach the scoreboard: a SACKed hole is resent, then all is acknowledged.
    #[test]
    fn sack_seed_resends_the_hole() {
        let h = script(&crate::seeds::network_tcp_sack_session());
        assert_eq!(h.net.counters().tcp_flows_opened, 1);
        assert_eq!(
            h.host.tcp_discarded, 5000,
            "everything acknowledged in the end"
        );
        assert_eq!(
            h.net
                .counters()
                .dropped(slipway_core::counters::DropReason::TcpBadSackBlock),
            1,
            "the reversed block"
        );
    }

    /// The TCP seed must get past the handshake into data both ways; otherwise the fuzzer starts
    /// from nothing deeper than a SYN.
    #[test]
    fn tcp_seed_reaches_data_transfer() {
        let h = script(&crate::seeds::network_tcp_session());
        let counters = h.net.counters();
        assert_eq!(counters.tcp_flows_opened, 1);
        assert_eq!(
            h.host.tcp_written, 11,
            "the guest's payload reached the host socket"
        );
        assert_eq!(
            h.host.tcp_discarded, 100,
            "the guest acknowledged the host's data"
        );
        assert_eq!(
            counters.tcp_flows_closed, 1,
            "both sides closed: the flow is gone"
        );
        assert!(h.host.tcp.is_empty(), "the host socket was closed");
    }
}
