//! The IPv6 side through the whole core (switch → gateway → services → engines), on frames as a
//! Linux guest sends them: neighbor discovery and router advertisements, ICMPv6 echo, TCP and UDP
//! to the host-loopback alias and outside, DNS, DHCPv6, port forwards to IPv6 guests and across
//! families, slirp4netns's IPv6 plan, IPv6 off, and malformed packets. Host sockets are
//! simulated ([`Sim`]); time is virtual.
//!
//! Some fixtures are literal bytes (checksums included) so that the tests do not depend on the
//! builders they check; the rest are built with `slipway_wire`'s builders.

use slipway_core::counters::DropReason;
use slipway_core::flows::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use slipway_core::gateway::ndp;
use slipway_core::network::{DnsQuery, ForwardError};
use slipway_core::tx::TxDest;
use slipway_core::{ForwardHost, ForwardProto, IpCidr, Network, NetworkConfig, PortForward};
use slipway_wire::tcp::{self, SynOptions, TcpHeader, TcpSegment};
use slipway_wire::{
    ethernet, icmpv6, ipv6, EthernetFrame, Icmpv6Packet, Ipv4Packet, Ipv6Packet, UdpDatagram,
};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

// ---- The plan (NetworkConfig::default()) and one guest. ----

const GW_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];
/// fe80::EUI-64(gateway MAC).
const GW_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5894, 0xefff, 0xfee4, 0x0cdd);
const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 1);
const ALIAS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0xfe);
const PREFIX: [u8; 16] = [0xfd, 0x00, 0x51, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
/// The guest's SLAAC address in the default prefix.
const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0x5054, 0x00ff, 0xfe12, 0x3456);
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const OTHER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0x77);
/// An outside address (documentation prefix, RFC 3849); only the simulated host "reaches" it.
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const GUEST4: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const ALIAS4: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
const T: Duration = Duration::from_secs(1);

// ---- Literal frames (generated once with an independent checksum implementation). ----

/// A router solicitation from fe80::5054:ff:fe12:3456 to ff02::2 with its source link-layer
/// address, as Linux sends it once the link is up.
#[rustfmt::skip]
const RS_FROM_LINK_LOCAL: [u8; 70] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0xff, // IPv6: payload 16, ICMPv6, hop limit 255
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, // source
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
    0x85, 0x00, 0x71, 0xb5, 0x00, 0x00, 0x00, 0x00, // router solicitation, checksum, reserved
    0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // source link-layer address
];

/// A neighbor solicitation for the gateway fd00:5119::1 to its solicited-node group
/// ff02::1:ff00:1, with the source link-layer option.
#[rustfmt::skip]
const NS_FOR_GATEWAY: [u8; 86] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, // IPv6: payload 32, ICMPv6, hop limit 255
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, // source
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0x01, // destination
    0x87, 0x00, 0x22, 0x89, 0x00, 0x00, 0x00, 0x00, // neighbor solicitation, checksum, reserved
    0xfd, 0x00, 0x51, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // target
    0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // source link-layer address
];

/// Duplicate address detection: a neighbor solicitation from :: for fd00:5119::fe (the host
/// alias), without options.
#[rustfmt::skip]
const DAD_NS_FOR_ALIAS: [u8; 78] = [
    0x33, 0x33, 0xff, 0x00, 0x00, 0xfe, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x18, 0x3a, 0xff, // IPv6: payload 24, ICMPv6, hop limit 255
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // source
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x00, 0x00, 0xfe, // destination
    0x87, 0x00, 0x2a, 0x92, 0x00, 0x00, 0x00, 0x00, // neighbor solicitation, checksum, reserved
    0xfd, 0x00, 0x51, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, // target
];

/// An MLDv2 report (hop limit 1, hop-by-hop router alert) joining ff02::1:ff12:3456, as Linux
/// sends before duplicate address detection.
#[rustfmt::skip]
const MLD2_REPORT: [u8; 90] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x16, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, // IPv6: payload 36, hop-by-hop, hop limit 1
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, // source
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, // destination
    0x3a, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00, // hop-by-hop: ICMPv6 next, router alert, PadN
    0x8f, 0x00, 0xb8, 0xe4, 0x00, 0x00, 0x00, 0x01, // MLDv2 report, checksum, reserved, 1 record
    0x04, 0x00, 0x00, 0x00, // change to exclude, no sources
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x12, 0x34, 0x56, // group
];

/// `ping -6 fd00:5119::1` from the SLAAC address: identifier 42, sequence 1, 8 bytes of data.
#[rustfmt::skip]
const ECHO_TO_GATEWAY: [u8; 70] = [
    0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0x40, // IPv6: payload 16, ICMPv6, hop limit 64
    0xfd, 0x00, 0x51, 0x19, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, // source
    0xfd, 0x00, 0x51, 0x19, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // destination
    0x80, 0x00, 0x92, 0x38, 0x00, 0x2a, 0x00, 0x01, // echo request, checksum, identifier 42, sequence 1
    0x73, 0x6c, 0x69, 0x70, 0x77, 0x61, 0x79, 0x21, // "slipway!"
];

/// A DHCPv6 Information-request (xid 0x123456; DUID-LL of the guest MAC; Option Request for 23
/// and 24; Elapsed Time 0) from fe80::5054:ff:fe12:3456 port 546 to ff02::1:2 port 547.
#[rustfmt::skip]
const DHCP6_INFORMATION_REQUEST: [u8; 94] = [
    0x33, 0x33, 0x00, 0x01, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, // Ethernet
    0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x11, 0x01, // IPv6: payload 40, UDP, hop limit 1
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, // source
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, // destination
    0x02, 0x22, 0x02, 0x23, 0x00, 0x28, 0xb3, 0x9f, // UDP 546 → 547, length 40, checksum
    0x0b, 0x12, 0x34, 0x56, // Information-request, transaction id
    0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // client identifier: DUID-LL
    0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18, // option request: 23, 24
    0x00, 0x08, 0x00, 0x02, 0x00, 0x00, // elapsed time 0
];

// ---- Simulated host sockets. ----

#[derive(Default)]
struct SimTcp {
    /// What the host application received.
    written: Vec<u8>,
    /// Host → guest bytes not yet discarded.
    queue: VecDeque<u8>,
}

/// A datagram socket: its destination, what was sent, what the host will answer.
type SimDgram = (SocketAddr, Vec<Vec<u8>>, VecDeque<Vec<u8>>);

#[derive(Default)]
struct Sim {
    tcp: HashMap<u32, SimTcp>,
    /// Every `tcp_connect` target, in order.
    connects: Vec<TcpTarget>,
    udp: HashMap<u32, SimDgram>,
    /// Every `udp_open` destination, in order.
    udp_opens: Vec<SocketAddr>,
    ping: HashMap<u32, SimDgram>,
    /// Every `ping_open` destination, in order.
    ping_opens: Vec<SocketAddr>,
    /// Clients waiting on a TCP forward's listener.
    backlog: VecDeque<SocketAddr>,
    /// Datagrams waiting on a UDP forward's listener (client, payload), and what it sent.
    listener_in: VecDeque<(SocketAddr, Vec<u8>)>,
    listener_out: Vec<(SocketAddr, Vec<u8>)>,
}

impl Sim {
    fn only_tcp(&mut self) -> (u32, &mut SimTcp) {
        assert_eq!(self.tcp.len(), 1);
        let (i, s) = self.tcp.iter_mut().next().unwrap();
        (*i, s)
    }
}

