//! Target `wire_ethernet_stack`: one buffer through every checked view of `slipway-wire`.
//!
//! The input is parsed as an Ethernet frame; its payload as ARP, IPv4 and IPv6 whatever the
//! ethertype says, and the IP payload as TCP, UDP and ICMP (ICMPv6 under IPv6) whatever the
//! protocol says (the views must hold up on bytes meant for another view). The raw input also
//! goes straight into each L3 and L4 view, so the fuzzer need not find an Ethernet header first.
//! ICMPv6 is also tried with its checksum fixed, so that the neighbor-discovery option walk
//! (`NdOptions`) sees arbitrary bytes, not only the rare input whose checksum holds.
//!
//! Oracles, beyond "no panic": every accessor is called; lengths the view reports agree with the
//! buffer; the IPv6 extension-header walk stops at an upper-layer protocol inside the packet;
//! ND options are whole multiples of 8 bytes that tile the option area when it is valid; each
//! accepted packet is rebuilt with the crate's own builder from the fields read and parses back
//! to the same fields with a valid checksum; the crate's 8-bytes-at-a-time Internet checksum
//! equals a plain RFC 1071 reference.

use slipway_wire::{arp, checksum, ethernet, icmp, icmpv6, ipv4, ipv6, tcp, udp};
use slipway_wire::{
    ArpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpSegment,
    UdpDatagram,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Addresses used for the pseudo-header when an L4 view is tried on bytes with no IP header.
const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 2);
const DST6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

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
            check_ipv6(eth.payload());
            check_ipv6_helpers(src, Ipv6Addr::from(u128::from_be_bytes(first_16(data))));
        }
        Err(_) => assert!(data.len() < ethernet::HEADER_LEN),
    }
    check_arp(data);
    check_ipv4(data);
    check_ipv6(data);
    check_l4(data, SRC.into(), DST.into());
    check_l4(data, SRC6.into(), DST6.into());
    check_icmpv6(data, SRC6, DST6);
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
    check_l4(ip.payload(), src.into(), dst.into());
}

fn check_ipv6(buf: &[u8]) {
    let Ok(ip) = Ipv6Packet::new_checked(buf) else {
        return;
    };
    let (hl, packet) = (ip.header_len(), ip.packet());
    let payload_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    assert_eq!(packet.len(), ipv6::HEADER_LEN + payload_len);
    assert!(ipv6::HEADER_LEN <= hl && hl <= packet.len() && packet.len() <= buf.len());
    assert_eq!(packet[..], buf[..packet.len()]);
    assert_eq!(ip.payload().len(), packet.len() - hl);
    let (src, dst, next, hop) = (ip.src(), ip.dst(), ip.next_header(), ip.hop_limit());
    let fragment = ip.is_fragment();
    let _ = ip.traffic_class();
    assert!(
        !matches!(
            next,
            ipv6::NEXT_HOP_BY_HOP | ipv6::NEXT_ROUTING | ipv6::NEXT_FRAGMENT | ipv6::NEXT_DEST_OPTS
        ),
        "the extension-header walk stopped at extension header {next}"
    );
    assert_eq!(
        hl == ipv6::HEADER_LEN,
        next == buf[6],
        "no extension headers exactly when the fixed header names the upper layer"
    );
    assert!(!fragment || hl > ipv6::HEADER_LEN);
    let again = Ipv6Packet::new_checked(packet).expect("an accepted packet without its padding");
    assert_eq!((again.header_len(), again.next_header()), (hl, next));
    // Rebuild a plain 40-byte header directly in front of the upper layer.
    let mut out = vec![0u8; ipv6::HEADER_LEN + ip.payload().len()];
    out[ipv6::HEADER_LEN..].copy_from_slice(ip.payload());
    ipv6::write_header(&mut out, src, dst, next, ip.payload().len(), hop);
    let back = Ipv6Packet::new_checked(&out).expect("a header built by write_header parses");
    assert_eq!(
        (back.src(), back.dst(), back.next_header(), back.hop_limit()),
        (src, dst, next, hop)
    );
    assert_eq!(back.header_len(), ipv6::HEADER_LEN);
    assert_eq!(back.payload(), ip.payload());
    assert!(!back.is_fragment());
    assert_eq!(back.traffic_class(), 0);
    check_l4(ip.payload(), src.into(), dst.into());
    check_icmpv6(ip.payload(), src, dst);
}

/// The first 16 bytes of `data`, zero-padded.
fn first_16(data: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    let n = data.len().min(16);
    o[..n].copy_from_slice(&data[..n]);
    o
}

