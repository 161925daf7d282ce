//! The TCP translation engine driven through the whole core with a simulated host socket and
//! virtual time: handshake, data both ways, loss and retransmission, zero window, backpressure,
//! half-close, resets, refused and timed-out connects; port forwards (clients accepted on a host
//! listener, our SYN to the guest).

use slipway_core::counters::DropReason;
use slipway_core::flows::tcp::{DELAYED_ACK, FORWARD_SYN_RETRIES};
use slipway_core::flows::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use slipway_core::forward::parse_publish;
use slipway_core::offload::{PartialCsum, RxChecksum};
use slipway_core::{Network, NetworkConfig};
use slipway_wire::tcp::{self, SackBlocks, SynOptions, TcpHeader, TcpSegment};
use slipway_wire::{checksum, ethernet, ipv4, EthernetFrame, Ipv4Packet};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const GUEST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);

#[derive(Default)]
struct SimTcp {
    target: Option<TcpTarget>,
    /// Bytes the engine wrote (what the host application received).
    written: Vec<u8>,
    /// Free space of the send buffer.
    send_space: usize,
    /// Host → guest bytes not yet discarded.
    queue: VecDeque<u8>,
    eof: bool,
    shut_wr: bool,
    closed: Option<bool>,
    /// `tcp_peek` calls (each is a `recvmsg` on a real socket).
    peeks: usize,
}

#[derive(Default)]
struct Sim {
    tcp: HashMap<u32, SimTcp>,
    connect_result: Option<io::ErrorKind>,
    connect_errno: Option<i32>,
    in_progress: bool,
    default_space: usize,
    /// Clients waiting on a forward's listener (its kernel backlog).
    backlog: VecDeque<SocketAddr>,
    /// System calls the engine would have made: peeks and reads of the send space.
    peeks: usize,
    space_reads: usize,
}

impl Sim {
    fn new() -> Self {
        Self {
            default_space: 1 << 20,
            ..Default::default()
        }
    }
    fn only(&mut self) -> &mut SimTcp {
        assert_eq!(self.tcp.len(), 1);
        self.tcp.values_mut().next().unwrap()
    }
}

