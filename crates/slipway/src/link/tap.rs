//! TAP link: a TAP device fd (`IFF_TAP | IFF_NO_PI`), one Ethernet frame per `read()` and per
//! `write()` — how slirp4netns and pasta serve a container's network namespace — with a vnet
//! header and checksum offload when the device has one.
//!
//! # Theory of operation
//!
//! The caller opens (or receives) the TAP fd inside the guest's network namespace and hands it
//! over; the link makes it non-blocking. Each `read()` into a `MAX_FRAME + 1` buffer returns one
//! whole frame; each frame goes out with its own `write()` (TAP has no batched write). What
//! the fd won't take now (`EAGAIN`) is queued whole, bounded, and written by `flush`.
//!
//! **Vnet header.** slipway creates its TAP devices with `IFF_VNET_HDR`; `new` asks the fd
//! (`TUNGETIFF`) and, when the flag is set, turns on checksum offload (`TUNSETOFFLOAD` with
//! `TUN_F_CSUM`, so the device claims `NETIF_F_HW_CSUM`). Every frame then travels behind a
//! `struct virtio_net_hdr` (10 bytes, native byte order, `TUNGETVNETHDRSZ` may make it longer):
//! `flags` (1 = `NEEDS_CSUM`, 2 = `DATA_VALID`), `gso_type` (0 = none), `hdr_len`, `gso_size`,
//! `csum_start`, `csum_offset`. The namespace's kernel no longer sums what it sends: its TCP/UDP
//! frames arrive `NEEDS_CSUM`, handed to the core as [`RxChecksum::Partial`], and not summed
//! here either. Data segments the core leaves partial go out `NEEDS_CSUM`, which the receiving
//! kernel accepts without summing them (`CHECKSUM_PARTIAL`). See `slipway_core::offload`.
//! No segmentation offload is enabled, so a frame with a `gso_type` is malformed.
//!
//! Errors: `EIO` (the interface is down), `ENOBUFS`, `EMSGSIZE` and `EINVAL` on a write lose
//! that frame only (`dropped_send_error`); the link stays up, since a container often brings
//! its interface up after slipway starts. `EBADFD` (the device is gone with its namespace) or a
//! `read()` of 0 bytes closes the link. A frame of fewer than 14 or more than `MAX_FRAME` bytes,
//! a vnet header asking for segmentation, or a checksum field outside the frame is dropped and
//! counted in `bad_frames`.
//!
//! # Limits
//!
//! - Frames 14..=65553 bytes; one system call per frame; 4 MiB output queue.
//! - A TAP fd handed over with `IFF_VNET_HDR` and a header longer than 32 bytes is refused.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::event::Source;
use slipway_core::offload::{PartialCsum, RxChecksum};

use super::{
    nonblocking, FdSource, GuestLink, LinkCounters, LinkError, LinkStatus, MessageQueue,
    DATAGRAM_RX_BUFFER, MAX_FRAME, MIN_FRAME,
};

/// `struct virtio_net_hdr` without `num_buffers`.
const VNET_HDR_LEN: usize = 10;
/// The longest vnet header accepted (`TUNSETVNETHDRSZ` has no upper bound).
const VNET_HDR_MAX: usize = 32;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_F_DATA_VALID: u8 = 2;
const VNET_GSO_NONE: u8 = 0;

/// One TAP device.
pub struct TapLink {
    fd: FdSource<File>,
    rx: Box<[u8]>,
    out: MessageQueue,
    counters: LinkCounters,
    name: String,
    /// Bytes of vnet header before each frame (0: none).
    vnet: usize,
    /// The kernel leaves TCP/UDP checksums to us (`TUN_F_CSUM` is on).
    offload: bool,
}

/// What one `write()` did with a frame.
enum Written {
    Sent,
    Blocked,
    /// Refused for this frame only (interface down, no buffer space, bad size).
    Lost,
}