/// The address helpers on arbitrary inputs: multicast MACs, solicited-node groups, EUI-64.
fn check_ipv6_helpers(mac: [u8; 6], ip: Ipv6Addr) {
    let o = ip.octets();
    assert_eq!(
        ipv6::multicast_mac(ip),
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    );
    let group = ipv6::solicited_node(ip);
    assert!(group.is_multicast());
    assert_eq!(group.octets()[13..], o[13..], "the low 24 bits");
    assert_eq!(ipv6::solicited_node(group), group, "idempotent");
    let ll = ipv6::eui64_address(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), mac);
    assert!(ipv6::is_link_local(&ll));
    let id = ll.octets();
    assert_eq!(
        id[8..],
        [
            mac[0] ^ 2,
            mac[1],
            mac[2],
            0xff,
            0xfe,
            mac[3],
            mac[4],
            mac[5]
        ]
    );
    let slaac = ipv6::eui64_address(ip, mac);
    assert_eq!(slaac.octets()[..8], o[..8], "the prefix is kept");
    assert_eq!(slaac.octets()[8..], id[8..]);
    assert_eq!(
        ipv6::is_link_local(&ip),
        o[0] == 0xfe && o[1] & 0xc0 == 0x80
    );
}

/// ICMPv6 as it came (its checksum rarely holds on mutated bytes), then with the checksum fixed.
fn check_icmpv6(buf: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    if let Ok(m) = Icmpv6Packet::new_checked(buf, src, dst) {
        walk_icmpv6(&m, buf, src, dst);
    }
    if buf.len() >= icmpv6::HEADER_LEN {
        let mut fixed = buf.to_vec();
        icmpv6::finish_checksum(&mut fixed, src, dst);
        let m = Icmpv6Packet::new_checked(&fixed, src, dst)
            .expect("a message whose checksum finish_checksum wrote is accepted");
        walk_icmpv6(&m, &fixed, src, dst);
    } else {
        assert!(Icmpv6Packet::new_checked(buf, src, dst).is_err());
    }
}

fn walk_icmpv6(m: &Icmpv6Packet<'_>, buf: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    assert_eq!(m.as_bytes(), buf);
    assert_eq!(m.payload().len(), buf.len() - icmpv6::HEADER_LEN);
    let (ty, code) = (m.msg_type(), m.code());
    let _ = (m.echo_ident(), m.echo_seq(), m.na_flags());
    assert_eq!(
        m.nd_target().is_some(),
        buf.len() >= icmpv6::ND_TARGET_MSG_LEN
    );
    if let Some(t) = m.nd_target() {
        assert_eq!(t.octets()[..], buf[8..24]);
    }
    // Where the options start for each message type; other types have none.
    let start = match ty {
        icmpv6::ROUTER_SOLICIT => icmpv6::HEADER_LEN,
        icmpv6::ROUTER_ADVERT => icmpv6::RA_LEN,
        icmpv6::NEIGHBOR_SOLICIT | icmpv6::NEIGHBOR_ADVERT => icmpv6::ND_TARGET_MSG_LEN,
        icmpv6::REDIRECT => 40,
        _ => buf.len(),
    };
    let valid = m.nd_options().valid();
    let mut walked = 0;
    let mut first_ll: [Option<[u8; 6]>; 3] = [None; 3];
    for (kind, o) in m.nd_options() {
        assert_eq!(o[0], kind);
        assert!(
            !o.is_empty() && o.len() % 8 == 0,
            "an option of {} bytes",
            o.len()
        );
        assert_eq!(o.len(), usize::from(o[1]) * 8);
        assert_eq!(o, &buf[start + walked..start + walked + o.len()]);
        walked += o.len();
        if let Some(slot) = first_ll.get_mut(usize::from(kind)) {
            if slot.is_none() {
                *slot = Some([o[2], o[3], o[4], o[5], o[6], o[7]]);
            }
        }
    }
    if buf.len() < start {
        assert!(
            !valid && walked == 0,
            "a message shorter than its fixed part has no options"
        );
    } else {
        assert!(start + walked <= buf.len());
        assert_eq!(
            valid,
            start + walked == buf.len(),
            "valid exactly when the walk reaches the end"
        );
    }
    for kind in [icmpv6::OPT_SOURCE_LL_ADDR, icmpv6::OPT_TARGET_LL_ADDR] {
        assert_eq!(
            m.nd_options().link_layer_addr(kind),
            first_ll[usize::from(kind)],
            "link-layer address option {kind}"
        );
    }
    // Rebuilt from its fields, the message is the same with a valid checksum.
    let mut out = buf.to_vec();
    let rest = [buf[4], buf[5], buf[6], buf[7]];
    icmpv6::write_header(&mut out, ty, code, rest, src, dst);
    let back = Icmpv6Packet::new_checked(&out, src, dst).expect("write_header's checksum holds");
    assert_eq!((back.msg_type(), back.code()), (ty, code));
    assert_eq!(out[4..], buf[4..]);
}