impl HostSockets for Sim {
    fn tcp_connect(&mut self, id: SocketRef, target: TcpTarget) -> io::Result<ConnectProgress> {
        self.connects.push(target);
        assert!(
            self.tcp.insert(id.index, SimTcp::default()).is_none(),
            "slot in use"
        );
        Ok(ConnectProgress::Connected)
    }
    fn tcp_connect_result(&mut self, _: SocketRef) -> io::Result<()> {
        Ok(())
    }
    fn tcp_write(&mut self, id: SocketRef, data: &[u8]) -> io::Result<usize> {
        self.tcp
            .get_mut(&id.index)
            .unwrap()
            .written
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn tcp_peek(
        &mut self,
        id: SocketRef,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> io::Result<usize> {
        let s = self.tcp.get_mut(&id.index).unwrap();
        if offset >= s.queue.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut it = s.queue.iter().skip(offset);
        let mut n = 0;
        for b in bufs.iter_mut() {
            for byte in b.iter_mut() {
                match it.next() {
                    Some(v) => {
                        *byte = *v;
                        n += 1;
                    }
                    None => return Ok(n),
                }
            }
        }
        Ok(n)
    }
    fn tcp_discard(&mut self, id: SocketRef, len: usize) -> io::Result<()> {
        let s = self.tcp.get_mut(&id.index).unwrap();
        assert!(len <= s.queue.len());
        s.queue.drain(..len);
        Ok(())
    }
    fn tcp_send_space(&mut self, id: SocketRef) -> usize {
        if self.tcp.contains_key(&id.index) {
            1 << 20
        } else {
            0
        }
    }
    fn tcp_shutdown_write(&mut self, _: SocketRef) {}
    fn tcp_close(&mut self, _: SocketRef, _: bool) {}
    fn udp_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<()> {
        self.udp_opens.push(dst);
        self.udp
            .insert(id.index, (dst, Vec::new(), VecDeque::new()));
        Ok(())
    }
    fn udp_send(&mut self, id: SocketRef, payload: &[u8]) -> io::Result<usize> {
        self.udp
            .get_mut(&id.index)
            .unwrap()
            .1
            .push(payload.to_vec());
        Ok(payload.len())
    }
    fn udp_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        match self.udp.get_mut(&id.index).unwrap().2.pop_front() {
            Some(d) => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn udp_close(&mut self, id: SocketRef) {
        self.udp.remove(&id.index);
    }
    fn ping_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<u16> {
        self.ping_opens.push(dst);
        self.ping
            .insert(id.index, (dst, Vec::new(), VecDeque::new()));
        Ok(0x4001)
    }
    fn ping_send(&mut self, id: SocketRef, message: &[u8]) -> io::Result<usize> {
        self.ping
            .get_mut(&id.index)
            .unwrap()
            .1
            .push(message.to_vec());
        Ok(message.len())
    }
    fn ping_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        match self.ping.get_mut(&id.index).unwrap().2.pop_front() {
            Some(d) => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn ping_close(&mut self, id: SocketRef) {
        self.ping.remove(&id.index);
    }
    fn tcp_accept(&mut self, listener: SocketRef, id: SocketRef) -> io::Result<SocketAddr> {
        assert_eq!(listener.kind, FlowKind::Listener);
        let client = self.backlog.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        assert!(self.tcp.insert(id.index, SimTcp::default()).is_none());
        Ok(client)
    }
    fn udp_recv_from(
        &mut self,
        listener: SocketRef,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        assert_eq!(listener.kind, FlowKind::Listener);
        let (from, d) = self
            .listener_in
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        // Like recvfrom(2): what does not fit in the buffer is lost.
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok((n, from))
    }
    fn udp_send_to(
        &mut self,
        listener: SocketRef,
        to: SocketAddr,
        payload: &[u8],
    ) -> io::Result<usize> {
        assert_eq!(listener.kind, FlowKind::Listener);
        self.listener_out.push((to, payload.to_vec()));
        Ok(payload.len())
    }
}

// ---- Building guest frames. ----

/// Ethernet + IPv6 around an upper-layer packet.
fn ipv6_frame(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 54 + l4.len()];
    ethernet::write_header(&mut f, macs.1, macs.0, ethernet::ETHERTYPE_IPV6);
    ipv6::write_header(&mut f[14..], src, dst, next_header, l4.len(), hop_limit);
    f[54..].copy_from_slice(l4);
    f
}

/// An ICMPv6 message (header written with its checksum) from `src` to `dst`.
fn icmpv6_msg(ty: u8, rest: [u8; 4], body: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![0u8; 8 + body.len()];
    m[8..].copy_from_slice(body);
    icmpv6::write_header(&mut m, ty, 0, rest, src, dst);
    m
}

/// A whole ICMPv6 frame from the guest (`mac`) to the gateway's MAC, or to the multicast MAC
/// of a multicast destination.
fn icmpv6_frame(
    mac: [u8; 6],
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
        GW_MAC
    };
    let m = icmpv6_msg(ty, rest, body, src, dst);
    ipv6_frame((mac, dst_mac), src, dst, ipv6::NEXT_ICMPV6, hop_limit, &m)
}

/// A neighbor solicitation (or advertisement) body: target, then options.
fn nd_body(target: Ipv6Addr, opts: &[u8]) -> Vec<u8> {
    let mut b = target.octets().to_vec();
    b.extend_from_slice(opts);
    b
}

fn ll_option(kind: u8, mac: [u8; 6]) -> [u8; 8] {
    let mut o = [0u8; 8];
    icmpv6::write_ll_option(&mut o, kind, mac);
    o
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&ident.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    icmpv6_frame(GUEST_MAC, src, dst, 64, icmpv6::ECHO_REQUEST, rest, data)
}

fn udp6_frame(
    mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 54 + 8 + payload.len()];
    slipway_core::frames::write_udp_in_place(
        &mut f,
        dst_mac,
        mac,
        (src.0.into(), src.1),
        (dst.0.into(), dst.1),
        payload.len(),
        Some(payload),
    );
    f
}

/// A TCP segment from the guest's SLAAC address (SYNs with MSS 8940 and window scale 7).
fn tcp6_frame(
    src_port: u16,
    dst: (Ipv6Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    tcp6_frame_from(GUEST6, src_port, dst, seq, ack, flags, payload)
}

fn tcp6_frame_from(
    src: Ipv6Addr,
    src_port: u16,
    dst: (Ipv6Addr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let h = TcpHeader {
        src_port,
        dst_port: dst.1,
        seq,
        ack,
        flags,
        window: 64800,
        // An MSS above what the 1500-byte link allows, so that the gateway's own shows.
        sack: Default::default(),
        syn_options: (flags & tcp::SYN != 0).then_some(SynOptions {
            mss: Some(8940),
            window_scale: Some(7),
            sack_permitted: false,
        }),
    };
    let mut f = vec![0u8; 54 + h.header_len() + payload.len()];
    f[54 + h.header_len()..].copy_from_slice(payload);
    slipway_core::frames::write_tcp(&mut f, GW_MAC, GUEST_MAC, src.into(), dst.0.into(), &h, 0);
    f
}

// ---- Reading what the network sent. ----

/// One IPv6 frame the gateway built.
#[derive(Debug, Clone)]
struct Sent {
    dest: TxDest,
    eth_dst: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    next_header: u8,
    /// The upper-layer packet.
    l4: Vec<u8>,
    frame_len: usize,
}

impl Sent {
    fn icmp(&self) -> Icmpv6Packet<'_> {
        assert_eq!(self.next_header, ipv6::NEXT_ICMPV6);
        Icmpv6Packet::new_checked(&self.l4, self.src, self.dst)
            .expect("the gateway built an ICMPv6 message with a bad checksum")
    }
    fn udp(&self) -> UdpDatagram<'_> {
        assert_eq!(self.next_header, ipv6::NEXT_UDP);
        let u = UdpDatagram::new_checked(&self.l4).unwrap();
        assert!(
            u.verify(self.src.into(), self.dst.into()),
            "bad UDP checksum"
        );
        u
    }
    fn tcp(&self) -> TcpSegment<'_> {
        assert_eq!(self.next_header, ipv6::NEXT_TCP);
        let s = TcpSegment::new_checked(&self.l4).unwrap();
        assert!(
            s.verify(self.src.into(), self.dst.into()),
            "bad TCP checksum"
        );
        s
    }
}

/// Every frame the network queued, then the queue is emptied.
fn drain(net: &mut Network) -> Vec<(TxDest, Vec<u8>)> {
    let v = net.tx().frames().map(|(d, f)| (d, f.to_vec())).collect();
    net.clear_tx();
    v
}

/// The IPv6 frames the gateway built (guest frames the switch copied are left out); panics on
/// any other frame from the gateway.
fn from_gateway(net: &mut Network) -> Vec<Sent> {
    let mut out = Vec::new();
    for (dest, f) in drain(net) {
        let eth = EthernetFrame::new_checked(&f).unwrap();
        if eth.src() != GW_MAC {
            continue;
        }
        assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV6, "{f:02x?}");
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        out.push(Sent {
            dest,
            eth_dst: eth.dst(),
            src: ip.src(),
            dst: ip.dst(),
            hop_limit: ip.hop_limit(),
            next_header: ip.next_header(),
            l4: ip.payload().to_vec(),
            frame_len: f.len(),
        });
    }
    out
}

/// A network with one port up whose first (unsolicited) router advertisement has gone out.
fn setup(cfg: NetworkConfig) -> (Network, u16, Sim) {
    let mut net = Network::new(cfg, 7);
    let p = net.port_up().unwrap();
    let mut sim = Sim::default();
    net.on_timers(Duration::ZERO, &mut sim);
    net.clear_tx();
    (net, p, sim)
}

fn dropped(net: &Network, r: DropReason) -> u64 {
    net.counters().dropped(r)
}

