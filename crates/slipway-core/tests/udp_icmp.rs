//! The UDP and ICMP echo engines through the whole core with simulated host sockets: flows per
//! 4-tuple, replies from the address the guest used, the host-loopback alias, idle expiry,
//! policy refusals and ICMP errors; UDP port forwards (per-client flows through a listener).

use slipway_core::flows::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use slipway_core::{Network, NetworkConfig};
use slipway_wire::{ethernet, icmp, ipv4, EthernetFrame, Icmpv4Packet, Ipv4Packet, UdpDatagram};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A simulated datagram socket: its destination, what was sent, what the host will answer.
type SimDgram = (SocketAddr, Vec<Vec<u8>>, VecDeque<Vec<u8>>);

#[derive(Default)]
struct Sim {
    udp: HashMap<u32, SimDgram>,
    ping: HashMap<u32, SimDgram>,
    closed: Vec<SocketRef>,
    refuse_ping: bool,
    /// Datagrams waiting on a UDP forward's listener, and what it sent (client, payload).
    listener_in: VecDeque<(SocketAddr, Vec<u8>)>,
    listener_out: Vec<(SocketAddr, Vec<u8>)>,
}

impl HostSockets for Sim {
    fn tcp_connect(&mut self, _: SocketRef, _: TcpTarget) -> io::Result<ConnectProgress> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn tcp_connect_result(&mut self, _: SocketRef) -> io::Result<()> {
        Ok(())
    }
    fn tcp_write(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
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
    fn udp_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<()> {
        assert!(
            self.udp
                .insert(id.index, (dst, Vec::new(), VecDeque::new()))
                .is_none(),
            "double open"
        );
        Ok(())
    }
    fn udp_send(&mut self, id: SocketRef, payload: &[u8]) -> io::Result<usize> {
        self.udp
            .get_mut(&id.index)
            .expect("open")
            .1
            .push(payload.to_vec());
        Ok(payload.len())
    }
    fn udp_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        match self.udp.get_mut(&id.index).expect("open").2.pop_front() {
            Some(d) => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn udp_close(&mut self, id: SocketRef) {
        self.udp.remove(&id.index).expect("closing an open socket");
        self.closed.push(id);
    }
    fn ping_open(&mut self, id: SocketRef, dst: SocketAddr) -> io::Result<u16> {
        if self.refuse_ping {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        self.ping
            .insert(id.index, (dst, Vec::new(), VecDeque::new()));
        Ok(4242)
    }
    fn ping_send(&mut self, id: SocketRef, message: &[u8]) -> io::Result<usize> {
        self.ping
            .get_mut(&id.index)
            .expect("open")
            .1
            .push(message.to_vec());
        Ok(message.len())
    }
    fn ping_recv(&mut self, id: SocketRef, buf: &mut [u8]) -> io::Result<usize> {
        match self.ping.get_mut(&id.index).expect("open").2.pop_front() {
            Some(d) => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    fn ping_close(&mut self, id: SocketRef) {
        self.ping.remove(&id.index);
        self.closed.push(id);
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
        buf[..d.len()].copy_from_slice(&d);
        Ok((d.len(), from))
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

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

fn udp(dst: (Ipv4Addr, u16), sport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 42 + payload.len()];
    let gw = NetworkConfig::default().gateway_mac;
    slipway_core::frames::write_udp_v4_in_place(
        &mut f,
        gw,
        MAC,
        (IP, sport),
        dst,
        payload.len(),
        Some(payload),
    );
    f
}

fn echo(dst: Ipv4Addr, ident: u16, seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; 34 + 8 + 4];
    ethernet::write_header(
        &mut f,
        NetworkConfig::default().gateway_mac,
        MAC,
        ethernet::ETHERTYPE_IPV4,
    );
    ipv4::write_header(&mut f[14..], IP, dst, ipv4::PROTO_ICMP, 12, 64, 1);
    f[42..].copy_from_slice(b"ping");
    icmp::write_header(
        &mut f[34..],
        icmp::ECHO_REQUEST,
        0,
        icmp::echo_rest(ident, seq),
    );
    f
}

fn drain(net: &mut Network) -> Vec<Vec<u8>> {
    let v = net.tx().frames().map(|(_, f)| f.to_vec()).collect();
    net.clear_tx();
    v
}

fn setup(cfg: NetworkConfig) -> (Network, u16, Sim) {
    let mut net = Network::new(cfg, 3);
    let p = net.port_up().unwrap();
    (net, p, Sim::default())
}

#[test]
fn udp_flows_per_tuple_alias_to_loopback_and_replies_from_the_guest_view() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let t = Duration::from_secs(1);
    net.on_guest_frame(t, p, &udp((ALIAS, 5000), 40000, b"one"), &mut sim);
    net.on_guest_frame(t, p, &udp((ALIAS, 5000), 40000, b"two"), &mut sim);
    net.on_guest_frame(t, p, &udp((ALIAS, 5000), 40001, b"three"), &mut sim);
    assert_eq!(sim.udp.len(), 2, "one host socket per guest 4-tuple");
    let (&index, flow) = sim.udp.iter().find(|(_, f)| f.1.len() == 2).unwrap();
    assert_eq!(
        flow.0,
        "127.0.0.1:5000".parse().unwrap(),
        "the alias reaches the host's loopback"
    );
    assert_eq!(flow.1, vec![b"one".to_vec(), b"two".to_vec()]);
    // A reply comes back from the alias, to the guest's port.
    sim.udp
        .get_mut(&index)
        .unwrap()
        .2
        .push_back(b"reply".to_vec());
    net.on_socket_event(
        t,
        SocketRef {
            kind: FlowKind::Udp,
            index,
        },
        true,
        false,
        &mut sim,
    );
    let out = drain(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0]).unwrap().payload()).unwrap();
    let u = UdpDatagram::new_checked(ip.payload()).unwrap();
    assert!(u.verify_v4(ip.src(), ip.dst()));
    assert_eq!(
        (ip.src(), u.src_port(), ip.dst(), u.dst_port(), u.payload()),
        (ALIAS, 5000, IP, 40000, &b"reply"[..])
    );
}

#[test]
fn idle_udp_flows_expire() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    net.on_guest_frame(
        Duration::from_secs(1),
        p,
        &udp((OUTSIDE, 53), 1234, b"q"),
        &mut sim,
    );
    assert_eq!(net.udp().flow_count(), 1);
    net.on_timers(Duration::from_secs(30), &mut sim);
    assert_eq!(net.udp().flow_count(), 1, "30 s idle is within the limit");
    net.on_timers(Duration::from_secs(62), &mut sim);
    assert_eq!(net.udp().flow_count(), 0);
    assert_eq!(sim.closed.len(), 1);
}

#[test]
fn egress_policy_refuses_udp_and_ping_with_admin_prohibited() {
    let mut cfg = NetworkConfig::default();
    cfg.egress_allow.push("127.0.0.0/8".parse().unwrap());
    let (mut net, p, mut sim) = setup(cfg);
    let t = Duration::from_secs(1);
    net.on_guest_frame(t, p, &udp((OUTSIDE, 53), 1234, b"q"), &mut sim);
    net.on_guest_frame(t, p, &echo(OUTSIDE, 7, 1), &mut sim);
    assert!(
        sim.udp.is_empty() && sim.ping.is_empty(),
        "no host socket for refused destinations"
    );
    let out = drain(&mut net);
    assert_eq!(out.len(), 2);
    for f in out {
        let ip =
            Ipv4Packet::new_checked(EthernetFrame::new_checked(&f).unwrap().payload()).unwrap();
        let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (ip.src(), m.msg_type(), m.code()),
            (OUTSIDE, icmp::DEST_UNREACHABLE, icmp::CODE_ADMIN_PROHIBITED)
        );
        // The quote starts with the guest's own IPv4 header.
        assert_eq!(&m.payload()[12..16], &IP.octets());
    }
    use slipway_core::counters::DropReason;
    assert_eq!(net.counters().dropped(DropReason::EgressDenied), 2);
    // The alias (127.0.0.1) is allowed.
    net.on_guest_frame(t, p, &udp((ALIAS, 9), 1, b"x"), &mut sim);
    assert_eq!(sim.udp.len(), 1);
}