fn write_parts(fd: &File, parts: &[IoSlice<'_>]) -> Result<Written, LinkError> {
    loop {
        let r = if parts.len() == 1 {
            (&*fd).write(&parts[0])
        } else {
            (&*fd).write_vectored(parts)
        };
        return match r {
            Ok(_) => Ok(Written::Sent),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => Ok(Written::Blocked),
                Some(libc::EIO | libc::ENOBUFS | libc::EMSGSIZE | libc::EINVAL) => {
                    Ok(Written::Lost)
                }
                Some(libc::EBADFD | libc::EPIPE | libc::ECONNREFUSED | libc::ECONNRESET) => {
                    Err(LinkError::PeerClosed)
                }
                _ => Err(LinkError::Io(e)),
            },
        };
    }
}

/// The vnet header for a frame we send: `NEEDS_CSUM` at `csum`, or all zero.
fn vnet_header(csum: Option<PartialCsum>) -> [u8; VNET_HDR_MAX] {
    let mut h = [0u8; VNET_HDR_MAX];
    if let Some(c) = csum {
        h[0] = VNET_F_NEEDS_CSUM;
        h[1] = VNET_GSO_NONE;
        // hdr_len: the kernel copies at least this much into the packet's linear part.
        h[2..4].copy_from_slice(&(c.start + c.offset + 2).to_ne_bytes());
        h[6..8].copy_from_slice(&c.start.to_ne_bytes());
        h[8..10].copy_from_slice(&c.offset.to_ne_bytes());
    }
    h
}

/// Parse the vnet header of a received frame: what it says of the checksum, or None when the
/// frame is malformed (segmentation asked for, or a checksum field outside the frame). A
/// partial checksum in a place no TCP or UDP header puts one is finished here, so the core
/// only ever sees the two it can trust.
fn parse_vnet(hdr: &[u8], frame: &mut [u8]) -> Option<RxChecksum> {
    let flags = hdr[0];
    if hdr[1] != VNET_GSO_NONE {
        return None;
    }
    if flags & VNET_F_NEEDS_CSUM != 0 {
        let p = PartialCsum {
            start: u16::from_ne_bytes([hdr[6], hdr[7]]),
            offset: u16::from_ne_bytes([hdr[8], hdr[9]]),
        };
        if usize::from(p.start) + usize::from(p.offset) + 2 > frame.len() {
            return None;
        }
        let field = usize::from(p.offset);
        if field == slipway_wire::tcp::CHECKSUM_OFFSET
            || field == slipway_wire::udp::CHECKSUM_OFFSET
        {
            return Some(RxChecksum::Partial(p));
        }
        p.complete(frame);
        return Some(RxChecksum::Unverified);
    }
    if flags & VNET_F_DATA_VALID != 0 {
        return Some(RxChecksum::Valid);
    }
    Some(RxChecksum::Unverified)
}

/// The vnet header length of a TAP fd opened with `IFF_VNET_HDR`, or None without one (or for
/// an fd that is not a TAP device).
fn vnet_header_len(fd: &OwnedFd) -> io::Result<Option<usize>> {
    let mut ifreq = [0u8; 40];
    // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes on Linux) into the buffer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, ifreq.as_mut_ptr()) };
    if rc != 0 {
        return Ok(None);
    }
    let flags = i32::from(i16::from_ne_bytes([ifreq[16], ifreq[17]]));
    if flags & libc::IFF_VNET_HDR == 0 {
        return Ok(None);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETVNETHDRSZ, &mut size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let size = usize::try_from(size).unwrap_or(0);
    if !(VNET_HDR_LEN..=VNET_HDR_MAX).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the TAP device's vnet header is {size} bytes; slipway reads {VNET_HDR_LEN} to \
                 {VNET_HDR_MAX} (set it with TUNSETVNETHDRSZ, or open the device without IFF_VNET_HDR)"
            ),
        ));
    }
    Ok(Some(size))
}