/// Non-zero drop counters, by name.
fn drops(net: &Network) -> Vec<(&'static str, u64)> {
    net.counters().drops().collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---- Router solicitations and advertisements. ----

/// The RA options the default plan announces: SLLA, MTU 1500, the /64 on-link and autonomous,
/// the DNS server.
fn default_ra_options() -> Vec<(u8, Vec<u8>)> {
    vec![
        (1, cat(&[&[1, 1], &GW_MAC])),
        (5, vec![5, 1, 0, 0, 0, 0, 0x05, 0xdc]),
        (
            3,
            cat(&[
                &[3, 4, 64, 0xc0],
                &86_400u32.to_be_bytes(),
                &14_400u32.to_be_bytes(),
                &[0; 4],
                &PREFIX,
            ]),
        ),
        (25, cat(&[&[25, 3, 0, 0, 0, 0, 0x07, 0x08], &GW6.octets()])),
    ]
}

fn options(m: &Icmpv6Packet<'_>) -> Vec<(u8, Vec<u8>)> {
    assert!(m.nd_options().valid());
    m.nd_options().map(|(t, o)| (t, o.to_vec())).collect()
}

#[test]
fn router_solicitation_gets_a_unicast_advert_from_the_gateway_link_local_address() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(T, p, &RS_FROM_LINK_LOCAL, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{out:?}");
    let ra = &out[0];
    assert_eq!(ra.dest, TxDest::Port(p));
    assert_eq!(ra.eth_dst, GUEST_MAC);
    assert_eq!((ra.src, ra.dst, ra.hop_limit), (GW_LL, GUEST_LL, 255));
    let m = ra.icmp();
    assert_eq!((m.msg_type(), m.code()), (icmpv6::ROUTER_ADVERT, 0));
    // Current hop limit 64; M=0, O=1 (DHCPv6 serves DNS); router lifetime 1800 s; reachable
    // time and retransmission timer unspecified.
    assert_eq!(
        &ra.l4[4..16],
        &[64, 0x40, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        options(&m),
        default_ra_options(),
        "no DNSSL without a search list"
    );
    assert_eq!(ra.l4.len(), 16 + 8 + 8 + 32 + 24);
    // The solicitation's source link-layer option taught the neighbour table.
    assert_eq!(net.neighbor(GUEST_LL.into()), Some(GUEST_MAC));
    assert!(drops(&net).is_empty(), "{:?}", drops(&net));
}

#[test]
fn router_advert_carries_the_search_list_and_the_configured_mtu() {
    let cfg = NetworkConfig {
        mtu: 9000,
        search_domains: vec!["corp.example".into(), "example".into()],
        ..NetworkConfig::default()
    };
    let (mut net, p, mut sim) = setup(cfg);
    net.on_guest_frame(T, p, &RS_FROM_LINK_LOCAL, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    let m = out[0].icmp();
    let opts = options(&m);
    assert_eq!(opts.len(), 5);
    assert_eq!(opts[1].1, vec![5, 1, 0, 0, 0, 0, 0x23, 0x28], "MTU 9000");
    // DNSSL: lifetime 1800, "corp.example" and "example" in wire format, zero-padded to 32.
    let dnssl = cat(&[
        &[31, 4, 0, 0, 0, 0, 0x07, 0x08],
        b"\x04corp\x07example\x00\x07example\x00\x00",
    ]);
    assert_eq!(opts[4], (31, dnssl));
}

#[test]
fn router_solicitation_from_the_unspecified_address_is_answered_to_all_nodes() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let rs = icmpv6_frame(
        GUEST_MAC,
        Ipv6Addr::UNSPECIFIED,
        ndp::ALL_ROUTERS,
        255,
        icmpv6::ROUTER_SOLICIT,
        [0; 4],
        &[],
    );
    net.on_guest_frame(T, p, &rs, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dest, TxDest::Port(p));
    assert_eq!(out[0].eth_dst, ALL_NODES_MAC);
    assert_eq!((out[0].src, out[0].dst), (GW_LL, ndp::ALL_NODES));
    assert_eq!(options(&out[0].icmp()), default_ra_options());
    assert_eq!(net.neighbor(Ipv6Addr::UNSPECIFIED.into()), None);
}

#[test]
fn invalid_router_solicitations_are_dropped_and_counted() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    // Hop limit 64: forwarded by a router (the checksum does not cover the hop limit).
    let mut forwarded = RS_FROM_LINK_LOCAL;
    forwarded[21] = 64;
    // An option of length 0.
    let zero_len = icmpv6_frame(
        GUEST_MAC,
        GUEST_LL,
        ndp::ALL_ROUTERS,
        255,
        icmpv6::ROUTER_SOLICIT,
        [0; 4],
        &[1, 0, 0x52, 0x54, 0, 0x12, 0x34, 0x56],
    );
    // An option running past the message.
    let too_long = icmpv6_frame(
        GUEST_MAC,
        GUEST_LL,
        ndp::ALL_ROUTERS,
        255,
        icmpv6::ROUTER_SOLICIT,
        [0; 4],
        &[1, 2, 0x52, 0x54, 0, 0x12, 0x34, 0x56],
    );
    // From :: with a source link-layer option (RFC 4861 §6.1.1).
    let unspecified_slla = icmpv6_frame(
        GUEST_MAC,
        Ipv6Addr::UNSPECIFIED,
        ndp::ALL_ROUTERS,
        255,
        icmpv6::ROUTER_SOLICIT,
        [0; 4],
        &ll_option(1, GUEST_MAC),
    );
    for f in [&forwarded[..], &zero_len, &too_long, &unspecified_slla] {
        net.on_guest_frame(T, p, f, &mut sim);
    }
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(drops(&net), vec![("ndp_invalid", 4)]);
    assert_eq!(
        net.neighbor(GUEST_LL.into()),
        None,
        "invalid messages teach nothing"
    );
}

#[test]
fn unsolicited_router_adverts_follow_port_up_and_repeat_every_interval() {
    let mut net = Network::new(NetworkConfig::default(), 7);
    let mut sim = Sim::default();
    // No guest link yet: nobody to tell.
    net.on_timers(Duration::ZERO, &mut sim);
    assert!(drain(&mut net).is_empty());
    let up_at = Duration::from_secs(5);
    net.port_up().unwrap();
    assert_eq!(
        net.next_deadline(),
        Duration::ZERO,
        "an advert is due at once"
    );
    net.on_timers(up_at, &mut sim);
    let check = |out: Vec<Sent>| {
        assert_eq!(out.len(), 1, "{out:?}");
        let ra = &out[0];
        assert_eq!(ra.dest, TxDest::Flood { except: None });
        assert_eq!(ra.eth_dst, ALL_NODES_MAC);
        assert_eq!((ra.src, ra.dst, ra.hop_limit), (GW_LL, ndp::ALL_NODES, 255));
        let m = ra.icmp();
        assert_eq!(m.msg_type(), icmpv6::ROUTER_ADVERT);
        assert_eq!(options(&m), default_ra_options());
    };
    check(from_gateway(&mut net));
    assert!(net.next_deadline() <= up_at + ndp::RA_INTERVAL);
    net.on_timers(
        up_at + ndp::RA_INTERVAL - Duration::from_millis(1),
        &mut sim,
    );
    assert!(from_gateway(&mut net).is_empty());
    net.on_timers(up_at + ndp::RA_INTERVAL, &mut sim);
    check(from_gateway(&mut net));
    net.on_timers(up_at + ndp::RA_INTERVAL * 2, &mut sim);
    check(from_gateway(&mut net));
    // A second guest link: an advert at the next timers, not an interval later.
    net.port_up().unwrap();
    net.on_timers(
        up_at + ndp::RA_INTERVAL * 2 + Duration::from_millis(1),
        &mut sim,
    );
    check(from_gateway(&mut net));
}

// ---- Neighbor solicitations and advertisements. ----

/// The neighbor advertisement for `target` the gateway must send (after the checksum).
fn expected_na(flags: u8, target: Ipv6Addr) -> Vec<u8> {
    cat(&[&[flags, 0, 0, 0], &target.octets(), &[2, 1], &GW_MAC])
}

#[test]
fn neighbor_solicitations_for_each_owned_address_get_a_solicited_advert() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let slla = ll_option(1, GUEST_MAC);
    let frames = [
        (GW6, NS_FOR_GATEWAY.to_vec()),
        (
            ALIAS6,
            icmpv6_frame(
                GUEST_MAC,
                GUEST_LL,
                ipv6::solicited_node(ALIAS6),
                255,
                icmpv6::NEIGHBOR_SOLICIT,
                [0; 4],
                &nd_body(ALIAS6, &slla),
            ),
        ),
        (
            GW_LL,
            icmpv6_frame(
                GUEST_MAC,
                GUEST_LL,
                ipv6::solicited_node(GW_LL),
                255,
                icmpv6::NEIGHBOR_SOLICIT,
                [0; 4],
                &nd_body(GW_LL, &slla),
            ),
        ),
        // A unicast probe (neighbour unreachability detection) from the SLAAC address.
        (
            GW6,
            icmpv6_frame(
                GUEST_MAC,
                GUEST6,
                GW6,
                255,
                icmpv6::NEIGHBOR_SOLICIT,
                [0; 4],
                &nd_body(GW6, &slla),
            ),
        ),
    ];
    for (i, (target, f)) in frames.iter().enumerate() {
        net.on_guest_frame(T, p, f, &mut sim);
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1, "{target}: {out:?}");
        let na = &out[0];
        let to = if i == 3 { GUEST6 } else { GUEST_LL };
        assert_eq!(na.dest, TxDest::Port(p));
        assert_eq!(na.eth_dst, GUEST_MAC);
        assert_eq!((na.src, na.dst, na.hop_limit), (*target, to, 255));
        let m = na.icmp();
        assert_eq!((m.msg_type(), m.code()), (icmpv6::NEIGHBOR_ADVERT, 0));
        // Router, solicited, override; target; target link-layer address = the gateway's MAC.
        assert_eq!(na.l4[4..], expected_na(0xe0, *target)[..], "{target}");
    }
    assert_eq!(net.neighbor(GUEST_LL.into()), Some(GUEST_MAC));
    assert_eq!(net.neighbor(GUEST6.into()), Some(GUEST_MAC));
    assert!(drops(&net).is_empty(), "{:?}", drops(&net));
}

