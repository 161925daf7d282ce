//! TCP by translation (ARCHITECTURE.md D1, TCP.md): each guest connection maps onto one host
//! kernel socket; slipway keeps only sequence arithmetic, never a copy of the byte stream.
//!
//! Theory of operation:
//! - Guest SYN → a non-blocking `connect()`. Success → SYN-ACK (MSS from the MTU, window scaling
//!   when the guest offers it). Refused → RST; unreachable or timed out → ICMP unreachable, so the
//!   guest's application sees the right error at once. Pending connects never block other flows.
//! - Guest → host: in-order payload is written to the socket; only what the kernel accepted is
//!   ACKed, and the advertised window is the free space of the socket's send buffer, so
//!   backpressure reaches the guest and slipway buffers nothing. Gaps get a duplicate ACK; the
//!   guest's own TCP retransmits.
//! - Host → guest: received data stays in the kernel socket until the guest ACKs it. It is peeked
//!   (scatter, straight into the payload areas of frames in the TX arena) from offset
//!   `snd_nxt - snd_una`, within the guest's window, and discarded when ACKed. The window is taken
//!   only from ACKs not older than the last one it came from (RFC 9293 SND.WL1/WL2), so a
//!   reordered ACK cannot reopen a window the guest has since shrunk. A closed window is probed
//!   on the retransmission timer, backing off; only probes left unanswered count towards the
//!   retry limit, so a receiver that answers is never reset for keeping its window closed.
//! - Loss without SACK (the guest did not offer it): three duplicate ACKs or a retransmission
//!   timeout rewind `snd_nxt` to `snd_una` (the socket's receive queue is the retransmission
//!   buffer) and the resend goes back N: the whole window again, where an ACK that jumps ahead
//!   (the guest kept what followed the hole) moves `snd_nxt` with it. A rewind sets a recovery
//!   point (RFC 6582 `recover` = `snd_max`): the duplicate ACKs that follow it start no second
//!   fast retransmit until an ACK passes that point, so one loss costs one resend of the window.
//!   A partial ACK (below `recover`) once the resend is done means the segment it points at was
//!   lost again: that one segment is resent at once (RFC 6582 §3.2 step 3; by the hole path
//!   below, with an empty scoreboard). Anything else lost again is left to the retransmission
//!   timer (backed off, Karn: no RTT sample from resent data).
//! - Loss with SACK (RFC 2018, offered in our SYN-ACK when the guest's SYN offers it, and in our
//!   SYN of a forward, kept if the guest's SYN-ACK offers it):
//!   - What is SACKed: each ACK's blocks (at most 4) are checked against what was sent — a block
//!     that is empty, reversed or ends beyond `snd_max` is ignored and counted
//!     (`tcp_bad_sack_block`); one at or below `snd_una` (old, or D-SACK) is ignored; one
//!     reaching below `snd_una` is cut there. The rest merge into the flow's scoreboard: sorted,
//!     disjoint ranges above `snd_una`, trimmed as the cumulative ACK moves.
//!   - What is resent when: nothing moves `snd_nxt` back. An unSACKed range ("hole") counts as
//!     lost when more than 2 segments' worth is SACKed above it (RFC 6675 IsLost), and the one
//!     at `snd_una` also after three duplicate ACKs, or after a partial ACK with nothing SACKed
//!     above it. Lost holes are resent in order, each once (`rxt_nxt`, HighRxt), peeking at
//!     their offset in the socket, before any new data, on every ACK that finds more; a resend
//!     needs no window room (its bytes were inside the window already).
//!   - A resend lost again: `rxt_fence` is `snd_max` when the last hole was resent; a SACK above
//!     it reports data sent later, so holes below `rxt_nxt` still missing were lost again and
//!     are resent (RFC 6675 §5's lost-retransmission rule, by transmission order). If nothing
//!     arrives at all, the probe timer (2 × SRTT, at least 2 ms, doubling, at most
//!     [`MAX_PROBES`] in a row without progress, none after a timeout until the guest answers):
//!     every hole below the highest SACK is taken as lost and resent (RACK-like, RFC 8985, by
//!     order instead of time); with none, the last segment (and the FIN) is sent again as a
//!     tail loss probe, whose answer shows the guest's SACKs.
//!   - The retransmission timeout clears the scoreboard (the guest may have thrown SACKed data
//!     away, RFC 2018 §8) and goes back N as without SACK. An ACK that stops at the start of
//!     SACKed data (the guest reneged) clears it too; the segment at `snd_una` is then lost.
//!   - Memory: [`SCOREBOARD_RANGES`] ranges in a fixed array per flow (512 bytes); when full,
//!     the highest range is forgotten (its bytes may be resent needlessly, never left unsent).
//!     Nothing is allocated per packet; there is no congestion control toward the guest (a
//!     local link): holes go out at once, new data as the guest's window allows.
//! - Guest FIN → `shutdown(SHUT_WR)` once all data before it was written; host EOF → FIN after
//!   all data was sent, and after a rewind only once the resend has reached the end again (at the
//!   same sequence number: it is fixed when first sent). Both FINs done and ours acknowledged →
//!   the socket is closed and the flow freed (the guest keeps TIME_WAIT). Guest RST → abortive
//!   close; host error → RST to the guest.
//! - ACKs for guest data are sent once per flow per batch ([`TcpEngine::flush_acks`]). The ACK
//!   of a small segment (less than one MSS since our last ACK, all of it written, a window far
//!   from full) waits up to [`DELAYED_ACK`] for host data to ride on, as a request's answer
//!   usually does: a round trip then costs the guest one frame, not two. (pasta delays its ACKs
//!   up to 10 ms, BSD stacks and so slirp up to 200 ms; one millisecond bounds what a guest that
//!   waits for the ACK — Nagle — can lose.)
//! - Port forwards are the mirror image ([`TcpEngine::accept_forwarded`]): a client accepted on a
//!   host listener becomes a flow that starts with our SYN to the guest, from the client's address
//!   as the guest sees it. The guest's SYN-ACK establishes it (its MSS and window scale are taken
//!   from there), and a repeat of it (our ACK was lost) is ACKed again; its RST, or no answer
//!   after [`FORWARD_SYN_RETRIES`] SYNs, resets the client.
//!
//! Limits (see [`TcpLimits`]): flows per network, pending connects, connect timeout, RTO bounds,
//! retransmission attempts, segments per peek, clients accepted per listener wake-up; window
//! scale 7 (windows up to 8 MiB); [`SCOREBOARD_RANGES`] SACKed ranges and [`MAX_PROBES`] probes
//! per flow.

use super::{ConnectProgress, FlowKind, HostSockets, SocketRef, TcpTarget};
use crate::config::Mac;
use crate::counters::{Counters, DropReason};
use crate::frames::{self, Unreachable};
use crate::hash::FastMap;
use crate::offload::PartialCsum;
use crate::switch::Switch;
use crate::tx::TxQueue;
use slipway_wire::tcp::{self, SackBlocks, SynOptions, TcpHeader, TcpSegment};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::IpAddr;
use std::time::Duration;

/// Bounds of the TCP engine.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub max_flows: usize,
    pub max_pending_connects: usize,
    pub connect_timeout: Duration,
    pub rto_min: Duration,
    pub rto_max: Duration,
    /// Retransmissions, or window probes in a row the guest did not answer, before a flow is
    /// reset.
    pub max_retries: u8,
    /// An established flow with no traffic either way for this long is reset.
    pub idle_timeout: Duration,
    /// A flow closed in one direction (FIN seen or sent) with no traffic for this long is reset.
    pub half_closed_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_flows: 65536,
            max_pending_connects: 8192,
            connect_timeout: Duration::from_secs(30),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(30),
            max_retries: 12,
            idle_timeout: Duration::from_secs(2 * 3600),
            half_closed_timeout: Duration::from_secs(300),
        }
    }
}

/// Our window scale (RFC 7323): windows up to 65535 << 7 ≈ 8 MiB.
pub const OUR_WINDOW_SCALE: u8 = 7;
/// Segments filled by one scatter peek.
pub const MAX_SEGMENTS_PER_PEEK: usize = 32;
/// Granularity of the retransmission, connect and window-poll timers when many flows have one.
pub const TIMER_TICK: Duration = Duration::from_millis(5);
/// Up to this many flows with timers, the earliest deadline is recomputed exactly after every
/// batch ([`TcpEngine::refresh_deadline`]); above, it is kept lazily with [`TIMER_TICK`].
pub const EXACT_TIMER_SCAN: usize = 64;
/// How often a flow whose advertised window is closed checks the socket for space.
pub const WINDOW_POLL: Duration = Duration::from_millis(5);
/// What one write to a host socket is assumed to cost its send buffer beyond its payload (the
/// kernel counts buffer memory, not bytes; a small write's buffer is about 1 KiB).
const WRITE_OVERHEAD: usize = 4096;
/// How long the ACK of a small guest segment may wait for host data to ride on.
pub const DELAYED_ACK: Duration = Duration::from_millis(1);
/// The MSS assumed when a guest SYN carries none (RFC 9293).
const DEFAULT_GUEST_MSS: u16 = 536;
/// SYNs sent to a guest for a forwarded connection before the client is reset (with the RTO
/// doubling from 200 ms: about 12 s).
pub const FORWARD_SYN_RETRIES: u8 = 6;
/// Clients accepted from one forward's listener per wake-up before other work gets a turn.
pub const ACCEPT_BUDGET: usize = 64;
/// SACKed ranges remembered per flow (the scoreboard). When full, the highest range is
/// forgotten: its bytes may be resent needlessly, never left unsent.
pub const SCOREBOARD_RANGES: usize = 64;
/// Duplicate-ACK threshold (RFC 5681) in SACK terms (RFC 6675 IsLost): an unSACKed byte is lost
/// once more than this many segments' worth of bytes above it are SACKed.
const SACK_LOST_SEGMENTS: u32 = 2;
/// Probe timeouts in a row without progress before only the retransmission timer is left.
const MAX_PROBES: u8 = 4;
/// The least probe timeout (twice the smoothed RTT otherwise).
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub guest_ip: IpAddr,
    pub guest_port: u16,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Guest SYN received, host connect in progress.
    Connecting,
    /// A forwarded client was accepted and our SYN sent to the guest; waiting for its SYN-ACK.
    SynSent,
    /// Host connected, SYN-ACK sent, waiting for the guest's ACK.
    SynAckSent,
    Established,
}