#[test]
fn echo_to_the_outside_goes_through_a_ping_socket_and_keeps_the_guest_identifier() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    let t = Duration::from_secs(1);
    net.on_guest_frame(t, p, &echo(OUTSIDE, 0x1111, 5), &mut sim);
    assert_eq!(sim.ping.len(), 1);
    let (&index, flow) = sim.ping.iter().next().unwrap();
    assert_eq!(flow.0, SocketAddr::new(OUTSIDE.into(), 0));
    assert_eq!(flow.1.len(), 1);
    // The kernel answers with its own identifier (4242); the guest must see 0x1111.
    let mut reply = vec![0u8; 12];
    reply[8..].copy_from_slice(b"ping");
    icmp::write_header(&mut reply, icmp::ECHO_REPLY, 0, icmp::echo_rest(4242, 5));
    sim.ping.get_mut(&index).unwrap().2.push_back(reply);
    net.on_socket_event(
        t,
        SocketRef {
            kind: FlowKind::Icmp,
            index,
        },
        true,
        false,
        &mut sim,
    );
    let out = drain(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0]).unwrap().payload()).unwrap();
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (
            ip.src(),
            m.msg_type(),
            m.echo_ident(),
            m.echo_seq(),
            m.payload()
        ),
        (OUTSIDE, icmp::ECHO_REPLY, 0x1111, 5, &b"ping"[..])
    );
}

