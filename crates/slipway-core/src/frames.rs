//! Building whole Ethernet/IPv4 frames for guests in the TX arena.

use crate::config::Mac;
use crate::counters::{Counters, DropReason};
use crate::switch::Switch;
use crate::tx::{TxDest, TxQueue};
use slipway_wire::{ethernet, icmp, ipv4, tcp, udp};
use std::net::Ipv4Addr;

pub const ETH_IP_LEN: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// Ethernet + IPv4 + TCP header without options.
pub const TCP_FRAME_OVERHEAD: usize = ETH_IP_LEN + tcp::HEADER_LEN;
pub const TTL: u8 = 64;

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

/// Write Ethernet + IPv4 + TCP headers around a payload already at
/// `frame[ETH_IP_LEN + h.header_len()..]`; `frame` is exactly the frame.
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
    ethernet::write_header(frame, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
    let l4_len = frame.len() - ETH_IP_LEN;
    ipv4::write_header(
        &mut frame[ethernet::HEADER_LEN..],
        src,
        dst,
        ipv4::PROTO_TCP,
        l4_len,
        TTL,
        ident,
    );
    tcp::write_header_v4(&mut frame[ETH_IP_LEN..], h, src, dst);
}

/// Queue a UDP datagram to a guest.
#[allow(clippy::too_many_arguments)]
pub fn push_udp_v4(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) {
    let len = ETH_IP_LEN + udp::HEADER_LEN + payload.len();
    tx.push_with(dest, len, |f| {
        write_udp_v4_in_place(f, dst_mac, src_mac, src, dst, payload.len(), Some(payload));
        len
    });
}

/// Write a UDP frame whose payload is (or is copied to) `frame[42..42+payload_len]`.
pub fn write_udp_v4_in_place(
    frame: &mut [u8],
    dst_mac: Mac,
    src_mac: Mac,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload_len: usize,
    payload: Option<&[u8]>,
) {
    let l4 = ETH_IP_LEN;
    if let Some(p) = payload {
        frame[l4 + udp::HEADER_LEN..l4 + udp::HEADER_LEN + p.len()].copy_from_slice(p);
    }
    ethernet::write_header(frame, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
    ipv4::write_header(
        &mut frame[ethernet::HEADER_LEN..],
        src.0,
        dst.0,
        ipv4::PROTO_UDP,
        udp::HEADER_LEN + payload_len,
        TTL,
        0,
    );
    udp::write_header_v4(
        &mut frame[l4..l4 + udp::HEADER_LEN + payload_len],
        src.1,
        dst.1,
        src.0,
        dst.0,
    );
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
        ethernet::write_header(f, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
        ipv4::write_header(
            &mut f[ethernet::HEADER_LEN..],
            src,
            dst,
            ipv4::PROTO_ICMP,
            icmp::HEADER_LEN + body.len(),
            TTL,
            0,
        );
        let m = &mut f[ETH_IP_LEN..];
        m[icmp::HEADER_LEN..].copy_from_slice(body);
        icmp::write_header(m, msg_type, code, rest);
        len
    });
}

/// Queue an ICMP destination-unreachable about `original` (the offending IPv4 packet: its
/// header plus the first 8 bytes of its payload are quoted, RFC 792).
#[allow(clippy::too_many_arguments)]
pub fn push_unreachable_v4(
    tx: &mut TxQueue,
    dest: TxDest,
    dst_mac: Mac,
    src_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    code: u8,
    original: &[u8],
    original_header_len: usize,
) {
    let quote = &original[..original.len().min(original_header_len + 8)];
    push_icmp_v4(
        tx,
        dest,
        dst_mac,
        src_mac,
        src,
        dst,
        icmp::DEST_UNREACHABLE,
        code,
        [0; 4],
        quote,
    );
}
