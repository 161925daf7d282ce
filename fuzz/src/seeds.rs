//! Seed inputs, built with slipway's own builders so that checksums and lengths are right.
//! `cargo run --example make_seeds` writes them to `seeds/<target>/<name>`; the unit tests run
//! them through the harnesses.

use crate::input::push_record;
use crate::network::GUEST_MACS;
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::Encodable;
use slipway_core::config::{Mac, NetworkConfig};
use slipway_core::frames::{self, ETH_IP_LEN};
use slipway_wire::tcp::{self, SackBlocks, SynOptions, TcpHeader};
use slipway_wire::{arp, ethernet, icmp, icmpv6, ipv4, ipv6, udp};
use std::net::{Ipv4Addr, Ipv6Addr};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
/// The default plan's host-loopback alias (the gateway answers pings to it itself).
const ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
/// A remote address for the ping engine: TEST-NET-1 (RFC 5737). Only the simulated host ever
/// "sends" to it; the fuzzers run in a namespace with no route at all.
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The default IPv6 plan: gateway (and DNS) `::1`, host-loopback alias `::fe`.
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 1);
const ALIAS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0xfe);
/// Another guest's address in the default prefix.
const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0x77);
/// A remote IPv6 address for the ping engine: the documentation prefix (RFC 3849).
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The first DHCPv6 pool address of the default plan.
pub const DHCP6_FIRST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0x1000);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const DHCP6_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

fn gateway_mac() -> Mac {
    NetworkConfig::default().gateway_mac
}

/// The first guest's link-local address (fe80::EUI-64 of its MAC).
pub fn guest_link_local() -> Ipv6Addr {
    ipv6::eui64_address(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), GUEST_MACS[0])
}

/// The first guest's SLAAC address in the default prefix.
pub fn guest6() -> Ipv6Addr {
    ipv6::eui64_address(GATEWAY6, GUEST_MACS[0])
}

/// An Ethernet + IPv4 + TCP frame from the first guest.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: Option<SynOptions>,
    payload: &[u8],
) -> Vec<u8> {
    let h = TcpHeader {
        src_port: sport,
        dst_port: dport,
        seq,
        ack,
        flags,
        window: 64240,
        sack: Default::default(),
        syn_options: opts,
    };
    let mut f = vec![0u8; ETH_IP_LEN + h.header_len() + payload.len()];
    f[ETH_IP_LEN + h.header_len()..].copy_from_slice(payload);
    frames::write_tcp_v4(&mut f, gateway_mac(), GUEST_MACS[0], GUEST_IP, dst, &h, 1);
    f
}

/// An Ethernet + IPv4 + UDP frame from the first guest.
pub fn udp_frame(
    dst_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; ETH_IP_LEN + udp::HEADER_LEN + payload.len()];
    frames::write_udp_v4_in_place(
        &mut f,
        dst_mac,
        GUEST_MACS[0],
        src,
        dst,
        payload.len(),
        Some(payload),
    );
    f
}

/// An Ethernet + IPv6 frame from the first guest around `upper` (extension headers included).
pub fn ipv6_frame(
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    upper: &[u8],
) -> Vec<u8> {
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let mut f = vec![0u8; at + upper.len()];
    ethernet::write_header(&mut f, dst_mac, GUEST_MACS[0], ethernet::ETHERTYPE_IPV6);
    ipv6::write_header(
        &mut f[ethernet::HEADER_LEN..],
        src,
        dst,
        next_header,
        upper.len(),
        hop_limit,
    );
    f[at..].copy_from_slice(upper);
    f
}

/// An ICMPv6 message (checksum for `src` → `dst`).
pub fn icmpv6_message(ty: u8, rest: [u8; 4], body: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![0u8; icmpv6::HEADER_LEN + body.len()];
    m[icmpv6::HEADER_LEN..].copy_from_slice(body);
    icmpv6::write_header(&mut m, ty, 0, rest, src, dst);
    m
}

