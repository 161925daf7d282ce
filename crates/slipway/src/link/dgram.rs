//! Datagram link: one unix datagram socket, one Ethernet frame per datagram, no header.
//!
//! # Theory of operation
//!
//! QEMU (`-netdev dgram,local.type=unix,...,remote.type=unix,remote.path=P`), vfkit/krunkit
//! and gvproxy's `-listen-vfkit unixgram://P` peers send frames to the socket slipway binds at
//! `P`. The socket is not connected: the peer is learned from `recvfrom`, and the latest named
//! sender is the one frames are sent back to (a restarted VM is followed automatically). vfkit
//! first sends a 4-byte `VFKT` hello; it teaches the peer address and is otherwise ignored.
//! Before any peer is known, outgoing frames are dropped and counted (`dropped_not_ready`).
//!
//! Receiving is one `recvfrom` per frame into a `MAX_FRAME + 1` buffer; a datagram of fewer than
//! 14 or more than `MAX_FRAME` bytes is dropped and counted in `bad_frames` (message boundaries
//! survive, so the link stays up). Sending is `sendmmsg`, 64 frames per call, with a bounded
//! queue for what the peer's receive queue won't take now. A peer whose socket is gone
//! (`ECONNREFUSED`/`ENOENT`) loses the frames, counted in `dropped_send_error`.
//!
//! Linux does not signal writability of an unconnected datagram socket when the *peer's*
//! queue drains, so a caller that sees `has_pending_output()` should also retry `flush` on its
//! next timer tick; every `send_frames` retries the queue first as well.
//!
//! # Limits
//!
//! - Frames 14..=65553 bytes; 64 frames per `sendmmsg`; 4 MiB output queue.
//! - One peer at a time: the latest named sender.

use slipway_core::offload::RxChecksum;
use std::os::fd::AsFd;
use std::path::Path;

use mio::event::Source;
use mio::net::UnixDatagram;

use super::{
    bind_socket_file, sys, DatagramOutput, GuestLink, LinkCounters, LinkError, LinkStatus,
    PeerAddr, SocketFile, DATAGRAM_RX_BUFFER, MAX_FRAME, MIN_FRAME,
};

/// The hello vfkit sends before its first frame.
const VFKIT_HELLO: &[u8; 4] = b"VFKT";

/// One unix datagram socket serving one guest at a time.
pub struct DgramLink {
    socket: UnixDatagram,
    file: SocketFile,
    rx: Box<[u8]>,
    peer: Option<PeerAddr>,
    out: DatagramOutput,
    counters: LinkCounters,
}

impl DgramLink {
    pub fn bind(path: impl AsRef<Path>) -> Result<DgramLink, LinkError> {
        let path = path.as_ref();
        let (socket, file) = bind_socket_file(path, socket2::Type::DGRAM)?;
        let socket = UnixDatagram::from_std(std::os::fd::OwnedFd::from(socket).into());
        Ok(DgramLink {
            socket,
            file,
            rx: vec![0; DATAGRAM_RX_BUFFER].into_boxed_slice(),
            peer: None,
            out: DatagramOutput::default(),
            counters: LinkCounters::default(),
        })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.path()
    }

    /// The address frames are sent to, once learned.
    pub fn peer(&self) -> Option<String> {
        self.peer.map(|p| p.describe())
    }

    fn learn(&mut self, from: PeerAddr) {
        if from.is_unnamed() {
            return;
        }
        match &self.peer {
            Some(known) if known.same_as(&from) => {}
            _ => {
                tracing::debug!(link = %self.describe(), peer = %from.describe(), "guest peer learned");
                self.peer = Some(from);
            }
        }
    }
}

