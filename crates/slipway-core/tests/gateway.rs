//! The gateway's own protocols through the whole core (switch → gateway → services): ARP, ICMP
//! echo, DHCP, DNS hand-off and truncation, guest-to-guest switching, refusals.

use slipway_core::flows::{ConnectProgress, HostSockets, SocketRef, TcpTarget};
use slipway_core::offload::{PartialCsum, RxChecksum};
use slipway_core::{Network, NetworkConfig};
use slipway_wire::{
    arp, checksum, ethernet, icmp, ipv4, udp, ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Packet,
    UdpDatagram,
};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Host sockets that refuse everything: these tests never reach the flow engines' sockets.
struct NoSockets;
impl HostSockets for NoSockets {
    fn tcp_connect(&mut self, _: SocketRef, _: TcpTarget) -> io::Result<ConnectProgress> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn tcp_connect_result(&mut self, _: SocketRef) -> io::Result<()> {
        Ok(())
    }
    fn tcp_write(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn tcp_peek(&mut self, _: SocketRef, _: usize, _: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn tcp_discard(&mut self, _: SocketRef, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn tcp_send_space(&mut self, _: SocketRef) -> usize {
        0
    }
    fn tcp_shutdown_write(&mut self, _: SocketRef) {}
    fn tcp_close(&mut self, _: SocketRef, _: bool) {}
    fn udp_open(&mut self, _: SocketRef, _: SocketAddr) -> io::Result<()> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn udp_send(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn udp_recv(&mut self, _: SocketRef, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn udp_close(&mut self, _: SocketRef) {}
    fn ping_open(&mut self, _: SocketRef, _: SocketAddr) -> io::Result<u16> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn ping_send(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::BrokenPipe.into())
    }
    fn ping_recv(&mut self, _: SocketRef, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn ping_close(&mut self, _: SocketRef) {}
}

const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);

fn gw_mac() -> [u8; 6] {
    NetworkConfig::default().gateway_mac
}

fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 42 + payload.len()];
    slipway_core::frames::write_udp_v4_in_place(
        &mut f,
        dst_mac,
        src_mac,
        src,
        dst,
        payload.len(),
        Some(payload),
    );
    f
}

fn outputs(net: &mut Network) -> Vec<(slipway_core::tx::TxDest, Vec<u8>)> {
    let v = net.tx().frames().map(|(d, f)| (d, f.to_vec())).collect();
    net.clear_tx();
    v
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    let mut f = vec![0u8; 42];
    ethernet::write_header(&mut f, ethernet::BROADCAST, A_MAC, ethernet::ETHERTYPE_ARP);
    arp::write(&mut f[14..], arp::OP_REQUEST, A_MAC, A_IP, [0; 6], GW);
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    let out = outputs(&mut net);
    // The request is also flooded to the other (here: no) ports; the reply goes to port p.
    let reply: Vec<_> = out
        .iter()
        .filter(|(d, _)| *d == slipway_core::tx::TxDest::Port(p))
        .collect();
    assert_eq!(reply.len(), 1);
    let eth = EthernetFrame::new_checked(&reply[0].1).unwrap();
    let a = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(
        (a.operation(), a.sender_ip(), a.sender_mac()),
        (arp::OP_REPLY, GW, gw_mac())
    );
    assert_eq!(net.neighbor(A_IP.into()), Some(A_MAC));
}

#[test]
fn ping_of_the_gateway_is_answered_with_the_same_id_and_data() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    let mut f = vec![0u8; 34 + 8 + 4];
    ethernet::write_header(&mut f, gw_mac(), A_MAC, ethernet::ETHERTYPE_IPV4);
    ipv4::write_header(&mut f[14..], A_IP, GW, ipv4::PROTO_ICMP, 12, 64, 9);
    f[42..].copy_from_slice(b"data");
    icmp::write_header(&mut f[34..], icmp::ECHO_REQUEST, 0, icmp::echo_rest(77, 3));
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    let out = outputs(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0].1).unwrap().payload()).unwrap();
    assert_eq!((ip.src(), ip.dst()), (GW, A_IP));
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (m.msg_type(), m.echo_ident(), m.echo_seq(), m.payload()),
        (icmp::ECHO_REPLY, 77, 3, &b"data"[..])
    );
}

#[test]
fn dhcp_discover_gets_an_offer_from_the_gateway() {
    use dhcproto::{v4, Encodable, Encoder};
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    let mut msg = v4::Message::default();
    msg.set_flags(v4::Flags::default().set_broadcast())
        .set_chaddr(&A_MAC)
        .set_xid(0x1234);
    msg.opts_mut()
        .insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf)).unwrap();
    let f = udp_frame(
        A_MAC,
        ethernet::BROADCAST,
        (Ipv4Addr::UNSPECIFIED, 68),
        (Ipv4Addr::BROADCAST, 67),
        &buf,
    );
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    let out = outputs(&mut net);
    // The broadcast DISCOVER is flooded to other guests; the offer goes to the client's port.
    let offers: Vec<_> = out
        .iter()
        .filter(|(d, _)| *d == slipway_core::tx::TxDest::Port(p))
        .collect();
    assert_eq!(offers.len(), 1);
    let ip = Ipv4Packet::new_checked(EthernetFrame::new_checked(&offers[0].1).unwrap().payload())
        .unwrap();
    let u = UdpDatagram::new_checked(ip.payload()).unwrap();
    assert!(u.verify_v4(ip.src(), ip.dst()));
    assert_eq!((ip.src(), u.src_port(), u.dst_port()), (GW, 67, 68));
    let offer = v4::Message::decode(&mut dhcproto::Decoder::new(u.payload())).unwrap();
    use dhcproto::Decodable;
    assert_eq!(offer.yiaddr(), A_IP);
    assert_eq!(offer.xid(), 0x1234);
}