/// An ICMPv6 frame from the first guest, to the gateway's MAC or a multicast destination's MAC.
pub fn icmpv6_frame(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    ty: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let dst_mac = if dst.is_multicast() {
        ipv6::multicast_mac(dst)
    } else {
        gateway_mac()
    };
    let m = icmpv6_message(ty, rest, body, src, dst);
    ipv6_frame(dst_mac, src, dst, ipv6::NEXT_ICMPV6, hop_limit, &m)
}

/// A neighbor solicitation or advertisement body: the target, then a link-layer address option
/// of `kind` with the first guest's MAC (or none).
fn nd_body(target: Ipv6Addr, ll_option: Option<u8>) -> Vec<u8> {
    let mut b = target.octets().to_vec();
    if let Some(kind) = ll_option {
        let mut o = [0u8; 8];
        icmpv6::write_ll_option(&mut o, kind, GUEST_MACS[0]);
        b.extend_from_slice(&o);
    }
    b
}

pub fn router_solicitation(src: Ipv6Addr) -> Vec<u8> {
    let body = if src.is_unspecified() {
        Vec::new()
    } else {
        let mut o = vec![0u8; 8];
        icmpv6::write_ll_option(&mut o, icmpv6::OPT_SOURCE_LL_ADDR, GUEST_MACS[0]);
        o
    };
    icmpv6_frame(src, ALL_ROUTERS, 255, icmpv6::ROUTER_SOLICIT, [0; 4], &body)
}

/// A neighbor solicitation for `target` from `src` (to `target`'s solicited-node group, or
/// unicast), with a source link-layer option unless `src` is unspecified (DAD).
pub fn neighbor_solicitation(src: Ipv6Addr, target: Ipv6Addr, unicast: bool) -> Vec<u8> {
    let dst = if unicast {
        target
    } else {
        ipv6::solicited_node(target)
    };
    let slla = (!src.is_unspecified()).then_some(icmpv6::OPT_SOURCE_LL_ADDR);
    icmpv6_frame(
        src,
        dst,
        255,
        icmpv6::NEIGHBOR_SOLICIT,
        [0; 4],
        &nd_body(target, slla),
    )
}

pub fn echo6_request(dst: Ipv6Addr, ident: u16, seq: u16) -> Vec<u8> {
    icmpv6_frame(
        guest6(),
        dst,
        64,
        icmpv6::ECHO_REQUEST,
        icmp::echo_rest(ident, seq),
        b"slipway ping6",
    )
}

/// An Ethernet + IPv6 + TCP frame from the first guest's SLAAC address.
#[allow(clippy::too_many_arguments)]
pub fn tcp6_frame(
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: Option<SynOptions>,
    payload: &[u8],
) -> Vec<u8> {
    let h = TcpHeader {
        src_port: sport,
        dst_port: dport,
        seq,
        ack,
        flags,
        window: 64800,
        sack: Default::default(),
        syn_options: opts,
    };
    let at = frames::ETH_IP6_LEN + h.header_len();
    let mut f = vec![0u8; at + payload.len()];
    f[at..].copy_from_slice(payload);
    let gw = gateway_mac();
    frames::write_tcp(
        &mut f,
        gw,
        GUEST_MACS[0],
        guest6().into(),
        dst.into(),
        &h,
        0,
    );
    f
}

/// An Ethernet + IPv6 + UDP frame from the first guest.
pub fn udp6_frame(
    dst_mac: Mac,
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; frames::ETH_IP6_LEN + udp::HEADER_LEN + payload.len()];
    frames::write_udp_in_place(
        &mut f,
        dst_mac,
        GUEST_MACS[0],
        (src.0.into(), src.1),
        (dst.0.into(), dst.1),
        payload.len(),
        Some(payload),
    );
    f
}

/// A DHCPv6 message from the first guest's link-local address, port 546, to
/// All_DHCP_Relay_Agents_and_Servers, port 547.
pub fn dhcp6_frame(message: &[u8]) -> Vec<u8> {
    udp6_frame(
        ipv6::multicast_mac(DHCP6_SERVERS),
        (guest_link_local(), 546),
        (DHCP6_SERVERS, 547),
        message,
    )
}