/// Ask the kernel to leave TCP/UDP checksums to us; false when it refuses (then it sums them
/// and the vnet header only ever says so).
fn enable_checksum_offload(fd: &OwnedFd) -> bool {
    // SAFETY: TUNSETOFFLOAD takes its flags as the argument value.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::TUN_F_CSUM as libc::c_ulong,
        )
    };
    rc == 0
}

impl TapLink {
    /// Serve the TAP device behind `fd` (made non-blocking here). With `IFF_VNET_HDR` on the
    /// device, checksum offload is turned on.
    pub fn new(fd: OwnedFd) -> io::Result<TapLink> {
        let (vnet, offload) = match vnet_header_len(&fd)? {
            Some(len) => (len, enable_checksum_offload(&fd)),
            None => (0, false),
        };
        Self::with_vnet(fd, vnet, offload)
    }

    /// A link whose frames travel behind `vnet` bytes of vnet header (0: none); `offload`:
    /// the kernel was told to leave checksums to us.
    fn with_vnet(fd: OwnedFd, vnet: usize, offload: bool) -> io::Result<TapLink> {
        let fd = nonblocking(fd)?;
        let name = format!("tap:fd{}", fd.as_raw_fd());
        Ok(TapLink {
            fd: FdSource(File::from(fd)),
            rx: vec![0; DATAGRAM_RX_BUFFER + vnet].into_boxed_slice(),
            out: MessageQueue::default(),
            counters: LinkCounters::default(),
            name,
            vnet,
            offload,
        })
    }

    /// Replace the name `describe()` returns (e.g. `tap:tap0@container`).
    pub fn with_name(mut self, name: impl Into<String>) -> TapLink {
        self.name = name.into();
        self
    }

    #[cfg(test)]
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.0.as_raw_fd()
    }

    fn queue(&mut self, hdr: &[u8], frame: &[u8]) {
        if self.out.push_prefixed(hdr, frame) {
            self.counters.count_out(frame.len());
        } else {
            self.counters.dropped_queue_full += 1;
        }
    }
}