#[derive(Debug)]
struct TcpFlow {
    key: FlowKey,
    guest_mac: Mac,
    state: State,
    guest_isn: u32,
    /// Next byte expected from the guest.
    rcv_nxt: u32,
    our_isn: u32,
    /// Oldest byte the guest has not acknowledged.
    snd_una: u32,
    /// Next byte to send.
    snd_nxt: u32,
    /// Highest sequence sent so far (snd_nxt may be rewound below it).
    snd_max: u32,
    guest_wnd: u32,
    /// Sequence and acknowledgment numbers of the guest segment `guest_wnd` was last taken from
    /// (RFC 9293 SND.WL1, SND.WL2).
    snd_wl1: u32,
    snd_wl2: u32,
    guest_wscale: u8,
    our_wscale: u8,
    mss: u16,
    /// Guest FIN received and passed on as shutdown(SHUT_WR).
    guest_fin: bool,
    /// Our FIN is in flight (sent since the last rewind).
    fin_sent: bool,
    /// The sequence number of our FIN, fixed once the host's stream ended and every byte before
    /// it was sent; kept across rewinds so a late ACK of it is recognised.
    fin_seq: Option<u32>,
    fin_acked: bool,
    dup_acks: u8,
    /// Set by a rewind to `snd_max` at that moment: until an ACK passes it, duplicate ACKs start
    /// no further fast retransmit (RFC 6582 `recover`). `None`: not recovering.
    recover: Option<u32>,
    /// Both SYNs carried SACK-permitted (for a forward, until the guest's SYN-ACK: we offer it).
    sack_ok: bool,
    /// What the guest SACKed above `snd_una`.
    scoreboard: Scoreboard,
    /// Holes below this were retransmitted since the last loss detection (RFC 6675 HighRxt);
    /// moved back to `snd_una` when a retransmission is found lost.
    rxt_nxt: u32,
    /// `snd_max` when a hole was last retransmitted: a SACK beyond it reports data sent after
    /// that retransmission, so holes below `rxt_nxt` still unSACKed were lost again.
    rxt_fence: u32,
    /// UnSACKed bytes below this count as lost whatever is SACKed above them (set by three
    /// duplicate ACKs and by the probe timer).
    lost_below: u32,
    /// Probe timer (tail loss probe, lost retransmission), SACK flows only: fires when data is
    /// in flight and nothing was sent or acknowledged for twice the smoothed RTT.
    probe_at: Option<Duration>,
    /// Probes in a row without progress (bounded by [`MAX_PROBES`]).
    probes: u8,
    retries: u8,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    /// (sequence, time) of one segment being timed (Karn: cleared on retransmission).
    rtt_probe: Option<(u32, Duration)>,
    deadline: Option<Duration>,
    in_timer_list: bool,
    ack_owed: bool,
    /// Guest bytes written to the socket since our last ACK (of any kind) went out.
    rcv_unacked: u32,
    /// The owed ACK waits in [`TcpEngine::delack`] for host data to carry it.
    delack_pending: bool,
    in_push_list: bool,
    last_window_sent: u32,
    /// The socket's free send space as last read, less what was written since (charged with
    /// [`WRITE_OVERHEAD`] each): a lower bound of the real space, so advertising it never
    /// promises room the kernel lacks. `None`: read it again (at start, when it fell below half
    /// of the value read, after a refused write, and whenever a guest may be waiting for room).
    space: Cell<Option<u32>>,
    /// The value `space` was last read as.
    space_read: Cell<u32>,
    /// The host socket refused part of the guest's data: when it becomes writable again, the
    /// guest gets a window update and duplicate ACKs so it retransmits at once.
    write_blocked: bool,
    /// Last time a segment arrived from the guest or data was sent to it.
    last_activity: Duration,
    /// The host peer closed its side (the event loop saw a read hang-up): peek until end of
    /// stream instead of stopping at a short read.
    host_rdhup: bool,
    /// A peek came back short at `snd_max`: the socket holds nothing more to send until its
    /// next readable event (edge-triggered readiness reports every arrival after the peek).
    /// True from the start: a socket is registered before anything can arrive on it, or (an
    /// accepted one) reports what it already holds when registered.
    host_drained: bool,
    ident: u16,
    opened: Duration,
    bytes_from_guest: u64,
    bytes_to_guest: u64,
}

impl TcpFlow {
    /// A new flow in `state`; sequence numbers on our side start at `our_isn`.
    fn new(
        key: FlowKey,
        guest_mac: Mac,
        state: State,
        our_isn: u32,
        now: Duration,
        rto: Duration,
    ) -> Self {
        Self {
            key,
            guest_mac,
            state,
            guest_isn: 0,
            rcv_nxt: 0,
            our_isn,
            snd_una: our_isn,
            snd_nxt: our_isn.wrapping_add(1),
            snd_max: our_isn.wrapping_add(1),
            guest_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            guest_wscale: 0,
            our_wscale: 0,
            mss: DEFAULT_GUEST_MSS,
            guest_fin: false,
            fin_sent: false,
            fin_seq: None,
            fin_acked: false,
            dup_acks: 0,
            recover: None,
            sack_ok: false,
            scoreboard: Scoreboard::default(),
            rxt_nxt: our_isn,
            rxt_fence: our_isn,
            lost_below: our_isn,
            probe_at: None,
            probes: 0,
            retries: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            rto,
            rtt_probe: None,
            deadline: None,
            in_timer_list: false,
            ack_owed: false,
            rcv_unacked: 0,
            delack_pending: false,
            in_push_list: false,
            last_window_sent: 0,
            space: Cell::new(None),
            space_read: Cell::new(0),
            write_blocked: false,
            last_activity: now,
            host_rdhup: false,
            host_drained: true,
            ident: 0,
            opened: now,
            bytes_from_guest: 0,
            bytes_to_guest: 0,
        }
    }

    /// Take the guest's MSS and window scale from its SYN or SYN-ACK.
    fn set_guest_syn_options(&mut self, opts: SynOptions, our_max_mss: u16) {
        (self.guest_wscale, self.our_wscale) = match opts.window_scale {
            Some(ws) => (ws, OUR_WINDOW_SCALE),
            None => (0, 0),
        };
        self.mss = opts.mss.unwrap_or(DEFAULT_GUEST_MSS).clamp(64, our_max_mss);
        self.sack_ok = opts.sack_permitted;
    }

    /// The earliest of the retransmission (or connect, or window poll) timer and the probe timer.
    fn timer(&self) -> Option<Duration> {
        match (self.deadline, self.probe_at) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    /// Where the host's data ends in sequence space (our FIN, once known, else `snd_max`).
    fn data_end(&self) -> u32 {
        self.fin_seq.unwrap_or(self.snd_max)
    }

    /// Holes below this are lost (RFC 6675 IsLost, or marked by duplicate ACKs or a probe).
    fn lost_edge(&self) -> u32 {
        let dupthresh = self
            .scoreboard
            .lost_edge(SACK_LOST_SEGMENTS * u32::from(self.mss));
        let edge = match dupthresh {
            Some(e) if seq_lt(self.lost_below, e) => e,
            _ => self.lost_below,
        };
        if seq_lt(self.data_end(), edge) {
            self.data_end()
        } else {
            edge
        }
    }

    /// Arm the probe timer `2 × SRTT` (backed off per probe) from now, if it applies.
    fn arm_probe(&mut self, now: Duration) {
        self.probe_at = None;
        if !self.sack_ok || self.in_flight() == 0 || self.probes >= MAX_PROBES {
            return;
        }
        if let Some(srtt) = self.srtt {
            let pto = (srtt * 2).max(MIN_PROBE_TIMEOUT) * (1 << self.probes);
            self.probe_at = Some(now + pto.min(self.rto));
        }
    }

    fn in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// `n` bytes were written to the socket: take them (and their buffer overhead) off the
    /// space estimate, or drop it once it fell below half of what was read.
    fn spend_space(&self, n: usize) {
        if let Some(space) = self.space.get() {
            let cost = n.saturating_add(n / 4).saturating_add(WRITE_OVERHEAD);
            let left = space.saturating_sub(cost.min(u32::MAX as usize) as u32);
            let keep = left > 0 && left >= self.space_read.get() / 2;
            self.space.set(keep.then_some(left));
        }
    }

    /// The owed ACK may wait [`DELAYED_ACK`] for host data to carry it: an established flow got
    /// less than one segment of new data since our last ACK, wrote all of it, has not seen the
    /// guest's FIN, and has used at most half of the window we last told it. Everything else (a
    /// full segment, a retransmission, a window probe, a gap, a FIN) is ACKed at the end of the
    /// batch.
    fn may_delay_ack(&self) -> bool {
        self.state == State::Established
            && !self.guest_fin
            && !self.write_blocked
            && self.rcv_unacked > 0
            && self.rcv_unacked < u32::from(self.mss)
            && self.rcv_unacked <= self.last_window_sent / 2
    }
    /// Bytes already sent past `snd_una` that are still in the socket (excludes our FIN).
    fn data_offset(&self) -> usize {
        let mut n = self.snd_nxt.wrapping_sub(self.snd_una);
        if self.fin_seq.is_some_and(|fin| seq_lt(fin, self.snd_nxt)) {
            n = n.saturating_sub(1);
        }
        n as usize
    }
}

#[inline]
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// The SACK scoreboard of one flow: disjoint, non-adjacent ranges `[start, end)` of sequence
/// space the guest reported holding, sorted, all above `snd_una` and at most `snd_max`. A fixed
/// array: at most [`SCOREBOARD_RANGES`], whatever the guest sends.
#[derive(Debug, Clone, Copy)]
struct Scoreboard {
    ranges: [(u32, u32); SCOREBOARD_RANGES],
    len: usize,
}

impl Default for Scoreboard {
    fn default() -> Self {
        Self {
            ranges: [(0, 0); SCOREBOARD_RANGES],
            len: 0,
        }
    }
}

impl Scoreboard {
    fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges[..self.len]
    }
    fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    /// The highest SACKed sequence (RFC 6675 "HighSACK" + 1), if any.
    fn high(&self) -> Option<u32> {
        self.ranges().last().map(|r| r.1)
    }

    /// Forget what `ack` (the new `snd_una`) covers.
    fn acked(&mut self, ack: u32) {
        let drop = self
            .ranges()
            .iter()
            .take_while(|r| seq_le(r.1, ack))
            .count();
        self.ranges.copy_within(drop..self.len, 0);
        self.len -= drop;
        if let Some(first) = self.ranges[..self.len].first_mut() {
            if seq_lt(first.0, ack) {
                first.0 = ack;
            }
        }
    }