#[test]
fn duplicate_address_detection_of_an_owned_address_is_answered_to_all_nodes() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(T, p, &DAD_NS_FOR_ALIAS, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    let na = &out[0];
    assert_eq!(na.eth_dst, ALL_NODES_MAC);
    assert_eq!(
        (na.src, na.dst, na.hop_limit),
        (ALIAS6, ndp::ALL_NODES, 255)
    );
    na.icmp();
    // Router and override, not solicited (RFC 4861 §7.2.4).
    assert_eq!(na.l4[4..], expected_na(0xa0, ALIAS6)[..]);
    // DAD to a group other than the target's solicited-node group is invalid.
    let wrong_group = icmpv6_frame(
        GUEST_MAC,
        Ipv6Addr::UNSPECIFIED,
        ipv6::solicited_node(GW6),
        255,
        icmpv6::NEIGHBOR_SOLICIT,
        [0; 4],
        &nd_body(ALIAS6, &[]),
    );
    net.on_guest_frame(T, p, &wrong_group, &mut sim);
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(drops(&net), vec![("ndp_invalid", 1)]);
}

#[test]
fn solicitation_for_another_guest_is_flooded_and_not_answered() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let other_port = net.port_up().unwrap();
    net.on_timers(T, &mut sim);
    net.clear_tx();
    let ns = icmpv6_frame(
        GUEST_MAC,
        GUEST6,
        ipv6::solicited_node(OTHER6),
        255,
        icmpv6::NEIGHBOR_SOLICIT,
        [0; 4],
        &nd_body(OTHER6, &ll_option(1, GUEST_MAC)),
    );
    net.on_guest_frame(T, p, &ns, &mut sim);
    let out = drain(&mut net);
    assert_eq!(
        out,
        vec![(TxDest::Flood { except: Some(p) }, ns.clone())],
        "the other guests get the solicitation; the gateway does not answer"
    );
    assert_eq!(drops(&net), vec![("ndp_not_for_us", 1)]);
    // The other guest answers directly (unicast to the soliciting guest): switched, not ours.
    // (icmpv6_frame addresses it to the gateway; the destination MAC is set below.)
    let mut na = icmpv6_frame(
        OTHER_MAC,
        OTHER6,
        GUEST6,
        255,
        icmpv6::NEIGHBOR_ADVERT,
        [0x60, 0, 0, 0],
        &nd_body(OTHER6, &ll_option(2, OTHER_MAC)),
    );
    na[0..6].copy_from_slice(&GUEST_MAC);
    net.on_guest_frame(T, other_port, &na, &mut sim);
    assert_eq!(drain(&mut net), vec![(TxDest::Port(p), na)]);
    assert_eq!(
        net.neighbor(OTHER6.into()),
        None,
        "a frame between guests is not the gateway's"
    );
}

#[test]
fn neighbor_advertisements_from_guests_teach_the_neighbour_table() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let na = |target: Ipv6Addr, hop: u8, tlla: [u8; 6]| {
        icmpv6_frame(
            GUEST_MAC,
            GUEST_LL,
            ndp::ALL_NODES,
            hop,
            icmpv6::NEIGHBOR_ADVERT,
            [icmpv6::NA_OVERRIDE, 0, 0, 0],
            &nd_body(target, &ll_option(2, tlla)),
        )
    };
    // Forwarded (hop limit 64): invalid, nothing learned.
    net.on_guest_frame(T, p, &na(GUEST6, 64, GUEST_MAC), &mut sim);
    assert_eq!(net.neighbor(GUEST6.into()), None);
    assert_eq!(dropped(&net, DropReason::NdpInvalid), 1);
    // A guest claiming the gateway's address: ours win.
    net.on_guest_frame(T, p, &na(GW6, 255, GUEST_MAC), &mut sim);
    assert_eq!(net.neighbor(GW6.into()), None);
    assert_eq!(dropped(&net, DropReason::NdpNotForUs), 1);
    // A target link-layer address that is not the sender's MAC: not taken.
    net.on_guest_frame(T, p, &na(GUEST6, 255, OTHER_MAC), &mut sim);
    assert_eq!(net.neighbor(GUEST6.into()), None);
    // The real thing: the SLAAC address is the guest's.
    net.on_guest_frame(T, p, &na(GUEST6, 255, GUEST_MAC), &mut sim);
    assert_eq!(net.neighbor(GUEST6.into()), Some(GUEST_MAC));
    assert!(
        from_gateway(&mut net).is_empty(),
        "advertisements get no answer"
    );
    assert_eq!(drops(&net), vec![("ndp_invalid", 1), ("ndp_not_for_us", 1)]);
}

// ---- ICMPv6 echo. ----

#[test]
fn echo_to_each_owned_address_is_answered_with_the_same_identifier_and_data() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(T, p, &ECHO_TO_GATEWAY, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].dest, out[0].eth_dst), (TxDest::Port(p), GUEST_MAC));
    assert_eq!((out[0].src, out[0].dst), (GW6, GUEST6));
    let m = out[0].icmp();
    assert_eq!((m.msg_type(), m.code()), (icmpv6::ECHO_REPLY, 0));
    assert_eq!(
        out[0].l4[4..],
        [0x00, 0x2a, 0x00, 0x01, b's', b'l', b'i', b'p', b'w', b'a', b'y', b'!']
    );
    for (src, dst, ident) in [(GUEST6, ALIAS6, 7), (GUEST_LL, GW_LL, 8)] {
        net.on_guest_frame(T, p, &echo6(src, dst, ident, 99, b"0123456789"), &mut sim);
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].src, out[0].dst), (dst, src));
        let m = out[0].icmp();
        assert_eq!(
            (m.msg_type(), m.echo_ident(), m.echo_seq(), m.payload()),
            (icmpv6::ECHO_REPLY, ident, 99, &b"0123456789"[..])
        );
    }
    assert!(sim.ping_opens.is_empty(), "answered by slipway itself");
    assert_eq!(net.counters().icmp_echo_forwarded, 0);
}

#[test]
fn echo_to_an_outside_address_goes_through_an_ipv6_ping_socket() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let f = echo6(GUEST6, OUTSIDE6, 42, 3, b"abc");
    net.on_guest_frame(T, p, &f, &mut sim);
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(sim.ping_opens, vec![SocketAddr::new(OUTSIDE6.into(), 0)]);
    let (&index, sock) = sim.ping.iter().next().unwrap();
    assert_eq!(
        sock.1,
        vec![f[54..].to_vec()],
        "the guest's echo request as sent"
    );
    assert_eq!(net.counters().icmp_echo_forwarded, 1);
    // The kernel's reply carries its own identifier; the guest gets its own back.
    let mut reply = vec![icmpv6::ECHO_REPLY, 0, 0, 0, 0x40, 0x01, 0, 3];
    reply.extend_from_slice(b"abc");
    sim.ping.get_mut(&index).unwrap().2.push_back(reply);
    let id = SocketRef {
        kind: FlowKind::Icmp,
        index,
    };
    net.on_socket_event(T, id, true, false, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (OUTSIDE6, GUEST6, GUEST_MAC)
    );
    let m = out[0].icmp();
    assert_eq!(
        (m.msg_type(), m.echo_ident(), m.echo_seq(), m.payload()),
        (icmpv6::ECHO_REPLY, 42, 3, &b"abc"[..])
    );
}

#[test]
fn echo_to_host_loopback_directly_is_refused_as_admin_prohibited() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    for (n, dst) in [Ipv6Addr::LOCALHOST, mapped].into_iter().enumerate() {
        let f = echo6(GUEST6, dst, 5, 1, b"x");
        net.on_guest_frame(T, p, &f, &mut sim);
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1, "{dst}");
        assert_eq!((out[0].dest, out[0].dst), (TxDest::Port(p), GUEST6));
        let m = out[0].icmp();
        assert_eq!(
            (m.msg_type(), m.code()),
            (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_ADMIN_PROHIBITED)
        );
        // After 4 unused bytes, the whole offending packet.
        assert_eq!(m.payload(), &f[14..], "{dst}");
        assert_eq!(dropped(&net, DropReason::EgressDenied), n as u64 + 1);
    }
    assert!(sim.ping_opens.is_empty(), "no ping socket for loopback");
}

// ---- TCP over IPv6. ----

