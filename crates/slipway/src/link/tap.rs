//! TAP link: a TAP device fd (`IFF_TAP | IFF_NO_PI`, no vnet header), one Ethernet frame per
//! `read()` and per `write()` — how slirp4netns and pasta serve a container's network namespace.
//!
//! # Theory of operation
//!
//! The caller opens (or receives) the TAP fd inside the guest's network namespace and hands it
//! over; the link makes it non-blocking. Each `read()` into a `MAX_FRAME + 1` buffer returns one
//! whole frame; each frame goes out with its own `write()` (TAP has no batched write). What
//! the fd won't take now (`EAGAIN`) is queued whole, bounded, and written by `flush`.
//!
//! Errors: `EIO` (the interface is down), `ENOBUFS`, `EMSGSIZE` and `EINVAL` on a write lose
//! that frame only (`dropped_send_error`); the link stays up, since a container often brings
//! its interface up after slipway starts. `EBADFD` (the device is gone with its namespace) or a
//! `read()` of 0 bytes closes the link. A frame of fewer than 14 or more than `MAX_FRAME` bytes
//! is dropped and counted in `bad_frames`.
//!
//! # Limits
//!
//! - Frames 14..=65553 bytes; one system call per frame; 4 MiB output queue.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::event::Source;

use super::{
    nonblocking, FdSource, GuestLink, LinkCounters, LinkError, LinkStatus, MessageQueue,
    DATAGRAM_RX_BUFFER, MAX_FRAME, MIN_FRAME,
};

/// One TAP device.
pub struct TapLink {
    fd: FdSource<File>,
    rx: Box<[u8]>,
    out: MessageQueue,
    counters: LinkCounters,
    name: String,
}

/// What one `write()` did with a frame.
enum Written {
    Sent,
    Blocked,
    /// Refused for this frame only (interface down, no buffer space, bad size).
    Lost,
}

fn write_frame(fd: &File, frame: &[u8]) -> Result<Written, LinkError> {
    loop {
        return match (&*fd).write(frame) {
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

impl TapLink {
    /// Serve the TAP device behind `fd` (made non-blocking here).
    pub fn new(fd: OwnedFd) -> io::Result<TapLink> {
        let fd = nonblocking(fd)?;
        let name = format!("tap:fd{}", fd.as_raw_fd());
        Ok(TapLink {
            fd: FdSource(File::from(fd)),
            rx: vec![0; DATAGRAM_RX_BUFFER].into_boxed_slice(),
            out: MessageQueue::default(),
            counters: LinkCounters::default(),
            name,
        })
    }

    /// Replace the name `describe()` returns (e.g. `tap:tap0@container`).
    pub fn with_name(mut self, name: impl Into<String>) -> TapLink {
        self.name = name.into();
        self
    }

    fn queue(&mut self, frame: &[u8]) {
        if self.out.push(frame) {
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
        on_frame: &mut dyn FnMut(&[u8]),
    ) -> Result<LinkStatus, LinkError> {
        let mut delivered = 0;
        while delivered < budget {
            match (&self.fd.0).read(&mut self.rx) {
                Ok(0) => return Ok(LinkStatus::Closed),
                Ok(n) if !(MIN_FRAME..=MAX_FRAME).contains(&n) => self.counters.bad_frames += 1,
                Ok(n) => {
                    self.counters.count_in(n);
                    on_frame(&self.rx[..n]);
                    delivered += 1;
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
        if !self.out.is_empty() {
            self.flush()?;
        }
        let mut blocked = !self.out.is_empty();
        for frame in frames {
            if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
                self.counters.dropped_bad_size += 1;
                continue;
            }
            if !blocked {
                match write_frame(&self.fd.0, frame)? {
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
            self.queue(frame);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        while !self.out.is_empty() {
            let mut first: [&[u8]; 1] = [&[]];
            self.out.front(&mut first);
            let outcome = write_frame(&self.fd.0, first[0])?;
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

    #[test]
    fn gone_peer_closes_the_link_on_write() {
        let (mut link, peer) = pair();
        drop(peer);
        let err = link.send_frames(&[&frame(1, 60)]).unwrap_err();
        assert!(matches!(err, LinkError::PeerClosed), "{err}");
    }
}