    /// Record `[start, end)` (already validated: non-empty, within the flow's window). Returns
    /// whether it SACKed anything new.
    fn add(&mut self, start: u32, end: u32) -> bool {
        // Ranges entirely before the new one (not touching it) stay; those overlapping or
        // touching merge into it; the rest follow.
        let before = self
            .ranges()
            .iter()
            .take_while(|r| seq_lt(r.1, start))
            .count();
        let mut merged = (start, end);
        let mut upto = before;
        while upto < self.len && seq_le(self.ranges[upto].0, end) {
            let r = self.ranges[upto];
            if seq_le(r.0, start) && seq_le(end, r.1) {
                return false; // nothing new
            }
            if seq_lt(r.0, merged.0) {
                merged.0 = r.0;
            }
            if seq_lt(merged.1, r.1) {
                merged.1 = r.1;
            }
            upto += 1;
        }
        let absorbed = upto - before;
        if absorbed == 0 && self.len == SCOREBOARD_RANGES {
            if before == self.len {
                return false; // above everything and no room: forget it
            }
            self.len -= 1; // forget the highest range to make room
        }
        // Replace `absorbed` ranges at `before` by the merged one.
        let tail = upto.min(self.len);
        if absorbed == 0 {
            self.ranges.copy_within(before..self.len, before + 1);
            self.len += 1;
        } else {
            self.ranges.copy_within(tail..self.len, before + 1);
            self.len -= absorbed - 1;
        }
        self.ranges[before] = merged;
        true
    }

    /// RFC 6675 IsLost as one edge: unSACKed bytes below the returned sequence have more than
    /// `threshold` bytes SACKed above them.
    fn lost_edge(&self, threshold: u32) -> Option<u32> {
        let mut above = 0u32;
        for r in self.ranges().iter().rev() {
            above = above.saturating_add(r.1.wrapping_sub(r.0));
            if above > threshold {
                return Some(r.0);
            }
        }
        None
    }

    /// The first unSACKed range `[s, e)` with `from <= s < limit`, cut at `limit`.
    fn next_hole(&self, from: u32, limit: u32) -> Option<(u32, u32)> {
        let mut s = from;
        for r in self.ranges() {
            if seq_le(r.1, s) {
                continue;
            }
            if seq_le(r.0, s) {
                s = r.1; // inside a SACKed range: skip it
                continue;
            }
            // r starts above s: [s, r.0) is a hole.
            let e = if seq_lt(limit, r.0) { limit } else { r.0 };
            return seq_lt(s, e).then_some((s, e));
        }
        seq_lt(s, limit).then_some((s, limit))
    }
}

/// Shared context of one call into the engine.
pub struct TcpCtx<'a> {
    pub now: Duration,
    pub tx: &'a mut TxQueue,
    pub switch: &'a Switch,
    pub counters: &'a mut Counters,
    pub gateway_mac: Mac,
    pub mtu: u16,
}

/// The TCP engine of one network.
pub struct TcpEngine {
    limits: TcpLimits,
    slots: Vec<Option<TcpFlow>>,
    free: Vec<u32>,
    by_key: FastMap<FlowKey, u32>,
    pending_connects: usize,
    timer_list: Vec<u32>,
    ack_list: Vec<u32>,
    /// Delayed ACKs in the order they were deferred, with when each is due (all wait
    /// [`DELAYED_ACK`], so the front is the earliest). Entries of flows that sent data meanwhile
    /// (the ACK rode on it) are skipped when they come due.
    delack: VecDeque<(u32, Duration)>,
    push_list: Vec<u32>,
    rng: u64,
    next_deadline: Option<Duration>,
}

/// A summary of one flow for the API and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFlowInfo {
    pub key: FlowKey,
    pub state: &'static str,
    /// Guest payload bytes written to the host socket.
    pub bytes_from_guest: u64,
    /// Host bytes the guest acknowledged.
    pub bytes_to_guest: u64,
    pub opened: Duration,
}

impl TcpEngine {
    pub fn new(limits: TcpLimits, seed: u64) -> Self {
        Self {
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: FastMap::default(),
            pending_connects: 0,
            timer_list: Vec::new(),
            ack_list: Vec::new(),
            delack: VecDeque::new(),
            push_list: Vec::new(),
            rng: seed | 1,
            next_deadline: None,
        }
    }

    pub fn flow_count(&self) -> usize {
        self.by_key.len()
    }

    /// Host connects in progress (bounded by [`TcpLimits::max_pending_connects`]).
    pub fn pending_connects(&self) -> usize {
        self.pending_connects
    }

    pub fn flows(&self) -> Vec<TcpFlowInfo> {
        self.slots
            .iter()
            .flatten()
            .map(|f| TcpFlowInfo {
                key: f.key,
                state: match f.state {
                    State::Connecting => "connecting",
                    State::SynSent => "syn_sent",
                    State::SynAckSent => "syn_ack_sent",
                    State::Established if f.guest_fin || f.fin_seq.is_some() => "closing",
                    State::Established => "established",
                },
                bytes_from_guest: f.bytes_from_guest,
                bytes_to_guest: f.bytes_to_guest,
                opened: f.opened,
            })
            .collect()
    }

    fn random(&mut self) -> u32 {
        // xorshift64*: deterministic for a given seed (tests), seeded randomly by the driver.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn sock(index: u32) -> SocketRef {
        SocketRef {
            kind: FlowKind::Tcp,
            index,
        }
    }

    /// Handle one TCP segment from a guest. `target` is where a new connection would go (the
    /// caller has applied address translation and egress policy: `None` = refused by policy).
    /// `ip_packet` is the whole IPv4 packet (quoted in ICMP errors).
    #[allow(clippy::too_many_arguments)]
    pub fn on_guest_segment(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        guest_mac: Mac,
        key: FlowKey,
        seg: &TcpSegment<'_>,
        target: Option<TcpTarget>,
    ) {
        let flags = seg.flags();
        if let Some(&index) = self.by_key.get(&key) {
            let is_new_syn = flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
            let same_isn = self.slots[index as usize]
                .as_ref()
                .is_some_and(|f| f.guest_isn == seg.seq());
            if is_new_syn && !same_isn {
                // The guest reuses the 4-tuple for a new connection: forget the old one.
                self.free_flow(sockets, index, true);
                ctx.counters.tcp_flows_closed += 1;
            } else {
                self.on_flow_segment(ctx, sockets, index, seg);
                return;
            }
        }
        if flags & tcp::RST != 0 {
            return;
        }
        if flags & (tcp::SYN | tcp::ACK) != tcp::SYN {
            // No flow: answer with RST so the guest stops (RFC 9293 §3.10.7.1).
            ctx.counters.drop(DropReason::TcpNoFlow);
            send_rst_for(ctx, guest_mac, key, seg);
            return;
        }
        let Some(target) = target else {
            ctx.counters.drop(DropReason::EgressDenied);
            send_rst_for(ctx, guest_mac, key, seg);
            return;
        };
        if self.by_key.len() >= self.limits.max_flows {
            ctx.counters.drop(DropReason::TcpFlowTableFull);
            send_rst_for(ctx, guest_mac, key, seg);
            return;
        }
        if self.pending_connects >= self.limits.max_pending_connects {
            // Drop silently: the guest retransmits its SYN once connects complete.
            ctx.counters.drop(DropReason::TcpPendingConnectsFull);
            return;
        }
        let our_isn = self.random();
        let mut flow = TcpFlow::new(
            key,
            guest_mac,
            State::Connecting,
            our_isn,
            ctx.now,
            self.limits.rto_min,
        );
        flow.guest_isn = seg.seq();
        flow.rcv_nxt = seg.seq().wrapping_add(1);
        flow.guest_wnd = u32::from(seg.window());
        flow.set_guest_syn_options(seg.syn_options(), our_max_mss(ctx.mtu, key.guest_ip));
        flow.deadline = Some(ctx.now + self.limits.connect_timeout);
        let index = self.alloc_slot();
        self.slots[index as usize] = Some(flow);
        self.by_key.insert(key, index);
        ctx.counters.tcp_flows_opened += 1;
        // A flow counts as a pending connect exactly while it is in state Connecting.
        self.pending_connects += 1;
        match sockets.tcp_connect(Self::sock(index), target) {
            Ok(ConnectProgress::Connected) => self.connected(ctx, sockets, index),
            Ok(ConnectProgress::InProgress) => self.arm(index),
            Err(e) => self.connect_failed(ctx, sockets, index, &e),
        }
    }

    /// A free slot of the flow table (still empty).
    fn alloc_slot(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Clients are waiting on the TCP forward `listener` to `guest`: accept up to
    /// [`ACCEPT_BUDGET`] of them, each a new flow that starts with our SYN to the guest from
    /// `visible(client)`, the address the guest sees. Returns how many were accepted; clients
    /// beyond the flow limit stay in the kernel's backlog (counted).
    #[allow(clippy::too_many_arguments)]
    pub fn accept_forwarded(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        listener: SocketRef,
        guest_mac: Mac,
        guest: (IpAddr, u16),
        visible: impl Fn(IpAddr, IpAddr) -> IpAddr,
    ) -> usize {
        let mut accepted = 0;
        for _ in 0..ACCEPT_BUDGET {
            if self.by_key.len() >= self.limits.max_flows {
                ctx.counters.drop(DropReason::TcpFlowTableFull);
                break;
            }
            let index = self.alloc_slot();
            let client = match sockets.tcp_accept(listener, Self::sock(index)) {
                Ok(c) => c,
                Err(e) => {
                    self.free.push(index);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        ctx.counters.drop(DropReason::ForwardAcceptFailed);
                    }
                    break;
                }
            };
            let key = FlowKey {
                guest_ip: guest.0,
                guest_port: guest.1,
                remote_ip: visible(client.ip(), guest.0),
                remote_port: client.port(),
            };
            if self.by_key.contains_key(&key) {
                // Two clients that look alike to the guest (127.0.0.1:P and [::1]:P).
                sockets.tcp_close(Self::sock(index), true);
                self.free.push(index);
                ctx.counters.drop(DropReason::ForwardClientClash);
                continue;
            }
            let our_isn = self.random();
            let mut flow = TcpFlow::new(
                key,
                guest_mac,
                State::SynSent,
                our_isn,
                ctx.now,
                self.limits.rto_min,
            );
            flow.mss = our_max_mss(ctx.mtu, key.guest_ip);
            flow.our_wscale = OUR_WINDOW_SCALE;
            // Offered; kept only if the guest's SYN-ACK offers it too.
            flow.sack_ok = true;
            flow.deadline = Some(ctx.now + flow.rto);
            let window = window_for(sockets, index, &flow);
            send_syn(ctx, &flow, window);
            self.slots[index as usize] = Some(flow);
            self.by_key.insert(key, index);
            ctx.counters.tcp_flows_opened += 1;
            ctx.counters.forwarded_connections += 1;
            self.arm(index);
            accepted += 1;
        }
        accepted
    }