impl GuestLink for DgramLink {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.socket
    }

    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError> {
        let mut delivered = 0;
        while delivered < budget {
            match sys::recv_from(self.socket.as_fd(), &mut self.rx) {
                Ok((n, from)) => {
                    self.learn(from);
                    let datagram = &self.rx[..n];
                    if datagram == VFKIT_HELLO {
                        continue;
                    }
                    if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
                        self.counters.bad_frames += 1;
                        continue;
                    }
                    self.counters.count_in(n);
                    on_frame(datagram, RxChecksum::Unverified);
                    delivered += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(LinkStatus::Open)
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        let Some(peer) = self.peer else {
            self.counters.dropped_not_ready += frames.len() as u64;
            return Ok(());
        };
        self.out.send(
            self.socket.as_fd(),
            Some(&peer),
            frames,
            MAX_FRAME,
            &mut self.counters,
        )
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        match self.peer {
            Some(peer) => self
                .out
                .flush(self.socket.as_fd(), Some(&peer), &mut self.counters),
            None => Ok(()),
        }
    }

    fn has_pending_output(&self) -> bool {
        self.out.has_pending()
    }

    fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    fn describe(&self) -> String {
        format!("dgram:{}", self.file.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testutil::{collect, frame, TempDir};
    use std::os::unix::net::UnixDatagram as StdDatagram;
    use std::time::Duration;

    fn client(dir: &TempDir, name: &str) -> StdDatagram {
        let c = StdDatagram::bind(dir.path(name)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    #[test]
    fn vfkt_hello_is_ignored_and_teaches_the_peer() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        let mut link = DgramLink::bind(&path).unwrap();
        let guest = client(&dir, "guest.sock");

        // No peer yet: frames are dropped and counted.
        link.send_frames(&[&frame(0, 60)]).unwrap();
        assert_eq!(link.counters().dropped_not_ready, 1);

        guest.send_to(b"VFKT", &path).unwrap();
        let (status, got) = collect(&mut link, 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert!(got.is_empty());
        assert_eq!(link.counters().bad_frames, 0);
        assert_eq!(
            link.peer().unwrap(),
            dir.path("guest.sock").display().to_string()
        );

        let (f1, f2) = (frame(1, 60), frame(2, 1514));
        link.send_frames(&[&f1, &f2]).unwrap();
        let mut buf = vec![0; 70000];
        let n = guest.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f1[..]);
        let n = guest.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f2[..]);
        assert_eq!(link.counters().frames_out, 2);
    }

    #[test]
    fn frames_in_and_bad_sizes_dropped() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        let mut link = DgramLink::bind(&path).unwrap();
        let guest = client(&dir, "guest.sock");
        guest.send_to(&frame(1, 60), &path).unwrap();
        guest.send_to(&[0u8; 10], &path).unwrap();
        guest.send_to(&vec![0u8; MAX_FRAME + 1], &path).unwrap();
        guest.send_to(&frame(2, MAX_FRAME), &path).unwrap();
        let (status, got) = collect(&mut link, 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(got, vec![frame(1, 60), frame(2, MAX_FRAME)]);
        assert_eq!(link.counters().bad_frames, 2);
        assert_eq!(link.counters().frames_in, 2);
    }

    #[test]
    fn latest_sender_becomes_the_peer() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        let mut link = DgramLink::bind(&path).unwrap();
        let old = client(&dir, "old.sock");
        let new = client(&dir, "new.sock");
        old.send_to(&frame(1, 60), &path).unwrap();
        collect(&mut link, 8).0.unwrap();
        new.send_to(&frame(2, 60), &path).unwrap();
        collect(&mut link, 8).0.unwrap();
        link.send_frames(&[&frame(3, 64)]).unwrap();
        let mut buf = [0u8; 128];
        let n = new.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &frame(3, 64)[..]);
        old.set_nonblocking(true).unwrap();
        assert!(old.recv(&mut buf).is_err(), "the old peer gets nothing");
    }

    #[test]
    fn queue_holds_what_the_peer_cannot_take_and_flush_delivers_in_order() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        let mut link = DgramLink::bind(&path).unwrap();
        let guest = client(&dir, "guest.sock");
        guest.send_to(b"VFKT", &path).unwrap();
        collect(&mut link, 8).0.unwrap();

        let mut seq = 0u16;
        while !link.has_pending_output() {
            let batch: Vec<Vec<u8>> = (0..16).map(|i| frame(seq + i, 1000)).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|f| f.as_slice()).collect();
            link.send_frames(&refs).unwrap();
            seq += 16;
            assert!(seq < 20000, "the peer's queue never filled");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        guest.set_nonblocking(true).unwrap();
        while got.len() < seq as usize {
            match guest.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 1000);
                    got.push(u16::from_be_bytes([buf[0], buf[1]]));
                }
                Err(_) => link.flush().unwrap(),
            }
        }
        assert!(!link.has_pending_output());
        assert_eq!(got, (0..seq).collect::<Vec<_>>());
        assert_eq!(link.counters().dropped_queue_full, 0);
    }

    #[test]
    fn vanished_peer_costs_frames_not_the_link() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        let mut link = DgramLink::bind(&path).unwrap();
        let guest = client(&dir, "guest.sock");
        guest.send_to(b"VFKT", &path).unwrap();
        collect(&mut link, 8).0.unwrap();
        drop(guest);
        link.send_frames(&[&frame(1, 60), &frame(2, 60)]).unwrap();
        assert_eq!(link.counters().dropped_send_error, 2);
        assert!(!link.has_pending_output());
    }

    #[test]
    fn bind_replaces_a_stale_socket_file() {
        let dir = TempDir::new();
        let path = dir.path("link.sock");
        drop(StdDatagram::bind(&path).unwrap());
        let link = DgramLink::bind(&path).unwrap();
        assert!(DgramLink::bind(&path).is_err());
        drop(link);
        assert!(!path.exists());
    }
}