impl HostSockets for Sim {
    fn tcp_connect(&mut self, id: SocketRef, target: TcpTarget) -> io::Result<ConnectProgress> {
        if let Some(errno) = self.connect_errno {
            if !self.in_progress {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let _ = self.connect_result;
        self.tcp.insert(
            id.index,
            SimTcp {
                target: Some(target),
                send_space: self.default_space,
                ..Default::default()
            },
        );
        Ok(if self.in_progress {
            ConnectProgress::InProgress
        } else {
            ConnectProgress::Connected
        })
    }
    fn tcp_connect_result(&mut self, _id: SocketRef) -> io::Result<()> {
        match self.connect_errno {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }
    fn tcp_write(&mut self, id: SocketRef, data: &[u8]) -> io::Result<usize> {
        let s = self.tcp.get_mut(&id.index).unwrap();
        let n = data.len().min(s.send_space);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        s.written.extend_from_slice(&data[..n]);
        s.send_space -= n;
        Ok(n)
    }
    fn tcp_peek(
        &mut self,
        id: SocketRef,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> io::Result<usize> {
        self.peeks += 1;
        let s = self.tcp.get_mut(&id.index).unwrap();
        s.peeks += 1;
        if offset >= s.queue.len() {
            return if s.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let mut n = 0;
        let mut it = s.queue.iter().skip(offset);
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
        assert!(
            len <= s.queue.len(),
            "discarding {len} of {}",
            s.queue.len()
        );
        s.queue.drain(..len);
        Ok(())
    }
    fn tcp_send_space(&mut self, id: SocketRef) -> usize {
        self.space_reads += 1;
        self.tcp.get(&id.index).map_or(0, |s| s.send_space)
    }
    fn tcp_shutdown_write(&mut self, id: SocketRef) {
        self.tcp.get_mut(&id.index).unwrap().shut_wr = true;
    }
    fn tcp_close(&mut self, id: SocketRef, abort: bool) {
        if let Some(s) = self.tcp.get_mut(&id.index) {
            s.closed = Some(abort);
        }
    }
    fn udp_open(&mut self, _: SocketRef, _: SocketAddr) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn udp_send(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn udp_recv(&mut self, _: SocketRef, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn udp_close(&mut self, _: SocketRef) {}
    fn ping_open(&mut self, _: SocketRef, _: SocketAddr) -> io::Result<u16> {
        Err(io::ErrorKind::PermissionDenied.into())
    }
    fn ping_send(&mut self, _: SocketRef, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn ping_recv(&mut self, _: SocketRef, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn ping_close(&mut self, _: SocketRef) {}
    fn tcp_accept(&mut self, listener: SocketRef, id: SocketRef) -> io::Result<SocketAddr> {
        assert_eq!(listener.kind, FlowKind::Listener);
        let client = self.backlog.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let sock = SimTcp {
            send_space: self.default_space,
            ..Default::default()
        };
        assert!(self.tcp.insert(id.index, sock).is_none(), "slot in use");
        Ok(client)
    }
}

/// A segment the engine sent to the guest.
#[derive(Debug, Clone)]
struct Out {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: Vec<u8>,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_permitted: bool,
}

struct Harness {
    net: Network,
    sim: Sim,
    now: Duration,
    port: u16,
    guest_port: u16,
    remote_port: u16,
    /// Guest-side sequence state.
    guest_seq: u32,
    /// Next byte the guest expects from slipway.
    guest_ack: u32,
    guest_window: u16,
    icmp: usize,
    /// The address the guest talks to (the alias, or a forwarded client's address).
    remote_ip: Ipv4Addr,
    /// ARP frames the network sent.
    arp: usize,
    /// SACK blocks the guest puts in its next segments.
    sack: SackBlocks,
    /// The guest's link offloads checksums: its segments arrive partial, ours may leave so.
    offload: bool,
    /// Segments to the guest that carried a partial checksum.
    partial_out: usize,
}

impl Harness {
    fn new(mtu: u16) -> Self {
        Self::with_config(NetworkConfig {
            mtu,
            ..NetworkConfig::default()
        })
    }

    fn with_config(cfg: NetworkConfig) -> Self {
        let mut net = Network::new(cfg, 42);
        let port = net.port_up().unwrap();
        Self {
            net,
            sim: Sim::new(),
            now: Duration::from_secs(1),
            port,
            guest_port: 40000,
            remote_port: 8080,
            guest_seq: 1000,
            guest_ack: 0,
            guest_window: 65535,
            icmp: 0,
            remote_ip: ALIAS,
            arp: 0,
            sack: SackBlocks::EMPTY,
            offload: false,
            partial_out: 0,
        }
    }

    /// The port's link offloads checksums both ways (a TAP device with a vnet header).
    fn offloading(mut self) -> Self {
        self.offload = true;
        self.net.set_checksum_offload(self.port, true);
        self
    }

    fn send(&mut self, flags: u8, seq: u32, payload: &[u8], syn_opts: Option<SynOptions>) {
        let h = TcpHeader {
            src_port: self.guest_port,
            dst_port: self.remote_port,
            seq,
            ack: if flags & tcp::ACK != 0 {
                self.guest_ack
            } else {
                0
            },
            flags,
            window: self.guest_window,
            sack: if syn_opts.is_none() {
                self.sack
            } else {
                SackBlocks::EMPTY
            },
            syn_options: syn_opts,
        };
        let l4 = h.header_len() + payload.len();
        let mut f = vec![0u8; 34 + l4];
        f[34 + h.header_len()..].copy_from_slice(payload);
        slipway_core::frames::write_tcp_v4(
            &mut f,
            NetworkConfig::default().gateway_mac,
            GUEST_MAC,
            GUEST_IP,
            self.remote_ip,
            &h,
            1,
        );
        let csum = if self.offload {
            // What the guest's kernel hands its "hardware": the pseudo-header sum only.
            let acc = checksum::pseudo_v4(GUEST_IP, self.remote_ip, ipv4::PROTO_TCP, l4 as u16);
            f[50..52].copy_from_slice(&checksum::partial_field(acc).to_be_bytes());
            RxChecksum::Partial(PartialCsum {
                start: 34,
                offset: 16,
            })
        } else {
            RxChecksum::Unverified
        };
        self.net
            .on_guest_frame_with(self.now, self.port, &f, csum, &mut self.sim);
        self.net.end_of_batch(self.now, &mut self.sim);
    }

    fn data(&mut self, payload: &[u8]) {
        let seq = self.guest_seq;
        self.send(tcp::ACK | tcp::PSH, seq, payload, None);
        self.guest_seq = self.guest_seq.wrapping_add(payload.len() as u32);
    }

    fn ack(&mut self) {
        let seq = self.guest_seq;
        self.send(tcp::ACK, seq, &[], None);
    }

    /// Drain what the network sent to the guest.
    fn take(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        let frames: Vec<(Vec<u8>, Option<PartialCsum>)> = self
            .net
            .tx()
            .frames_with_csum()
            .map(|(_, f, c)| (f.to_vec(), c))
            .collect();
        for (mut frame, csum) in frames {
            if let Some(c) = csum {
                assert!(
                    self.offload,
                    "a partial checksum to a port that does not offload"
                );
                assert!(c.complete(&mut frame));
                self.partial_out += 1;
            }
            let frame = &frame[..];
            let eth = EthernetFrame::new_checked(frame).unwrap();
            if eth.ethertype() == ethernet::ETHERTYPE_ARP {
                self.arp += 1;
                continue;
            }
            if eth.ethertype() == ethernet::ETHERTYPE_IPV6 {
                // Router advertisements (the network is dual-stack); these tests speak IPv4.
                continue;
            }
            assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_IPV4);
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            if ip.protocol() == ipv4::PROTO_ICMP {
                self.icmp += 1;
                continue;
            }
            let seg = TcpSegment::new_checked(ip.payload()).unwrap();
            assert!(
                seg.verify_v4(ip.src(), ip.dst()),
                "bad checksum from the engine"
            );
            assert_eq!((ip.src(), ip.dst()), (self.remote_ip, GUEST_IP));
            let o = seg.syn_options();
            out.push(Out {
                seq: seg.seq(),
                ack: seg.ack(),
                flags: seg.flags(),
                window: seg.window(),
                payload: seg.payload().to_vec(),
                mss: o.mss,
                wscale: o.window_scale,
                sack_permitted: o.sack_permitted,
            });
        }
        self.net.clear_tx();
        self.net.after_flush(self.now, &mut self.sim);
        out
    }

    fn socket_event(&mut self, readable: bool, writable: bool) {
        let index = *self.sim.tcp.keys().next().unwrap();
        let id = SocketRef {
            kind: slipway_core::flows::FlowKind::Tcp,
            index,
        };
        self.net
            .on_socket_event(self.now, id, readable, writable, &mut self.sim);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.net.on_timers(self.now, &mut self.sim);
    }

    /// SYN → SYN-ACK → ACK.
    fn establish(&mut self) -> Out {
        let seq = self.guest_seq;
        self.send(
            tcp::SYN,
            seq,
            &[],
            Some(SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
                sack_permitted: false,
            }),
        );
        self.guest_seq += 1;
        let out = self.take();
        assert_eq!(out.len(), 1, "{out:?}");
        let sa = out[0].clone();
        assert_eq!(sa.flags, tcp::SYN | tcp::ACK);
        assert_eq!(sa.ack, self.guest_seq);
        self.guest_ack = sa.seq.wrapping_add(1);
        self.ack();
        assert!(self.take().is_empty());
        sa
    }

    /// Receive host data as a guest that accepts everything in order; returns the bytes.
    fn receive_all(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        for o in self.take() {
            if o.seq == self.guest_ack && !o.payload.is_empty() {
                got.extend_from_slice(&o.payload);
                self.guest_ack = self.guest_ack.wrapping_add(o.payload.len() as u32);
            }
        }
        got
    }
}

#[test]
fn handshake_maps_alias_to_host_loopback_and_negotiates_options() {
    let mut h = Harness::new(1500);
    let sa = h.establish();
    assert_eq!(sa.mss, Some(1460));
    assert_eq!(sa.wscale, Some(7));
    assert!(
        !sa.sack_permitted,
        "SACK-permitted only to a guest that offers it"
    );
    let s = h.sim.only();
    assert_eq!(
        s.target,
        Some(TcpTarget::Host("127.0.0.1:8080".parse().unwrap()))
    );
    assert_eq!(h.net.tcp().flow_count(), 1);
}

#[test]
fn with_sack_only_the_hole_is_resent_and_bad_blocks_are_counted() {
    let mut h = Harness::new(1500);
    let seq = h.guest_seq;
    h.send(
        tcp::SYN,
        seq,
        &[],
        Some(SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
        }),
    );
    h.guest_seq += 1;
    let sa = h.take().remove(0);
    assert!(sa.sack_permitted, "offered back");
    h.guest_ack = sa.seq.wrapping_add(1);
    h.ack();
    assert!(h.take().is_empty());

    // Ten segments; the guest misses the second and SACKs the other eight.
    let body: Vec<u8> = (0..10 * 1460u32).map(|i| (i % 251) as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    let segs = h.take();
    assert_eq!(segs.len(), 10);
    let (hole, rest) = (segs[1].seq, segs[2].seq);
    let end = segs[9].seq.wrapping_add(1460);
    h.guest_ack = hole;
    h.sack = SackBlocks::from_slice(&[(rest, end)]);
    h.ack();
    let resent = h.take();
    assert_eq!(resent.len(), 1, "only the hole: {resent:?}");
    assert_eq!((resent[0].seq, resent[0].payload.len()), (hole, 1460));
    assert_eq!(resent[0].payload, body[1460..2920]);
    // The same again: already resent, nothing more.
    h.ack();
    assert!(h.take().is_empty());
    // Reversed, beyond what was sent, and old blocks: ignored, the first two counted.
    h.sack = SackBlocks::from_slice(&[(end, rest), (end, end.wrapping_add(1000)), (sa.seq, hole)]);
    h.ack();
    assert!(h.take().is_empty());
    assert_eq!(h.net.counters().dropped(DropReason::TcpBadSackBlock), 2);
    // The hole arrives: everything is acknowledged and discarded.
    h.sack = SackBlocks::EMPTY;
    h.guest_ack = end;
    h.ack();
    assert!(h.take().is_empty());
    assert!(h.sim.only().queue.is_empty());
}

#[test]
fn data_both_ways_and_orderly_close() {
    let mut h = Harness::new(1500);
    h.establish();
    h.data(b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        h.take().is_empty(),
        "a small request's ACK waits for the answer"
    );
    assert_eq!(h.sim.only().written, b"GET / HTTP/1.0\r\n\r\n");

    // 10 kB from the host arrives in MSS-sized segments with PSH on the last; they carry the
    // ACK of the request.
    let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    let segs = h.take();
    assert_eq!(segs.len(), 7);
    assert!(segs.iter().all(|s| s.ack == h.guest_seq));
    h.advance(DELAYED_ACK);
    assert!(h.take().is_empty(), "the delayed ACK rode on the data");
    assert!(segs.iter().take(6).all(|s| s.payload.len() == 1460));
    assert_eq!(segs.last().unwrap().flags & tcp::PSH, tcp::PSH);
    let mut got = Vec::new();
    for s in &segs {
        got.extend_from_slice(&s.payload);
    }
    assert_eq!(got, body);
    h.guest_ack = h.guest_ack.wrapping_add(body.len() as u32);
    h.ack();
    assert!(
        h.sim.only().queue.is_empty(),
        "acknowledged bytes are discarded from the socket"
    );

    // Host closes → FIN after the data; guest FIN → shutdown(SHUT_WR); flow freed.
    h.sim.only().eof = true;
    h.socket_event(true, false);
    let fin = h.take();
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].flags, tcp::FIN | tcp::ACK);
    assert_eq!(fin[0].seq, h.guest_ack);
    h.guest_ack += 1;
    let seq = h.guest_seq;
    h.send(tcp::FIN | tcp::ACK, seq, &[], None);
    h.guest_seq += 1;
    let last = h.take();
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].flags, last[0].ack), (tcp::ACK, h.guest_seq));
    assert!(h.sim.only().shut_wr);
    assert_eq!(h.sim.only().closed, Some(false));
    assert_eq!(h.net.tcp().flow_count(), 0);
}

#[test]
fn with_checksum_offload_data_moves_both_ways_with_partial_checksums() {
    let mut h = Harness::new(65520).offloading();
    h.establish();
    // Guest → host: partial checksums are accepted without summing.
    let request: Vec<u8> = (0..30_000u32).map(|i| (i * 13 % 253) as u8).collect();
    h.data(&request);
    assert_eq!(h.sim.only().written, request);
    assert_eq!(h.net.counters().dropped(DropReason::TcpBadChecksum), 0);
    // Host → guest: data segments leave partial (completed and verified by `take`), the
    // handshake's control segments did not.
    assert_eq!(h.partial_out, 0, "SYN-ACK and ACKs are summed in full");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    let got = h.receive_all();
    assert_eq!(got, body);
    assert!(h.partial_out >= 4, "{} partial segments", h.partial_out);
    // A partial checksum claimed at the wrong place is verified, fails, and is dropped.
    let seq = h.guest_seq;
    let mut f = vec![0u8; 34 + 20 + 10];
    let th = TcpHeader {
        src_port: h.guest_port,
        dst_port: h.remote_port,
        seq,
        ack: h.guest_ack,
        flags: tcp::ACK | tcp::PSH,
        window: 100,
        sack: SackBlocks::EMPTY,
        syn_options: None,
    };
    slipway_core::frames::write_tcp_v4(
        &mut f,
        NetworkConfig::default().gateway_mac,
        GUEST_MAC,
        GUEST_IP,
        ALIAS,
        &th,
        1,
    );
    f[50] ^= 0xff;
    let claim = RxChecksum::Partial(PartialCsum {
        start: 34,
        offset: 6,
    });
    let now = h.now;
    h.net
        .on_guest_frame_with(now, h.port, &f, claim, &mut h.sim);
    assert_eq!(h.net.counters().dropped(DropReason::TcpBadChecksum), 1);
    assert_eq!(h.sim.only().written.len(), request.len());
}

#[test]
fn without_offload_no_frame_carries_a_partial_checksum() {
    let mut h = Harness::new(65520);
    h.establish();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    assert_eq!(h.receive_all(), body);
    assert_eq!(h.partial_out, 0);
}

#[test]
fn guest_data_does_not_peek_an_empty_socket_for_each_segment() {
    let mut h = Harness::new(1500);
    h.establish();
    let after_handshake = h.sim.only().peeks;
    for i in 0..100u32 {
        // Full segments: each is ACKed at once (no delayed ACK).
        h.data(&[i as u8; 1460]);
        let acks = h.take();
        assert_eq!(acks.len(), 1);
    }
    assert_eq!(h.sim.only().written.len(), 146_000);
    assert_eq!(
        h.sim.only().peeks,
        after_handshake,
        "the socket was found empty; only a readable event makes it worth a peek again"
    );
    // Host data: the readable edge pushes it, and the guest's ACKs may push again.
    h.sim.only().queue.extend([7u8; 3000]);
    h.socket_event(true, false);
    assert_eq!(h.receive_all(), [7u8; 3000]);
    h.ack();
    assert!(h.sim.only().queue.is_empty());
    h.data(b"more");
    h.take();
    h.sim.only().queue.extend([8u8; 10]);
    h.data(b"and a segment that finds data queued without an event: sent on the next edge");
    h.socket_event(true, false);
    assert_eq!(h.receive_all(), [8u8; 10]);
}

#[test]
fn guest_half_close_keeps_host_data_flowing() {
    let mut h = Harness::new(1500);
    h.establish();
    let seq = h.guest_seq;
    h.send(tcp::FIN | tcp::ACK, seq, b"bye", None);
    h.guest_seq += 4;
    let a = h.take();
    assert_eq!(a.last().unwrap().ack, h.guest_seq);
    assert!(h.sim.only().shut_wr);
    assert_eq!(h.sim.only().written, b"bye");
    h.sim.only().queue.extend(b"still talking".iter().copied());
    h.socket_event(true, false);
    assert_eq!(h.receive_all(), b"still talking");
    h.ack();
    assert_eq!(h.net.tcp().flow_count(), 1);
}

#[test]
fn lost_segment_is_retransmitted_on_timeout_and_on_three_duplicate_acks() {
    let mut h = Harness::new(1500);
    h.establish();
    let body: Vec<u8> = (0..5 * 1460u32).map(|i| i as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    let segs = h.take();
    assert_eq!(segs.len(), 5);
    // The guest lost segment 2: it ACKs segment 1 three more times (dup ACKs for 3, 4, 5).
    h.guest_ack = segs[1].seq;
    h.ack();
    assert!(h.take().is_empty());
    for _ in 0..3 {
        h.ack();
    }
    let re = h.take();
    assert!(!re.is_empty(), "fast retransmit after three duplicate ACKs");
    assert_eq!(re[0].seq, segs[1].seq);
    assert_eq!(re[0].payload, segs[1].payload);

    // Now lose everything and wait: the retransmission timer rewinds again.
    h.advance(Duration::from_secs(2));
    let re = h.take();
    assert!(!re.is_empty(), "retransmission on timeout");
    assert_eq!(re[0].seq, segs[1].seq);
    let got = {
        let mut g = segs[0].payload.clone();
        for o in &re {
            if o.seq == segs[0].seq.wrapping_add(g.len() as u32) {
                g.extend_from_slice(&o.payload);
            }
        }
        g
    };
    assert_eq!(got, body);
}

#[test]
fn zero_window_is_probed_and_sending_resumes_when_it_opens() {
    let mut h = Harness::new(1500);
    h.establish();
    h.guest_window = 0;
    h.ack();
    h.sim.only().queue.extend(std::iter::repeat_n(7u8, 3000));
    h.socket_event(true, false);
    assert!(h.take().is_empty(), "nothing is sent into a zero window");
    h.advance(Duration::from_secs(1));
    let probe = h.take();
    assert_eq!(probe.len(), 1, "a window probe");
    assert!(probe[0].payload.is_empty());
    h.guest_window = 1000; // scaled by 2^7 = 128000 bytes
    h.ack();
    assert_eq!(h.receive_all().len(), 3000);
}

#[test]
fn guest_data_beyond_the_send_buffer_is_not_acknowledged() {
    let mut h = Harness::new(1500);
    h.establish();
    h.sim.only().send_space = 10;
    h.data(b"0123456789abcdef");
    let a = h.take();
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].ack,
        h.guest_seq - 6,
        "only what the kernel accepted is acknowledged"
    );
    assert_eq!(a[0].window, 0);
    // A segment after the gap is not written: duplicate ACK.
    let seq = h.guest_seq;
    h.send(tcp::ACK, seq, b"later", None);
    let d = h.take();
    assert_eq!(d[0].ack, h.guest_seq - 6);
    assert_eq!(h.sim.only().written, b"0123456789");
}

#[test]
fn refused_connect_resets_the_guest_and_frees_the_flow() {
    let mut h = Harness::new(1500);
    h.sim.connect_errno = Some(111);
    let seq = h.guest_seq;
    h.send(tcp::SYN, seq, &[], None);
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, tcp::RST | tcp::ACK);
    assert_eq!(out[0].ack, seq + 1);
    assert_eq!(h.net.tcp().flow_count(), 0);
    assert_eq!(h.net.tcp().pending_connects(), 0);
}