/// Linux's MLDv2 report (joining the guest's solicited-node group) behind a hop-by-hop header
/// with the router alert option.
pub fn mld2_report() -> Vec<u8> {
    let src = guest_link_local();
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
    let mut record = vec![4, 0, 0, 0];
    record.extend_from_slice(&ipv6::solicited_node(src).octets());
    let m = icmpv6_message(icmpv6::MLD2_REPORT, [0, 0, 0, 1], &record, src, dst);
    let mut upper = vec![ipv6::NEXT_ICMPV6, 0, 5, 2, 0, 0, 1, 0];
    upper.extend_from_slice(&m);
    ipv6_frame(
        ipv6::multicast_mac(dst),
        src,
        dst,
        ipv6::NEXT_HOP_BY_HOP,
        1,
        &upper,
    )
}

pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    ethernet::write_header(
        &mut f,
        ethernet::BROADCAST,
        GUEST_MACS[0],
        ethernet::ETHERTYPE_ARP,
    );
    arp::write(
        &mut f[ethernet::HEADER_LEN..],
        arp::OP_REQUEST,
        GUEST_MACS[0],
        GUEST_IP,
        [0; 6],
        target,
    );
    f
}

pub fn echo_request(dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let body = b"slipway ping";
    let len = ETH_IP_LEN + icmp::HEADER_LEN + body.len();
    let mut f = vec![0u8; len];
    ethernet::write_header(
        &mut f,
        gateway_mac(),
        GUEST_MACS[0],
        ethernet::ETHERTYPE_IPV4,
    );
    ipv4::write_header(
        &mut f[ethernet::HEADER_LEN..],
        GUEST_IP,
        dst,
        ipv4::PROTO_ICMP,
        len - ETH_IP_LEN,
        64,
        2,
    );
    let m = &mut f[ETH_IP_LEN..];
    m[icmp::HEADER_LEN..].copy_from_slice(body);
    icmp::write_header(m, icmp::ECHO_REQUEST, 0, icmp::echo_rest(ident, seq));
    f
}

/// A DHCP message (UDP payload) from `mac` with a fixed xid.
pub fn dhcp_message(mac: Mac, kind: MessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0x3903_f326,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::DomainSearch,
        OptionCode::InterfaceMtu,
    ]));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    if let Some(ip) = requested {
        opts.insert(DhcpOption::RequestedIpAddress(ip));
        if kind == MessageType::Request {
            opts.insert(DhcpOption::ServerIdentifier(GATEWAY));
        }
    }
    m.to_vec().expect("a DHCP message encodes")
}

fn dhcp_frame(payload: &[u8]) -> Vec<u8> {
    udp_frame(
        ethernet::BROADCAST,
        (Ipv4Addr::UNSPECIFIED, 68),
        (Ipv4Addr::BROADCAST, 67),
        payload,
    )
}

/// A DNS query for `name` (type `qtype`), with an EDNS OPT record when `edns` is set.
pub fn dns_query(id: u16, name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        // Root name, type OPT, payload 1232, no extended rcode, version 0, DO set, no data.
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
    q
}