#[test]
fn tcp_to_the_alias_reaches_host_loopback_with_ipv6_segments_both_ways() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let to = (ALIAS6, 8080);
    net.on_guest_frame(
        T,
        p,
        &tcp6_frame(40000, to, 1000, 0, tcp::SYN, b""),
        &mut sim,
    );
    assert_eq!(
        sim.connects,
        vec![TcpTarget::Host("[::1]:8080".parse().unwrap())]
    );
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (ALIAS6, GUEST6, GUEST_MAC)
    );
    let sa = out[0].tcp();
    assert_eq!((sa.src_port(), sa.dst_port()), (8080, 40000));
    assert_eq!((sa.flags(), sa.ack()), (tcp::SYN | tcp::ACK, 1001));
    assert_eq!(
        sa.syn_options().mss,
        Some(1500 - 60),
        "MTU less IPv6 and TCP headers"
    );
    let isn = sa.seq();
    // Handshake done, then guest → host.
    net.on_guest_frame(
        T,
        p,
        &tcp6_frame(40000, to, 1001, isn + 1, tcp::ACK, b""),
        &mut sim,
    );
    let hello = b"hello host over v6";
    let f = tcp6_frame(40000, to, 1001, isn + 1, tcp::ACK | tcp::PSH, hello);
    net.on_guest_frame(T, p, &f, &mut sim);
    net.end_of_batch(T, &mut sim);
    let (index, sock) = sim.only_tcp();
    assert_eq!(sock.written, hello);
    assert!(
        from_gateway(&mut net).is_empty(),
        "the ACK of a small segment waits"
    );
    net.on_timers(T + slipway_core::flows::tcp::DELAYED_ACK, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = out[0].tcp();
    assert_eq!(
        (ack.flags(), ack.ack()),
        (tcp::ACK, 1001 + hello.len() as u32)
    );
    // Host → guest: one segment within the MSS.
    let body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    sim.tcp
        .get_mut(&index)
        .unwrap()
        .queue
        .extend(body.iter().copied());
    let id = SocketRef {
        kind: FlowKind::Tcp,
        index,
    };
    net.on_socket_event(T, id, true, false, &mut sim);
    let out = from_gateway(&mut net);
    let mut got = Vec::new();
    for s in &out {
        assert_eq!((s.src, s.dst), (ALIAS6, GUEST6));
        assert!(s.frame_len <= 1514, "frames fit the MTU");
        let seg = s.tcp();
        assert_eq!(seg.seq(), isn + 1 + got.len() as u32);
        got.extend_from_slice(seg.payload());
    }
    assert_eq!(out.len(), 2, "1440 + 560 bytes");
    assert_eq!(got, body);
    let ack_all = tcp6_frame(
        40000,
        to,
        1001 + hello.len() as u32,
        isn + 2001,
        tcp::ACK,
        b"",
    );
    net.on_guest_frame(T, p, &ack_all, &mut sim);
    assert!(
        sim.tcp[&index].queue.is_empty(),
        "acknowledged bytes discarded"
    );
    assert_eq!(net.tcp().flows()[0].state, "established");
    assert!(drops(&net).is_empty(), "{:?}", drops(&net));
}

#[test]
fn tcp_to_host_loopback_link_local_or_mapped_addresses_directly_is_reset() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let refused = [
        Ipv6Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
        Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped(),
        Ipv6Addr::UNSPECIFIED,
        // The gateway's own addresses: only its services' ports are open.
        GW_LL,
        GW6,
    ];
    for (n, dst) in refused.into_iter().enumerate() {
        let sport = 41000 + n as u16;
        net.on_guest_frame(
            T,
            p,
            &tcp6_frame(sport, (dst, 22), 5000, 0, tcp::SYN, b""),
            &mut sim,
        );
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1, "{dst}");
        // The reset comes from the address the guest used.
        assert_eq!((out[0].src, out[0].dst), (dst, GUEST6));
        let rst = out[0].tcp();
        assert_eq!((rst.src_port(), rst.dst_port()), (22, sport));
        assert_eq!(
            (rst.flags(), rst.ack()),
            (tcp::RST | tcp::ACK, 5001),
            "{dst}"
        );
    }
    assert!(sim.connects.is_empty(), "the host was never asked");
    assert_eq!(net.tcp().flow_count(), 0);
    // Refused addresses and closed gateway ports are counted alike (as for IPv4).
    assert_eq!(dropped(&net, DropReason::EgressDenied), 6);
    // Another node's link-local address sent to the router: not ours to route, no answer.
    let other_ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99);
    net.on_guest_frame(
        T,
        p,
        &tcp6_frame(42000, (other_ll, 22), 1, 0, tcp::SYN, b""),
        &mut sim,
    );
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(dropped(&net, DropReason::Ipv6NotForGateway), 1);
    assert!(sim.connects.is_empty());
}

#[test]
fn egress_policy_with_an_ipv6_prefix() {
    let cfg = NetworkConfig {
        egress_allow: vec![
            "2001:db8::/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ],
        ..NetworkConfig::default()
    };
    let (mut net, p, mut sim) = setup(cfg);
    let allowed = Ipv6Addr::new(0x2001, 0xdb8, 0x55, 0, 0, 0, 0, 5);
    net.on_guest_frame(
        T,
        p,
        &tcp6_frame(40000, (allowed, 443), 1, 0, tcp::SYN, b""),
        &mut sim,
    );
    assert_eq!(
        sim.connects,
        vec![TcpTarget::Host(SocketAddr::new(allowed.into(), 443))]
    );
    assert_eq!(from_gateway(&mut net)[0].tcp().flags(), tcp::SYN | tcp::ACK);
    // Outside the prefix, and the alias (::1 is not in the list): reset.
    let denied = Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 5);
    for (sport, dst) in [(40001, denied), (40002, ALIAS6)] {
        net.on_guest_frame(
            T,
            p,
            &tcp6_frame(sport, (dst, 443), 1, 0, tcp::SYN, b""),
            &mut sim,
        );
        assert_eq!(
            from_gateway(&mut net)[0].tcp().flags(),
            tcp::RST | tcp::ACK,
            "{dst}"
        );
    }
    assert_eq!(sim.connects.len(), 1);
    assert_eq!(dropped(&net, DropReason::EgressDenied), 2);
    // UDP is held to the same list.
    let u = udp6_frame(GUEST_MAC, GW_MAC, (GUEST6, 5000), (denied, 53), b"q");
    net.on_guest_frame(T, p, &u, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    let m = out[0].icmp();
    assert_eq!(
        (m.msg_type(), m.code()),
        (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_ADMIN_PROHIBITED)
    );
    assert!(sim.udp_opens.is_empty());
    // The host alias is reachable once ::1 is allowed.
    let cfg = NetworkConfig {
        egress_allow: vec!["::1/128".parse::<IpCidr>().unwrap()],
        ..NetworkConfig::default()
    };
    let (mut net, p, mut sim) = setup(cfg);
    net.on_guest_frame(
        T,
        p,
        &tcp6_frame(40003, (ALIAS6, 443), 1, 0, tcp::SYN, b""),
        &mut sim,
    );
    assert_eq!(
        sim.connects,
        vec![TcpTarget::Host("[::1]:443".parse().unwrap())]
    );
}

// ---- UDP over IPv6. ----

#[test]
fn udp_to_the_alias_reaches_host_loopback_and_replies_come_back_as_ipv6() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let f = udp6_frame(
        GUEST_MAC,
        GW_MAC,
        (GUEST6, 40001),
        (ALIAS6, 5000),
        b"ping over v6",
    );
    net.on_guest_frame(T, p, &f, &mut sim);
    assert_eq!(
        sim.udp_opens,
        vec!["[::1]:5000".parse::<SocketAddr>().unwrap()]
    );
    let (&index, sock) = sim.udp.iter().next().unwrap();
    assert_eq!(sock.1, vec![b"ping over v6".to_vec()]);
    sim.udp
        .get_mut(&index)
        .unwrap()
        .2
        .push_back(b"pong".to_vec());
    let id = SocketRef {
        kind: FlowKind::Udp,
        index,
    };
    net.on_socket_event(T, id, true, false, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (ALIAS6, GUEST6, GUEST_MAC)
    );
    let u = out[0].udp();
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (5000, 40001, &b"pong"[..])
    );
    assert_eq!(net.counters().udp_flows_opened, 1);
}

#[test]
fn udp_without_checksum_over_ipv6_is_dropped() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let mut f = udp6_frame(
        GUEST_MAC,
        GW_MAC,
        (GUEST6, 40001),
        (ALIAS6, 5000),
        b"no checksum",
    );
    f[60..62].fill(0);
    net.on_guest_frame(T, p, &f, &mut sim);
    assert!(sim.udp_opens.is_empty());
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(drops(&net), vec![("udp_bad_checksum", 1)]);
}

#[test]
fn udp_to_a_closed_gateway_port_gets_port_unreachable_quoting_the_packet() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let f = udp6_frame(GUEST_MAC, GW_MAC, (GUEST6, 40001), (GW6, 9999), b"anyone?");
    net.on_guest_frame(T, p, &f, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].src, out[0].dst), (GW6, GUEST6));
    let m = out[0].icmp();
    assert_eq!(
        (m.msg_type(), m.code()),
        (icmpv6::DEST_UNREACHABLE, icmpv6::CODE_PORT_UNREACHABLE)
    );
    assert_eq!(out[0].l4[4..8], [0; 4]);
    assert_eq!(m.payload(), &f[14..], "the whole offending IPv6 packet");
    assert_eq!(drops(&net), vec![("udp_closed_port", 1)]);
    assert!(sim.udp_opens.is_empty());
}

// ---- DNS over IPv6. ----