#[test]
fn failed_connects_in_progress_release_their_pending_slot() {
    let mut h = Harness::new(1500);
    h.sim.in_progress = true;
    h.sim.connect_errno = Some(111);
    for i in 0..10 {
        h.guest_port = 20000 + i;
        let seq = h.guest_seq;
        h.send(tcp::SYN, seq, &[], None);
    }
    assert_eq!(h.net.tcp().pending_connects(), 10);
    // Each socket reports its failure.
    let ids: Vec<u32> = h.sim.tcp.keys().copied().collect();
    for index in ids {
        let id = SocketRef {
            kind: slipway_core::flows::FlowKind::Tcp,
            index,
        };
        h.net.on_socket_event(h.now, id, false, true, &mut h.sim);
    }
    let resets = h.take().iter().filter(|o| o.flags & tcp::RST != 0).count();
    assert_eq!(resets, 10);
    assert_eq!(h.net.tcp().pending_connects(), 0);
    assert_eq!(h.net.tcp().flow_count(), 0);
}

#[test]
fn slow_connect_times_out_with_icmp_and_does_not_block_others() {
    let mut h = Harness::new(1500);
    h.sim.in_progress = true;
    for i in 0..100 {
        h.guest_port = 30000 + i;
        let seq = h.guest_seq;
        h.send(tcp::SYN, seq, &[], None);
    }
    assert!(h.take().is_empty());
    assert_eq!(h.net.tcp().flow_count(), 100);
    assert_eq!(h.net.tcp().pending_connects(), 100);
    // Another connection completes at once while 100 are pending.
    h.sim.in_progress = false;
    h.guest_port = 50000;
    h.establish();
    h.advance(Duration::from_secs(31));
    h.take();
    assert_eq!(
        h.icmp, 100,
        "each timed-out connect gets an ICMP unreachable"
    );
    assert_eq!(h.net.tcp().flow_count(), 1);
}