    /// Refuse every client waiting on `listener` (its guest cannot be reached): each is reset.
    pub fn refuse_forwarded(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        listener: SocketRef,
    ) {
        for _ in 0..ACCEPT_BUDGET {
            let index = self.alloc_slot();
            let got = sockets.tcp_accept(listener, Self::sock(index));
            if got.is_ok() {
                sockets.tcp_close(Self::sock(index), true);
                ctx.counters.drop(DropReason::ForwardGuestUnreachable);
            }
            self.free.push(index);
            if got.is_err() {
                break;
            }
        }
    }

    /// The guest answered our SYN of a forwarded connection (or refused it).
    fn on_syn_sent_segment(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        seg: &TcpSegment<'_>,
    ) {
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        let flags = seg.flags();
        let acks_our_syn = flags & tcp::ACK != 0 && seg.ack() == f.our_isn.wrapping_add(1);
        if flags & tcp::RST != 0 {
            // RFC 9293 §3.10.7.3: in SYN-SENT a reset is acceptable if it acknowledges our SYN.
            if acks_our_syn {
                ctx.counters.drop(DropReason::ForwardRefusedByGuest);
                self.free_flow(sockets, index, true);
                ctx.counters.tcp_flows_closed += 1;
            }
            return;
        }
        if flags & tcp::ACK != 0 && !acks_our_syn {
            send_rst_for(ctx, f.guest_mac, f.key, seg);
            return;
        }
        if flags & tcp::SYN == 0 || !acks_our_syn {
            return; // (simultaneous open is not supported)
        }
        f.guest_isn = seg.seq();
        f.rcv_nxt = seg.seq().wrapping_add(1);
        f.set_guest_syn_options(seg.syn_options(), our_max_mss(ctx.mtu, f.key.guest_ip));
        // The window of a SYN is never scaled.
        f.guest_wnd = u32::from(seg.window());
        (f.snd_wl1, f.snd_wl2) = (seg.seq(), seg.ack());
        f.snd_una = seg.ack();
        f.state = State::Established;
        f.deadline = None;
        f.retries = 0;
        let window = window_for(sockets, index, f);
        f.last_window_sent = window;
        send_control(ctx, f, f.snd_nxt, tcp::ACK, window);
        // The client may have sent data (or closed) already.
        self.push(ctx, sockets, index);
    }

    fn connected(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets, index: u32) {
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        if f.state == State::Connecting {
            self.pending_connects = self.pending_connects.saturating_sub(1);
        }
        f.state = State::SynAckSent;
        f.deadline = Some(ctx.now + f.rto);
        let window = window_for(sockets, index, f);
        // The window of a SYN is never scaled.
        f.last_window_sent = window.min(65535);
        send_syn(ctx, f, window);
        self.arm(index);
    }

    fn connect_failed(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        e: &io::Error,
    ) {
        ctx.counters.drop(DropReason::TcpConnectFailed);
        if let Some(f) = self.slots[index as usize].as_ref() {
            match e.raw_os_error() {
                Some(libc_errno::ECONNREFUSED) | Some(libc_errno::ECONNRESET) | None => {
                    send_rst_to_syn(ctx, f)
                }
                Some(libc_errno::EACCES) | Some(libc_errno::EPERM) => {
                    send_unreachable(ctx, f, Unreachable::AdminProhibited)
                }
                Some(libc_errno::ENETUNREACH) => send_unreachable(ctx, f, Unreachable::Net),
                Some(_) => send_unreachable(ctx, f, Unreachable::Host),
            }
        }
        self.free_flow(sockets, index, false);
        ctx.counters.tcp_flows_closed += 1;
    }

    /// Readiness of a TCP host socket.
    pub fn on_socket_event(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        readable: bool,
        writable: bool,
    ) {
        let Some(f) = self.slots.get_mut(index as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        if readable {
            f.host_drained = false;
        }
        let f = &*f;
        match f.state {
            State::Connecting => {
                if !writable && !readable {
                    return;
                }
                match sockets.tcp_connect_result(Self::sock(index)) {
                    Ok(()) => self.connected(ctx, sockets, index),
                    Err(e) => self.connect_failed(ctx, sockets, index, &e),
                }
            }
            State::SynSent | State::SynAckSent => {}
            State::Established => {
                // Every readiness event of a socket with room reports it writable. Only a guest
                // that may be waiting for room needs the socket's free space read again: one
                // whose write was refused, or that was told less than two segments.
                if writable && (f.write_blocked || f.last_window_sent < 2 * u32::from(f.mss)) {
                    f.space.set(None);
                    let window = window_for(sockets, index, f);
                    if f.write_blocked && window > 0 {
                        // Space again after a refused write: a window update, then three
                        // duplicate ACKs so the guest fast-retransmits what was not written.
                        let f = self.slots[index as usize]
                            .as_mut()
                            .expect("flow checked above");
                        f.write_blocked = false;
                        f.last_window_sent = window;
                        for _ in 0..4 {
                            send_control(ctx, f, f.snd_nxt, tcp::ACK, window);
                        }
                    } else if window > f.last_window_sent {
                        // Send buffer space opened: tell a guest that saw a small window.
                        self.owe_ack(index);
                    }
                }
                if readable {
                    self.push(ctx, sockets, index);
                }
            }
        }
    }

    /// The host peer of flow `index` closed its side: its end of stream may be queued behind
    /// data (call before [`on_socket_event`](Self::on_socket_event) for the same event).
    pub fn on_socket_hangup(&mut self, index: u32) {
        if let Some(f) = self.slots.get_mut(index as usize).and_then(|s| s.as_mut()) {
            f.host_rdhup = true;
        }
    }

    fn on_flow_segment(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        seg: &TcpSegment<'_>,
    ) {
        let flags = seg.flags();
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        f.last_activity = ctx.now;
        if f.state == State::SynSent {
            self.on_syn_sent_segment(ctx, sockets, index, seg);
            return;
        }
        if flags & tcp::RST != 0 {
            // Accept a reset whose sequence is within what we could expect (RFC 5961 relaxed).
            let off = seg.seq().wrapping_sub(f.rcv_nxt);
            if off <= 65535u32 << f.our_wscale || f.state == State::SynAckSent {
                self.free_flow(sockets, index, true);
                ctx.counters.tcp_flows_closed += 1;
            }
            return;
        }
        if flags & tcp::SYN != 0 {
            if f.state == State::SynAckSent {
                // Retransmitted SYN: repeat our SYN-ACK.
                let window = window_for(sockets, index, f);
                send_syn(ctx, f, window);
            } else if f.state == State::Established && seg.seq() == f.guest_isn {
                // The guest repeats its side of the handshake because our ACK of it was lost
                // (a forward's guest in SYN-RECEIVED retransmits its SYN-ACK, and nothing else
                // may complete its handshake). RFC 9293 §3.10.7.4: a segment below the window is
                // answered with an ACK.
                self.owe_ack(index);
            }
            return;
        }
        if f.state == State::Connecting || flags & tcp::ACK == 0 {
            return;
        }
        let ack = seg.ack();
        if f.state == State::SynAckSent {
            if ack != f.our_isn.wrapping_add(1) {
                send_rst_for(ctx, f.guest_mac, f.key, seg);
                return;
            }
            f.state = State::Established;
            f.snd_una = ack;
            f.deadline = None;
            f.retries = 0;
            f.guest_wnd = u32::from(seg.window()) << f.guest_wscale;
            (f.snd_wl1, f.snd_wl2) = (seg.seq(), ack);
        } else {
            self.process_ack(ctx, sockets, index, seg);
        }
        self.process_data(ctx, sockets, index, seg);
        // The ACK may have opened the window, SACKed or rewound the stream (a socket found
        // empty at `snd_max` is not peeked again: `host_drained`).
        self.push(ctx, sockets, index);
        self.maybe_close(ctx, sockets, index);
    }

    fn process_ack(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        seg: &TcpSegment<'_>,
    ) {
        let rto_min = self.limits.rto_min;
        let rto_max = self.limits.rto_max;
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        let ack = seg.ack();
        let new_wnd = u32::from(seg.window()) << f.guest_wscale;
        let mut sacked_new = false;
        if f.sack_ok && f.state == State::Established {
            for &(left, right) in seg.sack_blocks().as_slice() {
                if !seq_lt(left, right) || seq_lt(f.snd_max, right) {
                    // Reversed, empty, or beyond what was sent: the guest is confused or lying.
                    ctx.counters.drop(DropReason::TcpBadSackBlock);
                } else if seq_lt(f.snd_una, right) {
                    // (Blocks at or below snd_una are old news or D-SACK: ignored.)
                    let left = if seq_lt(left, f.snd_una) {
                        f.snd_una
                    } else {
                        left
                    };
                    sacked_new |= f.scoreboard.add(left, right);
                }
            }
        }
        if f.in_flight() == 0 && f.guest_wnd == 0 && ack == f.snd_una {
            // We are probing a zero window and the guest answered: it is alive. Only probes
            // that go unanswered in a row count towards `max_retries` (RFC 1122 4.2.2.17: the
            // connection stays open as long as the receiver answers, however long its window
            // stays closed; the probes go on, backed off up to `rto_max`).
            f.retries = 0;
        }
        if seq_lt(f.snd_una, ack) && seq_le(ack, f.snd_max) {
            let mut acked = ack.wrapping_sub(f.snd_una);
            if !f.fin_acked && f.fin_seq.is_some_and(|fin| seq_lt(fin, ack)) {
                f.fin_acked = true;
                acked -= 1;
            }
            if acked > 0 {
                f.bytes_to_guest += u64::from(acked);
                if let Err(e) = sockets.tcp_discard(Self::sock(index), acked as usize) {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.host_error(ctx, sockets, index);
                        return;
                    }
                }
            }
            f.snd_una = ack;
            if seq_lt(f.snd_nxt, ack) {
                f.snd_nxt = ack;
            }
            f.scoreboard.acked(ack);
            f.probes = 0;
            // Keep the recovery marks inside the window (compared in sequence space, a mark
            // left 2 GiB behind would look ahead).
            for mark in [&mut f.rxt_nxt, &mut f.rxt_fence, &mut f.lost_below] {
                if seq_lt(*mark, ack) {
                    *mark = ack;
                }
            }
            if f.scoreboard.is_empty()
                && f.recover.is_some_and(|recover| seq_lt(ack, recover))
                && f.snd_nxt == f.snd_max
            {
                // A partial ACK, once everything was sent again, with nothing SACKed above it
                // (or no SACK at all): the segment at the new snd_una is lost too (RFC 6582
                // §3.2 step 3). It goes out by the hole path.
                f.lost_below = ack.wrapping_add(u32::from(f.mss));
            }
            if f.recover.is_some_and(|recover| seq_lt(recover, ack)) {
                // An ACK beyond all that was sent before the last rewind: the loss it answered
                // is repaired. (Strictly beyond: duplicate ACKs at exactly `recover` still come
                // from copies the resend delivered twice.) Partial ACKs below `recover` need
                // nothing more: the rewind resends everything from `snd_una` on, and `snd_nxt`
                // follows an ACK that jumps ahead; a resend that is lost again is the
                // retransmission timer's.
                f.recover = None;
            }
            f.dup_acks = 0;
            f.retries = 0;
            if let Some((probe_seq, sent_at)) = f.rtt_probe {
                if seq_lt(probe_seq, ack) {
                    update_rtt(f, ctx.now.saturating_sub(sent_at), rto_min, rto_max);
                    f.rtt_probe = None;
                }
            }
            f.deadline = (f.in_flight() > 0).then(|| ctx.now + f.rto);
        } else if ack == f.snd_una
            && seg.payload().is_empty()
            && seg.flags() & tcp::FIN == 0
            && new_wnd == f.guest_wnd
            && f.in_flight() > 0
        {
            f.dup_acks = f.dup_acks.saturating_add(1);
            // Fast retransmit: resend from the oldest unacknowledged byte, once per loss.
            // While recovering from a rewind, more duplicate ACKs are expected (the rest of
            // the old window arriving behind the hole, and the copies the resend itself
            // delivers twice); rewinding again for each three of them would resend the window
            // over and over (RFC 6582 §3.2: no fast retransmit until an ACK covers more than
            // `recover`).
            if f.dup_acks == 3 && f.recover.is_none() {
                if f.sack_ok && !f.scoreboard.is_empty() && f.snd_nxt == f.snd_max {
                    // SACK recovery: the segment at snd_una is lost; which others are is the
                    // scoreboard's to say (RFC 6675 §5). Holes are resent by `push`.
                    f.recover = Some(f.snd_max);
                    f.lost_below = f.snd_una.wrapping_add(u32::from(f.mss));
                    f.rxt_nxt = f.snd_una;
                } else {
                    rewind(f);
                }
            }
        }
        if f.scoreboard
            .ranges()
            .first()
            .is_some_and(|r| r.0 == f.snd_una)
        {
            // The guest acknowledges only up to data it SACKed: it threw that away (reneging,
            // RFC 2018 §8). Forget the scoreboard: the segment at snd_una is lost, the rest
            // fresh SACK blocks will tell. (`rxt_nxt` stays: resends in flight are not sent
            // again until the fence below says they were lost.)
            f.scoreboard.clear();
            f.lost_below = f.snd_una.wrapping_add(u32::from(f.mss));
            f.recover.get_or_insert(f.snd_max);
        }
        if sacked_new {
            f.probes = 0;
            if f.recover.is_none() && seq_lt(f.snd_una, f.lost_edge()) {
                // Enough SACKed above a hole to call it lost (RFC 6675 IsLost) before the third
                // duplicate ACK.
                f.recover = Some(f.snd_max);
                f.rxt_nxt = f.snd_una;
            }
            if f.scoreboard
                .high()
                .is_some_and(|high| seq_lt(f.rxt_fence, high))
                && seq_lt(f.snd_una, f.rxt_nxt)
            {
                // Data sent after the last hole was resent has arrived, yet holes below
                // `rxt_nxt` are still missing: those resends were lost. Resend them again.
                f.rxt_nxt = f.snd_una;
            }
        }
        if f.sack_ok && f.state == State::Established {
            f.arm_probe(ctx.now);
        }
        // RFC 9293 §3.10.7.4: take the window only from an ACK within what we sent
        // (SND.UNA =< SEG.ACK =< SND.NXT) that is not older than the one it was last taken from
        // (SND.WL1 < SEG.SEQ, or SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK). An ACK overtaken on
        // the link by a newer one carries the larger window of before the guest's buffer
        // filled; taking it would let us send beyond the right edge the guest advertised since.
        // Also taken (as Linux does): the window of any ACK newer than SND.WL2. A guest that
        // resends its own data sends old sequence numbers with its current ACK and window;
        // ignoring that window while the ACK moves `snd_una` on would move the right edge on
        // with it (`guest_wnd`, like SND.WND, counts from `snd_una`).
        let seq = seg.seq();
        let not_older = seq_lt(f.snd_wl1, seq)
            || (f.snd_wl1 == seq && seq_le(f.snd_wl2, ack))
            || seq_lt(f.snd_wl2, ack);
        if seq_le(f.snd_una, ack) && seq_le(ack, f.snd_max) && not_older {
            f.guest_wnd = new_wnd;
            (f.snd_wl1, f.snd_wl2) = (seq, ack);
        }
    }