fn dns_query() -> Vec<u8> {
    let mut q = vec![0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x04host\x04test\x00\x00\x1c\x00\x01");
    q
}

#[test]
fn dns_query_over_ipv6_goes_to_the_service_and_the_reply_is_ipv6() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let q = dns_query();
    let f = udp6_frame(GUEST_MAC, GW_MAC, (GUEST6, 53000), (GW6, 53), &q);
    net.on_guest_frame(T, p, &f, &mut sim);
    let queries: Vec<DnsQuery> = net.take_dns_queries().collect();
    assert_eq!(
        queries,
        vec![DnsQuery {
            guest_mac: GUEST_MAC,
            guest_ip: GUEST6.into(),
            guest_port: 53000,
            server_ip: GW6.into(),
            payload: q.clone(),
        }]
    );
    assert_eq!(net.counters().dns_queries, 1);
    assert!(sim.udp_opens.is_empty());
    let mut r = q.clone();
    r[2] = 0x81;
    r[3] = 0x80;
    net.on_dns_reply((GUEST_MAC, GUEST6.into(), 53000), GW6.into(), &r);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (GW6, GUEST6, GUEST_MAC)
    );
    let u = out[0].udp();
    assert_eq!(
        (u.src_port(), u.dst_port(), u.payload()),
        (53, 53000, &r[..])
    );
    // A reply whose family does not match the query's is not sent.
    net.on_dns_reply(
        (GUEST_MAC, GUEST6.into(), 53000),
        Ipv4Addr::new(192, 168, 127, 1).into(),
        &r,
    );
    assert!(drain(&mut net).is_empty());
}

#[test]
fn dns_reply_too_large_for_the_link_is_truncated_over_ipv6_too() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let q = dns_query();
    net.on_guest_frame(
        T,
        p,
        &udp6_frame(GUEST_MAC, GW_MAC, (GUEST6, 53001), (GW6, 53), &q),
        &mut sim,
    );
    assert_eq!(net.take_dns_queries().count(), 1);
    // 90 AAAA answers of 28 bytes: 2549 bytes, more than 1500 − 40 − 8.
    let mut r = q.clone();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&90u16.to_be_bytes());
    for i in 0..90u8 {
        r.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        r.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i]);
    }
    assert!(r.len() > 1452);
    net.on_dns_reply((GUEST_MAC, GUEST6.into(), 53001), GW6.into(), &r);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert!(out[0].frame_len <= 1514);
    let u = out[0].udp();
    assert!(slipway_core::services::dns::is_truncated(u.payload()));
    assert_eq!(&u.payload()[..2], &[0xbe, 0xef]);
    assert_eq!(drops(&net), vec![("dns_reply_truncated", 1)]);
}

// ---- DHCPv6. ----

/// The top-level options of a DHCPv6 message (after its 4-byte header), or of an option's body.
fn dhcp6_options(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let code = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        out.push((code, &b[at + 4..at + 4 + len]));
        at += 4 + len;
    }
    assert_eq!(at, b.len(), "options fill the message");
    out
}

fn dhcp6_option<'a>(opts: &[(u16, &'a [u8])], code: u16) -> Option<&'a [u8]> {
    opts.iter().find(|(c, _)| *c == code).map(|(_, v)| *v)
}

/// A DHCPv6 Solicit with Rapid Commit and one IA_NA (IAID 1), from the guest's link-local
/// address.
fn solicit_rapid_commit() -> Vec<u8> {
    let mut m = vec![1, 0xab, 0xcd, 0xef];
    m.extend([0, 1, 0, 10, 0, 3, 0, 1]);
    m.extend(GUEST_MAC);
    m.extend([0, 6, 0, 4, 0, 23, 0, 24]);
    m.extend([0, 8, 0, 2, 0, 0]);
    m.extend([0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend([0, 14, 0, 0]);
    let dhcp6_servers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    udp6_frame(
        GUEST_MAC,
        ipv6::multicast_mac(dhcp6_servers),
        (GUEST_LL, 546),
        (dhcp6_servers, 547),
        &m,
    )
}

#[test]
fn dhcp6_information_request_gets_a_reply_with_the_dns_server() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(T, p, &DHCP6_INFORMATION_REQUEST, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{:?}", drops(&net));
    let r = &out[0];
    assert_eq!((r.dest, r.eth_dst), (TxDest::Port(p), GUEST_MAC));
    assert_eq!((r.src, r.dst), (GW_LL, GUEST_LL));
    let u = r.udp();
    assert_eq!((u.src_port(), u.dst_port()), (547, 546));
    let msg = u.payload();
    assert_eq!(
        msg[..4],
        [7, 0x12, 0x34, 0x56],
        "Reply with the request's xid"
    );
    let opts = dhcp6_options(&msg[4..]);
    assert_eq!(
        dhcp6_option(&opts, 1),
        Some(&DHCP6_INFORMATION_REQUEST[70..80]),
        "the client id"
    );
    assert_eq!(
        dhcp6_option(&opts, 2),
        Some(&[0, 3, 0, 1, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd][..]),
        "server id: DUID-LL of the gateway MAC"
    );
    assert_eq!(
        dhcp6_option(&opts, 23),
        Some(&GW6.octets()[..]),
        "DNS server"
    );
    assert_eq!(
        dhcp6_option(&opts, 3),
        None,
        "no address in a stateless reply"
    );
    assert!(drops(&net).is_empty(), "{:?}", drops(&net));
    assert_eq!(net.neighbor(GUEST_LL.into()), Some(GUEST_MAC));
    // A broken UDP checksum, then a message the server rejects (an Advertise from a guest).
    let mut bad = DHCP6_INFORMATION_REQUEST;
    bad[93] ^= 1;
    net.on_guest_frame(T, p, &bad, &mut sim);
    let mut advertise = DHCP6_INFORMATION_REQUEST;
    advertise[62] = 2;
    advertise[60] += 9; // the checksum, adjusted for the message type 11 → 2
    net.on_guest_frame(T, p, &advertise, &mut sim);
    assert!(from_gateway(&mut net).is_empty());
    assert_eq!(
        drops(&net),
        vec![("dhcp6_dropped", 1), ("udp_bad_checksum", 1)]
    );
}

#[test]
fn dhcp6_solicit_with_rapid_commit_leases_an_address_a_forward_then_reaches() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(T, p, &solicit_rapid_commit(), &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{:?}", drops(&net));
    assert_eq!((out[0].src, out[0].dst), (GW_LL, GUEST_LL));
    let u = out[0].udp();
    let msg = u.payload();
    assert_eq!(msg[..4], [7, 0xab, 0xcd, 0xef]);
    let opts = dhcp6_options(&msg[4..]);
    assert_eq!(
        dhcp6_option(&opts, 14),
        Some(&[][..]),
        "rapid commit honoured"
    );
    let ia = dhcp6_option(&opts, 3).expect("an IA_NA");
    assert_eq!(ia[..4], [0, 0, 0, 1], "IAID");
    let ia_opts = dhcp6_options(&ia[12..]);
    let addr = dhcp6_option(&ia_opts, 5).expect("an IA address");
    let leased = Ipv6Addr::new(0xfd00, 0x5119, 0, 0, 0, 0, 0, 0x1000);
    assert_eq!(addr[..16], leased.octets(), "the first pool address");
    // Preferred = the lease time, valid = twice that.
    assert_eq!(addr[16..24], [0, 0, 0x0e, 0x10, 0, 0, 0x1c, 0x20]);
    assert_eq!(net.dhcp6().unwrap().holder_of(leased), Some(GUEST_MAC));

    // A forward to the leased address finds the guest by its lease: no solicitation needed.
    let id = net
        .add_forward(PortForward {
            proto: ForwardProto::Tcp,
            host: ForwardHost::Inet("[::1]:8080".parse().unwrap()),
            guest_ip: Some(leased.into()),
            guest_port: 80,
        })
        .unwrap();
    assert_eq!(net.forward_guest_reachable(id), Some(true));
    sim.backlog.push_back("[::1]:50000".parse().unwrap());
    let listener = SocketRef {
        kind: FlowKind::Listener,
        index: id,
    };
    net.on_socket_event(T, listener, true, false, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (ALIAS6, leased, GUEST_MAC)
    );
    let syn = out[0].tcp();
    assert_eq!(
        (syn.flags(), syn.src_port(), syn.dst_port()),
        (tcp::SYN, 50000, 80)
    );
}

// ---- Port forwards to IPv6 guests. ----

fn tcp_forward(host: &str, guest: IpAddr) -> PortForward {
    PortForward {
        proto: ForwardProto::Tcp,
        host: ForwardHost::Inet(host.parse().unwrap()),
        guest_ip: Some(guest),
        guest_port: 80,
    }
}

#[test]
fn forwards_take_ipv6_guest_addresses_inside_the_prefix_only() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    let id = net
        .add_forward(tcp_forward("[::1]:8080", GUEST6.into()))
        .unwrap();
    assert_eq!(net.forwards()[0].0, id);
    assert_eq!(net.forwards()[0].2, (GUEST6.into(), 80));
    for bad in [OUTSIDE6, GW6, ALIAS6, Ipv6Addr::from(PREFIX), GUEST_LL] {
        let e = net
            .add_forward(tcp_forward("[::1]:8081", bad.into()))
            .unwrap_err();
        assert_eq!(
            e,
            ForwardError::NotAGuestAddress {
                ip: bad.into(),
                subnet: "fd00:5119::/64".into()
            }
        );
    }
    let mut off = Network::new(
        NetworkConfig {
            ipv6: None,
            ..NetworkConfig::default()
        },
        1,
    );
    let e = off
        .add_forward(tcp_forward("[::1]:8080", GUEST6.into()))
        .unwrap_err();
    assert_eq!(
        e,
        ForwardError::NotAGuestAddress {
            ip: GUEST6.into(),
            subnet: "IPv6 is off".into()
        }
    );
}

/// A client waiting on forward `id`'s listener, and the listener signalled readable.
fn client_arrives(net: &mut Network, sim: &mut Sim, now: Duration, id: u32, client: &str) {
    sim.backlog.push_back(client.parse().unwrap());
    let listener = SocketRef {
        kind: FlowKind::Listener,
        index: id,
    };
    net.on_socket_event(now, listener, true, false, sim);
}

#[test]
fn forward_to_an_unknown_ipv6_guest_solicits_it_and_connects_after_its_advert() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let id = net
        .add_forward(tcp_forward("[::1]:8080", GUEST6.into()))
        .unwrap();
    assert_eq!(net.forward_guest_reachable(id), Some(false));
    client_arrives(&mut net, &mut sim, T, id, "[::1]:50000");
    assert_eq!(sim.backlog.len(), 1, "the client waits in the backlog");
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{out:?}");
    let ns = &out[0];
    assert_eq!(ns.dest, TxDest::Flood { except: None });
    assert_eq!(ns.eth_dst, [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
    assert_eq!(
        (ns.src, ns.dst, ns.hop_limit),
        (GW_LL, "ff02::1:ff12:3456".parse().unwrap(), 255)
    );
    let m = ns.icmp();
    assert_eq!(m.msg_type(), icmpv6::NEIGHBOR_SOLICIT);
    assert_eq!(
        ns.l4[4..],
        cat(&[&[0; 4], &GUEST6.octets(), &[1, 1], &GW_MAC])[..],
        "target and our source link-layer address"
    );
    // The guest answers the solicitation (unicast to the gateway's link-local address).
    let na = icmpv6_frame(
        GUEST_MAC,
        GUEST6,
        GW_LL,
        255,
        icmpv6::NEIGHBOR_ADVERT,
        [icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE, 0, 0, 0],
        &nd_body(GUEST6, &ll_option(2, GUEST_MAC)),
    );
    net.on_guest_frame(T, p, &na, &mut sim);
    assert_eq!(net.neighbor(GUEST6.into()), Some(GUEST_MAC));
    // The forward looks for its guest again within 50 ms.
    let retry = T + Duration::from_millis(50);
    assert!(net.next_deadline() <= retry, "{:?}", net.next_deadline());
    net.on_timers(retry, &mut sim);
    assert!(sim.backlog.is_empty(), "the client was accepted");
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].src, out[0].dst, out[0].eth_dst),
        (ALIAS6, GUEST6, GUEST_MAC)
    );
    let syn = out[0].tcp();
    assert_eq!(
        (syn.flags(), syn.src_port(), syn.dst_port()),
        (tcp::SYN, 50000, 80)
    );
    assert_eq!(syn.syn_options().mss, Some(1440));
    // The guest accepts; we acknowledge; the flow is established.
    let isn = syn.seq();
    let sa = tcp6_frame_from(
        GUEST6,
        80,
        (ALIAS6, 50000),
        9000,
        isn + 1,
        tcp::SYN | tcp::ACK,
        b"",
    );
    net.on_guest_frame(retry, p, &sa, &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].tcp().flags(), out[0].tcp().ack()), (tcp::ACK, 9001));
    assert_eq!(net.tcp().flows()[0].state, "established");
    assert_eq!(net.counters().forwarded_connections, 1);
}