#[test]
fn guest_reset_aborts_the_host_socket() {
    let mut h = Harness::new(1500);
    h.establish();
    let seq = h.guest_seq;
    h.send(tcp::RST, seq, &[], None);
    assert_eq!(h.sim.only().closed, Some(true));
    assert_eq!(h.net.tcp().flow_count(), 0);
}

#[test]
fn segment_without_flow_gets_reset() {
    let mut h = Harness::new(1500);
    h.guest_ack = 5;
    h.data(b"stray");
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags & tcp::RST, tcp::RST);
    assert_eq!(out[0].seq, 5);
}

#[test]
fn large_mtu_uses_large_segments() {
    let mut h = Harness::new(65520);
    let seq = h.guest_seq;
    h.send(
        tcp::SYN,
        seq,
        &[],
        Some(SynOptions {
            mss: Some(65480),
            window_scale: Some(9),
            sack_permitted: false,
        }),
    );
    h.guest_seq += 1;
    let sa = h.take();
    assert_eq!(sa[0].mss, Some(65480));
    h.guest_ack = sa[0].seq + 1;
    h.guest_window = 4096; // × 512
    h.ack();
    h.sim.only().queue.extend(std::iter::repeat_n(1u8, 200_000));
    h.socket_event(true, false);
    let segs = h.take();
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[0].payload.len(), 65480);
}