#[test]
fn a_host_that_forbids_ping_sockets_is_reported_once_and_the_guest_told() {
    let (mut net, p, mut sim) = setup(NetworkConfig::default());
    sim.refuse_ping = true;
    net.on_guest_frame(Duration::from_secs(1), p, &echo(OUTSIDE, 1, 1), &mut sim);
    assert!(net.ping_refused_by_host());
    let out = drain(&mut net);
    assert_eq!(out.len(), 1, "an ICMP unreachable instead of silence");
}

/// (source, source port, destination, destination port, payload) of a UDP frame to a guest.
fn udp_of(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(EthernetFrame::new_checked(frame).unwrap().payload()).unwrap();
    let u = UdpDatagram::new_checked(ip.payload()).unwrap();
    assert!(u.verify_v4(ip.src(), ip.dst()));
    (
        ip.src(),
        u.src_port(),
        ip.dst(),
        u.dst_port(),
        u.payload().to_vec(),
    )
}

#[test]
fn udp_forward_keeps_a_flow_per_client_and_answers_through_the_listener() {
    let mut cfg = NetworkConfig::default();
    // The reply to an outside client passes even though the egress policy allows only loopback.
    cfg.egress_allow.push("127.0.0.0/8".parse().unwrap());
    let (mut net, p, mut sim) = setup(cfg);
    let t = Duration::from_secs(1);
    let rule = slipway_core::forward::parse_publish("5353:53/udp")
        .unwrap()
        .remove(0);
    let id = net.add_forward(rule).unwrap();
    // The guest is known once it sent anything.
    net.on_guest_frame(t, p, &udp((ALIAS, 9), 1, b"hi"), &mut sim);
    let listener = SocketRef {
        kind: FlowKind::Listener,
        index: id,
    };
    let real: SocketAddr = "198.51.100.2:6000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:6001".parse().unwrap();
    sim.listener_in.push_back((real, b"q1".to_vec()));
    sim.listener_in.push_back((local, b"q2".to_vec()));
    sim.listener_in.push_back((real, b"q3".to_vec()));
    net.on_socket_event(t, listener, true, false, &mut sim);
    let got: Vec<_> = drain(&mut net).iter().map(|f| udp_of(f)).collect();
    let real_ip = Ipv4Addr::new(198, 51, 100, 2);
    assert_eq!(
        got,
        vec![
            (real_ip, 6000, IP, 53, b"q1".to_vec()),
            (ALIAS, 6001, IP, 53, b"q2".to_vec()),
            (real_ip, 6000, IP, 53, b"q3".to_vec()),
        ]
    );
    assert_eq!(net.counters().forwarded_datagrams, 3);
    assert_eq!(
        net.counters().frames_to_guests,
        3,
        "frames sent to guests are counted"
    );
    assert!(net.counters().bytes_to_guests >= 3 * 44);
    // Replies go back through the listener to the right client; no socket of their own.
    let before = sim.udp.len();
    net.on_guest_frame(t, p, &udp((real_ip, 6000), 53, b"a1"), &mut sim);
    net.on_guest_frame(t, p, &udp((ALIAS, 6001), 53, b"a2"), &mut sim);
    assert_eq!(
        sim.listener_out,
        vec![(real, b"a1".to_vec()), (local, b"a2".to_vec())]
    );
    assert_eq!(sim.udp.len(), before);
    // Idle client flows expire like any other; the listener stays.
    net.on_timers(Duration::from_secs(70), &mut sim);
    assert_eq!(net.udp().flow_count(), 0);
    assert_eq!(net.forwards().len(), 1);
    // Removing the forward forgets its clients.
    sim.listener_in.push_back((real, b"q4".to_vec()));
    net.on_socket_event(Duration::from_secs(71), listener, true, false, &mut sim);
    assert_eq!(net.udp().flow_count(), 1);
    net.remove_forward(id);
    assert_eq!(net.udp().flow_count(), 0);
}