    fn process_data(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
        seg: &TcpSegment<'_>,
    ) {
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        let payload = seg.payload();
        let seq = seg.seq();
        let fin = seg.flags() & tcp::FIN != 0;
        if payload.is_empty() && !fin {
            // A window probe or keep-alive (sequence below rcv_nxt) must be answered with our
            // current window, or a guest facing a zero window would wait for ever.
            if seq != f.rcv_nxt {
                self.owe_ack(index);
            }
            return;
        }
        let offset = f.rcv_nxt.wrapping_sub(seq) as i32;
        if offset < 0 {
            // A gap: one immediate duplicate ACK per out-of-order segment (RFC 5681 §4.2), with
            // the window unchanged so the guest counts it as a duplicate and fast-retransmits.
            ctx.counters.drop(DropReason::TcpOutOfWindow);
            send_control(ctx, f, f.snd_nxt, tcp::ACK, f.last_window_sent);
            return;
        }
        let offset = offset as usize;
        let mut all_data_in = offset >= payload.len();
        if !all_data_in && !f.guest_fin {
            let data = &payload[offset..];
            match sockets.tcp_write(Self::sock(index), data) {
                Ok(n) => {
                    f.rcv_nxt = f.rcv_nxt.wrapping_add(n as u32);
                    f.rcv_unacked = f.rcv_unacked.saturating_add(n as u32);
                    f.bytes_from_guest += n as u64;
                    all_data_in = n == data.len();
                    f.write_blocked |= !all_data_in;
                    if all_data_in {
                        f.spend_space(n);
                    } else {
                        f.space.set(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    f.write_blocked = true;
                    f.space.set(None);
                }
                Err(_) => {
                    self.host_error(ctx, sockets, index);
                    return;
                }
            }
        }
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        if fin && all_data_in && !f.guest_fin && seq.wrapping_add(payload.len() as u32) == f.rcv_nxt
        {
            f.rcv_nxt = f.rcv_nxt.wrapping_add(1);
            f.guest_fin = true;
            sockets.tcp_shutdown_write(Self::sock(index));
        }
        self.owe_ack(index);
    }

    /// Send host data the guest's window allows, then our FIN once the host side ended. With
    /// SACK, lost holes go first.
    fn push(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets, index: u32) {
        if self.retransmit_holes(ctx, sockets, index).is_none() {
            return;
        }
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        if f.state != State::Established || f.fin_sent || f.fin_acked {
            return;
        }
        let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
            return;
        };
        let mss = usize::from(f.mss);
        let mut window_field = None;
        // The stream's end was reached at `snd_nxt` in this pass (only then may our FIN follow).
        let mut at_end = false;
        loop {
            let room = f.guest_wnd.saturating_sub(f.in_flight()) as usize;
            if room == 0 {
                // Zero window: probe it on the timer (persist).
                if f.deadline.is_none() {
                    f.deadline = Some(ctx.now + f.rto);
                    if !f.in_timer_list {
                        f.in_timer_list = true;
                        self.timer_list.push(index);
                    }
                }
                break;
            }
            if ctx.tx.over_budget() {
                if !f.in_push_list {
                    f.in_push_list = true;
                    self.push_list.push(index);
                }
                break;
            }
            if f.fin_seq == Some(f.snd_nxt) {
                // Resending after a rewind has reached the end of the stream.
                at_end = true;
                break;
            }
            if f.host_drained && f.snd_nxt == f.snd_max && !f.host_rdhup {
                // Nothing new since the last short peek (a guest ACK or window update calls
                // here too): spare the system call.
                break;
            }
            let want = room.min(mss * MAX_SEGMENTS_PER_PEEK);
            let (seq, offset) = (f.snd_nxt, f.data_offset());
            let got = send_data(
                ctx,
                sockets,
                index,
                f,
                dest,
                seq,
                offset,
                want,
                &mut window_field,
            );
            let n = match got {
                Ok(0) => {
                    at_end = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    f.host_drained = f.snd_nxt == f.snd_max;
                    break;
                }
                Err(_) => {
                    self.host_error(ctx, sockets, index);
                    return;
                }
            };
            if f.rtt_probe.is_none() && f.snd_nxt == f.snd_max {
                f.rtt_probe = Some((f.snd_nxt, ctx.now));
            }
            f.snd_nxt = f.snd_nxt.wrapping_add(n as u32);
            if seq_lt(f.snd_max, f.snd_nxt) {
                f.snd_max = f.snd_nxt;
            }
            f.ack_owed = false;
            if f.deadline.is_none() {
                f.deadline = Some(ctx.now + f.rto);
            }
            f.arm_probe(ctx.now);
            if !f.in_timer_list {
                f.in_timer_list = true;
                self.timer_list.push(index);
            }
            // A short read means the queue is empty, unless the peer also closed: then peek
            // once more so the end of stream that came with the data is seen now. (A resend
            // that reached a known end loops once more to send the FIN.)
            if n < want && !f.host_rdhup && f.fin_seq.is_none() {
                f.host_drained = f.snd_nxt == f.snd_max;
                break;
            }
        }
        // Our FIN goes out only right behind the last byte, never because the host's stream
        // ended some time ago: a resend after a rewind may stop short of the end (window, TX
        // budget), and a FIN there would cut the guest's stream short (RFC 9293 §3.10.4: FIN
        // after all data). Its sequence number is fixed once chosen: a retransmitted FIN
        // carries the same one.
        if at_end && !f.fin_sent {
            debug_assert!(f.fin_seq.is_none_or(|fin| fin == f.snd_nxt));
            f.fin_sent = true;
            f.fin_seq.get_or_insert(f.snd_nxt);
            let window = window_for(sockets, index, f);
            send_control(ctx, f, f.snd_nxt, tcp::FIN | tcp::ACK, window);
            f.snd_nxt = f.snd_nxt.wrapping_add(1);
            if seq_lt(f.snd_max, f.snd_nxt) {
                f.snd_max = f.snd_nxt;
            }
            f.ack_owed = false;
            f.rcv_unacked = 0;
            if f.deadline.is_none() {
                f.deadline = Some(ctx.now + f.rto);
            }
            f.arm_probe(ctx.now);
            if !f.in_timer_list {
                f.in_timer_list = true;
                self.timer_list.push(index);
            }
        }
    }

    /// SACK recovery (RFC 6675 NextSeg rule 1): resend each hole below the lost edge that was
    /// not resent since the last loss detection, in order, as far as the TX budget allows.
    /// Without SACK the scoreboard stays empty and the only hole is NewReno's one segment after
    /// a partial ACK.
    /// Holes are inside what the guest's window already took, so they need no room. Returns
    /// `None` when the flow was freed (host error), else how many bytes were resent.
    fn retransmit_holes(
        &mut self,
        ctx: &mut TcpCtx<'_>,
        sockets: &mut dyn HostSockets,
        index: u32,
    ) -> Option<usize> {
        let f = self.slots[index as usize].as_mut()?;
        // Only while no go-back-N resend is under way (that resends the holes anyway).
        if f.state != State::Established || f.fin_acked || f.snd_nxt != f.snd_max {
            return Some(0);
        }
        let mut resent = 0;
        let mut window_field = None;
        loop {
            let edge = f.lost_edge();
            let from = if seq_lt(f.rxt_nxt, f.snd_una) {
                f.snd_una
            } else {
                f.rxt_nxt
            };
            let Some((start, end)) = f.scoreboard.next_hole(from, edge) else {
                break;
            };
            if ctx.tx.over_budget() {
                if !f.in_push_list {
                    f.in_push_list = true;
                    self.push_list.push(index);
                }
                break;
            }
            let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
                break;
            };
            let want =
                (end.wrapping_sub(start) as usize).min(usize::from(f.mss) * MAX_SEGMENTS_PER_PEEK);
            let offset = start.wrapping_sub(f.snd_una) as usize;
            let got = send_data(
                ctx,
                sockets,
                index,
                f,
                dest,
                start,
                offset,
                want,
                &mut window_field,
            );
            let n = match got {
                Ok(0) => break, // (the data is in the socket: not expected)
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.host_error(ctx, sockets, index);
                    return None;
                }
            };
            resent += n;
            f.ack_owed = false;
            f.rxt_nxt = start.wrapping_add(n as u32);
            f.rxt_fence = f.snd_max;
            // Karn: no RTT sample from a segment sent twice.
            if f.rtt_probe
                .is_some_and(|(seq, _)| seq_le(start, seq) && seq_lt(seq, f.rxt_nxt))
            {
                f.rtt_probe = None;
            }
            f.arm_probe(ctx.now);
            if n < want {
                break;
            }
        }
        Some(resent)
    }

    /// The probe timer fired: data is in flight and for twice the smoothed RTT nothing was
    /// sent or acknowledged. If the guest SACKed anything, every hole below its highest SACK was
    /// sent before that data and is taken as lost (RACK, RFC 8985, by order instead of time):
    /// resend them. Else, or if there was none, resend the last segment (tail loss probe): the
    /// guest's answer, with its SACK blocks, shows what is missing.
    fn probe(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets, index: u32) {
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        if f.in_flight() == 0 || f.snd_nxt != f.snd_max || f.fin_acked {
            return;
        }
        f.probes += 1;
        if let Some(high) = f.scoreboard.high() {
            if seq_lt(f.lost_below, high) {
                f.lost_below = high;
            }
            f.rxt_nxt = f.snd_una;
            f.recover.get_or_insert(f.snd_max);
        }
        let Some(resent) = self.retransmit_holes(ctx, sockets, index) else {
            return;
        };
        let Some(f) = self.slots[index as usize].as_mut() else {
            return;
        };
        if resent == 0 {
            let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
                return;
            };
            let end = f.data_end();
            let len = end.wrapping_sub(f.snd_una).min(u32::from(f.mss));
            if len > 0 {
                let start = end.wrapping_sub(len);
                let offset = start.wrapping_sub(f.snd_una) as usize;
                let mut window_field = None;
                let got = send_data(
                    ctx,
                    sockets,
                    index,
                    f,
                    dest,
                    start,
                    offset,
                    len as usize,
                    &mut window_field,
                );
                match got {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return self.host_error(ctx, sockets, index),
                }
                f.rtt_probe = None;
            }
            if f.fin_sent {
                let window = window_for(sockets, index, f);
                send_control(ctx, f, end, tcp::FIN | tcp::ACK, window);
            }
        }
        f.arm_probe(ctx.now);
    }

    fn maybe_close(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets, index: u32) {
        let Some(f) = self.slots[index as usize].as_ref() else {
            return;
        };
        if f.guest_fin && f.fin_acked {
            if f.ack_owed {
                // The ACK of the guest's FIN must go out before the flow disappears.
                let window = window_for(sockets, index, f);
                send_control(ctx, f, f.snd_nxt, tcp::ACK, window);
            }
            self.free_flow(sockets, index, false);
            ctx.counters.tcp_flows_closed += 1;
        }
    }

    /// The host socket failed: reset the guest's connection and forget the flow.
    fn host_error(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets, index: u32) {
        if let Some(f) = self.slots[index as usize].as_ref() {
            send_control(ctx, f, f.snd_nxt, tcp::RST | tcp::ACK, 0);
        }
        self.free_flow(sockets, index, false);
        ctx.counters.tcp_flows_closed += 1;
    }

    fn owe_ack(&mut self, index: u32) {
        if let Some(f) = self.slots[index as usize].as_mut() {
            if !f.ack_owed {
                f.ack_owed = true;
                self.ack_list.push(index);
            }
        }
    }

    fn arm(&mut self, index: u32) {
        if let Some(f) = self.slots[index as usize].as_mut() {
            if !f.in_timer_list {
                f.in_timer_list = true;
                self.timer_list.push(index);
            }
            if let Some(d) = f.timer() {
                self.next_deadline = Some(self.next_deadline.map_or(d, |n| n.min(d)));
            }
        }
    }

    fn free_flow(&mut self, sockets: &mut dyn HostSockets, index: u32, abort: bool) {
        if let Some(f) = self.slots[index as usize].take() {
            if f.state == State::Connecting {
                self.pending_connects = self.pending_connects.saturating_sub(1);
            }
            self.by_key.remove(&f.key);
            sockets.tcp_close(Self::sock(index), abort);
            self.free.push(index);
        }
    }

    /// Send the ACKs owed for guest data received in this batch (one per flow), or defer the
    /// ACK of a small segment by [`DELAYED_ACK`] so that the answer to it carries the ACK.
    pub fn flush_acks(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets) {
        let mut list = std::mem::take(&mut self.ack_list);
        for &index in &list {
            let Some(f) = self.slots[index as usize].as_mut() else {
                continue;
            };
            if !f.ack_owed {
                continue;
            }
            if f.may_delay_ack() {
                if !f.delack_pending {
                    f.delack_pending = true;
                    self.delack.push_back((index, ctx.now + DELAYED_ACK));
                }
                continue;
            }
            send_owed_ack(ctx, sockets, index, f, &mut self.timer_list);
        }
        list.clear();
        self.ack_list = list;
    }

    /// Send the delayed ACKs that came due and were not carried by data meanwhile.
    fn send_delayed_acks(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets) {
        while let Some(&(index, due)) = self.delack.front() {
            if due > ctx.now {
                break;
            }
            self.delack.pop_front();
            let Some(f) = self.slots[index as usize].as_mut() else {
                continue;
            };
            if std::mem::take(&mut f.delack_pending) && f.ack_owed {
                send_owed_ack(ctx, sockets, index, f, &mut self.timer_list);
            }
        }
    }

    /// Resume flows that stopped because the TX budget ran out (call after a flush).
    pub fn resume_pushes(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets) {
        let mut list = std::mem::take(&mut self.push_list);
        for &index in &list {
            if let Some(f) = self.slots[index as usize].as_mut() {
                f.in_push_list = false;
                self.push(ctx, sockets, index);
            }
        }
        list.clear();
        if self.push_list.is_empty() {
            self.push_list = list;
        }
    }

    pub fn has_pending_pushes(&self) -> bool {
        !self.push_list.is_empty()
    }

    /// The earliest time [`on_timers`](Self::on_timers) has work to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.next_deadline, self.delack.front()) {
            (Some(d), Some(&(_, due))) => Some(d.min(due)),
            (d, None) => d,
            (None, Some(&(_, due))) => Some(due),
        }
    }

    /// Run expired timers: delayed ACKs, connect timeouts, SYN-ACK and data retransmission,
    /// window probes.
    pub fn on_timers(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets) {
        self.send_delayed_acks(ctx, sockets);
        if self.next_deadline.is_none_or(|d| d > ctx.now) {
            return; // only delayed ACKs were due
        }
        let list = std::mem::take(&mut self.timer_list);
        let mut keep = Vec::with_capacity(list.len());
        let mut next: Option<Duration> = None;
        for index in list {
            let Some(f) = self.slots[index as usize].as_mut() else {
                continue;
            };
            let Some(deadline) = f.timer() else {
                f.in_timer_list = false;
                continue;
            };
            if deadline > ctx.now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                keep.push(index);
                continue;
            }
            match f.state {
                State::Established
                    if f.probe_at.is_some_and(|p| p <= ctx.now)
                        && f.deadline.is_none_or(|d| d > ctx.now) =>
                {
                    f.probe_at = None;
                    self.probe(ctx, sockets, index);
                }
                State::Connecting => {
                    ctx.counters.drop(DropReason::TcpConnectTimeout);
                    send_unreachable(ctx, f, Unreachable::Host);
                    self.free_flow(sockets, index, true);
                    ctx.counters.tcp_flows_closed += 1;
                    continue;
                }
                State::SynSent if f.retries >= FORWARD_SYN_RETRIES => {
                    ctx.counters.drop(DropReason::ForwardGuestUnreachable);
                    self.free_flow(sockets, index, true);
                    ctx.counters.tcp_flows_closed += 1;
                    continue;
                }
                State::SynAckSent | State::Established if f.retries >= self.limits.max_retries => {
                    ctx.counters.drop(DropReason::TcpRetransmitLimit);
                    send_control(ctx, f, f.snd_nxt, tcp::RST | tcp::ACK, 0);
                    self.free_flow(sockets, index, true);
                    ctx.counters.tcp_flows_closed += 1;
                    continue;
                }
                State::SynSent | State::SynAckSent => {
                    f.retries += 1;
                    f.rto = (f.rto * 2).min(self.limits.rto_max);
                    let window = window_for(sockets, index, f);
                    send_syn(ctx, f, window);
                    f.deadline = Some(ctx.now + f.rto);
                }
                State::Established if f.in_flight() == 0 && f.guest_wnd > 0 => {
                    // Window poll: tell the guest if the socket has room again.
                    f.space.set(None);
                    let window = window_for(sockets, index, f);
                    f.deadline = None;
                    if window > f.last_window_sent {
                        f.last_window_sent = window;
                        send_control(ctx, f, f.snd_nxt, tcp::ACK, window);
                    }
                    if window < u32::from(f.mss) {
                        f.deadline = Some(ctx.now + WINDOW_POLL);
                    }
                }
                State::Established => {
                    f.retries += 1;
                    f.rto = (f.rto * 2).min(self.limits.rto_max);
                    f.rtt_probe = None;
                    if f.in_flight() > 0 {
                        rewind(f);
                        // After a timeout only the timer probes, until the guest answers.
                        f.probes = MAX_PROBES;
                        f.deadline = None;
                        self.push(ctx, sockets, index);
                    } else {
                        // Zero-window probe: an ACK one below snd_una makes the guest answer with
                        // its current window.
                        let window = window_for(sockets, index, f);
                        send_control(ctx, f, f.snd_una.wrapping_sub(1), tcp::ACK, window);
                        f.deadline = None;
                        self.push(ctx, sockets, index);
                    }
                    let Some(f) = self.slots[index as usize].as_mut() else {
                        continue;
                    };
                    if f.deadline.is_none() && (f.in_flight() > 0 || f.guest_wnd == 0) {
                        f.deadline = Some(ctx.now + f.rto);
                    }
                }
            }
            let Some(f) = self.slots[index as usize].as_mut() else {
                continue;
            };
            if let Some(d) = f.timer() {
                next = Some(next.map_or(d, |n| n.min(d)));
                keep.push(index);
            } else {
                f.in_timer_list = false;
            }
        }
        // Flows armed during this call were appended to self.timer_list.
        for &index in &self.timer_list {
            if let Some(d) = self.slots[index as usize].as_ref().and_then(|f| f.timer()) {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        }
        keep.append(&mut self.timer_list);
        // Entries of freed flows whose slot was reused can duplicate a live entry.
        keep.sort_unstable();
        keep.dedup();
        self.timer_list = keep;
        self.next_deadline = next;
    }

    /// Reset flows idle past their limit (called about once a second). Returns how many.
    pub fn expire_idle(&mut self, ctx: &mut TcpCtx<'_>, sockets: &mut dyn HostSockets) -> usize {
        let mut expired = 0;
        for index in 0..self.slots.len() as u32 {
            let Some(f) = self.slots[index as usize].as_ref() else {
                continue;
            };
            if f.state != State::Established {
                continue; // connect and handshake have their own timers
            }
            let limit = if f.guest_fin || f.fin_seq.is_some() {
                self.limits.half_closed_timeout
            } else {
                self.limits.idle_timeout
            };
            if ctx.now.saturating_sub(f.last_activity) >= limit {
                send_control(ctx, f, f.snd_nxt, tcp::RST | tcp::ACK, 0);
                self.free_flow(sockets, index, true);
                ctx.counters.drop(DropReason::TcpIdleTimeout);
                ctx.counters.tcp_flows_closed += 1;
                expired += 1;
            }
        }
        expired
    }

    /// Bring [`next_deadline`](Self::next_deadline) up to date after a batch, so that a deadline
    /// whose reason went away does not wake the loop. Delayed ACKs that data carried meanwhile
    /// leave the front of their queue. With at most [`EXACT_TIMER_SCAN`] flows on the timer
    /// list their timers are scanned for the exact earliest one (an ACK that cancels a loss
    /// probe then cancels its wake-up too: short connections otherwise woke the loop about once
    /// each, for nothing). With more, O(1): timers armed since the last scan are looked at
    /// within [`TIMER_TICK`], the exact earliest deadline being computed by the scan in
    /// [`on_timers`](Self::on_timers), which then runs at most once per tick (plus when one is
    /// due).
    pub fn refresh_deadline(&mut self, now: Duration) {
        self.prune_delayed_acks();
        if self.timer_list.len() <= EXACT_TIMER_SCAN {
            let slots = &mut self.slots;
            let mut next: Option<Duration> = None;
            self.timer_list.retain(|&index| {
                let Some(f) = slots[index as usize].as_mut() else {
                    return false;
                };
                match f.timer() {
                    Some(d) => {
                        next = Some(next.map_or(d, |n| n.min(d)));
                        f.in_timer_list = true;
                        true
                    }
                    None => {
                        f.in_timer_list = false;
                        false
                    }
                }
            });
            // A slot freed and reused may be listed twice: harmless here (both entries give
            // the same deadline); the scan in on_timers drops the duplicate.
            self.next_deadline = next;
        } else {
            let tick = now + TIMER_TICK;
            self.next_deadline = Some(self.next_deadline.map_or(tick, |d| d.min(tick)));
        }
    }

    /// Drop delayed-ACK entries at the front of the queue whose ACK is no longer owed (data or
    /// a FIN carried it) or whose flow is gone, so the front is a real deadline.
    fn prune_delayed_acks(&mut self) {
        while let Some(&(index, _)) = self.delack.front() {
            match self.slots[index as usize].as_mut() {
                Some(f) if f.delack_pending && f.ack_owed => break,
                Some(f) => f.delack_pending = false,
                None => {}
            }
            self.delack.pop_front();
        }
    }
}