#[test]
fn egress_policy_refuses_with_reset() {
    let mut cfg = NetworkConfig::default();
    cfg.egress_allow.push("10.99.0.0/16".parse().unwrap());
    let mut h = Harness::new(1500);
    h.net = Network::new(cfg, 1);
    h.port = h.net.port_up().unwrap();
    let seq = h.guest_seq;
    h.send(tcp::SYN, seq, &[], None);
    let out = h.take();
    assert_eq!(out[0].flags & tcp::RST, tcp::RST);
    assert!(
        h.sim.tcp.is_empty(),
        "no host socket for a denied destination"
    );
}

#[test]
fn an_immediate_connect_failure_does_not_disturb_pending_accounting() {
    let mut h = Harness::new(1500);
    h.sim.in_progress = true;
    h.guest_port = 1111;
    let seq = h.guest_seq;
    h.send(tcp::SYN, seq, &[], None);
    assert_eq!(h.net.tcp().pending_connects(), 1);
    // A second connect fails at once (e.g. ENETUNREACH).
    h.sim.in_progress = false;
    h.sim.connect_errno = Some(101);
    h.guest_port = 2222;
    h.send(tcp::SYN, seq, &[], None);
    assert_eq!(
        h.net.tcp().pending_connects(),
        1,
        "the failed connect was never pending"
    );
    // The first one completes.
    h.sim.connect_errno = None;
    h.socket_event(false, true);
    assert_eq!(h.net.tcp().pending_connects(), 0);
    let out = h.take();
    assert!(out.iter().any(|o| o.flags == tcp::SYN | tcp::ACK));
    assert_eq!(h.icmp, 1, "ENETUNREACH becomes an ICMP unreachable");
}

#[test]
fn idle_flows_are_reset_after_the_idle_timeout() {
    let mut h = Harness::new(1500);
    h.establish();
    h.data(b"x");
    h.advance(DELAYED_ACK);
    assert_eq!(h.take().len(), 1, "the delayed ACK");
    h.advance(Duration::from_secs(3600));
    assert!(h.take().is_empty());
    assert_eq!(h.net.tcp().flow_count(), 1, "an hour of silence is fine");
    h.advance(Duration::from_secs(3601));
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags & tcp::RST, tcp::RST);
    assert_eq!(h.net.tcp().flow_count(), 0);
    assert_eq!(h.sim.only().closed, Some(true));
}

