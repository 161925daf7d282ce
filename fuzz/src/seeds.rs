//! Seed inputs, built with slipway's own builders so that checksums and lengths are right.
//! `cargo run --example make_seeds` writes them to `seeds/<target>/<name>`; the unit tests run
//! them through the harnesses.

use crate::input::push_record;
use crate::network::GUEST_MACS;
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::Encodable;
use slipway_core::config::{Mac, NetworkConfig};
use slipway_core::frames::{self, ETH_IP_LEN};
use slipway_wire::tcp::{self, SynOptions, TcpHeader};
use slipway_wire::{arp, ethernet, icmp, ipv4, udp};
use std::net::{Ipv4Addr, Ipv6Addr};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
/// The default plan's host-loopback alias (the gateway answers pings to it itself).
const ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
/// A remote address for the ping engine: TEST-NET-1 (RFC 5737). Only the simulated host ever
/// "sends" to it; the fuzzers run in a namespace with no route at all.
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn gateway_mac() -> Mac {
    NetworkConfig::default().gateway_mac
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
        ("udp", udp),
        ("dns", dns),
        ("ping", ping),
        ("connect_failures", refused),
    ]
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
