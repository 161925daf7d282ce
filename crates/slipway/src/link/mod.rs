//! Guest links: the transports that carry whole Ethernet frames between a guest and the switch.
//!
//! # Theory of operation
//!
//! A guest link is one connection to one guest: a QEMU `stream` netdev, a vfkit/krunkit/QEMU
//! datagram socket, a hyperkit vpnkit connection, a UML/slirp4netns BESS socket, an ssh stdio
//! pipe or a TAP fd. Listeners (`QemuListener`, `VpnkitListener`, `BessListener`) turn each
//! accepted connection into a link; `DgramLink`, `StdioLink` and `TapLink` are links themselves.
//!
//! Every fd is non-blocking and the single-threaded readiness loop drives the link:
//! - `read_frames` reads until the kernel reports `WouldBlock` or until `budget` frames were
//!   delivered. Each frame is handed to the caller as a slice into the link's own receive buffer;
//!   nothing is copied. A stream link reads up to 256 KiB per `read()` and parses every complete
//!   frame in it; a partial frame at the end is kept for the next read. A stream `read()` that
//!   returns less than the room offered has drained the fd (sockets and pipes hand over all
//!   they hold), so the link stops there instead of paying one more `read()` for `WouldBlock`;
//!   bytes arriving later raise a new edge.
//! - `send_frames` writes a batch with as few system calls as the framing allows: `sendmsg` with
//!   an iovec per length prefix and per frame for streams (no copy of frame bytes), `sendmmsg` for
//!   datagram and seqpacket sockets, one `write()` per frame for TAP. What the kernel does not
//!   take now is copied into a per-link output queue; `flush` drains it when the fd is writable.
//!   A stream never carries a partial frame: the remainder of a partly written frame is always
//!   queued, and beyond the queue bound whole frames are dropped and counted.
//!
//! There are three shapes of framing, each implemented once here:
//! - length-prefixed stream (`StreamFramer`): qemu (u32 big-endian), vpnkit and stdio (u16
//!   little-endian);
//! - one frame per message (`DatagramOutput`): dgram and bess;
//! - one frame per `read()`/`write()`: tap.
//!
//! Untrusted input: a stream length prefix outside `MIN_FRAME..=MAX_FRAME` is a protocol
//! violation (the stream cannot be resynchronised) and gives `LinkError::BadLength`; the caller
//! closes that link alone. A datagram of the wrong size is dropped and counted in `bad_frames`.
//!
//! # Limits
//!
//! - Frame size: `MIN_FRAME` = 14 (an Ethernet header) ..= `MAX_FRAME` = 65553 (a 65535-byte IP
//!   packet, the 14-byte Ethernet header and one 4-byte 802.1Q tag; QEMU's own stream limit,
//!   `NET_BUFSIZE` = 69632, is larger, so every frame QEMU can carry for a sane MTU fits). The
//!   u16 framings (vpnkit, stdio) end at 65535 by construction.
//! - Stream receive buffer: `STREAM_RX_BUFFER` = 256 KiB per link. Datagram receive buffer:
//!   `MAX_FRAME + 1` bytes (one more byte exposes an oversized message).
//! - Output queue: `OUTPUT_QUEUE_LIMIT` = 4 MiB per link (framing bytes included). The remainder
//!   of a partly written stream frame may exceed it by at most one frame.
//! - Batching: at most 512 frames per `sendmsg` (1024 iovecs = `UIO_MAXIOV`), 64 per `sendmmsg`.

mod bess;
mod dgram;
mod qemu;
mod stdio;
mod tap;
mod vpnkit;

pub use bess::{BessLink, BessListener};
pub use dgram::DgramLink;
pub use qemu::{QemuLink, QemuListener};
pub use stdio::StdioLink;
pub use tap::TapLink;
pub use vpnkit::{MacAllocator, VpnkitLink, VpnkitListener, VPNKIT_PROTOCOL_VERSION};

use slipway_core::offload::{PartialCsum, RxChecksum};
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::unix_socket::{SocketFile, SocketPlace};
use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Smallest frame a guest may send: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Largest frame a guest may send: a 65535-byte IP packet + Ethernet header + one 802.1Q tag.
pub const MAX_FRAME: usize = 65535 + 14 + 4;
/// Receive buffer of every stream link; many frames are parsed out of one `read()`.
pub const STREAM_RX_BUFFER: usize = 256 * 1024;
/// Receive buffer of every message link; one byte more than `MAX_FRAME` exposes truncation.
pub const DATAGRAM_RX_BUFFER: usize = MAX_FRAME + 1;
/// Bound of each link's output queue, in bytes (framing included).
pub const OUTPUT_QUEUE_LIMIT: usize = 4 * 1024 * 1024;
/// Frames per `sendmsg` on a stream: two iovecs each (prefix, frame), 1024 = `UIO_MAXIOV`.
const FRAMES_PER_SENDMSG: usize = 512;
/// Batches up to this many frames are sent with arrays sized for them (cheaper to set up).
const SMALL_SENDMSG: usize = 16;
/// Frames per `sendmmsg` on a datagram or seqpacket socket.
const FRAMES_PER_SENDMMSG: usize = 64;
/// Backlog of the listening sockets.
const LISTEN_BACKLOG: i32 = 128;