#[test]
fn a_late_ack_of_our_fin_after_a_rewind_is_not_taken_for_data() {
    // Found by the network_frames fuzz target: a FIN rewound by a retransmission timeout and not
    // yet resent (the guest's port was gone), then acknowledged by the guest.
    let mut h = Harness::new(1500);
    h.establish();
    h.sim.only().queue.extend(b"abc".iter().copied());
    h.sim.only().eof = true;
    let index = *h.sim.tcp.keys().next().unwrap();
    h.net.on_socket_hangup(SocketRef {
        kind: slipway_core::flows::FlowKind::Tcp,
        index,
    });
    h.socket_event(true, false);
    let out = h.take();
    assert_eq!(out.len(), 2, "data, then FIN");
    let fin_seq = out[1].seq;
    // The guest's link goes away; the retransmission timer rewinds but cannot resend.
    h.net.port_down(h.port);
    h.advance(Duration::from_secs(2));
    assert!(h.take().is_empty());
    // The guest comes back and acknowledges data and FIN, then closes its side.
    h.port = h.net.port_up().unwrap();
    h.guest_ack = fin_seq + 1;
    h.ack();
    assert!(h.sim.only().queue.is_empty());
    let seq = h.guest_seq;
    h.send(tcp::FIN | tcp::ACK, seq, &[], None);
    let out = h.take();
    assert!(
        out.iter().all(|o| o.flags & tcp::FIN == 0),
        "no FIN resent after it was acknowledged: {out:?}"
    );
    assert_eq!(
        h.net.tcp().flow_count(),
        0,
        "both FINs done: the flow is freed"
    );
}

// ---- Port forwards: a host client accepted on a listener, our SYN to the guest. ----

impl Harness {
    /// A TCP forward host 127.0.0.1:8080 → guest port 80; the guest at GUEST_IP is known to
    /// the network when `guest_known` (it sent a frame).
    fn with_forward(guest_known: bool) -> (Self, u32) {
        let mut h = Harness::new(1500);
        let id = h
            .net
            .add_forward(parse_publish("8080:80").unwrap().remove(0))
            .unwrap();
        h.guest_port = 80;
        if guest_known {
            h.guest_says_hello();
        }
        (h, id)
    }

    /// The guest announces itself (an ARP request for the gateway).
    fn guest_says_hello(&mut self) {
        let mut f = [0u8; 42];
        ethernet::write_header(&mut f, [0xff; 6], GUEST_MAC, ethernet::ETHERTYPE_ARP);
        slipway_wire::arp::write(
            &mut f[14..],
            slipway_wire::arp::OP_REQUEST,
            GUEST_MAC,
            GUEST_IP,
            [0; 6],
            NetworkConfig::default().gateway,
        );
        self.net
            .on_guest_frame(self.now, self.port, &f, &mut self.sim);
        self.net.clear_tx();
    }

    fn client_arrives(&mut self, id: u32, client: &str) {
        let client: SocketAddr = client.parse().unwrap();
        self.sim.backlog.push_back(client);
        self.remote_port = client.port();
        let listener = SocketRef {
            kind: FlowKind::Listener,
            index: id,
        };
        self.net
            .on_socket_event(self.now, listener, true, false, &mut self.sim);
    }

    /// Our SYN to the guest, answered with a SYN-ACK carrying `mss` and `wscale`.
    fn guest_accepts(&mut self, mss: u16, wscale: Option<u8>) -> Out {
        let out = self.take();
        assert_eq!(out.len(), 1, "{out:?}");
        let syn = out[0].clone();
        assert_eq!(syn.flags, tcp::SYN);
        self.guest_ack = syn.seq.wrapping_add(1);
        let seq = self.guest_seq;
        self.send(
            tcp::SYN | tcp::ACK,
            seq,
            &[],
            Some(SynOptions {
                mss: Some(mss),
                window_scale: wscale,
                sack_permitted: false,
            }),
        );
        self.guest_seq += 1;
        syn
    }
}

#[test]
fn forwarded_client_becomes_a_flow_that_starts_with_our_syn() {
    let (mut h, id) = Harness::with_forward(true);
    h.client_arrives(id, "127.0.0.1:50000");
    let syn = h.guest_accepts(1000, Some(5));
    assert_eq!(syn.mss, Some(1460), "our MSS from the MTU");
    assert_eq!(syn.wscale, Some(7));
    assert!(syn.sack_permitted, "our SYN offers SACK");
    let ack = h.take();
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert_eq!((ack[0].flags, ack[0].ack), (tcp::ACK, h.guest_seq));
    assert_eq!(ack[0].seq, h.guest_ack);
    assert_eq!(h.net.tcp().flows()[0].state, "established");
    assert_eq!(h.net.counters().forwarded_connections, 1);

    // Host client → guest, in the guest's MSS (from its SYN-ACK).
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    h.sim.only().queue.extend(body.iter().copied());
    h.socket_event(true, false);
    let segs = h.take();
    assert_eq!(
        segs.iter().map(|s| s.payload.len()).collect::<Vec<_>>(),
        vec![1000, 1000, 1000]
    );
    h.guest_ack = h.guest_ack.wrapping_add(3000);
    h.ack();
    assert!(h.sim.only().queue.is_empty());
    // Guest → host client.
    h.data(b"hello from the guest");
    assert_eq!(h.sim.only().written, b"hello from the guest");
    assert!(
        h.take().is_empty(),
        "a small segment's ACK waits for an answer"
    );
    h.advance(DELAYED_ACK);
    assert_eq!(h.take().last().unwrap().ack, h.guest_seq);
}