/// Errno values used to pick the guest-visible error (stable across Linux architectures).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EACCES: i32 = 13;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNRESET: i32 = 104;
    pub const ECONNREFUSED: i32 = 111;
}

/// Go back to `snd_una` and resend from there (fast retransmit or retransmission timeout).
fn rewind(f: &mut TcpFlow) {
    // RFC 6582 §3.2 (after a timeout too): remember how far we had sent, so the duplicate
    // ACKs this resend provokes do not start another one.
    f.recover = Some(f.snd_max);
    f.snd_nxt = f.snd_una;
    // The guest may have dropped what it SACKed (reneging, RFC 2018 §8): forget it all.
    f.scoreboard.clear();
    f.rxt_nxt = f.snd_una;
    f.lost_below = f.snd_una;
    f.probe_at = None;
    if f.fin_sent && !f.fin_acked {
        f.fin_sent = false;
    }
    f.rtt_probe = None;
    f.dup_acks = 0;
}

fn update_rtt(f: &mut TcpFlow, sample: Duration, rto_min: Duration, rto_max: Duration) {
    // RFC 6298.
    match f.srtt {
        None => {
            f.srtt = Some(sample);
            f.rttvar = sample / 2;
        }
        Some(srtt) => {
            let diff = srtt.abs_diff(sample);
            f.rttvar = (f.rttvar * 3 + diff) / 4;
            f.srtt = Some((srtt * 7 + sample) / 8);
        }
    }
    let srtt = f.srtt.unwrap_or(sample);
    f.rto = (srtt + (f.rttvar * 4).max(Duration::from_millis(1))).clamp(rto_min, rto_max);
}