pub fn wire_ethernet_stack() -> Vec<(&'static str, Vec<u8>)> {
    let syn = Some(SynOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: false,
    });
    vec![
        ("arp_request", arp_request(GATEWAY)),
        (
            "tcp_syn",
            tcp_frame(ALIAS, 40000, 8080, 1000, 0, tcp::SYN, syn, b""),
        ),
        (
            "dhcp_discover",
            dhcp_frame(&dhcp_message(GUEST_MACS[0], MessageType::Discover, None)),
        ),
        ("icmp_echo", echo_request(ALIAS, 7, 1)),
        (
            "dns_query",
            udp_frame(
                gateway_mac(),
                (GUEST_IP, 5353),
                (GATEWAY, 53),
                &dns_query(0x1234, "host.docker.internal", 1, false),
            ),
        ),
        (
            "ipv6_router_solicitation",
            router_solicitation(guest_link_local()),
        ),
        (
            "ipv6_neighbor_solicitation",
            neighbor_solicitation(guest_link_local(), GATEWAY6, false),
        ),
        (
            "ipv6_neighbor_advertisement",
            icmpv6_frame(
                guest6(),
                ALL_NODES,
                255,
                icmpv6::NEIGHBOR_ADVERT,
                [icmpv6::NA_OVERRIDE, 0, 0, 0],
                &nd_body(guest6(), Some(icmpv6::OPT_TARGET_LL_ADDR)),
            ),
        ),
        (
            "ipv6_tcp_syn",
            tcp6_frame(ALIAS6, 40000, 8080, 1000, 0, tcp::SYN, syn, b""),
        ),
        ("ipv6_echo", echo6_request(GATEWAY6, 7, 1)),
        (
            "ipv6_dhcp6_information_request",
            dhcp6_frame(&dhcp6_message(GUEST_MACS[0], 11, &[])),
        ),
        ("ipv6_mld2_report_hop_by_hop", mld2_report()),
    ]
}

pub fn dhcp4_handle() -> Vec<(&'static str, Vec<u8>)> {
    let mac = GUEST_MACS[0];
    let offered = Ipv4Addr::new(192, 168, 127, 2);
    let mut dora = vec![0u8]; // plan 0
    for (ctl, msg) in [
        (0x01, dhcp_message(mac, MessageType::Discover, None)),
        (0x01, dhcp_message(mac, MessageType::Request, Some(offered))),
        (0x06, dhcp_message(mac, MessageType::Request, Some(offered))),
        (0x01, dhcp_message(mac, MessageType::Inform, None)),
        (0x01, dhcp_message(mac, MessageType::Release, None)),
        (0x01, dhcp_message(mac, MessageType::Decline, Some(offered))),
    ] {
        dora.push(ctl);
        push_record(&mut dora, &msg);
    }
    // The /29 plan: several clients, the pool runs out, static leases, assign and release.
    let mut small = vec![1u8];
    for i in 0..6u8 {
        small.push(0x01);
        push_record(
            &mut small,
            &dhcp_message([2, 0, 0, 0, 1, i], MessageType::Discover, None),
        );
    }
    small.extend_from_slice(&[0x41, 0x51, 0xc1]);
    small.push(0x01);
    push_record(
        &mut small,
        &dhcp_message(
            crate::dhcp::MACS[1],
            MessageType::Request,
            Some(Ipv4Addr::new(10, 0, 0, 3)),
        ),
    );
    vec![("dora_inform_release_decline", dora), ("small_pool", small)]
}

/// A DHCPv6 client message (UDP payload) from `mac` with a fixed xid: a DUID-LL client id, an
/// Option Request for 23 and 24, Elapsed Time and, except in an Information-request, an IA_NA
/// (IAID 1) listing `addrs`. No Server Identifier (the `dhcp6_handle` control byte adds it).
pub fn dhcp6_message(mac: Mac, kind: u8, addrs: &[Ipv6Addr]) -> Vec<u8> {
    let mut m = vec![kind, 0x39, 0x03, 0xf3];
    m.extend([0, 1, 0, 10, 0, 3, 0, 1]);
    m.extend(mac);
    m.extend([0, 6, 0, 4, 0, 23, 0, 24]);
    m.extend([0, 8, 0, 2, 0, 0]);
    if kind != 11 {
        let len = 12 + 28 * addrs.len() as u16;
        m.extend([0, 3]);
        m.extend(len.to_be_bytes());
        m.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        for a in addrs {
            m.extend([0, 5, 0, 24]);
            m.extend(a.octets());
            m.extend([0; 8]);
        }
    }
    m
}