#[test]
fn forwarded_client_keeps_its_address_and_loopback_clients_appear_as_the_alias() {
    let (mut h, id) = Harness::with_forward(true);
    h.remote_ip = Ipv4Addr::new(198, 51, 100, 2);
    h.client_arrives(id, "198.51.100.2:41000");
    h.guest_accepts(1460, Some(7));
    assert_eq!(h.net.tcp().flows()[0].key.remote_ip, h.remote_ip);
    assert_eq!(h.net.tcp().flows()[0].key.remote_port, 41000);
    assert_eq!(h.take().len(), 1, "our ACK of the SYN-ACK");
    // Loopback over IPv6 is the alias too (the take() above checked the source address).
    h.remote_ip = ALIAS;
    h.client_arrives(id, "[::1]:41001");
    h.guest_seq = 5000;
    h.guest_accepts(1460, None);
    let flows = h.net.tcp().flows();
    assert!(flows
        .iter()
        .any(|f| f.key.remote_ip == ALIAS && f.key.remote_port == 41001));
    assert_eq!(h.take().len(), 1, "our ACK of the SYN-ACK");
    // Two clients that would look alike to the guest: the second is turned away.
    h.client_arrives(id, "127.0.0.1:41001");
    assert!(h.take().is_empty());
    assert_eq!(h.net.counters().dropped(DropReason::ForwardClientClash), 1);
}

#[test]
fn guest_reset_of_our_syn_resets_the_client() {
    let (mut h, id) = Harness::with_forward(true);
    h.client_arrives(id, "127.0.0.1:50001");
    let syn = h.take().remove(0);
    // A reset that does not acknowledge our SYN is ignored (RFC 9293 §3.10.7.3).
    h.guest_ack = syn.seq.wrapping_add(7);
    h.send(tcp::RST | tcp::ACK, 0, &[], None);
    assert_eq!(h.net.tcp().flow_count(), 1);
    h.guest_ack = syn.seq.wrapping_add(1);
    h.send(tcp::RST | tcp::ACK, 0, &[], None);
    assert_eq!(h.net.tcp().flow_count(), 0);
    assert_eq!(h.sim.only().closed, Some(true), "the client sees a reset");
    assert_eq!(
        h.net.counters().dropped(DropReason::ForwardRefusedByGuest),
        1
    );
}

#[test]
fn unanswered_syn_is_retried_with_backoff_then_the_client_is_reset() {
    let (mut h, id) = Harness::with_forward(true);
    h.client_arrives(id, "127.0.0.1:50002");
    let first = h.take();
    assert_eq!(first.len(), 1);
    let mut syns = 0;
    for _ in 0..400 {
        h.advance(Duration::from_millis(100));
        for o in h.take() {
            assert_eq!((o.flags, o.seq), (tcp::SYN, first[0].seq));
            syns += 1;
        }
    }
    assert_eq!(syns, usize::from(FORWARD_SYN_RETRIES));
    assert_eq!(h.net.tcp().flow_count(), 0);
    assert_eq!(h.sim.only().closed, Some(true));
}

#[test]
fn client_waits_while_the_guest_is_asked_for_and_is_accepted_once_it_answers() {
    let (mut h, id) = Harness::with_forward(false);
    h.client_arrives(id, "127.0.0.1:50003");
    assert!(h.take().is_empty());
    assert_eq!(h.arp, 1, "an ARP request for the guest");
    assert_eq!(h.sim.backlog.len(), 1, "the client waits in the backlog");
    h.advance(Duration::from_millis(100));
    assert!(h.take().is_empty());
    h.guest_says_hello();
    h.advance(Duration::from_millis(100));
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, tcp::SYN);
    assert!(h.sim.backlog.is_empty());
}

#[test]
fn client_of_a_guest_that_never_answers_is_refused_after_the_wait() {
    let (mut h, id) = Harness::with_forward(false);
    h.client_arrives(id, "127.0.0.1:50004");
    for _ in 0..40 {
        h.advance(Duration::from_millis(100));
        let _ = h.take();
    }
    assert!(h.sim.backlog.is_empty());
    assert_eq!(h.sim.only().closed, Some(true));
    assert_eq!(h.net.tcp().flow_count(), 0);
    assert_eq!(
        h.net
            .counters()
            .dropped(DropReason::ForwardGuestUnreachable),
        1
    );
    assert!(
        h.arp >= 2 && h.arp <= 8,
        "ARP asked again, boundedly: {}",
        h.arp
    );
}

#[test]
fn forwards_reject_addresses_that_are_not_guests() {
    let mut net = Network::new(NetworkConfig::default(), 1);
    for spec in [
        "127.0.0.1:8080:192.168.127.1:80",
        "127.0.0.1:8080:192.168.127.254:80",
        "127.0.0.1:8080:10.0.0.5:80",
    ] {
        let e = net
            .add_forward(parse_publish(spec).unwrap().remove(0))
            .unwrap_err();
        assert!(e.to_string().contains("not a guest address"), "{e}");
    }
    let id = net
        .add_forward(parse_publish("8080:80").unwrap().remove(0))
        .unwrap();
    assert_eq!(net.forwards()[0].2, (GUEST_IP.into(), 80));
    assert!(net.remove_forward(id).is_some());
    assert!(net.forwards().is_empty());
}

#[test]
fn gateway_ports_reach_their_host_unix_socket_and_others_are_refused() {
    let mut h = Harness::with_config(NetworkConfig {
        gateway_unix_ports: vec![2375],
        ..NetworkConfig::default()
    });
    h.remote_ip = NetworkConfig::default().gateway;
    h.remote_port = 2375;
    h.establish();
    assert_eq!(h.sim.only().target, Some(TcpTarget::Unix(2375)));
    h.remote_port = 2376;
    h.guest_port = 40001;
    let seq = h.guest_seq;
    h.send(tcp::SYN, seq, &[], None);
    let out = h.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, tcp::RST | tcp::ACK);
}