/// Our ACK of what the guest sent: the current window, and a poll for space if it is closed.
fn send_owed_ack(
    ctx: &mut TcpCtx<'_>,
    sockets: &mut dyn HostSockets,
    index: u32,
    f: &mut TcpFlow,
    timer_list: &mut Vec<u32>,
) {
    f.ack_owed = false;
    f.rcv_unacked = 0;
    let window = window_for(sockets, index, f);
    f.last_window_sent = window;
    send_control(ctx, f, f.snd_nxt, tcp::ACK, window);
    if window < u32::from(f.mss) && f.deadline.is_none() {
        // The kernel only signals writability after a refused write; poll for space so the
        // guest learns when its window opens.
        f.deadline = Some(ctx.now + WINDOW_POLL);
        if !f.in_timer_list {
            f.in_timer_list = true;
            timer_list.push(index);
        }
    }
}

/// The window to advertise: the socket's free send space (from the estimate while it holds).
fn window_for(sockets: &mut dyn HostSockets, index: u32, f: &TcpFlow) -> u32 {
    let space = match f.space.get() {
        Some(space) => space,
        None => {
            let space = sockets
                .tcp_send_space(TcpEngine::sock(index))
                .min(u32::MAX as usize) as u32;
            f.space.set(Some(space));
            f.space_read.set(space);
            space
        }
    };
    space.min(65535u32 << f.our_wscale)
}

/// The MTU less the IP and TCP headers of the guest's family.
fn our_max_mss(mtu: u16, guest: IpAddr) -> u16 {
    let headers = if guest.is_ipv4() { 40 } else { 60 };
    mtu.saturating_sub(headers).max(64)
}

/// Our SYN-ACK to a guest's SYN, or our SYN of a forwarded connection (state SynSent).
fn send_syn(ctx: &mut TcpCtx<'_>, f: &TcpFlow, window: u32) {
    let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
        return;
    };
    let (ack, flags) = if f.state == State::SynSent {
        (0, tcp::SYN)
    } else {
        (f.rcv_nxt, tcp::SYN | tcp::ACK)
    };
    let h = TcpHeader {
        src_port: f.key.remote_port,
        dst_port: f.key.guest_port,
        seq: f.our_isn,
        ack,
        flags,
        // The window in a SYN is never scaled.
        window: window.min(65535) as u16,
        sack: Default::default(),
        syn_options: Some(SynOptions {
            mss: Some(f.mss),
            window_scale: (f.our_wscale > 0).then_some(f.our_wscale),
            sack_permitted: f.sack_ok,
        }),
    };
    push_tcp(ctx, dest, f.guest_mac, f.key, &h);
}

fn send_control(ctx: &mut TcpCtx<'_>, f: &TcpFlow, seq: u32, flags: u8, window: u32) {
    let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
        return;
    };
    let h = TcpHeader {
        src_port: f.key.remote_port,
        dst_port: f.key.guest_port,
        seq,
        ack: f.rcv_nxt,
        flags,
        window: (window >> f.our_wscale).min(65535) as u16,
        sack: Default::default(),
        syn_options: None,
    };
    push_tcp(ctx, dest, f.guest_mac, f.key, &h);
}