/// The guest announces its SLAAC address (an unsolicited advertisement).
fn guest_announces_itself(net: &mut Network, sim: &mut Sim, p: u16) {
    let na = icmpv6_frame(
        GUEST_MAC,
        GUEST6,
        ndp::ALL_NODES,
        255,
        icmpv6::NEIGHBOR_ADVERT,
        [icmpv6::NA_OVERRIDE, 0, 0, 0],
        &nd_body(GUEST6, &ll_option(2, GUEST_MAC)),
    );
    net.on_guest_frame(T, p, &na, sim);
    net.clear_tx();
}

#[test]
fn clients_of_either_family_appear_to_an_ipv6_guest_as_ipv6_addresses() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    guest_announces_itself(&mut net, &mut sim, p);
    let id = net
        .add_forward(tcp_forward("0.0.0.0:8080", GUEST6.into()))
        .unwrap();
    let outside_client6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x55);
    for (client, seen) in [
        ("127.0.0.1:41000", ALIAS6),
        ("198.51.100.2:41001", ALIAS6),
        ("[::ffff:127.0.0.1]:41002", ALIAS6),
        ("[2001:db8::55]:41003", outside_client6),
        // Inside the guests' own prefix: could not be routed back, so the alias.
        ("[fd00:5119::99]:41004", ALIAS6),
    ] {
        client_arrives(&mut net, &mut sim, T, id, client);
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1, "{client}: {out:?}");
        assert_eq!((out[0].src, out[0].dst), (seen, GUEST6), "{client}");
        let port: SocketAddr = client.parse().unwrap();
        assert_eq!(out[0].tcp().src_port(), port.port());
    }
}

#[test]
fn an_ipv6_client_appears_to_an_ipv4_guest_as_the_ipv4_alias() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    // The IPv4 guest announces itself with ARP.
    let mut arp = [0u8; 42];
    ethernet::write_header(&mut arp, [0xff; 6], GUEST_MAC, ethernet::ETHERTYPE_ARP);
    slipway_wire::arp::write(
        &mut arp[14..],
        slipway_wire::arp::OP_REQUEST,
        GUEST_MAC,
        GUEST4,
        [0; 6],
        Ipv4Addr::new(192, 168, 127, 1),
    );
    net.on_guest_frame(T, p, &arp, &mut sim);
    net.clear_tx();
    let id = net
        .add_forward(PortForward {
            proto: ForwardProto::Tcp,
            host: ForwardHost::Inet("[::]:8080".parse().unwrap()),
            guest_ip: Some(GUEST4.into()),
            guest_port: 80,
        })
        .unwrap();
    client_arrives(&mut net, &mut sim, T, id, "[2001:db8::55]:41000");
    let out = drain(&mut net);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0].1).unwrap();
    assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!((ip.src(), ip.dst()), (ALIAS4, GUEST4));
    let seg = TcpSegment::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_v4(ip.src(), ip.dst()));
    assert_eq!(
        (seg.flags(), seg.src_port(), seg.dst_port()),
        (tcp::SYN, 41000, 80)
    );
    assert_eq!(seg.syn_options().mss, Some(1460), "the IPv4 MSS");
}

// ---- IPv6 off. ----

#[test]
fn with_ipv6_off_every_ipv6_frame_is_dropped_and_nothing_is_sent() {
    let cfg = NetworkConfig {
        ipv6: None,
        ..NetworkConfig::default()
    };
    let mut net = Network::new(cfg, 1);
    let mut sim = Sim::default();
    let p = net.port_up().unwrap();
    net.on_timers(Duration::ZERO, &mut sim);
    net.on_timers(ndp::RA_INTERVAL * 2, &mut sim);
    assert!(drain(&mut net).is_empty(), "no router advertisements");
    let frames: Vec<Vec<u8>> = vec![
        RS_FROM_LINK_LOCAL.to_vec(),
        NS_FOR_GATEWAY.to_vec(),
        ECHO_TO_GATEWAY.to_vec(),
        DHCP6_INFORMATION_REQUEST.to_vec(),
        tcp6_frame(40000, (ALIAS6, 80), 1, 0, tcp::SYN, b""),
        udp6_frame(GUEST_MAC, GW_MAC, (GUEST6, 1), (GW6, 53), b"q"),
    ];
    for f in &frames {
        net.on_guest_frame(T, p, f, &mut sim);
    }
    let out = drain(&mut net);
    assert!(
        out.iter()
            .all(|(d, _)| *d == TxDest::Flood { except: Some(p) }),
        "only the switch's copies of multicast frames: {out:?}"
    );
    assert_eq!(drops(&net), vec![("ipv6_disabled", frames.len() as u64)]);
    assert!(sim.connects.is_empty() && sim.udp_opens.is_empty());
    assert!(net.take_dns_queries().next().is_none());
    assert_eq!(net.neighbor(GUEST_LL.into()), None);
    assert!(net.dhcp6().is_none());
}

// ---- Malformed and unsupported packets. ----

