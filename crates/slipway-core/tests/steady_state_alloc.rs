//! No allocation per packet on the TCP data path (ARCHITECTURE.md D4, issue 3): once a flow is
//! established and the tables and queues have grown to their working size, moving data both
//! ways — guest segments written to the host socket, host bytes peeked into segments for the
//! guest, ACKs both ways, the TX queue filled and cleared — allocates nothing.
//!
//! A counting global allocator counts allocations made by this thread while counting is on;
//! counting is on only around the core's own calls, and the simulated host socket below never
//! allocates on these paths (its buffers are reserved up front), so every counted allocation is
//! the core's.
//!
//! With SACK the guest also loses one host segment in eight and reports the rest in SACK
//! blocks: the scoreboard and the resending of holes allocate nothing either.

use slipway_core::flows::{ConnectProgress, HostSockets, SocketRef, TcpTarget};
use slipway_core::{Network, NetworkConfig};
use slipway_wire::tcp::{self, SackBlocks, SynOptions, TcpHeader, TcpSegment};
use slipway_wire::{EthernetFrame, Ipv4Packet};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is passed straight to the system allocator; counting only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f` with allocations counted; returns its result and the count.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    COUNT.with(|c| c.set(0));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    (r, COUNT.with(Cell::get))
}

const GUEST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 2);
const ALIAS: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 254);

/// One host TCP socket whose buffers never grow.
struct Sim {
    /// Host → guest bytes not yet discarded (capacity reserved).
    queue: VecDeque<u8>,
    written: u64,
    send_space: usize,
}

impl HostSockets for Sim {
    fn tcp_connect(&mut self, _: SocketRef, _: TcpTarget) -> io::Result<ConnectProgress> {
        Ok(ConnectProgress::Connected)
    }
    fn tcp_connect_result(&mut self, _: SocketRef) -> io::Result<()> {
        Ok(())
    }
    fn tcp_write(&mut self, _: SocketRef, data: &[u8]) -> io::Result<usize> {
        // The host application reads everything at once: the space stays the same.
        self.written += data.len() as u64;
        Ok(data.len().min(self.send_space))
    }
    fn tcp_peek(
        &mut self,
        _: SocketRef,
        offset: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> io::Result<usize> {
        if offset >= self.queue.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        let mut it = self.queue.iter().skip(offset);
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
    fn tcp_discard(&mut self, _: SocketRef, len: usize) -> io::Result<()> {
        self.queue.drain(..len);
        Ok(())
    }
    fn tcp_send_space(&mut self, _: SocketRef) -> usize {
        self.send_space
    }
    fn tcp_shutdown_write(&mut self, _: SocketRef) {}
    fn tcp_close(&mut self, _: SocketRef, _: bool) {}
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
}

/// The guest's side of one flow, building frames into a fixed buffer.
struct Guest {
    seq: u32,
    ack: u32,
    frame: [u8; 2048],
    /// SACK negotiated: lose one host segment in eight (its first copy) and SACK what follows.
    sack: bool,
    /// The host's initial sequence number.
    irs: u32,
    /// Out-of-order data held (one block).
    ooo: Option<(u32, u32)>,
    /// Host segments the guest lost and then got again.
    resent: u64,
    lost: Option<u32>,
}

impl Guest {
    /// Build a segment; returns the frame's length.
    fn segment(&mut self, flags: u8, payload: &[u8], syn: Option<SynOptions>) -> usize {
        let h = TcpHeader {
            src_port: 40000,
            dst_port: 8080,
            seq: self.seq,
            ack: if flags & tcp::ACK != 0 { self.ack } else { 0 },
            flags,
            window: 65535,
            sack: match self.ooo {
                Some(block) if self.sack && syn.is_none() => SackBlocks::from_slice(&[block]),
                _ => SackBlocks::EMPTY,
            },
            syn_options: syn,
        };
        let len = 34 + h.header_len() + payload.len();
        let f = &mut self.frame[..len];
        f[34 + h.header_len()..].copy_from_slice(payload);
        slipway_core::frames::write_tcp_v4(
            f,
            NetworkConfig::default().gateway_mac,
            GUEST_MAC,
            GUEST_IP,
            ALIAS,
            &h,
            1,
        );
        len
    }
}

/// Read what the network sent: advance the guest's ack over in-order data; returns
/// (segments, payload bytes). Allocates nothing.
fn absorb(net: &Network, guest: &mut Guest) -> (usize, usize) {
    let (mut segs, mut bytes) = (0, 0);
    for (_, frame) in net.tx().frames() {
        let eth = EthernetFrame::new_checked(frame).expect("ethernet");
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            continue;
        };
        let Ok(seg) = TcpSegment::new_checked(ip.payload()) else {
            continue;
        };
        segs += 1;
        let len = seg.payload().len();
        if seg.flags() & tcp::SYN != 0 {
            guest.ack = seg.seq().wrapping_add(1);
            guest.irs = seg.seq();
            continue;
        }
        let (start, end) = (seg.seq(), seg.seq().wrapping_add(len as u32));
        if len == 0 || end.wrapping_sub(guest.ack) as i32 <= 0 {
            continue;
        }
        if guest.sack && guest.lost == Some(start) {
            guest.lost = None;
            guest.resent += 1;
        } else if guest.sack && (start.wrapping_sub(guest.irs) / 1460) % 8 == 2 {
            guest.lost = Some(start);
            continue;
        }
        if start == guest.ack {
            guest.ack = end;
            bytes += len;
            if let Some((s, e)) = guest.ooo.take() {
                if s == guest.ack {
                    bytes += e.wrapping_sub(s) as usize;
                    guest.ack = e;
                } else {
                    guest.ooo = Some((s, e));
                }
            }
        } else if (start.wrapping_sub(guest.ack) as i32) > 0 {
            guest.ooo = match guest.ooo {
                Some((s, e)) if e == start => Some((s, end)),
                Some(block) => Some(block),
                None => Some((start, end)),
            };
        }
    }
    (segs, bytes)
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = counted(|| std::hint::black_box(vec![1u8; 100]));
    assert_eq!(v.len(), 100);
    assert!(n >= 1, "the counting allocator missed an allocation");
    let (_, n) = counted(|| ());
    assert_eq!(n, 0);
}

#[test]
fn the_established_data_path_allocates_nothing_per_packet() {
    steady_state(false);
}

#[test]
fn sack_recovery_allocates_nothing_per_packet() {
    let resent = steady_state(true);
    assert!(resent >= 1900, "holes resent: {resent}");
}

/// 2000 rounds of data both ways, counted; returns how many lost host segments were resent.
fn steady_state(sack: bool) -> u64 {
    let mut net = Network::new(NetworkConfig::default(), 7);
    let port = net.port_up().unwrap();
    let mut sim = Sim {
        queue: VecDeque::with_capacity(1 << 20),
        written: 0,
        send_space: 1 << 20,
    };
    let mut guest = Guest {
        seq: 1000,
        ack: 0,
        frame: [0; 2048],
        sack,
        irs: 0,
        ooo: None,
        resent: 0,
        lost: None,
    };
    let mut now = Duration::from_secs(1);
    let id = SocketRef {
        kind: slipway_core::flows::FlowKind::Tcp,
        index: 0,
    };
    // Handshake.
    let n = guest.segment(
        tcp::SYN,
        &[],
        Some(SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: sack,
        }),
    );
    net.on_guest_frame(now, port, &guest.frame[..n], &mut sim);
    net.end_of_batch(now, &mut sim);
    guest.seq += 1;
    absorb(&net, &mut guest);
    net.clear_tx();
    net.after_flush(now, &mut sim);
    let n = guest.segment(tcp::ACK, &[], None);
    net.on_guest_frame(now, port, &guest.frame[..n], &mut sim);
    net.end_of_batch(now, &mut sim);
    net.clear_tx();
    net.after_flush(now, &mut sim);
    assert_eq!(net.tcp().flow_count(), 1);

    let payload = [0x5au8; 1460];
    let host_chunk = [0xa5u8; 8 * 1460];
    // One round: the guest sends a full segment, the host sends 8 segments' worth, the guest
    // acknowledges what arrived.
    let round =
        |net: &mut Network, sim: &mut Sim, guest: &mut Guest, now: Duration, count: bool| {
            let work = |net: &mut Network, sim: &mut Sim, guest: &mut Guest| {
                let n = guest.segment(tcp::ACK | tcp::PSH, &payload, None);
                net.on_guest_frame(now, port, &guest.frame[..n], sim);
                guest.seq = guest.seq.wrapping_add(payload.len() as u32);
                net.end_of_batch(now, sim);
                absorb(net, guest);
                net.clear_tx();
                net.after_flush(now, sim);
                sim.queue.extend(host_chunk.iter().copied());
                net.on_socket_event(now, id, true, true, sim);
                net.end_of_batch(now, sim);
                let (_, mut bytes) = absorb(net, guest);
                net.clear_tx();
                net.after_flush(now, sim);
                let n = guest.segment(tcp::ACK, &[], None);
                net.on_guest_frame(now, port, &guest.frame[..n], sim);
                net.end_of_batch(now, sim);
                // (With SACK, the answer to that ACK resends the hole.)
                bytes += absorb(net, guest).1;
                net.clear_tx();
                net.after_flush(now, sim);
                bytes
            };
            if count {
                counted(|| work(net, sim, guest))
            } else {
                (work(net, sim, guest), 0)
            }
        };
    // Warm-up: tables, queues and scratch buffers reach their working size.
    for i in 0..200 {
        round(
            &mut net,
            &mut sim,
            &mut guest,
            now + Duration::from_micros(i),
            false,
        );
    }
    now += Duration::from_millis(1);
    let mut allocations = 0;
    let mut to_guest = 0;
    for i in 0..2000 {
        let (bytes, n) = round(
            &mut net,
            &mut sim,
            &mut guest,
            now + Duration::from_micros(i),
            true,
        );
        allocations += n;
        to_guest += bytes;
    }
    assert!(
        to_guest >= 2000 * 8 * 1460 * 9 / 10,
        "host data reached the guest: {to_guest} bytes"
    );
    assert!(
        sim.written >= 2200 * 1460,
        "guest data reached the host: {} bytes",
        sim.written
    );
    assert_eq!(
        allocations, 0,
        "allocations on the steady-state data path in 2000 rounds"
    );
    guest.resent
}