pub fn dhcp6_handle() -> Vec<(&'static str, Vec<u8>)> {
    use crate::dhcp::MACS;
    const SOLICIT: u8 = 1;
    const REQUEST: u8 = 3;
    const CONFIRM: u8 = 4;
    const RENEW: u8 = 5;
    const REBIND: u8 = 6;
    const RELEASE: u8 = 8;
    const DECLINE: u8 = 9;
    const INFORMATION_REQUEST: u8 = 11;
    const RAPID_COMMIT: [u8; 4] = [0, 14, 0, 0];
    let first = Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0, 0, 0, 0x100);
    let second = Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0, 0, 0, 0x101);
    // Control bytes: time step in bits 0-2, MAC in bits 3-4, 0x20 appends the server id.
    let mut exchange = vec![0u8]; // plan 0
    let mut rapid = dhcp6_message(MACS[1], SOLICIT, &[]);
    rapid.extend(RAPID_COMMIT);
    for (ctl, msg) in [
        (0x01, dhcp6_message(MACS[0], INFORMATION_REQUEST, &[])),
        (0x01, dhcp6_message(MACS[0], SOLICIT, &[])),
        (0x21, dhcp6_message(MACS[0], REQUEST, &[first])),
        (0x23, dhcp6_message(MACS[0], RENEW, &[first])),
        (0x03, dhcp6_message(MACS[0], REBIND, &[first])),
        (0x01, dhcp6_message(MACS[0], CONFIRM, &[first])),
        (0x09, rapid),
        (0x21, dhcp6_message(MACS[0], RELEASE, &[first])),
        (0x29, dhcp6_message(MACS[1], DECLINE, &[second])),
    ] {
        exchange.push(ctl);
        push_record(&mut exchange, &msg);
    }
    // The 3-address plan with 1 s leases: four guests, the pool runs out, leases expire.
    let mut small = vec![1u8];
    for (i, mac) in MACS.iter().enumerate() {
        let mut m = dhcp6_message(*mac, SOLICIT, &[]);
        m.extend(RAPID_COMMIT);
        small.push(((i as u8) << 3) | 0x01);
        push_record(&mut small, &m);
    }
    small.push(0x22 | (3 << 3));
    push_record(&mut small, &dhcp6_message(MACS[3], RENEW, &[]));
    vec![("exchange", exchange), ("small_pool", small)]
}

/// Append a guest-frame operation (see `network`): `op` is the low nibble, `arg` the high one.
fn frame_op(out: &mut Vec<u8>, op: u8, arg: u8, frame: &[u8]) {
    out.push(op | (arg << 4));
    push_record(out, frame);
}

// Operation arguments of `network`, by name.
const SET_MACS: u8 = 4;
const END_BATCH: u8 = 8;
const CONTINUE_TCP: u8 = 2;
const DRAIN: u8 = 9;

/// A whole TCP connection: handshake, 11 bytes guest → host, 100 bytes host → guest
/// acknowledged, host closes, guest closes.
pub fn network_tcp_session() -> Vec<u8> {
    let syn = Some(SynOptions {
        mss: Some(1460),
        window_scale: Some(7),
        sack_permitted: false,
    });
    let mut s = vec![0u8];
    frame_op(
        &mut s,
        0,
        SET_MACS | END_BATCH,
        &tcp_frame(ALIAS, 40000, 8080, 1000, 0, tcp::SYN, syn, b""),
    );
    let ack = tcp_frame(
        ALIAS,
        40000,
        8080,
        0,
        0,
        tcp::ACK | tcp::PSH,
        None,
        b"hello guest",
    );
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &ack);
    // The host sends 100 bytes (pattern seed 7) and the socket is signalled.
    s.extend_from_slice(&[0x8c, 0, 100, 0, 7]);
    let ack = tcp_frame(ALIAS, 40000, 8080, 0, 0, tcp::ACK, None, b"");
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &ack);
    // The host closes its side; the guest acknowledges the FIN and closes too.
    s.extend_from_slice(&[0x9c, 0]);
    let fin = tcp_frame(ALIAS, 40000, 8080, 0, 0, tcp::ACK | tcp::FIN, None, b"");
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &fin);
    s.push(DRAIN);
    s
}