#[test]
fn malformed_ipv6_is_counted_by_reason_and_never_answered() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // Shorter than the fixed header.
    cases.push(("short", ECHO_TO_GATEWAY[..40].to_vec(), "ipv6_malformed"));
    // Payload length past the frame.
    let mut long = ECHO_TO_GATEWAY.to_vec();
    long[19] = 0x40;
    cases.push(("payload length", long, "ipv6_malformed"));
    // Version 4 under the IPv6 ethertype.
    let mut v4 = ECHO_TO_GATEWAY.to_vec();
    v4[14] = 0x40;
    cases.push(("version", v4, "ipv6_malformed"));
    // A multicast source.
    let mcast_src = echo6("ff02::1".parse().unwrap(), GW6, 1, 1, b"x");
    cases.push(("multicast source", mcast_src, "ipv6_malformed"));
    // A broken ICMPv6 checksum.
    let mut bad = ECHO_TO_GATEWAY.to_vec();
    bad[69] ^= 0xff;
    cases.push(("checksum", bad, "icmpv6_malformed"));
    // A fragment (fragment header, offset 0, more fragments) of an echo request.
    let echo = &ECHO_TO_GATEWAY[54..];
    let frag = cat(&[&[ipv6::NEXT_ICMPV6, 0, 0, 1, 0, 0, 0, 7], echo]);
    let mut f = ipv6_frame(
        (GUEST_MAC, GW_MAC),
        GUEST6,
        GW6,
        ipv6::NEXT_FRAGMENT,
        64,
        &frag,
    );
    f[20] = ipv6::NEXT_FRAGMENT;
    cases.push(("fragment", f, "ipv6_fragment"));
    // Linux's MLDv2 report behind a hop-by-hop header.
    cases.push(("MLD", MLD2_REPORT.to_vec(), "multicast_not_routed"));
    // A router advertisement from a guest: one router here.
    let ra = icmpv6_frame(
        GUEST_MAC,
        GUEST_LL,
        ndp::ALL_NODES,
        255,
        icmpv6::ROUTER_ADVERT,
        [64, 0, 7, 8],
        &[0; 8],
    );
    cases.push(("guest RA", ra, "ndp_not_for_us"));
    // A TCP header cut short.
    let tcp = ipv6_frame(
        (GUEST_MAC, GW_MAC),
        GUEST6,
        ALIAS6,
        ipv6::NEXT_TCP,
        64,
        &[0; 12],
    );
    cases.push(("short TCP", tcp, "tcp_malformed"));
    // No next header.
    let none = ipv6_frame(
        (GUEST_MAC, GW_MAC),
        GUEST6,
        ALIAS6,
        ipv6::NEXT_NONE,
        64,
        &[],
    );
    cases.push(("no next header", none, "unknown_ip_protocol"));
    // An ICMPv6 type the gateway does not serve (an error message from the guest).
    let err = icmpv6_frame(
        GUEST_MAC,
        GUEST6,
        OUTSIDE6,
        64,
        icmpv6::DEST_UNREACHABLE,
        [0; 4],
        &[0; 40],
    );
    cases.push(("ICMPv6 error", err, "icmp_unsupported_type"));
    for (what, f, reason) in &cases {
        let before: HashMap<_, _> = drops(&net).into_iter().collect();
        net.on_guest_frame(T, p, f, &mut sim);
        let after: HashMap<_, _> = drops(&net).into_iter().collect();
        let grew: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(grew, vec![*reason], "{what}");
        assert!(from_gateway(&mut net).is_empty(), "{what}: answered");
    }
    assert!(sim.connects.is_empty() && sim.ping_opens.is_empty() && sim.udp_opens.is_empty());
}

#[test]
fn every_prefix_of_every_fixture_is_survived() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let fixtures: [&[u8]; 6] = [
        &RS_FROM_LINK_LOCAL,
        &NS_FOR_GATEWAY,
        &DAD_NS_FOR_ALIAS,
        &MLD2_REPORT,
        &ECHO_TO_GATEWAY,
        &DHCP6_INFORMATION_REQUEST,
    ];
    let mut n = 0;
    for f in fixtures {
        for cut in 0..f.len() {
            net.on_guest_frame(T, p, &f[..cut], &mut sim);
            n += 1;
        }
        // And with every byte of the upper layer flipped in turn.
        for i in 54..f.len() {
            let mut g = f.to_vec();
            g[i] ^= 0x5a;
            net.on_guest_frame(T, p, &g, &mut sim);
            n += 1;
        }
        net.clear_tx();
    }
    assert_eq!(net.counters().frames_from_guests, n);
}

// ---- slirp4netns's IPv6 plan: the gateway is the host alias, DNS has its own address. ----

#[test]
fn slirp4netns_plan_gateway_is_the_host_over_ipv6_and_dns_has_its_own_address() {
    let mut cfg = NetworkConfig::slirp4netns("10.0.2.0/24".parse().unwrap()).unwrap();
    cfg.ipv6 = Some(slipway_core::config::Ipv6Config::slirp4netns());
    let (mut net, p, mut sim) = setup(cfg);
    let gateway: Ipv6Addr = "fd00::2".parse().unwrap();
    let dns: Ipv6Addr = "fd00::3".parse().unwrap();
    let guest: Ipv6Addr = "fd00::5054:ff:fe12:3456".parse().unwrap();
    // The advertisement names the DNS server, and the prefix fd00::/64.
    net.on_guest_frame(T, p, &RS_FROM_LINK_LOCAL, &mut sim);
    let out = from_gateway(&mut net);
    let opts = options(&out[0].icmp());
    assert_eq!(
        opts[2].1[16..],
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0).octets()
    );
    assert_eq!(opts[3].1[8..], dns.octets());
    // Both addresses are the gateway's on the link.
    for target in [gateway, dns] {
        let ns = icmpv6_frame(
            GUEST_MAC,
            GUEST_LL,
            ipv6::solicited_node(target),
            255,
            icmpv6::NEIGHBOR_SOLICIT,
            [0; 4],
            &nd_body(target, &ll_option(1, GUEST_MAC)),
        );
        net.on_guest_frame(T, p, &ns, &mut sim);
        let out = from_gateway(&mut net);
        assert_eq!(out.len(), 1, "{target}");
        assert_eq!(out[0].l4[4..], expected_na(0xe0, target)[..]);
    }
    // Any TCP or UDP port of the gateway is the host's loopback.
    let syn = tcp6_frame_from(guest, 40000, (gateway, 8080), 1, 0, tcp::SYN, b"");
    net.on_guest_frame(T, p, &syn, &mut sim);
    assert_eq!(
        sim.connects,
        vec![TcpTarget::Host("[::1]:8080".parse().unwrap())]
    );
    assert_eq!(from_gateway(&mut net)[0].src, gateway);
    let u = udp6_frame(GUEST_MAC, GW_MAC, (guest, 40001), (gateway, 9999), b"u");
    net.on_guest_frame(T, p, &u, &mut sim);
    assert_eq!(
        sim.udp_opens,
        vec!["[::1]:9999".parse::<SocketAddr>().unwrap()]
    );
    // DNS is served at its own address; echo to the gateway is answered by slipway.
    let q = udp6_frame(GUEST_MAC, GW_MAC, (guest, 40002), (dns, 53), &dns_query());
    net.on_guest_frame(T, p, &q, &mut sim);
    let queries: Vec<DnsQuery> = net.take_dns_queries().collect();
    assert_eq!(queries.len(), 1);
    assert_eq!(
        (queries[0].guest_ip, queries[0].server_ip),
        (guest.into(), dns.into())
    );
    net.on_guest_frame(T, p, &echo6(guest, gateway, 1, 1, b"x"), &mut sim);
    let out = from_gateway(&mut net);
    assert_eq!(
        (out[0].src, out[0].icmp().msg_type()),
        (gateway, icmpv6::ECHO_REPLY)
    );
    assert!(sim.ping_opens.is_empty());
    assert!(drops(&net).is_empty(), "{:?}", drops(&net));
}

// ---- UDP forwards across families. ----

/// A UDP forward `[::]:5353` → the IPv4 guest's port 53, the guest known by ARP.
fn udp_forward_to_ipv4_guest() -> (Network, u16, Sim, u32) {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let mut arp = [0u8; 42];
    ethernet::write_header(&mut arp, [0xff; 6], GUEST_MAC, ethernet::ETHERTYPE_ARP);
    slipway_wire::arp::write(
        &mut arp[14..],
        slipway_wire::arp::OP_REQUEST,
        GUEST_MAC,
        GUEST4,
        [0; 6],
        Ipv4Addr::new(192, 168, 127, 1),
    );
    net.on_guest_frame(T, p, &arp, &mut sim);
    net.clear_tx();
    let id = net
        .add_forward(PortForward {
            proto: ForwardProto::Udp,
            host: ForwardHost::Inet("[::]:5353".parse().unwrap()),
            guest_ip: Some(GUEST4.into()),
            guest_port: 53,
        })
        .unwrap();
    (net, p, sim, id)
}

#[test]
fn datagrams_from_ipv6_clients_too_large_for_ipv4_are_not_sent_to_an_ipv4_guest() {
    let (mut net, _, mut sim, id) = udp_forward_to_ipv4_guest();
    let client: SocketAddr = "[::1]:40063".parse().unwrap();
    // IPv6 carries up to 65527 bytes of UDP payload, IPv4 up to 65507.
    for len in [65507, 65508, 65527] {
        sim.listener_in.push_back((client, vec![0x5a; len]));
    }
    let listener = SocketRef {
        kind: FlowKind::Listener,
        index: id,
    };
    net.on_socket_event(T, listener, true, false, &mut sim);
    let out = drain(&mut net);
    assert_eq!(out.len(), 1, "only the datagram that fits IPv4");
    let eth = EthernetFrame::new_checked(&out[0].1).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("a well-formed IPv4 packet");
    assert_eq!((ip.src(), ip.dst()), (ALIAS4, GUEST4));
    let u = UdpDatagram::new_checked(ip.payload()).unwrap();
    assert!(u.verify_v4(ip.src(), ip.dst()));
    assert_eq!(u.payload().len(), 65507);
    assert_eq!(net.counters().forwarded_datagrams, 1);
    assert_eq!(drops(&net), vec![("udp_datagram_too_large", 2)]);
}
