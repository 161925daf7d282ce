//! Target `wire_ethernet_stack`: one buffer through every checked view of `slipway-wire`.
//!
//! The input is parsed as an Ethernet frame; its payload as ARP and as IPv4 whatever the
//! ethertype says, and the IPv4 payload as TCP, UDP and ICMP whatever the protocol says (the
//! views must hold up on bytes meant for another view). The raw input also goes straight into
//! each L3 and L4 view, so the fuzzer need not find an Ethernet header first.
//!
//! Oracles, beyond "no panic": every accessor is called; lengths the view reports agree with the
//! buffer; each accepted packet is rebuilt with the crate's own builder from the fields read and
//! parses back to the same fields with a valid checksum; the crate's 8-bytes-at-a-time Internet
//! checksum equals a plain RFC 1071 reference.

use slipway_wire::{arp, checksum, ethernet, icmp, ipv4, tcp, udp};
use slipway_wire::{ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Packet, TcpSegment, UdpDatagram};
use std::net::Ipv4Addr;

/// Addresses used for the pseudo-header when an L4 view is tried on bytes with no IPv4 header.
const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);

pub fn run(data: &[u8]) {
    match EthernetFrame::new_checked(data) {
        Ok(eth) => {
            let (dst, src) = (eth.dst(), eth.src());
            assert_eq!(dst[..], data[..6]);
            assert_eq!(src[..], data[6..12]);
            let _ = ethernet::is_multicast(&dst);
            let _ = eth.ethertype();
            assert_eq!(eth.as_bytes().len(), data.len());
            assert_eq!(eth.payload().len(), data.len() - ethernet::HEADER_LEN);
            let text = ethernet::format_mac(&src);
            assert_eq!(ethernet::parse_mac(&text), Some(src), "MAC text round trip");
            let mut header = [0u8; ethernet::HEADER_LEN];
            ethernet::write_header(&mut header, dst, src, eth.ethertype());
            assert_eq!(header[..], data[..ethernet::HEADER_LEN]);
            check_arp(eth.payload());
            check_ipv4(eth.payload());
        }
        Err(_) => assert!(data.len() < ethernet::HEADER_LEN),
    }
    check_arp(data);
    check_ipv4(data);
    check_l4(data, SRC, DST);
    check_checksum(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(mac) = ethernet::parse_mac(text) {
            assert!(text.len() == 17, "a MAC parsed from {text:?}");
            let _ = ethernet::format_mac(&mac);
        }
    }
}

fn check_arp(buf: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(buf) else {
        return;
    };
    let (op, smac, sip, tmac, tip) = (
        p.operation(),
        p.sender_mac(),
        p.sender_ip(),
        p.target_mac(),
        p.target_ip(),
    );
    let mut out = [0u8; arp::PACKET_LEN];
    arp::write(&mut out, op, smac, sip, tmac, tip);
    assert_eq!(
        out[..],
        buf[..arp::PACKET_LEN],
        "ARP rebuilt from its fields differs"
    );
}

fn check_ipv4(buf: &[u8]) {
    let Ok(ip) = Ipv4Packet::new_checked(buf) else {
        return;
    };
    let hl = ip.header_len();
    assert!((ipv4::HEADER_LEN..=60).contains(&hl));
    assert!(hl <= ip.packet().len() && ip.packet().len() <= buf.len());
    assert_eq!(ip.payload().len(), ip.packet().len() - hl);
    assert_eq!(ip.packet()[..], buf[..ip.packet().len()]);
    let (src, dst, proto, ttl, ident) = (ip.src(), ip.dst(), ip.protocol(), ip.ttl(), ip.ident());
    let _ = (ip.tos(), ip.is_fragment());
    assert!(
        Ipv4Packet::new_checked(ip.packet()).is_ok(),
        "an accepted packet without its padding is refused"
    );
    // Rebuild a plain 20-byte header carrying the same payload.
    let mut out = vec![0u8; ipv4::HEADER_LEN + ip.payload().len()];
    out[ipv4::HEADER_LEN..].copy_from_slice(ip.payload());
    ipv4::write_header(&mut out, src, dst, proto, ip.payload().len(), ttl, ident);
    let back = Ipv4Packet::new_checked(&out).expect("a header built by write_header parses");
    assert_eq!(
        (
            back.src(),
            back.dst(),
            back.protocol(),
            back.ttl(),
            back.ident()
        ),
        (src, dst, proto, ttl, ident)
    );
    assert_eq!(back.payload(), ip.payload());
    assert!(!back.is_fragment());
    check_l4(ip.payload(), src, dst);
}

