//! Building whole Ethernet/IP frames for guests in the TX arena, for either IP family.
//!
//! Every builder takes the addresses as `IpAddr`; the family of the source decides the IP header
//! (20 bytes for IPv4, 40 for IPv6). Source and destination are always of one family: keys and
//! address translation keep them so.

use crate::config::Mac;
use crate::counters::{Counters, DropReason};
use crate::switch::Switch;
use crate::tx::{TxDest, TxQueue};
use slipway_wire::{ethernet, icmp, icmpv6, ipv4, ipv6, tcp, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethernet + IPv4 header.
pub const ETH_IP_LEN: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// Ethernet + IPv6 header.
pub const ETH_IP6_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
/// Ethernet + IPv4 + TCP header without options.
pub const TCP_FRAME_OVERHEAD: usize = ETH_IP_LEN + tcp::HEADER_LEN;
pub const TTL: u8 = 64;
/// The smallest MTU of IPv6 links: ICMPv6 errors quote no more than fits in it (RFC 4443 §2.4).
pub const IPV6_MIN_MTU: usize = 1280;

/// Ethernet plus the IP header of `ip`'s family.
#[inline]
pub fn eth_ip_len(ip: IpAddr) -> usize {
    if ip.is_ipv4() {
        ETH_IP_LEN
    } else {
        ETH_IP6_LEN
    }
}

/// Ethernet + IP + TCP header without options for `ip`'s family.
#[inline]
pub fn tcp_overhead(ip: IpAddr) -> usize {
    eth_ip_len(ip) + tcp::HEADER_LEN
}

/// The switch destination for a frame to `mac`; None (counted) when no port has that guest.
pub fn dest_for(switch: &Switch, counters: &mut Counters, mac: &Mac) -> Option<TxDest> {
    if ethernet::is_multicast(mac) {
        return Some(TxDest::Flood { except: None });
    }
    match switch.port_of(mac) {
        Some(p) => Some(TxDest::Port(p)),
        None => {
            counters.drop(DropReason::NoPortForGuest);
            None
        }
    }
}

/// Write the Ethernet and IP headers for an upper-layer packet of `l4_len` bytes with protocol
/// `proto` (IPv4 protocol or IPv6 next header: TCP and UDP have the same numbers). Returns the
/// offset of the upper-layer header.
#[inline]
#[allow(clippy::too_many_arguments)]
pub fn write_eth_ip(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4_len: usize,
    ident: u16,
) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ethernet::write_header(frame, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
            ipv4::write_header(
                &mut frame[ethernet::HEADER_LEN..],
                s,
                d,
                proto,
                l4_len,
                TTL,
                ident,
            );
            ETH_IP_LEN
        }
        (s, d) => {
            ethernet::write_header(frame, dst_mac, src_mac, ethernet::ETHERTYPE_IPV6);
            ipv6::write_header(
                &mut frame[ethernet::HEADER_LEN..],
                v6(s),
                v6(d),
                proto,
                l4_len,
                TTL,
            );
            ETH_IP6_LEN
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Write Ethernet + IP + TCP headers around a payload already at
/// `frame[eth_ip_len(src) + h.header_len()..]`; `frame` is exactly the frame.
#[allow(clippy::too_many_arguments)]
pub fn write_tcp(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    h: &tcp::TcpHeader,
    ident: u16,
) {
    write_tcp_checksum(frame, dst_mac, src_mac, src, dst, h, ident, false);
}

/// [`write_tcp`], leaving the TCP checksum partial (for the link to finish) when `partial`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_tcp_checksum(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    h: &tcp::TcpHeader,
    ident: u16,
    partial: bool,
) {
    let l4 = eth_ip_len(src);
    let l4_len = frame.len() - l4;
    write_eth_ip(
        frame,
        dst_mac,
        src_mac,
        src,
        dst,
        ipv4::PROTO_TCP,
        l4_len,
        ident,
    );
    if partial {
        tcp::write_header_partial(&mut frame[l4..], h, src, dst);
    } else {
        tcp::write_header(&mut frame[l4..], h, src, dst);
    }
}

/// [`write_tcp`] for IPv4 addresses.
#[allow(clippy::too_many_arguments)]
pub fn write_tcp_v4(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    h: &tcp::TcpHeader,
    ident: u16,
) {
    write_tcp(frame, dst_mac, src_mac, src.into(), dst.into(), h, ident);
}

/// Queue a UDP datagram to a guest.
#[allow(clippy::too_many_arguments)]
pub fn push_udp(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload: &[u8],
) {
    let len = eth_ip_len(src.0) + udp::HEADER_LEN + payload.len();
    tx.push_with(dest, len, |f| {
        write_udp_in_place(f, dst_mac, src_mac, src, dst, payload.len(), Some(payload));
        len
    });
}

/// Write a UDP frame whose payload is (or is copied to) `frame[eth_ip_len(src) + 8..]`.
pub fn write_udp_in_place(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    payload_len: usize,
    payload: Option<&[u8]>,
) {
    let l4 = eth_ip_len(src.0);
    if let Some(p) = payload {
        frame[l4 + udp::HEADER_LEN..l4 + udp::HEADER_LEN + p.len()].copy_from_slice(p);
    }
    let l4_len = udp::HEADER_LEN + payload_len;
    write_eth_ip(
        frame,
        dst_mac,
        src_mac,
        src.0,
        dst.0,
        ipv4::PROTO_UDP,
        l4_len,
        0,
    );
    udp::write_header(&mut frame[l4..l4 + l4_len], src.1, dst.1, src.0, dst.0);
}

/// [`write_udp_in_place`] for IPv4 addresses.
pub fn write_udp_v4_in_place(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload_len: usize,
    payload: Option<&[u8]>,
) {
    let (s, d) = ((src.0.into(), src.1), (dst.0.into(), dst.1));
    write_udp_in_place(frame, dst_mac, src_mac, s, d, payload_len, payload);
}

/// Queue an ICMP message (type, code, rest-of-header, body) to a guest.
#[allow(clippy::too_many_arguments)]
pub fn push_icmp_v4(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) {
    let len = ETH_IP_LEN + icmp::HEADER_LEN + body.len();
    tx.push_with(dest, len, |f| {
        let l4_len = icmp::HEADER_LEN + body.len();
        write_eth_ip(
            f,
            dst_mac,
            src_mac,
            src.into(),
            dst.into(),
            ipv4::PROTO_ICMP,
            l4_len,
            0,
        );
        let m = &mut f[ETH_IP_LEN..];
        m[icmp::HEADER_LEN..].copy_from_slice(body);
        icmp::write_header(m, msg_type, code, rest);
        len
    });
}

/// Queue an ICMPv6 message (type, code, rest-of-header, body) to a guest.
#[allow(clippy::too_many_arguments)]
pub fn push_icmp_v6(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) {
    let len = ETH_IP6_LEN + icmpv6::HEADER_LEN + body.len();
    tx.push_with(dest, len, |f| {
        ethernet::write_header(f, dst_mac, src_mac, ethernet::ETHERTYPE_IPV6);
        let l4_len = icmpv6::HEADER_LEN + body.len();
        // Neighbor discovery requires hop limit 255 (RFC 4861 §6.1); it is harmless elsewhere.
        ipv6::write_header(
            &mut f[ethernet::HEADER_LEN..],
            src,
            dst,
            ipv6::NEXT_ICMPV6,
            l4_len,
            255,
        );
        let m = &mut f[ETH_IP6_LEN..];
        m[icmpv6::HEADER_LEN..].copy_from_slice(body);
        icmpv6::write_header(m, msg_type, code, rest, src, dst);
        len
    });
}

/// Why a guest's packet could not be delivered, in family-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// No route to the network (IPv4 net unreachable, IPv6 no route).
    Net,
    /// The host did not answer (IPv4 host unreachable, IPv6 address unreachable).
    Host,
    /// Nothing listens on the port.
    Port,
    /// Refused by policy.
    AdminProhibited,
}