fn check_l4(buf: &[u8], src: IpAddr, dst: IpAddr) {
    check_tcp(buf, src, dst);
    check_udp(buf, src, dst);
    check_icmp(buf);
}

fn check_tcp(buf: &[u8], src: IpAddr, dst: IpAddr) {
    let Ok(seg) = TcpSegment::new_checked(buf) else {
        return;
    };
    let opts = seg.syn_options();
    if let Some(ws) = opts.window_scale {
        assert!(ws <= 14, "window scale {ws} above the RFC 7323 maximum");
    }
    let _ = seg.verify(src, dst);
    let h = tcp::TcpHeader {
        src_port: seg.src_port(),
        dst_port: seg.dst_port(),
        seq: seg.seq(),
        ack: seg.ack(),
        flags: seg.flags(),
        window: seg.window(),
        sack: seg.sack_blocks(),
        syn_options: (seg.flags() & tcp::SYN != 0).then_some(opts),
    };
    let hl = h.header_len();
    if hl + seg.payload().len() > usize::from(u16::MAX) {
        return;
    }
    let mut out = vec![0u8; hl + seg.payload().len()];
    out[hl..].copy_from_slice(seg.payload());
    tcp::write_header(&mut out, &h, src, dst);
    let back = TcpSegment::new_checked(&out).expect("a header built by write_header parses");
    assert!(
        back.verify(src, dst),
        "a segment built by write_header has a bad checksum"
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
        assert_eq!(b.sack_permitted, o.sack_permitted);
    }
    // SACK blocks round-trip, as many as fit after the SYN options (3 after them, else 4).
    let sent = h.sack.as_slice();
    let room = if h.syn_options.is_some() { 3 } else { 4 };
    assert_eq!(back.sack_blocks().as_slice(), &sent[..sent.len().min(room)]);
}

fn check_udp(buf: &[u8], src: IpAddr, dst: IpAddr) {
    let Ok(u) = UdpDatagram::new_checked(buf) else {
        return;
    };
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    assert_eq!(u.payload().len() + udp::HEADER_LEN, len);
    let verified = u.verify(src, dst);
    if buf[6..8] == [0, 0] {
        assert_eq!(verified, src.is_ipv4(), "no checksum: fine over IPv4 only");
    }
    let mut out = vec![0u8; len];
    out[udp::HEADER_LEN..].copy_from_slice(u.payload());
    udp::write_header(&mut out, u.src_port(), u.dst_port(), src, dst);
    let back = UdpDatagram::new_checked(&out).expect("a header built by write_header parses");
    assert!(
        back.verify(src, dst),
        "a datagram built by write_header has a bad checksum"
    );
    assert_ne!(
        out[6..8],
        [0, 0],
        "write_header never writes the no-checksum value"
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
        // An IPv6 header whose hop-by-hop header claims more than the packet holds.
        let mut f = crate::seeds::mld2_report();
        f[55] = 200;
        run(&f);
    }

    /// The IPv6 seeds reach the views they were written for.
    #[test]
    fn ipv6_seeds_parse() {
        for (name, input) in crate::seeds::wire_ethernet_stack() {
            if !name.starts_with("ipv6_") {
                continue;
            }
            let eth = EthernetFrame::new_checked(&input).unwrap();
            let ip = Ipv6Packet::new_checked(eth.payload()).unwrap_or_else(|_| panic!("{name}"));
            let (src, dst) = (ip.src(), ip.dst());
            match ip.next_header() {
                ipv6::NEXT_ICMPV6 => {
                    let m = Icmpv6Packet::new_checked(ip.payload(), src, dst).expect(name);
                    assert!(m.nd_options().valid(), "{name}");
                }
                ipv6::NEXT_TCP => assert!(TcpSegment::new_checked(ip.payload())
                    .is_ok_and(|s| s.verify(src.into(), dst.into()))),
                ipv6::NEXT_UDP => assert!(UdpDatagram::new_checked(ip.payload())
                    .is_ok_and(|u| u.verify(src.into(), dst.into()))),
                n => panic!("{name}: next header {n}"),
            }
        }
        let mld = crate::seeds::mld2_report();
        let ip = Ipv6Packet::new_checked(&mld[ethernet::HEADER_LEN..]).unwrap();
        assert_eq!((ip.header_len(), ip.next_header()), (48, ipv6::NEXT_ICMPV6));
    }
}