fn check_l4(buf: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    check_tcp(buf, src, dst);
    check_udp(buf, src, dst);
    check_icmp(buf);
}

fn check_tcp(buf: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(seg) = TcpSegment::new_checked(buf) else {
        return;
    };
    let opts = seg.syn_options();
    if let Some(ws) = opts.window_scale {
        assert!(ws <= 14, "window scale {ws} above the RFC 7323 maximum");
    }
    let _ = seg.verify_v4(src, dst);
    let h = tcp::TcpHeader {
        src_port: seg.src_port(),
        dst_port: seg.dst_port(),
        seq: seg.seq(),
        ack: seg.ack(),
        flags: seg.flags(),
        window: seg.window(),
        syn_options: (seg.flags() & tcp::SYN != 0).then_some(opts),
    };
    let hl = h.header_len();
    if hl + seg.payload().len() > usize::from(u16::MAX) {
        return;
    }
    let mut out = vec![0u8; hl + seg.payload().len()];
    out[hl..].copy_from_slice(seg.payload());
    tcp::write_header_v4(&mut out, &h, src, dst);
    let back = TcpSegment::new_checked(&out).expect("a header built by write_header_v4 parses");
    assert!(
        back.verify_v4(src, dst),
        "a segment built by write_header_v4 has a bad checksum"
    );
    assert_eq!(
        (
            back.src_port(),
            back.dst_port(),
            back.seq(),
            back.ack(),
            back.flags(),
            back.window()
        ),
        (h.src_port, h.dst_port, h.seq, h.ack, h.flags, h.window)
    );
    assert_eq!(back.payload(), seg.payload());
    if let Some(o) = h.syn_options {
        let b = back.syn_options();
        assert_eq!(b.mss, Some(o.mss.unwrap_or(536)));
        assert_eq!(b.window_scale, Some(o.window_scale.unwrap_or(0)));
    }
}

fn check_udp(buf: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(u) = UdpDatagram::new_checked(buf) else {
        return;
    };
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    assert_eq!(u.payload().len() + udp::HEADER_LEN, len);
    let _ = u.verify_v4(src, dst);
    let mut out = vec![0u8; len];
    out[udp::HEADER_LEN..].copy_from_slice(u.payload());
    udp::write_header_v4(&mut out, u.src_port(), u.dst_port(), src, dst);
    let back = UdpDatagram::new_checked(&out).expect("a header built by write_header_v4 parses");
    assert!(
        back.verify_v4(src, dst),
        "a datagram built by write_header_v4 has a bad checksum"
    );
    assert_eq!(
        (back.src_port(), back.dst_port(), back.payload()),
        (u.src_port(), u.dst_port(), u.payload())
    );
}

fn check_icmp(buf: &[u8]) {
    let Ok(m) = Icmpv4Packet::new_checked(buf) else {
        return;
    };
    assert_eq!(m.as_bytes().len(), buf.len());
    assert_eq!(m.payload().len(), buf.len() - icmp::HEADER_LEN);
    let rest = icmp::echo_rest(m.echo_ident(), m.echo_seq());
    assert_eq!(rest[..], buf[4..8]);
    let mut out = buf.to_vec();
    icmp::write_header(&mut out, m.msg_type(), m.code(), rest);
    let back = Icmpv4Packet::new_checked(&out).expect("a message built by write_header parses");
    assert_eq!(
        (back.msg_type(), back.code(), back.payload()),
        (m.msg_type(), m.code(), m.payload())
    );
}

/// RFC 1071 §4.1, one big-endian 16-bit word at a time.
fn reference_checksum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        acc += u64::from(word);
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn check_checksum(data: &[u8]) {
    let expected = reference_checksum(data);
    assert_eq!(
        checksum::checksum(data),
        expected,
        "checksum of {} bytes differs from RFC 1071",
        data.len()
    );
    // Summing an even-length prefix first, then the rest, gives the same result.
    let cut = (data.len() / 2) & !1;
    let acc = checksum::sum(&data[cut..], checksum::sum(&data[..cut], 0));
    assert_eq!(checksum::finish(acc), expected, "split checksum differs");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2, so the checksum is 220d.
        assert_eq!(
            reference_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn seeds_pass() {
        for (_, input) in crate::seeds::wire_ethernet_stack() {
            run(&input);
        }
        run(&[]);
        run(&[0xff; 100]);
    }
}
