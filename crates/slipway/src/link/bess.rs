//! BESS link: a unix seqpacket socket, one Ethernet frame per message.
//!
//! # Theory of operation
//!
//! User Mode Linux (`vec0:transport=bess,dst=P`), `slirp4netns --target-type=bess` and
//! gvproxy's `-listen-bess` peers connect to a `SOCK_SEQPACKET` socket slipway listens on at `P`.
//! `BessListener` keeps accepting; each connection is a `BessLink`. The kernel keeps message
//! boundaries, so there is no header: each `read()` is one frame and each message sent is one
//! frame. Sending is `sendmmsg`, 64 frames per call, with a bounded queue for what the socket
//! won't take now (seqpacket sockets signal writability normally).
//!
//! A message of fewer than 14 or more than `MAX_FRAME` bytes is dropped and counted in
//! `bad_frames`; boundaries survive, so the link stays up. A `read()` of 0 bytes is the peer
//! hanging up (an empty message can't be told apart and is not a frame either).
//!
//! # Limits
//!
//! - Frames 14..=65553 bytes (the receive buffer is `MAX_FRAME + 1`, exposing truncation).
//! - 64 frames per `sendmmsg`; 4 MiB output queue; listen backlog 128.

use slipway_core::offload::RxChecksum;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use mio::event::Source;
use socket2::{Socket, Type};

use super::{
    accept_all, bind_socket_file, DatagramOutput, FdSource, GuestLink, LinkCounters, LinkError,
    LinkListener, LinkStatus, SocketFile, DATAGRAM_RX_BUFFER, LISTEN_BACKLOG, MAX_FRAME, MIN_FRAME,
};

/// Listens for BESS (seqpacket) clients on a unix socket path.
pub struct BessListener {
    socket: FdSource<Socket>,
    file: SocketFile,
    next_id: u64,
}

impl BessListener {
    pub fn bind(path: impl AsRef<Path>) -> Result<BessListener, LinkError> {
        let path = path.as_ref();
        let (socket, file) = bind_socket_file(path, Type::SEQPACKET)?;
        socket.listen(LISTEN_BACKLOG)?;
        Ok(BessListener {
            socket: FdSource(socket),
            file,
            next_id: 1,
        })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.path()
    }
}

impl LinkListener for BessListener {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.socket
    }

    fn accept(&mut self) -> io::Result<Vec<Box<dyn GuestLink>>> {
        let socket = &self.socket.0;
        let path = self.file.path().to_owned();
        let next_id = &mut self.next_id;
        accept_all(
            || socket.accept().map(|(s, _)| s),
            |s| {
                let name = format!("bess:{}#{}", path.display(), *next_id);
                *next_id += 1;
                tracing::debug!(link = %name, "guest connected");
                Ok(Box::new(BessLink::from_fd(OwnedFd::from(s), name)?) as Box<dyn GuestLink>)
            },
        )
    }

    fn describe(&self) -> String {
        format!("bess listener on {}", self.file.path().display())
    }
}

/// One seqpacket connection.
pub struct BessLink {
    socket: FdSource<Socket>,
    rx: Box<[u8]>,
    out: DatagramOutput,
    counters: LinkCounters,
    name: String,
}

impl BessLink {
    /// Wrap a connected `SOCK_SEQPACKET` socket (made non-blocking here).
    pub fn from_fd(fd: OwnedFd, name: impl Into<String>) -> io::Result<BessLink> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(BessLink {
            socket: FdSource(socket),
            rx: vec![0; DATAGRAM_RX_BUFFER].into_boxed_slice(),
            out: DatagramOutput::default(),
            counters: LinkCounters::default(),
            name: name.into(),
        })
    }
}

impl GuestLink for BessLink {
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
            match (&self.socket.0).read(&mut self.rx) {
                Ok(0) => return Ok(LinkStatus::Closed),
                Ok(n) if !(MIN_FRAME..=MAX_FRAME).contains(&n) => self.counters.bad_frames += 1,
                Ok(n) => {
                    self.counters.count_in(n);
                    on_frame(&self.rx[..n], RxChecksum::Unverified);
                    delivered += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(LinkStatus::Closed)
                }
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(LinkStatus::Open)
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.out.send(
            self.socket.0.as_fd(),
            None,
            frames,
            MAX_FRAME,
            &mut self.counters,
        )
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.out
            .flush(self.socket.0.as_fd(), None, &mut self.counters)
    }

    fn has_pending_output(&self) -> bool {
        self.out.has_pending()
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
    use crate::link::testutil::{collect, frame, TempDir};
    use socket2::{Domain, SockAddr};
    use std::time::Duration;

    fn connect(listener: &mut BessListener) -> (Box<dyn GuestLink>, Socket) {
        let client = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        client
            .connect(&SockAddr::unix(listener.path()).unwrap())
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut links = listener.accept().unwrap();
        assert_eq!(links.len(), 1);
        (links.pop().unwrap(), client)
    }

    fn recv(client: &Socket) -> Vec<u8> {
        let mut buf = vec![0u8; 70000];
        let n = (&*client).read(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn message_boundaries_are_frames_both_ways() {
        let dir = TempDir::new();
        let mut listener = BessListener::bind(dir.path("bess.sock")).unwrap();
        let (mut link, client) = connect(&mut listener);
        assert!(link.describe().starts_with("bess:"));

        let sizes = [60usize, 1514, 9014, 14];
        for (i, &len) in sizes.iter().enumerate() {
            client.send(&frame(i as u16, len)).unwrap();
        }
        client.send(&[0u8; 10]).unwrap(); // too short: dropped, counted
        let (status, got) = collect(link.as_mut(), 64);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &l)| frame(i as u16, l))
            .collect();
        assert_eq!(got, want);
        assert_eq!(link.counters().bad_frames, 1);

        let out: Vec<Vec<u8>> = (0..100).map(|i| frame(i, 60 + i as usize)).collect();
        let refs: Vec<&[u8]> = out.iter().map(|f| f.as_slice()).collect();
        link.send_frames(&refs).unwrap();
        assert!(!link.has_pending_output());
        for f in &out {
            assert_eq!(&recv(&client), f);
        }

        drop(client);
        let (status, _) = collect(link.as_mut(), 64);
        assert_eq!(status.unwrap(), LinkStatus::Closed);
    }

    #[test]
    fn backlog_is_queued_and_flushed_in_order() {
        let dir = TempDir::new();
        let mut listener = BessListener::bind(dir.path("bess.sock")).unwrap();
        let (mut link, client) = connect(&mut listener);
        let mut seq = 0u16;
        while !link.has_pending_output() {
            let batch: Vec<Vec<u8>> = (0..64).map(|i| frame(seq + i, 1500)).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|f| f.as_slice()).collect();
            link.send_frames(&refs).unwrap();
            seq += 64;
            assert!(seq < 30000, "the socket never filled");
        }
        client.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        while got.len() < seq as usize {
            match (&client).read(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 1500);
                    got.push(u16::from_be_bytes([buf[0], buf[1]]));
                }
                Err(_) => link.flush().unwrap(),
            }
        }
        assert_eq!(got, (0..seq).collect::<Vec<_>>());
    }

    #[test]
    fn listener_refuses_a_live_path() {
        let dir = TempDir::new();
        let path = dir.path("bess.sock");
        let listener = BessListener::bind(&path).unwrap();
        let err = BessListener::bind(&path).err().unwrap();
        assert!(
            matches!(
                err,
                LinkError::SocketFile(crate::unix_socket::SocketFileError::InUse(_))
            ),
            "{err}"
        );
        drop(listener);
        BessListener::bind(&path).unwrap();
    }
}