/// A connection to one guest that moves whole Ethernet frames.
pub trait GuestLink {
    /// The fd(s) to register with mio (READABLE | WRITABLE, edge-triggered).
    fn source(&mut self) -> &mut dyn Source;
    /// Read every frame available now: until the kernel reports `WouldBlock` (or a stream read
    /// comes back short, which means the same), or until `budget` frames were delivered. In the
    /// second case data may remain and the fd will not signal it again: the caller must call
    /// again without waiting for an event. `Ok(Closed)`: the peer
    /// hung up. `Err`: a protocol violation or a failed fd; the caller closes this link alone.
    /// Each frame comes with what the link knows of its TCP/UDP checksum.
    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError>;
    /// Send frames in order, many per system call; what the fd won't take now is queued
    /// (bounded by `OUTPUT_QUEUE_LIMIT`; beyond it whole frames are dropped and counted).
    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError>;
    /// Whether this link finishes partial TCP/UDP checksums itself (a TAP device with a vnet
    /// header): the core then leaves them partial in frames to it ([`slipway_core::offload`]).
    fn offloads_checksum(&self) -> bool {
        false
    }
    /// [`send_frames`](Self::send_frames) where `csum[i]` says frame `i`'s checksum is partial.
    /// Frames carry one only to a link that [offloads](Self::offloads_checksum) them, so the
    /// others ignore it.
    fn send_frames_with(
        &mut self,
        frames: &[&[u8]],
        csum: &[Option<PartialCsum>],
    ) -> Result<(), LinkError> {
        debug_assert!(csum.iter().all(|c| c.is_none()));
        self.send_frames(frames)
    }
    /// Write queued output; call when the fd is writable.
    fn flush(&mut self) -> Result<(), LinkError>;
    /// Queued output remains (keep WRITABLE interest; for `DgramLink` also retry on a tick).
    fn has_pending_output(&self) -> bool;
    fn counters(&self) -> &LinkCounters;
    /// A short name for logs, e.g. `qemu:/run/x.sock#3`.
    fn describe(&self) -> String;
    /// The MAC address the link's own handshake assigned to the guest (vpnkit), if any.
    fn assigned_mac(&self) -> Option<[u8; 6]> {
        None
    }
    /// The IPv4 address the guest asked for in its handshake (vpnkit `Preferred_ipv4`), if any.
    fn requested_ipv4(&self) -> Option<std::net::Ipv4Addr> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    Open,
    Closed,
}

/// A listening socket whose every connection becomes a guest link.
pub trait LinkListener {
    fn source(&mut self) -> &mut dyn Source;
    /// Accept every pending connection (non-blocking); each becomes a link. An error is
    /// returned only when no connection was accepted in this call.
    fn accept(&mut self) -> io::Result<Vec<Box<dyn GuestLink>>>;
    fn describe(&self) -> String;
}

/// Per-link counters. `frames_out`/`bytes_out` count frames handed to the kernel or queued
/// for it; bytes are Ethernet frame bytes, without framing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkCounters {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Whole outgoing frames dropped because the output queue was at its bound.
    pub dropped_queue_full: u64,
    /// Outgoing frames dropped because the link has no peer yet (dgram: no sender learned;
    /// vpnkit: handshake not finished).
    pub dropped_not_ready: u64,
    /// Outgoing frames outside `MIN_FRAME..=` the framing's maximum.
    pub dropped_bad_size: u64,
    /// Outgoing datagrams the kernel refused (peer socket gone, `ENOBUFS`, TAP down).
    pub dropped_send_error: u64,
    /// Incoming frames of an impossible size (datagrams: dropped; streams: fatal).
    pub bad_frames: u64,
    /// vpnkit handshakes that failed (the connection is closed).
    pub handshake_failures: u64,
}

impl LinkCounters {
    fn count_in(&mut self, len: usize) {
        self.frames_in += 1;
        self.bytes_in += len as u64;
    }

    fn count_out(&mut self, len: usize) {
        self.frames_out += 1;
        self.bytes_out += len as u64;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("guest sent a frame length of {len} bytes (allowed {MIN_FRAME}..={max})")]
    BadLength { len: usize, max: usize },
    #[error("vpnkit handshake failed: {0}")]
    Handshake(String),
    #[error("the guest closed the link")]
    PeerClosed,
    #[error("guest link i/o failed")]
    Io(#[from] io::Error),
    #[error(transparent)]
    SocketFile(#[from] crate::unix_socket::SocketFileError),
    #[error("MTU {mtu} does not fit the vpnkit protocol; choose an MTU in 68..=65485")]
    InvalidMtu { mtu: u16 },
}

// ---------------------------------------------------------------------------------------------
// Output queue: bytes (stream framings) or length-tagged records (message framings).

/// A FIFO of bytes with a moving head; compacted when the dead prefix outgrows the live part.
#[derive(Default)]
pub(crate) struct ByteQueue {
    buf: Vec<u8>,
    head: usize,
}

impl ByteQueue {
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.buf.len());
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            // A long backlog is over: give its memory back.
            if self.buf.capacity() > OUTPUT_QUEUE_LIMIT / 4 {
                self.buf.shrink_to(64 * 1024);
            }
        }
    }

    pub(crate) fn push(&mut self, parts: &[&[u8]]) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        for part in parts {
            self.buf.extend_from_slice(part);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.consume(self.len());
    }
}

/// Whole messages, each stored as a native-endian u32 length and its bytes.
#[derive(Default)]
pub(crate) struct MessageQueue {
    bytes: ByteQueue,
    messages: usize,
}

impl MessageQueue {
    const TAG: usize = 4;

    pub(crate) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Queue `frame` if the bound allows; false when it was dropped.
    pub(crate) fn push(&mut self, frame: &[u8]) -> bool {
        self.push_prefixed(&[], frame)
    }

    /// Queue one message made of `prefix` then `frame` (e.g. a vnet header and its frame).
    pub(crate) fn push_prefixed(&mut self, prefix: &[u8], frame: &[u8]) -> bool {
        let len = prefix.len() + frame.len();
        if self.bytes.len() + Self::TAG + len > OUTPUT_QUEUE_LIMIT {
            return false;
        }
        let tag = (len as u32).to_ne_bytes();
        self.bytes.push(&[&tag, prefix, frame]);
        self.messages += 1;
        true
    }