impl GuestLink for TapLink {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.fd
    }

    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError> {
        let mut delivered = 0;
        let v = self.vnet;
        while delivered < budget {
            match (&self.fd.0).read(&mut self.rx) {
                Ok(0) => return Ok(LinkStatus::Closed),
                Ok(n) if n < v || !(MIN_FRAME..=MAX_FRAME).contains(&(n - v)) => {
                    self.counters.bad_frames += 1
                }
                Ok(n) => {
                    let (hdr, frame) = self.rx[..n].split_at_mut(v);
                    let csum = if v == 0 {
                        Some(RxChecksum::Unverified)
                    } else {
                        parse_vnet(hdr, frame)
                    };
                    match csum {
                        Some(csum) => {
                            self.counters.count_in(frame.len());
                            on_frame(frame, csum);
                            delivered += 1;
                        }
                        None => self.counters.bad_frames += 1,
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => break,
                    Some(libc::EBADFD) => return Ok(LinkStatus::Closed),
                    _ => return Err(LinkError::Io(e)),
                },
            }
        }
        Ok(LinkStatus::Open)
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.send_frames_with(frames, &[])
    }

    fn offloads_checksum(&self) -> bool {
        self.offload
    }

    fn send_frames_with(
        &mut self,
        frames: &[&[u8]],
        csum: &[Option<PartialCsum>],
    ) -> Result<(), LinkError> {
        if !self.out.is_empty() {
            self.flush()?;
        }
        let mut blocked = !self.out.is_empty();
        for (i, frame) in frames.iter().enumerate() {
            if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
                self.counters.dropped_bad_size += 1;
                continue;
            }
            let c = csum.get(i).copied().flatten();
            debug_assert!(c.is_none() || self.offload);
            let hdr = vnet_header(c);
            let hdr = &hdr[..self.vnet];
            if !blocked {
                let parts = [IoSlice::new(hdr), IoSlice::new(frame)];
                let parts = if hdr.is_empty() {
                    &parts[1..]
                } else {
                    &parts[..]
                };
                match write_parts(&self.fd.0, parts)? {
                    Written::Sent => {
                        self.counters.count_out(frame.len());
                        continue;
                    }
                    Written::Lost => {
                        self.counters.dropped_send_error += 1;
                        continue;
                    }
                    Written::Blocked => blocked = true,
                }
            }
            self.queue(hdr, frame);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        while !self.out.is_empty() {
            let mut first: [&[u8]; 1] = [&[]];
            self.out.front(&mut first);
            let outcome = write_parts(&self.fd.0, &[IoSlice::new(first[0])])?;
            match outcome {
                Written::Sent => self.out.pop(1),
                Written::Lost => {
                    self.counters.dropped_send_error += 1;
                    self.out.pop(1);
                }
                Written::Blocked => return Ok(()),
            }
        }
        Ok(())
    }

    fn has_pending_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// Feed `data` to a TAP link with a vnet header of `10 + (data[0] % 23)` bytes, as datagrams
    /// of `[len: u16 LE][bytes]`, and check what it delivers: legal frame sizes, and a partial
    /// checksum only at a TCP or UDP field inside its frame. Panics on a violation.
    pub fn tap_vnet(data: &[u8]) {
        let Some((&first, mut rest)) = data.split_first() else {
            return;
        };
        let vnet = VNET_HDR_LEN + usize::from(first) % (VNET_HDR_MAX - VNET_HDR_LEN + 1);
        let (a, b) = UnixDatagram::pair().expect("a socketpair");
        let mut link = TapLink::with_vnet(OwnedFd::from(a), vnet, true).expect("a link");
        let (mut sent, mut delivered) = (0u64, 0u64);
        while rest.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            let take = len.min(rest.len() - 2);
            let datagram = &rest[2..2 + take];
            rest = &rest[2 + take..];
            // A TAP never reads 0 bytes but when it is gone; one datagram at a time keeps the
            // socket's short queue from blocking the sender.
            if datagram.is_empty() || b.send(datagram).is_err() {
                continue;
            }
            sent += 1;
            let status = link.read_frames(64, &mut |f, c| {
                assert!(
                    (MIN_FRAME..=MAX_FRAME).contains(&f.len()),
                    "frame of {}",
                    f.len()
                );
                if let RxChecksum::Partial(p) = c {
                    let field = usize::from(p.offset);
                    assert!(field == 16 || field == 6, "partial at offset {field}");
                    assert!(usize::from(p.start) + field + 2 <= f.len(), "field outside");
                }
                delivered += 1;
            });
            assert_eq!(status.expect("reading a datagram"), LinkStatus::Open);
        }
        let c = link.counters();
        assert_eq!(
            delivered + c.bad_frames,
            sent,
            "every datagram delivered or counted"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testutil::{collect, frame};
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// A SOCK_DGRAM socketpair stands in for the TAP fd: one frame per read/write, like TAP.
    fn pair() -> (TapLink, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (
            TapLink::new(OwnedFd::from(a))
                .unwrap()
                .with_name("tap:test"),
            b,
        )
    }

    #[test]
    fn one_frame_per_read_and_write() {
        let (mut link, peer) = pair();
        assert_eq!(link.describe(), "tap:test");
        let sizes = [60usize, 1514, 65535 + 14];
        for (i, &len) in sizes.iter().enumerate() {
            peer.send(&frame(i as u16, len)).unwrap();
        }
        peer.send(&[0u8; 13]).unwrap();
        let (status, got) = collect(&mut link, 64);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &l)| frame(i as u16, l))
            .collect();
        assert_eq!(got, want);
        assert_eq!(link.counters().bad_frames, 1);

        let out: Vec<Vec<u8>> = (0..20).map(|i| frame(i, 60 + i as usize)).collect();
        let refs: Vec<&[u8]> = out.iter().map(|f| f.as_slice()).collect();
        link.send_frames(&refs).unwrap();
        let mut buf = vec![0u8; 70000];
        for f in &out {
            let n = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &f[..]);
        }
        assert_eq!(link.counters().frames_out, 20);
    }

    #[test]
    fn oversized_read_is_dropped_not_truncated_into_a_frame() {
        let (mut link, peer) = pair();
        peer.send(&vec![1u8; MAX_FRAME + 100]).unwrap();
        peer.send(&frame(1, 60)).unwrap();
        let (_, got) = collect(&mut link, 64);
        assert_eq!(got, vec![frame(1, 60)]);
        assert_eq!(link.counters().bad_frames, 1);
    }

    #[test]
    fn budget_limits_frames_per_call() {
        let (mut link, peer) = pair();
        for i in 0..10 {
            peer.send(&frame(i, 60)).unwrap();
        }
        let (_, first) = collect(&mut link, 4);
        assert_eq!(first.len(), 4);
        let (_, rest) = collect(&mut link, 64);
        assert_eq!(rest.len(), 6);
        assert_eq!(u16::from_be_bytes([rest[0][0], rest[0][1]]), 4);
    }

    #[test]
    fn blocked_writes_are_queued_and_flushed_in_order() {
        let (mut link, peer) = pair();
        let mut seq = 0u16;
        while !link.has_pending_output() {
            let batch: Vec<Vec<u8>> = (0..32).map(|i| frame(seq + i, 1000)).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|f| f.as_slice()).collect();
            link.send_frames(&refs).unwrap();
            seq += 32;
            assert!(seq < 20000, "the socket never filled");
        }
        peer.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        while got.len() < seq as usize {
            match peer.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 1000);
                    got.push(u16::from_be_bytes([buf[0], buf[1]]));
                }
                Err(_) => link.flush().unwrap(),
            }
        }
        assert_eq!(got, (0..seq).collect::<Vec<_>>());
        assert!(!link.has_pending_output());
    }

    /// The same, with a 10-byte vnet header before every frame and checksum offload on.
    fn vnet_pair() -> (TapLink, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (
            TapLink::with_vnet(OwnedFd::from(a), VNET_HDR_LEN, true).unwrap(),
            b,
        )
    }

    fn hdr(flags: u8, gso: u8, start: u16, offset: u16) -> Vec<u8> {
        let mut h = vec![0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso;
        h[6..8].copy_from_slice(&start.to_ne_bytes());
        h[8..10].copy_from_slice(&offset.to_ne_bytes());
        h
    }

    #[test]
    fn vnet_header_says_what_the_kernel_did_with_the_checksum() {
        let (mut link, peer) = vnet_pair();
        assert!(link.offloads_checksum());
        let f = frame(1, 100);
        let send = |h: Vec<u8>, f: &[u8]| peer.send(&[h, f.to_vec()].concat()).unwrap();
        send(hdr(VNET_F_NEEDS_CSUM, 0, 34, 16), &f);
        send(hdr(VNET_F_DATA_VALID, 0, 0, 0), &f);
        send(hdr(0, 0, 0, 0), &f);
        send(hdr(VNET_F_NEEDS_CSUM, 0, 90, 16), &f); // field past the end: malformed
        send(hdr(0, 1, 0, 0), &f); // TSO asked for: we never enabled it
        peer.send(&[0u8; VNET_HDR_LEN + 5]).unwrap(); // header and a runt frame
        let mut got = Vec::new();
        link.read_frames(64, &mut |f, c| got.push((f.to_vec(), c)))
            .unwrap();
        let partial = PartialCsum {
            start: 34,
            offset: 16,
        };
        assert_eq!(
            got,
            vec![
                (f.clone(), RxChecksum::Partial(partial)),
                (f.clone(), RxChecksum::Valid),
                (f.clone(), RxChecksum::Unverified),
            ]
        );
        assert_eq!(link.counters().bad_frames, 3);
    }

    #[test]
    fn a_partial_checksum_at_an_odd_place_is_finished_by_the_link() {
        let (mut link, peer) = vnet_pair();
        let f = frame(1, 100);
        peer.send(&[hdr(VNET_F_NEEDS_CSUM, 0, 20, 2), f.clone()].concat())
            .unwrap();
        let mut got = Vec::new();
        link.read_frames(64, &mut |f, c| got.push((f.to_vec(), c)))
            .unwrap();
        let mut want = f.clone();
        assert!(slipway_wire::checksum::complete_partial(&mut want, 20, 2));
        assert_eq!(got, vec![(want, RxChecksum::Unverified)]);
    }

    #[test]
    fn frames_go_out_behind_a_vnet_header_also_when_queued() {
        let (mut link, peer) = vnet_pair();
        let partial = PartialCsum {
            start: 34,
            offset: 16,
        };
        let (a, b) = (frame(1, 200), frame(2, 300));
        link.send_frames_with(&[&a, &b], &[Some(partial), None])
            .unwrap();
        let mut buf = vec![0u8; 70000];
        let n = peer.recv(&mut buf).unwrap();
        let mut want_hdr = hdr(VNET_F_NEEDS_CSUM, 0, 34, 16);
        want_hdr[2..4].copy_from_slice(&52u16.to_ne_bytes());
        assert_eq!(&buf[..VNET_HDR_LEN], &want_hdr[..]);
        assert_eq!(&buf[VNET_HDR_LEN..n], &a[..]);
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &[vec![0u8; VNET_HDR_LEN], b.clone()].concat()[..]
        );
        // Fill the socket; what waits in the queue keeps its header.
        let mut sent = 0u16;
        while !link.has_pending_output() {
            let f = frame(sent, 1000);
            link.send_frames_with(&[&f], &[Some(partial)]).unwrap();
            sent += 1;
            assert!(sent < 20000, "the socket never filled");
        }
        peer.set_nonblocking(true).unwrap();
        let mut seen = 0u16;
        while seen < sent {
            match peer.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, VNET_HDR_LEN + 1000);
                    assert_eq!(buf[0], VNET_F_NEEDS_CSUM);
                    let id = u16::from_be_bytes([buf[VNET_HDR_LEN], buf[VNET_HDR_LEN + 1]]);
                    assert_eq!(id, seen);
                    seen += 1;
                }
                Err(_) => link.flush().unwrap(),
            }
        }
        assert_eq!(link.counters().frames_out, u64::from(sent) + 2);
    }

    #[test]
    fn vnet_fuzz_harness_runs_on_good_and_bad_input() {
        let mut data = vec![0u8];
        for h in [
            hdr(VNET_F_NEEDS_CSUM, 0, 34, 16),
            hdr(VNET_F_NEEDS_CSUM, 0, 500, 16),
            hdr(0, 4, 0, 0),
            hdr(VNET_F_NEEDS_CSUM, 0, 14, 3),
        ] {
            let d = [h, frame(1, 80)].concat();
            data.extend_from_slice(&(d.len() as u16).to_le_bytes());
            data.extend_from_slice(&d);
        }
        data.extend_from_slice(&[3, 0, 1, 2, 3]);
        fuzzing::tap_vnet(&data);
        fuzzing::tap_vnet(&[]);
        fuzzing::tap_vnet(&[22, 0xff, 0xff, 1]);
    }

    #[test]
    fn gone_peer_closes_the_link_on_write() {
        let (mut link, peer) = pair();
        drop(peer);
        let err = link.send_frames(&[&frame(1, 60)]).unwrap_err();
        assert!(matches!(err, LinkError::PeerClosed), "{err}");
    }
}