impl Unreachable {
    fn code_v4(self) -> u8 {
        match self {
            Unreachable::Net => icmp::CODE_NET_UNREACHABLE,
            Unreachable::Host => icmp::CODE_HOST_UNREACHABLE,
            Unreachable::Port => icmp::CODE_PORT_UNREACHABLE,
            Unreachable::AdminProhibited => icmp::CODE_ADMIN_PROHIBITED,
        }
    }
    fn code_v6(self) -> u8 {
        match self {
            Unreachable::Net => icmpv6::CODE_NO_ROUTE,
            Unreachable::Host => icmpv6::CODE_ADDR_UNREACHABLE,
            Unreachable::Port => icmpv6::CODE_PORT_UNREACHABLE,
            Unreachable::AdminProhibited => icmpv6::CODE_ADMIN_PROHIBITED,
        }
    }
}

/// Queue a destination-unreachable about `original`, the offending packet from the guest
/// (`src` is the address the error comes from, `dst` the guest). IPv4 quotes the header plus the
/// first 8 bytes of its payload (RFC 792); IPv6 as much of the packet as keeps the error within
/// 1280 bytes (RFC 4443 §3.1).
#[allow(clippy::too_many_arguments)]
pub fn push_unreachable(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    why: Unreachable,
    original: &[u8],
    original_header_len: usize,
) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let quote = &original[..original.len().min(original_header_len + 8)];
            push_icmp_v4(
                tx,
                dest,
                dst_mac,
                src_mac,
                s,
                d,
                icmp::DEST_UNREACHABLE,
                why.code_v4(),
                [0; 4],
                quote,
            );
        }
        (s, d) => {
            let room = IPV6_MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
            let quote = &original[..original.len().min(room)];
            push_icmp_v6(
                tx,
                dest,
                dst_mac,
                src_mac,
                v6(s),
                v6(d),
                icmpv6::DEST_UNREACHABLE,
                why.code_v6(),
                [0; 4],
                quote,
            );
        }
    }
}