/// RST answering a SYN whose connect failed.
fn send_rst_to_syn(ctx: &mut TcpCtx<'_>, f: &TcpFlow) {
    let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
        return;
    };
    let h = TcpHeader {
        src_port: f.key.remote_port,
        dst_port: f.key.guest_port,
        seq: 0,
        ack: f.guest_isn.wrapping_add(1),
        flags: tcp::RST | tcp::ACK,
        window: 0,
        sack: Default::default(),
        syn_options: None,
    };
    push_tcp(ctx, dest, f.guest_mac, f.key, &h);
}

/// RST for a segment that belongs to no flow (RFC 9293 §3.10.7.1).
fn send_rst_for(ctx: &mut TcpCtx<'_>, guest_mac: Mac, key: FlowKey, seg: &TcpSegment<'_>) {
    let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &guest_mac) else {
        return;
    };
    let (seq, ack, flags) = if seg.flags() & tcp::ACK != 0 {
        (seg.ack(), 0, tcp::RST)
    } else {
        let mut len = seg.payload().len() as u32;
        if seg.flags() & tcp::SYN != 0 {
            len += 1;
        }
        if seg.flags() & tcp::FIN != 0 {
            len += 1;
        }
        (0, seg.seq().wrapping_add(len), tcp::RST | tcp::ACK)
    };
    let h = TcpHeader {
        src_port: key.remote_port,
        dst_port: key.guest_port,
        seq,
        ack,
        flags,
        window: 0,
        sack: Default::default(),
        syn_options: None,
    };
    push_tcp(ctx, dest, guest_mac, key, &h);
}

/// ICMP (or ICMPv6) destination unreachable quoting a reconstruction of the guest's SYN.
fn send_unreachable(ctx: &mut TcpCtx<'_>, f: &TcpFlow, why: Unreachable) {
    let Some(dest) = frames::dest_for(ctx.switch, ctx.counters, &f.guest_mac) else {
        return;
    };
    // IP header, then the first 8 bytes of the SYN: ports and sequence number.
    let mut quote = [0u8; 48];
    let ip_len = match (f.key.guest_ip, f.key.remote_ip) {
        (IpAddr::V4(g), IpAddr::V4(r)) => {
            slipway_wire::ipv4::write_header(
                &mut quote,
                g,
                r,
                slipway_wire::ipv4::PROTO_TCP,
                20,
                64,
                0,
            );
            slipway_wire::ipv4::HEADER_LEN
        }
        (IpAddr::V6(g), IpAddr::V6(r)) => {
            slipway_wire::ipv6::write_header(
                &mut quote,
                g,
                r,
                slipway_wire::ipv6::NEXT_TCP,
                20,
                64,
            );
            slipway_wire::ipv6::HEADER_LEN
        }
        _ => return,
    };
    quote[ip_len..ip_len + 2].copy_from_slice(&f.key.guest_port.to_be_bytes());
    quote[ip_len + 2..ip_len + 4].copy_from_slice(&f.key.remote_port.to_be_bytes());
    quote[ip_len + 4..ip_len + 8].copy_from_slice(&f.guest_isn.to_be_bytes());
    frames::push_unreachable(
        ctx.tx,
        dest,
        f.guest_mac,
        ctx.gateway_mac,
        f.key.remote_ip,
        f.key.guest_ip,
        why,
        &quote[..ip_len + 8],
        ip_len,
    );
}

/// Peek up to `want` bytes at `offset` into the socket's receive queue (sequence `seq`) and send
/// them to the guest as MSS-sized segments, straight from the TX arena. Ok(0): end of stream.
#[allow(clippy::too_many_arguments)]
fn send_data(
    ctx: &mut TcpCtx<'_>,
    sockets: &mut dyn HostSockets,
    index: u32,
    f: &mut TcpFlow,
    dest: crate::tx::TxDest,
    seq: u32,
    offset: usize,
    want: usize,
    window_field: &mut Option<u32>,
) -> io::Result<usize> {
    let mss = usize::from(f.mss);
    let overhead = frames::tcp_overhead(f.key.guest_ip);
    let stride = overhead + mss;
    let nseg = want.div_ceil(mss).min(MAX_SEGMENTS_PER_PEEK);
    let want = want.min(nseg * mss);
    let arena = ctx.tx.reserve(nseg * stride);
    let got = {
        let mut iov: [IoSliceMut<'_>; MAX_SEGMENTS_PER_PEEK] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut rest: &mut [u8] = arena;
        let mut left = want;
        for slot in iov.iter_mut().take(nseg) {
            let (frame, tail) = rest.split_at_mut(stride);
            rest = tail;
            let take = left.min(mss);
            left -= take;
            *slot = IoSliceMut::new(&mut frame[overhead..overhead + take]);
        }
        sockets.tcp_peek(TcpEngine::sock(index), offset, &mut iov[..nseg])
    };
    let n = match got {
        Ok(n) if n > 0 => n,
        other => {
            ctx.tx.finish(0);
            return other;
        }
    };
    let window = *window_field.get_or_insert_with(|| window_for(sockets, index, f));
    let partial = ctx.tx.offloads(dest);
    let arena = ctx.tx.reserve_again();
    let full = n / mss;
    let segs = n.div_ceil(mss);
    let mut used = 0;
    for k in 0..segs {
        let len = if k < full { mss } else { n - full * mss };
        let frame = &mut arena[k * stride..k * stride + overhead + len];
        let h = TcpHeader {
            src_port: f.key.remote_port,
            dst_port: f.key.guest_port,
            seq: seq.wrapping_add((k * mss) as u32),
            ack: f.rcv_nxt,
            flags: if k + 1 == segs {
                tcp::ACK | tcp::PSH
            } else {
                tcp::ACK
            },
            window: (window >> f.our_wscale).min(65535) as u16,
            sack: SackBlocks::EMPTY,
            syn_options: None,
        };
        f.ident = f.ident.wrapping_add(1);
        frames::write_tcp_checksum(
            frame,
            f.guest_mac,
            ctx.gateway_mac,
            f.key.remote_ip,
            f.key.guest_ip,
            &h,
            f.ident,
            partial,
        );
        used = k * stride + overhead + len;
    }
    let csum = partial.then(|| PartialCsum {
        start: frames::eth_ip_len(f.key.guest_ip) as u16,
        offset: tcp::CHECKSUM_OFFSET as u16,
    });
    for k in 0..segs {
        let len = if k < full { mss } else { n - full * mss };
        ctx.tx.commit_with(dest, k * stride, overhead + len, csum);
    }
    ctx.tx.finish(used);
    f.last_window_sent = window;
    // Every data segment carries our current ACK.
    f.rcv_unacked = 0;
    f.last_activity = ctx.now;
    Ok(n)
}

fn push_tcp(
    ctx: &mut TcpCtx<'_>,
    dest: crate::tx::TxDest,
    guest_mac: Mac,
    key: FlowKey,
    h: &TcpHeader,
) {
    let len = frames::eth_ip_len(key.guest_ip) + h.header_len();
    let gw = ctx.gateway_mac;
    ctx.tx.push_with(dest, len, |frame| {
        frames::write_tcp(frame, guest_mac, gw, key.remote_ip, key.guest_ip, h, 0);
        len
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(ranges: &[(u32, u32)]) -> Scoreboard {
        let mut b = Scoreboard::default();
        for &(s, e) in ranges {
            b.add(s, e);
        }
        b
    }

    #[test]
    fn scoreboard_merges_overlapping_and_touching_ranges() {
        let base = u32::MAX - 100; // across the wrap
        let at = |o: u32| base.wrapping_add(o);
        let mut b = board(&[(at(300), at(400)), (at(100), at(200))]);
        assert_eq!(b.ranges(), &[(at(100), at(200)), (at(300), at(400))]);
        assert!(!b.add(at(120), at(180)), "nothing new");
        assert!(b.add(at(200), at(250)), "touching: merged");
        assert_eq!(b.ranges(), &[(at(100), at(250)), (at(300), at(400))]);
        assert!(b.add(at(50), at(350)), "spanning both");
        assert_eq!(b.ranges(), &[(at(50), at(400))]);
        b.add(at(500), at(600));
        b.acked(at(60));
        assert_eq!(b.ranges(), &[(at(60), at(400)), (at(500), at(600))]);
        b.acked(at(450));
        assert_eq!(b.ranges(), &[(at(500), at(600))]);
        assert_eq!(b.high(), Some(at(600)));
        b.acked(at(600));
        assert!(b.is_empty());
    }

    #[test]
    fn scoreboard_stays_bounded_forgetting_the_highest_range() {
        let mut b = Scoreboard::default();
        for k in 0..100u32 {
            b.add(k * 20 + 10, k * 20 + 15);
            assert!(b.len <= SCOREBOARD_RANGES);
        }
        assert_eq!(b.len, SCOREBOARD_RANGES);
        let top = (SCOREBOARD_RANGES as u32 - 1) * 20 + 15;
        assert_eq!(b.high(), Some(top));
        // A range below the top still gets in, the top one goes.
        assert!(b.add(0, 5));
        assert_eq!(b.ranges()[0], (0, 5));
        assert_eq!(b.high(), Some(top - 20));
        assert!(b.ranges().windows(2).all(|w| seq_lt(w[0].1, w[1].0)));
    }

    #[test]
    fn holes_and_the_lost_edge() {
        let b = board(&[(100, 200), (300, 350), (400, 500)]);
        assert_eq!(b.next_hole(0, 1000), Some((0, 100)));
        assert_eq!(b.next_hole(100, 1000), Some((200, 300)));
        assert_eq!(b.next_hole(250, 1000), Some((250, 300)));
        assert_eq!(b.next_hole(300, 1000), Some((350, 400)));
        assert_eq!(b.next_hole(450, 1000), Some((500, 1000)));
        assert_eq!(b.next_hole(0, 50), Some((0, 50)));
        assert_eq!(b.next_hole(200, 200), None);
        assert_eq!(b.next_hole(100, 150), None);
        // More than 120 bytes SACKed above: below 300 (150 above 300's start, 100 above 400's).
        assert_eq!(b.lost_edge(120), Some(300));
        assert_eq!(b.lost_edge(99), Some(400));
        assert_eq!(b.lost_edge(249), Some(100));
        assert_eq!(b.lost_edge(250), None);
    }
}