/// slirp4netns's plan: 10.0.2.2 is both the gateway and the host alias, DNS is 10.0.2.3, and
/// the namespace is 10.0.2.100.
#[test]
fn slirp4netns_plan_gateway_is_the_host_and_dns_has_its_own_address() {
    use slipway_core::IpCidr;
    let cfg = NetworkConfig::slirp4netns(IpCidr {
        addr: "10.0.2.0".parse().unwrap(),
        prefix: 24,
    })
    .unwrap();
    let gw = Ipv4Addr::new(10, 0, 2, 2);
    let dns = Ipv4Addr::new(10, 0, 2, 3);
    let me = cfg.slirp_guest();
    assert_eq!(me, Ipv4Addr::new(10, 0, 2, 100));
    assert_eq!(
        (cfg.gateway, cfg.dns_server, cfg.host_loopback_alias),
        (gw, dns, Some(gw))
    );
    let frame = |dst: (Ipv4Addr, u16), payload: &[u8]| {
        let mut f = vec![0u8; 42 + payload.len()];
        slipway_core::frames::write_udp_v4_in_place(
            &mut f,
            cfg.gateway_mac,
            MAC,
            (me, 40000),
            dst,
            payload.len(),
            Some(payload),
        );
        f
    };
    let (mut net, p, mut sim) = setup(cfg.clone());
    let t = Duration::from_secs(1);
    // Any port of the gateway is the host's loopback.
    net.on_guest_frame(t, p, &frame((gw, 5000), b"to the host"), &mut sim);
    assert_eq!(sim.udp.len(), 1);
    let flow = sim.udp.values().next().unwrap();
    assert_eq!(flow.0, "127.0.0.1:5000".parse().unwrap());
    // Port 53 of .3 is the DNS service, not a host socket.
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
    net.on_guest_frame(t, p, &frame((dns, 53), &q), &mut sim);
    let queries: Vec<_> = net.take_dns_queries().collect();
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].server_ip, dns);
    assert_eq!(sim.udp.len(), 1, "DNS opened no host socket");
    drain(&mut net);
    // Other ports of .3 are closed.
    net.on_guest_frame(t, p, &frame((dns, 99), b"x"), &mut sim);
    let out = drain(&mut net);
    assert_eq!(out.len(), 1);
    let ip =
        Ipv4Packet::new_checked(EthernetFrame::new_checked(&out[0]).unwrap().payload()).unwrap();
    assert_eq!(ip.src(), dns);
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (m.msg_type(), m.code()),
        (icmp::DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE)
    );
    // ARP for the DNS address is answered; ping of it too.
    assert!(cfg.owns(dns) && cfg.owns(gw) && !cfg.owns(me));
    let mut e = echo(dns, 5, 1);
    ipv4::write_header(&mut e[14..], me, dns, ipv4::PROTO_ICMP, 12, 64, 1);
    net.on_guest_frame(t, p, &e, &mut sim);
    let out = drain(&mut net);
    assert_eq!(out.len(), 1, "the DNS address answers ping itself");
}