#[test]
fn gateway_port_80_is_the_guest_api_only_when_enabled() {
    for enabled in [true, false] {
        let mut h = Harness::with_config(NetworkConfig {
            guest_api: enabled,
            ..NetworkConfig::default()
        });
        h.remote_ip = NetworkConfig::default().gateway;
        h.remote_port = 80;
        let seq = h.guest_seq;
        h.send(tcp::SYN, seq, &[], None);
        let out = h.take();
        assert_eq!(out.len(), 1);
        if enabled {
            assert_eq!(out[0].flags, tcp::SYN | tcp::ACK);
            assert_eq!(
                h.sim.only().target,
                Some(TcpTarget::GuestApi(GUEST_IP.into()))
            );
        } else {
            assert_eq!(out[0].flags, tcp::RST | tcp::ACK);
        }
    }
}

#[test]
fn small_segments_get_a_delayed_ack_and_everything_else_an_immediate_one() {
    let mut h = Harness::new(1500);
    h.establish();
    // Two small segments within the delay: one ACK for both, after DELAYED_ACK.
    h.data(b"ab");
    h.advance(DELAYED_ACK / 2);
    assert!(h.take().is_empty());
    h.data(b"cd");
    assert!(h.take().is_empty());
    h.advance(DELAYED_ACK / 2);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].flags, out[0].ack), (tcp::ACK, h.guest_seq));
    h.advance(DELAYED_ACK);
    assert!(h.take().is_empty(), "the ACK is not sent twice");

    // A full segment is ACKed at the end of its batch.
    h.data(&[7u8; 1460]);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, h.guest_seq);

    // A retransmission of data already received is ACKed at once (the guest waits for it).
    let old = h.guest_seq.wrapping_sub(1460);
    h.send(tcp::ACK | tcp::PSH, old, &[7u8; 1460], None);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, h.guest_seq);

    // A small segment with FIN: ACKed at once.
    let seq = h.guest_seq;
    h.send(tcp::ACK | tcp::PSH | tcp::FIN, seq, b"bye", None);
    h.guest_seq = h.guest_seq.wrapping_add(4);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, h.guest_seq);
    assert!(h.sim.only().shut_wr);
    assert_eq!(h.sim.only().written.len(), 4 + 1460 + 3);
}

#[test]
fn a_small_segment_is_acked_at_once_when_the_guest_has_used_half_the_window() {
    let mut h = Harness::new(1500);
    h.sim.default_space = 1000;
    h.establish();
    h.data(&[1u8; 600]);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, h.guest_seq);
}

#[test]
fn a_request_response_round_trip_costs_one_frame_each_way_and_one_peek() {
    let mut h = Harness::new(1500);
    h.establish();
    let (peeks, reads) = (h.sim.peeks, h.sim.space_reads);
    for i in 0..50u8 {
        h.data(&[i]);
        assert!(
            h.take().is_empty(),
            "round {i}: the ACK waits for the answer"
        );
        h.sim.only().queue.push_back(i ^ 0xff);
        // The kernel reports a socket with room writable on every readiness event.
        h.socket_event(true, true);
        let out = h.take();
        assert_eq!(out.len(), 1, "round {i}: {out:?}");
        assert_eq!(
            (out[0].payload.as_slice(), out[0].ack),
            (&[i ^ 0xff][..], h.guest_seq)
        );
        h.guest_ack = h.guest_ack.wrapping_add(1);
    }
    h.ack();
    assert!(
        h.sim.only().queue.is_empty(),
        "every answer acknowledged and discarded"
    );
    assert_eq!(
        h.sim.peeks - peeks,
        50,
        "one peek per answer, none per request"
    );
    assert!(
        h.sim.space_reads - reads <= 2,
        "the send space is estimated, not read per segment: {} reads",
        h.sim.space_reads - reads
    );
    assert_eq!(h.sim.only().written, (0..50).collect::<Vec<u8>>());
}

/// A deadline whose reason went away must not stay the loop's next wake-up: short connections
/// and request/response traffic had woken slipway's timer once per exchange for nothing.
#[test]
fn deadlines_whose_reason_went_away_do_not_wake_the_loop() {
    let mut h = Harness::new(1500);
    h.establish();
    h.advance(Duration::ZERO); // the first sweep, due at once
    let idle = h.net.next_deadline();
    assert!(idle > h.now + Duration::from_millis(100), "{idle:?}");
    for i in 0..3u8 {
        h.data(&[i]);
        assert!(h.take().is_empty(), "the ACK waits for the answer");
        assert_eq!(
            h.net.next_deadline(),
            h.now + DELAYED_ACK,
            "the delayed ACK is due"
        );
        h.sim.only().queue.push_back(i);
        h.socket_event(true, true);
        assert_eq!(h.take().len(), 1, "the answer carries the ACK");
        // The answer is in flight: its retransmission timer, but no delayed ACK any more.
        assert!(h.net.next_deadline() > h.now + DELAYED_ACK);
        h.guest_ack = h.guest_ack.wrapping_add(1);
        h.ack();
        assert_eq!(
            h.net.next_deadline(),
            idle,
            "round {i}: all acknowledged, nothing is due before the idle sweep"
        );
    }
}

#[test]
fn a_guest_told_a_small_window_hears_when_the_socket_drains() {
    let mut h = Harness::new(1500);
    h.sim.default_space = 2000;
    h.establish();
    h.data(&[1u8; 1460]);
    let out = h.take();
    // (The guest's SYN offered window scaling: our windows are in units of 128 bytes.)
    assert_eq!(out.last().unwrap().window, 540 >> 7, "{out:?}");
    // The host application reads: room again, and the writable event says so.
    h.sim.only().send_space = 1 << 20;
    h.socket_event(false, true);
    h.net.end_of_batch(h.now, &mut h.sim);
    let out = h.take();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(u32::from(out[0].window) << 7, 1 << 20);
}