    /// Fill `out` with the first messages; returns how many.
    pub(crate) fn front<'a>(&'a self, out: &mut [&'a [u8]]) -> usize {
        let mut rest = self.bytes.bytes();
        let mut n = 0;
        while n < out.len() && rest.len() >= Self::TAG {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(message) = rest.get(Self::TAG..Self::TAG + len) else {
                break;
            };
            out[n] = message;
            rest = &rest[Self::TAG + len..];
            n += 1;
        }
        n
    }

    /// Remove the first `n` messages.
    pub(crate) fn pop(&mut self, n: usize) {
        for _ in 0..n.min(self.messages) {
            let b = self.bytes.bytes();
            let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
            self.bytes.consume(Self::TAG + len);
            self.messages -= 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.messages
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.messages = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Length-prefixed streams (qemu, vpnkit, stdio).

/// The length prefix of a stream framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthPrefix {
    /// 4-byte big-endian (QEMU `stream`/`socket` netdevs, passt).
    Be32,
    /// 2-byte little-endian (vpnkit, gvproxy stdio).
    Le16,
}

impl LengthPrefix {
    pub(crate) const fn size(self) -> usize {
        match self {
            LengthPrefix::Be32 => 4,
            LengthPrefix::Le16 => 2,
        }
    }

    pub(crate) const fn max_frame(self) -> usize {
        match self {
            LengthPrefix::Be32 => MAX_FRAME,
            LengthPrefix::Le16 => u16::MAX as usize,
        }
    }

    /// The prefix for a frame of `len` bytes (only the first `size()` bytes are meaningful).
    pub(crate) fn encode(self, len: usize) -> [u8; 4] {
        match self {
            LengthPrefix::Be32 => (len as u32).to_be_bytes(),
            LengthPrefix::Le16 => {
                let b = (len as u16).to_le_bytes();
                [b[0], b[1], 0, 0]
            }
        }
    }

    /// Decode a prefix from at least `size()` bytes.
    pub(crate) fn decode(self, bytes: &[u8]) -> usize {
        match self {
            LengthPrefix::Be32 => {
                u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
            }
            LengthPrefix::Le16 => u16::from_le_bytes([bytes[0], bytes[1]]) as usize,
        }
    }

    fn valid(self, len: usize) -> bool {
        (MIN_FRAME..=self.max_frame()).contains(&len)
    }
}

/// The byte-moving half of a stream link: a socket (`sendmsg` with `MSG_NOSIGNAL`) or a pair
/// of plain fds (stdio: `writev`).
pub(crate) trait StreamIo {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl StreamIo for mio::net::UnixStream {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket2::SockRef::from(&*self)
            .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    }
}

/// What one `read()` gave.
enum Fill {
    /// The read filled the free end of the buffer: more may be waiting.
    Data,
    /// The read returned less than there was room for: the fd held no more bytes at that moment
    /// (stream sockets and pipes return all they hold, up to the size asked), so reading again
    /// now would only meet `WouldBlock`. Bytes that arrive later raise a new readiness edge.
    Drained,
    WouldBlock,
    Eof,
}

/// Receive buffer, output queue and counters of a length-prefixed stream link.
pub(crate) struct StreamFramer {
    prefix: LengthPrefix,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    tx: ByteQueue,
    pub(crate) counters: LinkCounters,
}

impl StreamFramer {
    pub(crate) fn new(prefix: LengthPrefix) -> Self {
        StreamFramer {
            prefix,
            rx: vec![0; STREAM_RX_BUFFER].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            tx: ByteQueue::default(),
            counters: LinkCounters::default(),
        }
    }

    /// Bytes received and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.rx[self.rx_start..self.rx_end]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.rx_start = (self.rx_start + n).min(self.rx_end);
    }

    pub(crate) fn has_pending_output(&self) -> bool {
        !self.tx.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn queued_output(&self) -> usize {
        self.tx.len()
    }

    /// Read once more into the free end of the buffer (after moving the unparsed tail to the
    /// front). Only called when the buffered bytes hold no complete frame, so they are shorter
    /// than one framed `max_frame()` and there is always room.
    fn fill(&mut self, io: &mut dyn StreamIo) -> Result<Fill, LinkError> {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx_start > 0 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx_end == self.rx.len() {
            // Unreachable while frames are bounded by max_frame(); never read into nothing.
            return Err(LinkError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                "receive buffer full",
            )));
        }
        loop {
            let room = self.rx.len() - self.rx_end;
            match io.read_some(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => {
                    self.rx_end += n;
                    return Ok(if n < room { Fill::Drained } else { Fill::Data });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                Err(e) if peer_gone(&e) => return Ok(Fill::Eof),
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
    }

    /// Read until at least `n` bytes are buffered. `Ok(None)`: got them; `Ok(Some(status))`:
    /// the fd has nothing more now (`Open`) or the peer hung up (`Closed`).
    pub(crate) fn fill_to(
        &mut self,
        io: &mut dyn StreamIo,
        n: usize,
    ) -> Result<Option<LinkStatus>, LinkError> {
        while self.buffered().len() < n {
            match self.fill(io)? {
                Fill::Data | Fill::Drained => {}
                Fill::WouldBlock => return Ok(Some(LinkStatus::Open)),
                Fill::Eof => return Ok(Some(LinkStatus::Closed)),
            }
        }
        Ok(None)
    }

    /// The next complete frame in the buffer, as a range of `rx`.
    fn next_frame(&mut self) -> Result<Option<std::ops::Range<usize>>, LinkError> {
        let avail = &self.rx[self.rx_start..self.rx_end];
        let header = self.prefix.size();
        if avail.len() < header {
            return Ok(None);
        }
        let len = self.prefix.decode(avail);
        if !self.prefix.valid(len) {
            self.counters.bad_frames += 1;
            return Err(LinkError::BadLength {
                len,
                max: self.prefix.max_frame(),
            });
        }
        if avail.len() < header + len {
            return Ok(None);
        }
        let start = self.rx_start + header;
        self.rx_start = start + len;
        self.counters.count_in(len);
        Ok(Some(start..start + len))
    }

    pub(crate) fn read_frames(
        &mut self,
        io: &mut dyn StreamIo,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<LinkStatus, LinkError> {
        let mut delivered = 0;
        let mut drained = false;
        loop {
            while delivered < budget {
                match self.next_frame()? {
                    Some(range) => {
                        on_frame(&self.rx[range]);
                        delivered += 1;
                    }
                    None => break,
                }
            }
            if delivered >= budget || drained {
                return Ok(LinkStatus::Open);
            }
            match self.fill(io)? {
                Fill::Data => {}
                // Parse what came, then stop: one read that would only say WouldBlock saved.
                Fill::Drained => drained = true,
                Fill::WouldBlock => return Ok(LinkStatus::Open),
                Fill::Eof => return Ok(LinkStatus::Closed),
            }
        }
    }

    /// Queue one whole frame if the bound allows (counted either way).
    fn queue_frame(&mut self, frame: &[u8]) {
        if !self.prefix.valid(frame.len()) {
            self.counters.dropped_bad_size += 1;
            return;
        }
        let header = self.prefix.encode(frame.len());
        let header = &header[..self.prefix.size()];
        if self.tx.len() + header.len() + frame.len() > OUTPUT_QUEUE_LIMIT {
            self.counters.dropped_queue_full += 1;
            return;
        }
        self.tx.push(&[header, frame]);
        self.counters.count_out(frame.len());
    }

    /// Queue raw protocol bytes (handshake messages) regardless of the bound, then flush.
    pub(crate) fn send_raw(
        &mut self,
        io: &mut dyn StreamIo,
        bytes: &[u8],
    ) -> Result<(), LinkError> {
        self.tx.push(&[bytes]);
        self.flush(io)
    }

    pub(crate) fn send_frames(
        &mut self,
        io: &mut dyn StreamIo,
        frames: &[&[u8]],
    ) -> Result<(), LinkError> {
        if !self.tx.is_empty() {
            self.flush(io)?;
            if !self.tx.is_empty() {
                for frame in frames {
                    self.queue_frame(frame);
                }
                return Ok(());
            }
        }
        // The batch arrays live on the stack and are initialised on every call: a few ACKs
        // (the usual batch of a guest→host transfer) must not pay for zeroing 512 frames' worth.
        if frames.len() <= SMALL_SENDMSG {
            self.send_batches::<SMALL_SENDMSG>(io, frames)
        } else {
            self.send_batches::<FRAMES_PER_SENDMSG>(io, frames)
        }
    }

    /// `send_frames` once the queue is empty: `sendmsg` calls of up to `N` frames each.
    fn send_batches<const N: usize>(
        &mut self,
        io: &mut dyn StreamIo,
        frames: &[&[u8]],
    ) -> Result<(), LinkError> {
        let header_size = self.prefix.size();
        let mut rest = frames;
        while !rest.is_empty() {
            // One batch: up to N valid frames, prefix and frame interleaved.
            let mut headers = [[0u8; 4]; N];
            let mut chosen: [&[u8]; N] = [&[]; N];
            let mut n = 0;
            let mut taken = 0;
            for frame in rest {
                if n == N {
                    break;
                }
                taken += 1;
                if !self.prefix.valid(frame.len()) {
                    self.counters.dropped_bad_size += 1;
                    continue;
                }
                headers[n] = self.prefix.encode(frame.len());
                chosen[n] = frame;
                n += 1;
            }
            rest = &rest[taken..];
            if n == 0 {
                continue;
            }
            let mut iov = [[IoSlice::new(&[]); 2]; N];
            for k in 0..n {
                iov[k] = [
                    IoSlice::new(&headers[k][..header_size]),
                    IoSlice::new(chosen[k]),
                ];
            }
            let written = loop {
                match io.write_some(iov[..n].as_flattened()) {
                    Ok(w) => break w,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                    Err(e) if peer_gone(&e) => return Err(LinkError::PeerClosed),
                    Err(e) => return Err(LinkError::Io(e)),
                }
            };
            // Account for whole frames written; queue the rest of this batch and of the call.
            let mut left = written;
            for k in 0..n {
                let framed = header_size + chosen[k].len();
                if left >= framed {
                    left -= framed;
                    self.counters.count_out(chosen[k].len());
                    continue;
                }
                if left > 0 {
                    // A partial frame went out: its remainder must follow, bound or not.
                    let header = &headers[k][..header_size];
                    if left < header_size {
                        self.tx.push(&[&header[left..], chosen[k]]);
                    } else {
                        self.tx.push(&[&chosen[k][left - header_size..]]);
                    }
                    self.counters.count_out(chosen[k].len());
                    left = 0;
                } else {
                    self.queue_frame(chosen[k]);
                }
            }
            if !self.tx.is_empty() {
                for frame in rest {
                    self.queue_frame(frame);
                }
                return Ok(());
            }
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self, io: &mut dyn StreamIo) -> Result<(), LinkError> {
        while !self.tx.is_empty() {
            match io.write_some(&[IoSlice::new(self.tx.bytes())]) {
                Ok(0) => return Ok(()),
                Ok(n) => self.tx.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if peer_gone(&e) => return Err(LinkError::PeerClosed),
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(())
    }
}

/// Errors that mean the other end is gone rather than that something broke.
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

// ---------------------------------------------------------------------------------------------
// One frame per message (dgram, bess).

/// Output side of a message link: `sendmmsg` batches and a bounded queue of whole messages.
#[derive(Default)]
pub(crate) struct DatagramOutput {
    queue: MessageQueue,
}

/// Outcome of one `sendmmsg`.
enum SendStep {
    Sent(usize),
    Blocked,
    /// The first message was refused on its own (`EMSGSIZE`, `ENOBUFS`): drop it, go on.
    DropOne,
    /// The peer address is gone (unconnected dgram): drop everything now pending.
    DropAll,
}

impl DatagramOutput {
    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Forget queued frames (the peer changed for good); each is counted as a send error.
    pub(crate) fn discard(&mut self, counters: &mut LinkCounters) {
        counters.dropped_send_error += self.queue.len() as u64;
        self.queue.clear();
    }

    fn step(
        fd: BorrowedFd<'_>,
        peer: Option<&PeerAddr>,
        batch: &[&[u8]],
    ) -> Result<SendStep, LinkError> {
        loop {
            return match sys::send_many(fd, peer, batch) {
                Ok(0) => Ok(SendStep::Blocked),
                Ok(n) => Ok(SendStep::Sent(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => Ok(SendStep::Blocked),
                    Some(libc::EMSGSIZE | libc::ENOBUFS | libc::ENOMEM) => Ok(SendStep::DropOne),
                    Some(libc::ECONNREFUSED | libc::ENOENT | libc::ECONNRESET | libc::EPIPE)
                        if peer.is_some() =>
                    {
                        Ok(SendStep::DropAll)
                    }
                    Some(libc::ECONNRESET | libc::EPIPE | libc::ENOTCONN | libc::ECONNREFUSED) => {
                        Err(LinkError::PeerClosed)
                    }
                    _ => Err(LinkError::Io(e)),
                },
            };
        }
    }

    fn queue_frame(&mut self, frame: &[u8], counters: &mut LinkCounters) {
        if self.queue.push(frame) {
            counters.count_out(frame.len());
        } else {
            counters.dropped_queue_full += 1;
        }
    }

    /// Send `frames` to `peer` (None: the socket is connected).
    pub(crate) fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        peer: Option<&PeerAddr>,
        frames: &[&[u8]],
        max_frame: usize,
        counters: &mut LinkCounters,
    ) -> Result<(), LinkError> {
        if !self.queue.is_empty() {
            self.flush(fd, peer, counters)?;
            if !self.queue.is_empty() {
                for frame in frames {
                    if (MIN_FRAME..=max_frame).contains(&frame.len()) {
                        self.queue_frame(frame, counters);
                    } else {
                        counters.dropped_bad_size += 1;
                    }
                }
                return Ok(());
            }
        }
        let mut rest = frames;
        let mut batch: [&[u8]; FRAMES_PER_SENDMMSG] = [&[]; FRAMES_PER_SENDMMSG];
        let mut n = 0;
        loop {
            // Top the batch up with valid frames.
            while n < FRAMES_PER_SENDMMSG && !rest.is_empty() {
                let frame = rest[0];
                rest = &rest[1..];
                if (MIN_FRAME..=max_frame).contains(&frame.len()) {
                    batch[n] = frame;
                    n += 1;
                } else {
                    counters.dropped_bad_size += 1;
                }
            }
            if n == 0 {
                return Ok(());
            }
            let sent = match Self::step(fd, peer, &batch[..n])? {
                SendStep::Sent(k) => {
                    for frame in &batch[..k] {
                        counters.count_out(frame.len());
                    }
                    k
                }
                SendStep::DropOne => {
                    counters.dropped_send_error += 1;
                    1
                }
                SendStep::DropAll => {
                    counters.dropped_send_error += (n + rest.len()) as u64;
                    return Ok(());
                }
                SendStep::Blocked => {
                    for frame in batch[..n].iter().chain(rest.iter()) {
                        if (MIN_FRAME..=max_frame).contains(&frame.len()) {
                            self.queue_frame(frame, counters);
                        } else {
                            counters.dropped_bad_size += 1;
                        }
                    }
                    return Ok(());
                }
            };
            batch.copy_within(sent..n, 0);
            n -= sent;
        }
    }

    pub(crate) fn flush(
        &mut self,
        fd: BorrowedFd<'_>,
        peer: Option<&PeerAddr>,
        counters: &mut LinkCounters,
    ) -> Result<(), LinkError> {
        while !self.queue.is_empty() {
            let mut batch: [&[u8]; FRAMES_PER_SENDMMSG] = [&[]; FRAMES_PER_SENDMMSG];
            let n = self.queue.front(&mut batch);
            match Self::step(fd, peer, &batch[..n])? {
                SendStep::Sent(k) => self.queue.pop(k),
                SendStep::DropOne => {
                    counters.dropped_send_error += 1;
                    self.queue.pop(1);
                }
                SendStep::DropAll => self.discard(counters),
                SendStep::Blocked => return Ok(()),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// mio glue and socket files.

/// Registers any fd-backed object with mio.
pub(crate) struct FdSource<T: AsRawFd>(pub(crate) T);

impl<T: AsRawFd> Source for FdSource<T> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

/// A unix socket of type `kind` bound at `path` for a guest link, non-blocking: a stale socket
/// file is replaced, a live one or any other kind of file refused ([`crate::unix_socket`]). The
/// file's mode is 0777 less the umask, as a plain `bind` gives.
pub(crate) fn bind_socket_file(
    path: &Path,
    kind: socket2::Type,
) -> Result<(socket2::Socket, SocketFile), LinkError> {
    let (socket, file) = SocketPlace::of_path(path)?.bind(kind, 0o777)?;
    socket.set_nonblocking(true)?;
    Ok((socket, file))
}

/// Accept loop shared by the listeners: keep going until `WouldBlock`; an error ends the loop
/// and is returned only if nothing was accepted.
pub(crate) fn accept_all<T>(
    mut accept_one: impl FnMut() -> io::Result<T>,
    mut make_link: impl FnMut(T) -> io::Result<Box<dyn GuestLink>>,
) -> io::Result<Vec<Box<dyn GuestLink>>> {
    let mut links = Vec::new();
    loop {
        let result = accept_one().and_then(&mut make_link);
        match result {
            Ok(link) => links.push(link),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(links),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if links.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "accepting a guest connection failed");
                return Ok(links);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// System calls std and socket2 don't offer.

/// A unix socket address as `recvfrom` returned it, reusable for `sendmmsg`.
#[derive(Clone, Copy)]
pub(crate) struct PeerAddr {
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
}

impl PeerAddr {
    /// An unbound sender: it can't be answered.
    pub(crate) fn is_unnamed(&self) -> bool {
        (self.len as usize) <= std::mem::size_of::<libc::sa_family_t>()
    }

    fn name_bytes(&self) -> &[u8] {
        let offset = std::mem::size_of::<libc::sa_family_t>();
        let len = (self.len as usize)
            .saturating_sub(offset)
            .min(self.addr.sun_path.len());
        // SAFETY: `sun_path` is a plain `c_char` array; viewing `len <= sun_path.len()` of its
        // bytes as `u8` reads only initialised memory of the same size and alignment.
        unsafe { std::slice::from_raw_parts(self.addr.sun_path.as_ptr().cast::<u8>(), len) }
    }

    /// The path (or `@abstract` name) for logs.
    pub(crate) fn describe(&self) -> String {
        let name = self.name_bytes();
        match name.first() {
            None => "(unnamed)".to_owned(),
            Some(0) => format!("@{}", String::from_utf8_lossy(&name[1..])),
            Some(_) => {
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                String::from_utf8_lossy(&name[..end]).into_owned()
            }
        }
    }

    pub(crate) fn same_as(&self, other: &PeerAddr) -> bool {
        self.len == other.len && self.name_bytes() == other.name_bytes()
    }
}

pub(crate) mod sys {
    use super::PeerAddr;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

    fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: fcntl on a valid, borrowed fd with integer arguments touches no memory.
        let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
        }
        Ok(())
    }

    /// A close-on-exec duplicate of `fd` numbered 3 or above.
    pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC only reads the fd number; a bad fd gives EBADF.
        let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
        // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    /// Point descriptor number `target` at `/dev/null`.
    pub(crate) fn redirect_to_dev_null(target: RawFd) -> io::Result<()> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // SAFETY: dup2 between two valid descriptor numbers; it only changes the fd table.
        check(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
        Ok(())
    }

    /// `recvfrom` into `buf`, returning the length and the sender's address.
    pub(crate) fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `buf` is valid for `buf.len()` writable bytes; `addr`/`len` describe a
        // writable sockaddr_un of the stated size; the kernel writes within those bounds.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_un).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((n as usize, PeerAddr { addr, len }))
    }

    /// `sendmmsg` one message per frame, to `peer` or (None) to the connected peer.
    /// Returns how many messages the kernel took.
    pub(crate) fn send_many(
        fd: BorrowedFd<'_>,
        peer: Option<&PeerAddr>,
        frames: &[&[u8]],
    ) -> io::Result<usize> {
        const N: usize = super::FRAMES_PER_SENDMMSG;
        let n = frames.len().min(N);
        // SAFETY: iovec and mmsghdr are plain old data; all-zero is a valid value.
        let mut iov: [libc::iovec; N] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
        for k in 0..n {
            iov[k].iov_base = frames[k].as_ptr() as *mut libc::c_void;
            iov[k].iov_len = frames[k].len();
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            if let Some(peer) = peer {
                msgs[k].msg_hdr.msg_name = &peer.addr as *const libc::sockaddr_un as *mut _;
                msgs[k].msg_hdr.msg_namelen = peer.len;
            }
        }
        // SAFETY: every msg_hdr points at an iovec describing a live, readable frame slice and
        // (optionally) at a live sockaddr_un of `msg_namelen` bytes; sendmmsg only reads them
        // (the `*mut` casts are demanded by the C signature) and writes `msg_len` fields of
        // `msgs`, which we own.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// Turn an `OwnedFd` into a non-blocking one.
pub(crate) fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    use std::os::fd::AsFd;
    sys::set_nonblocking(fd.as_fd())?;
    Ok(fd)
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir for socket files; removed by the guard.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("slipway-link-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A test frame: `len` bytes, the first two carrying `seq` (big-endian), then a pattern.
    pub(crate) fn frame(seq: u16, len: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7)).collect();
        f[..2].copy_from_slice(&seq.to_be_bytes());
        f
    }

    /// Collect frames delivered by `read_frames`.
    pub(crate) fn collect(
        link: &mut dyn super::GuestLink,
        budget: usize,
    ) -> (Result<super::LinkStatus, super::LinkError>, Vec<Vec<u8>>) {
        let mut got = Vec::new();
        let status = link.read_frames(budget, &mut |f, _| got.push(f.to_vec()));
        (status, got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_encodings() {
        assert_eq!(&LengthPrefix::Be32.encode(0x0102)[..4], &[0, 0, 1, 2]);
        assert_eq!(&LengthPrefix::Le16.encode(0x0102)[..2], &[2, 1]);
        assert_eq!(LengthPrefix::Be32.decode(&[0, 1, 0, 0x0e]), 65550);
        assert_eq!(LengthPrefix::Le16.decode(&[0xdc, 0x05]), 1500);
        assert!(!LengthPrefix::Be32.valid(13));
        assert!(LengthPrefix::Be32.valid(14));
        assert!(LengthPrefix::Be32.valid(MAX_FRAME));
        assert!(!LengthPrefix::Be32.valid(MAX_FRAME + 1));
        assert!(LengthPrefix::Le16.valid(65535));
    }

    #[test]
    fn message_queue_is_fifo_and_bounded() {
        let mut q = MessageQueue::default();
        assert!(q.push(&[1; 20]));
        assert!(q.push(&[2; 30]));
        {
            let mut out: [&[u8]; 4] = [&[]; 4];
            assert_eq!(q.front(&mut out), 2);
            assert_eq!(out[0], &[1; 20][..]);
            assert_eq!(out[1], &[2; 30][..]);
        }
        q.pop(1);
        {
            let mut out: [&[u8]; 4] = [&[]; 4];
            assert_eq!(q.front(&mut out), 1);
            assert_eq!(out[0], &[2; 30][..]);
        }
        q.pop(1);
        assert!(q.is_empty());
        let big = vec![0u8; 60000];
        let mut accepted = 0;
        while q.push(&big) {
            accepted += 1;
        }
        assert_eq!(accepted, OUTPUT_QUEUE_LIMIT / (60000 + 4));
        assert!(q.queued_bytes() <= OUTPUT_QUEUE_LIMIT);
    }

    #[test]
    fn byte_queue_compacts_without_losing_order() {
        let mut q = ByteQueue::default();
        for i in 0..100u8 {
            q.push(&[&[i; 10]]);
            if i % 3 == 0 {
                q.consume(7);
            }
        }
        let total = 100 * 10 - 34 * 7;
        assert_eq!(q.len(), total);
        // The remaining bytes are the tail of the pushed sequence, in order.
        let all: Vec<u8> = (0..100u8).flat_map(|i| [i; 10]).collect();
        assert_eq!(q.bytes(), &all[all.len() - total..]);
    }

    /// A stream that takes at most `room` more bytes, then reports `WouldBlock`.
    struct Trickle {
        written: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl StreamIo for Trickle {
        fn read_some(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }

        fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room - n);
                self.written.extend_from_slice(&b[..take]);
                n += take;
            }
            self.room -= n;
            Ok(n)
        }
    }

    fn framed_be32(frames: &[&[u8]]) -> Vec<u8> {
        frames
            .iter()
            .flat_map(|f| {
                let mut v = (f.len() as u32).to_be_bytes().to_vec();
                v.extend_from_slice(f);
                v
            })
            .collect()
    }

    /// Serves its chunks one per `read()` (each cut to the room offered), then `WouldBlock`.
    struct Chunks {
        chunks: std::collections::VecDeque<Vec<u8>>,
        reads: usize,
    }

    impl StreamIo for Chunks {
        fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let Some(mut c) = self.chunks.pop_front() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let n = c.len().min(buf.len());
            buf[..n].copy_from_slice(&c[..n]);
            if n < c.len() {
                self.chunks.push_front(c.split_off(n));
            }
            Ok(n)
        }

        fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
    }

    #[test]
    fn short_read_ends_the_call_without_a_wouldblock_read() {
        let f1 = testutil::frame(1, 1500);
        let f2 = testutil::frame(2, 9000);
        let mut framer = StreamFramer::new(LengthPrefix::Be32);
        let mut io = Chunks {
            chunks: [framed_be32(&[&f1]), framed_be32(&[&f2])].into(),
            reads: 0,
        };
        let mut got = Vec::new();
        let status = framer.read_frames(&mut io, 64, &mut |f| got.push(f.to_vec()));
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(
            (got.len(), io.reads),
            (1, 1),
            "one short read, one frame, no second read"
        );
        framer
            .read_frames(&mut io, 64, &mut |f| got.push(f.to_vec()))
            .unwrap();
        assert_eq!(got, [f1, f2]);
        assert_eq!(io.reads, 2);
    }

    #[test]
    fn full_read_reads_on_until_wouldblock() {
        // A stream that fills the whole buffer each time: the framer must keep reading, since
        // more may be waiting, and carry the frame cut at the buffer's end over.
        let frames: Vec<Vec<u8>> = (0..12).map(|i| testutil::frame(i, 60_000)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let mut framer = StreamFramer::new(LengthPrefix::Be32);
        let mut io = Chunks {
            chunks: [framed_be32(&refs)].into(),
            reads: 0,
        };
        let mut got = Vec::new();
        framer
            .read_frames(&mut io, 64, &mut |f| got.push(f.to_vec()))
            .unwrap();
        assert_eq!(got, frames);
    }

    #[test]
    fn large_batches_cut_anywhere_queue_the_exact_remainder() {
        // More frames than the small batch arrays hold, and more than one sendmsg's worth.
        for count in [SMALL_SENDMSG + 1, FRAMES_PER_SENDMSG + 3] {
            let owned: Vec<Vec<u8>> = (0..count)
                .map(|i| testutil::frame(i as u16, 14 + i % 50))
                .collect();
            let frames: Vec<&[u8]> = owned.iter().map(|f| f.as_slice()).collect();
            let want = framed_be32(&frames);
            for cut in [0, 1, 4, 17, want.len() / 2, want.len() - 1, want.len()] {
                let mut framer = StreamFramer::new(LengthPrefix::Be32);
                let mut io = Trickle {
                    written: Vec::new(),
                    room: cut,
                    calls: 0,
                };
                framer.send_frames(&mut io, &frames).unwrap();
                assert_eq!(framer.counters.frames_out, count as u64);
                io.room = usize::MAX / 2;
                framer.flush(&mut io).unwrap();
                assert!(!framer.has_pending_output());
                assert_eq!(io.written, want, "{count} frames, cut {cut}");
            }
        }
    }

    #[test]
    fn partial_write_queues_the_exact_remainder() {
        let f1 = testutil::frame(1, 20);
        let f2 = testutil::frame(2, 30);
        let f3 = testutil::frame(3, 40);
        let frames: [&[u8]; 3] = [&f1, &f2, &f3];
        let want = framed_be32(&frames);
        // Cut inside the first prefix, inside the first frame, inside the second prefix, at a
        // frame boundary, and not at all.
        for cut in [0, 2, 10, 26, 24, want.len()] {
            let mut framer = StreamFramer::new(LengthPrefix::Be32);
            let mut io = Trickle {
                written: Vec::new(),
                room: cut,
                calls: 0,
            };
            framer.send_frames(&mut io, &frames).unwrap();
            assert_eq!(io.calls, 1, "one system call for the batch");
            assert_eq!(framer.queued_output(), want.len() - cut, "cut {cut}");
            assert_eq!(framer.counters.frames_out, 3);
            io.room = usize::MAX / 2;
            framer.flush(&mut io).unwrap();
            assert!(!framer.has_pending_output());
            assert_eq!(io.written, want, "cut {cut}");
        }
    }

    #[test]
    fn later_sends_queue_behind_a_backlog() {
        let f1 = testutil::frame(1, 20);
        let f2 = testutil::frame(2, 30);
        let mut framer = StreamFramer::new(LengthPrefix::Le16);
        let mut io = Trickle {
            written: Vec::new(),
            room: 5,
            calls: 0,
        };
        framer.send_frames(&mut io, &[&f1]).unwrap();
        framer.send_frames(&mut io, &[&f2]).unwrap();
        io.room = 1000;
        framer.flush(&mut io).unwrap();
        let mut want = vec![20, 0];
        want.extend_from_slice(&f1);
        want.extend_from_slice(&[30, 0]);
        want.extend_from_slice(&f2);
        assert_eq!(io.written, want);
    }

    #[test]
    fn queue_bound_drops_whole_frames_only() {
        let f = testutil::frame(1, 60000);
        let mut framer = StreamFramer::new(LengthPrefix::Be32);
        let mut io = Trickle {
            written: Vec::new(),
            room: 100,
            calls: 0,
        };
        let batch: Vec<&[u8]> = (0..100).map(|_| f.as_slice()).collect();
        framer.send_frames(&mut io, &batch).unwrap();
        let fit = 1 + (OUTPUT_QUEUE_LIMIT - (60004 - 100)) / 60004;
        assert_eq!(framer.counters.frames_out, fit as u64);
        assert_eq!(framer.counters.dropped_queue_full, 100 - fit as u64);
        io.room = usize::MAX / 2;
        framer.flush(&mut io).unwrap();
        assert_eq!(io.written, framed_be32(&batch[..fit]));
    }
}

/// Entry points for the fuzz targets (`fuzz/`): the stream framings driven from memory.
#[doc(hidden)]
pub mod fuzzing {
    use super::{LengthPrefix, LinkError, LinkStatus, StreamFramer, StreamIo, MIN_FRAME};
    use std::io::{self, IoSlice};

    pub use super::tap::fuzzing::tap_vnet;

    /// Serves `data` in reads whose sizes cycle through `read_sizes` (1 byte at least), then
    /// end of stream.
    struct SliceIo<'a> {
        data: &'a [u8],
        pos: usize,
        read_sizes: &'a [u8],
        reads: usize,
    }

    impl StreamIo for SliceIo<'_> {
        fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self
                .read_sizes
                .get(self.reads % self.read_sizes.len().max(1))
                .copied()
                .unwrap_or(255);
            self.reads += 1;
            let n = (usize::from(size).max(1) * 64)
                .min(buf.len())
                .min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }

        fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
    }

    /// Parse `data` as a QEMU (4-byte big-endian) or vpnkit/stdio (2-byte little-endian) frame
    /// stream and check what the framer delivers: every frame has a legal size and the frames,
    /// re-framed, are exactly a prefix of the input. Panics on a violation (for the fuzzer).
    pub fn stream_framing(le16: bool, data: &[u8], read_sizes: &[u8], budget: usize) {
        let prefix = if le16 {
            LengthPrefix::Le16
        } else {
            LengthPrefix::Be32
        };
        let mut framer = StreamFramer::new(prefix);
        let mut io = SliceIo {
            data,
            pos: 0,
            read_sizes,
            reads: 0,
        };
        let mut rebuilt = Vec::with_capacity(data.len());
        let budget = budget.max(1);
        for _ in 0..data.len() + 2 {
            let mut frames = 0;
            let result = framer.read_frames(&mut io, budget, &mut |f| {
                assert!(
                    (MIN_FRAME..=prefix.max_frame()).contains(&f.len()),
                    "illegal frame size {}",
                    f.len()
                );
                rebuilt.extend_from_slice(&prefix.encode(f.len())[..prefix.size()]);
                rebuilt.extend_from_slice(f);
                frames += 1;
            });
            assert!(frames <= budget, "budget exceeded");
            assert!(
                data.starts_with(&rebuilt),
                "frames do not reproduce the input"
            );
            match result {
                // The budget ran out, or a short read stopped the framer as a drained socket
                // would: call again, as the event loop does on the next readiness edge.
                Ok(LinkStatus::Open) => continue,
                Ok(LinkStatus::Closed) => return,
                Err(LinkError::BadLength { len, .. }) => {
                    assert!(!(MIN_FRAME..=prefix.max_frame()).contains(&len));
                    return;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        panic!("the framer did not finish a {}-byte input", data.len());
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn framing_harness_accepts_good_and_bad_streams() {
            let mut data = Vec::new();
            for len in [14usize, 60, 1514] {
                data.extend_from_slice(&(len as u32).to_be_bytes());
                data.extend(std::iter::repeat_n(7u8, len));
            }
            super::stream_framing(false, &data, &[1, 3, 200], 2);
            data.extend_from_slice(&[0, 0, 0, 5]); // an illegal length ends the stream
            super::stream_framing(false, &data, &[9], 1);
            super::stream_framing(true, &[60, 0, 1, 2], &[], 8); // truncated frame, then EOF
        }
    }
}