/// A connection with SACK: the host sends 5000 bytes; the guest acknowledges the first 1000,
/// SACKs 2000..5000 (the harness counts SACK edges and such an ACK back from the gateway's next
/// byte), sends a reversed block, then acknowledges everything; both sides close.
pub fn network_tcp_sack_session() -> Vec<u8> {
    let syn = Some(SynOptions {
        mss: Some(1000),
        window_scale: Some(7),
        sack_permitted: true,
    });
    let sacked = |back: u32, blocks: &[(u32, u32)]| {
        let h = TcpHeader {
            src_port: 40000,
            dst_port: 8080,
            seq: 0,
            ack: back,
            flags: tcp::ACK,
            window: 64240,
            sack: SackBlocks::from_slice(blocks),
            syn_options: None,
        };
        let mut f = vec![0u8; ETH_IP_LEN + h.header_len()];
        frames::write_tcp_v4(&mut f, gateway_mac(), GUEST_MACS[0], GUEST_IP, ALIAS, &h, 1);
        f
    };
    let mut s = vec![0u8];
    let first = tcp_frame(ALIAS, 40000, 8080, 1000, 0, tcp::SYN, syn, b"");
    frame_op(&mut s, 0, SET_MACS | END_BATCH, &first);
    let ack = tcp_frame(ALIAS, 40000, 8080, 0, 0, tcp::ACK, None, b"");
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &ack);
    // The host sends 5000 bytes (pattern seed 9) and the socket is signalled.
    s.extend_from_slice(&[0x8c, 0, 0x88, 0x13, 9]);
    frame_op(
        &mut s,
        0,
        CONTINUE_TCP | SET_MACS | END_BATCH,
        &sacked(4000, &[(3000, 0)]),
    );
    frame_op(
        &mut s,
        0,
        CONTINUE_TCP | SET_MACS | END_BATCH,
        &sacked(4000, &[(0, 3000)]),
    );
    s.push(DRAIN);
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &ack);
    s.extend_from_slice(&[0x9c, 0]);
    let fin = tcp_frame(ALIAS, 40000, 8080, 0, 0, tcp::ACK | tcp::FIN, None, b"");
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &fin);
    s.push(DRAIN);
    s
}

/// [`network_tcp_session`] over IPv6, to the host-loopback alias `[fd00:5119::fe]:8080`.
pub fn network_tcp6_session() -> Vec<u8> {
    let syn = Some(SynOptions {
        mss: Some(1440),
        window_scale: Some(7),
        sack_permitted: false,
    });
    let seg =
        |flags, payload: &[u8], opts| tcp6_frame(ALIAS6, 40000, 8080, 0, 0, flags, opts, payload);
    let mut s = vec![0u8];
    let first = tcp6_frame(ALIAS6, 40000, 8080, 1000, 0, tcp::SYN, syn, b"");
    frame_op(&mut s, 0, SET_MACS | END_BATCH, &first);
    let data = seg(tcp::ACK | tcp::PSH, b"hello guest", None);
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &data);
    s.extend_from_slice(&[0x8c, 0, 100, 0, 7]);
    frame_op(
        &mut s,
        0,
        CONTINUE_TCP | SET_MACS | END_BATCH,
        &seg(tcp::ACK, b"", None),
    );
    s.extend_from_slice(&[0x9c, 0]);
    let fin = seg(tcp::ACK | tcp::FIN, b"", None);
    frame_op(&mut s, 0, CONTINUE_TCP | SET_MACS | END_BATCH, &fin);
    s.push(DRAIN);
    s
}