#[test]
fn dns_queries_go_to_the_service_and_oversized_replies_are_truncated() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    // A query (header + question for "a.test" A IN).
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
    let f = udp_frame(A_MAC, gw_mac(), (A_IP, 5353), (GW, 53), &q);
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    let queries: Vec<_> = net.take_dns_queries().collect();
    assert_eq!(queries.len(), 1);
    assert_eq!(
        (
            queries[0].guest_ip,
            queries[0].guest_port,
            &queries[0].payload
        ),
        (A_IP.into(), 5353, &q)
    );
    // A reply bigger than the 1500-byte MTU: 200 answers of 12 bytes each.
    let mut r = q.clone();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&200u16.to_be_bytes());
    for _ in 0..200 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    }
    net.on_dns_reply((A_MAC, A_IP.into(), 5353), GW.into(), &r);
    let out = outputs(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0].1).unwrap().payload()).unwrap();
    let u = UdpDatagram::new_checked(ip.payload()).unwrap();
    assert!(out[0].1.len() <= 1514);
    assert!(slipway_core::services::dns::is_truncated(u.payload()));
    assert_eq!(&u.payload()[..2], &[0x12, 0x34]);
    assert_eq!(
        net.counters()
            .dropped(slipway_core::counters::DropReason::DnsReplyTruncated),
        1
    );
}

#[test]
fn udp_to_a_closed_gateway_port_gets_port_unreachable() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    let f = udp_frame(A_MAC, gw_mac(), (A_IP, 4000), (GW, 9999), b"x");
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    let out = outputs(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0].1).unwrap().payload()).unwrap();
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (m.msg_type(), m.code()),
        (icmp::DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE)
    );
}

#[test]
fn guests_reach_each_other_through_the_switch() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let pa = net.port_up().unwrap();
    let pb = net.port_up().unwrap();
    let b_ip = Ipv4Addr::new(192, 168, 127, 3);
    let from_b = udp_frame(
        B_MAC,
        ethernet::BROADCAST,
        (b_ip, 1),
        (Ipv4Addr::BROADCAST, 9),
        b"hello",
    );
    net.on_guest_frame(Duration::ZERO, pb, &from_b, &mut NoSockets);
    let out = outputs(&mut net);
    assert_eq!(out.len(), 1, "broadcast flooded, not routed");
    assert_eq!(
        out[0].0,
        slipway_core::tx::TxDest::Flood { except: Some(pb) }
    );
    let to_b = udp_frame(A_MAC, B_MAC, (A_IP, 1), (b_ip, 9), b"unicast");
    net.on_guest_frame(Duration::ZERO, pa, &to_b, &mut NoSockets);
    let out = outputs(&mut net);
    assert_eq!(out, vec![(slipway_core::tx::TxDest::Port(pb), to_b)]);
}

#[test]
fn a_partial_checksum_is_finished_on_the_copy_to_another_guest() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let pa = net.port_up().unwrap();
    let pb = net.port_up().unwrap();
    net.set_checksum_offload(pa, true);
    let b_ip = Ipv4Addr::new(192, 168, 127, 3);
    // B must be known to the switch for a unicast copy.
    let hello = udp_frame(
        B_MAC,
        ethernet::BROADCAST,
        (b_ip, 1),
        (Ipv4Addr::BROADCAST, 9),
        b"",
    );
    net.on_guest_frame(Duration::ZERO, pb, &hello, &mut NoSockets);
    outputs(&mut net);
    let whole = udp_frame(A_MAC, B_MAC, (A_IP, 1), (b_ip, 9), b"offloaded");
    let mut partial = whole.clone();
    let acc = checksum::pseudo_v4(A_IP, b_ip, ipv4::PROTO_UDP, (8 + 9) as u16);
    partial[40..42].copy_from_slice(&checksum::partial_field(acc).to_be_bytes());
    assert_ne!(partial, whole);
    let csum = RxChecksum::Partial(PartialCsum {
        start: 34,
        offset: 6,
    });
    net.on_guest_frame_with(Duration::ZERO, pa, &partial, csum, &mut NoSockets);
    assert_eq!(
        outputs(&mut net),
        vec![(slipway_core::tx::TxDest::Port(pb), whole)]
    );
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let p = net.port_up().unwrap();
    net.on_guest_frame(Duration::ZERO, p, &[1, 2, 3], &mut NoSockets);
    let mut f = udp_frame(A_MAC, gw_mac(), (A_IP, 1), (GW, 53), b"q");
    f[24] ^= 0xff; // break the IPv4 header checksum
    net.on_guest_frame(Duration::ZERO, p, &f, &mut NoSockets);
    use slipway_core::counters::DropReason;
    assert_eq!(net.counters().dropped(DropReason::EthernetTruncated), 1);
    assert_eq!(net.counters().dropped(DropReason::Ipv4Malformed), 1);
    assert!(net.take_dns_queries().next().is_none());
    let _ = udp::HEADER_LEN;
}