/// IPv6 seeds for `network_frames`, all on the default plan.
fn network_frames_v6() -> Vec<(&'static str, Vec<u8>)> {
    let gw = gateway_mac();
    let ll = guest_link_local();

    // Router solicitations from the link-local address and from :: (answered to all nodes).
    let mut rs = vec![0u8];
    frame_op(&mut rs, 0, 0, &router_solicitation(ll));
    frame_op(&mut rs, 0, 0, &router_solicitation(Ipv6Addr::UNSPECIFIED));
    rs.push(DRAIN);

    // Solicitations for the gateway (multicast), the alias (unicast) and, in DAD, the
    // gateway's link-local address; one for another guest; the guest's own advertisement.
    let mut nd = vec![0u8];
    frame_op(&mut nd, 0, 0, &neighbor_solicitation(ll, GATEWAY6, false));
    frame_op(
        &mut nd,
        0,
        0,
        &neighbor_solicitation(guest6(), ALIAS6, true),
    );
    let gateway_ll = NetworkConfig::default().gateway_link_local();
    let dad = neighbor_solicitation(Ipv6Addr::UNSPECIFIED, gateway_ll, false);
    frame_op(&mut nd, 0, 0, &dad);
    frame_op(&mut nd, 0, 0, &neighbor_solicitation(ll, OTHER6, false));
    let na = icmpv6_frame(
        guest6(),
        ALL_NODES,
        255,
        icmpv6::NEIGHBOR_ADVERT,
        [icmpv6::NA_OVERRIDE, 0, 0, 0],
        &nd_body(guest6(), Some(icmpv6::OPT_TARGET_LL_ADDR)),
    );
    frame_op(&mut nd, 0, 0, &na);
    nd.push(DRAIN);

    // UDP to the alias; the host answers; the flow idles out.
    let mut udp6 = vec![0u8];
    let dgram = udp6_frame(gw, (guest6(), 40001), (ALIAS6, 5353), b"udp6 payload");
    frame_op(&mut udp6, 0, 0, &dgram);
    udp6.extend_from_slice(&[0xdc, 0]);
    push_record(&mut udp6, b"reply from the host");
    udp6.extend_from_slice(&[DRAIN, 0xaa, DRAIN]);

    // Ping the gateway (answered by slipway) and a remote address (an ICMPv6 ping socket).
    let mut ping6 = vec![0u8];
    frame_op(&mut ping6, 0, 0, &echo6_request(GATEWAY6, 9, 1));
    frame_op(&mut ping6, 0, 0, &echo6_request(REMOTE6, 9, 2));
    let reply = icmpv6_message(
        icmpv6::ECHO_REPLY,
        icmp::echo_rest(0x4001, 2),
        b"slipway ping6",
        REMOTE6,
        guest6(),
    );
    ping6.extend_from_slice(&[0xfc, 0]);
    push_record(&mut ping6, &reply);
    ping6.push(DRAIN);

    // DHCPv6: an Information-request, then a Solicit with Rapid Commit.
    let mut dhcp6 = vec![0u8];
    frame_op(
        &mut dhcp6,
        0,
        0,
        &dhcp6_frame(&dhcp6_message(GUEST_MACS[0], 11, &[])),
    );
    let mut solicit = dhcp6_message(GUEST_MACS[0], 1, &[]);
    solicit.extend([0, 14, 0, 0]);
    frame_op(&mut dhcp6, 0, 0, &dhcp6_frame(&solicit));
    dhcp6.push(DRAIN);

    vec![
        ("ipv6_router_solicitation", rs),
        ("ipv6_neighbor_discovery", nd),
        ("ipv6_tcp_session", network_tcp6_session()),
        ("ipv6_udp", udp6),
        ("ipv6_ping", ping6),
        ("ipv6_dhcp6", dhcp6),
    ]
}

pub fn network_frames() -> Vec<(&'static str, Vec<u8>)> {
    let gw = gateway_mac();
    let mut arp = vec![0u8];
    frame_op(&mut arp, 0, 0, &arp_request(GATEWAY));
    frame_op(&mut arp, 0, 0, &arp_request(ALIAS));
    arp.push(DRAIN);

    let mut dhcp = vec![0u8];
    frame_op(
        &mut dhcp,
        0,
        0,
        &dhcp_frame(&dhcp_message(GUEST_MACS[0], MessageType::Discover, None)),
    );
    frame_op(
        &mut dhcp,
        0,
        0,
        &dhcp_frame(&dhcp_message(
            GUEST_MACS[0],
            MessageType::Request,
            Some(GUEST_IP),
        )),
    );
    dhcp.push(DRAIN);

    // UDP to the host alias; the host answers with a datagram; the flow idles out.
    let mut udp = vec![0u8];
    frame_op(
        &mut udp,
        0,
        0,
        &udp_frame(gw, (GUEST_IP, 40001), (ALIAS, 5353), b"udp payload"),
    );
    udp.extend_from_slice(&[0xdc, 0]);
    push_record(&mut udp, b"reply from the host");
    udp.extend_from_slice(&[DRAIN, 0xaa, DRAIN]);

    // DNS over UDP to the gateway, answered; DNS over TCP to the gateway.
    let mut dns = vec![0u8];
    let q = dns_query(0x0102, "host.docker.internal", 1, true);
    frame_op(
        &mut dns,
        0,
        0,
        &udp_frame(gw, (GUEST_IP, 40002), (GATEWAY, 53), &q),
    );
    dns.extend_from_slice(&[14, DRAIN]);
    let syn = Some(SynOptions {
        mss: Some(1460),
        window_scale: None,
        sack_permitted: false,
    });
    frame_op(
        &mut dns,
        0,
        END_BATCH,
        &tcp_frame(GATEWAY, 40003, 53, 77, 0, tcp::SYN, syn, b""),
    );
    dns.push(DRAIN);

    // Ping the gateway (answered by slipway) and a remote address (through a ping socket).
    let mut ping = vec![0u8];
    frame_op(&mut ping, 0, 0, &echo_request(GATEWAY, 9, 1));
    frame_op(&mut ping, 0, 0, &echo_request(REMOTE, 9, 2));
    let mut reply = vec![0u8; icmp::HEADER_LEN + 12];
    reply[icmp::HEADER_LEN..].copy_from_slice(b"slipway ping");
    icmp::write_header(&mut reply, icmp::ECHO_REPLY, 0, icmp::echo_rest(0x4001, 2));
    ping.extend_from_slice(&[0xfc, 0]);
    push_record(&mut ping, &reply);
    ping.push(DRAIN);

    // Connects that are slow and then fail, or are refused at once.
    let mut refused = vec![1u8];
    refused.extend_from_slice(&[0x2d, 0]); // later, ECONNREFUSED
    let syn = Some(SynOptions {
        mss: Some(536),
        window_scale: Some(2),
        sack_permitted: false,
    });
    frame_op(
        &mut refused,
        0,
        END_BATCH,
        &tcp_frame(ALIAS, 40004, 22, 5, 0, tcp::SYN, syn, b""),
    );
    refused.extend_from_slice(&[0x3b, 0]); // the socket becomes writable: connect failed
    refused.extend_from_slice(&[0x3d, 2]); // fail at once, ENETUNREACH
    frame_op(
        &mut refused,
        0,
        END_BATCH,
        &tcp_frame(ALIAS, 40005, 22, 5, 0, tcp::SYN, syn, b""),
    );
    refused.push(DRAIN);

    vec![
        ("arp", arp),
        ("dhcp", dhcp),
        ("tcp_session", network_tcp_session()),
        ("tcp_sack_session", network_tcp_sack_session()),
        ("udp", udp),
        ("dns", dns),
        ("ping", ping),
        ("connect_failures", refused),
    ]
    .into_iter()
    .chain(network_frames_v6())
    .collect()
}

pub fn dns_zone() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "host_docker_internal_a",
            dns_query(0x1234, "host.docker.internal", 1, false),
        ),
        (
            "gateway_aaaa_edns",
            dns_query(0x2345, "gateway.slipway.internal", 28, true),
        ),
        (
            "unknown_local_name",
            dns_query(0x3456, "nothing.slipway.internal", 1, true),
        ),
        (
            "forwarded_name",
            dns_query(0x4567, "forwarded.test", 1, false),
        ),
    ]
}

/// Every seed as (target, name, bytes).
pub fn all() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (target, seeds) in [
        ("wire_ethernet_stack", wire_ethernet_stack()),
        ("dhcp4_handle", dhcp4_handle()),
        ("dhcp6_handle", dhcp6_handle()),
        ("network_frames", network_frames()),
        ("dns_zone", dns_zone()),
    ] {
        out.extend(seeds.into_iter().map(|(name, bytes)| (target, name, bytes)));
    }
    out
}
