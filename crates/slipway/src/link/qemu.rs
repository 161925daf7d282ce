//! QEMU stream link: a unix stream socket carrying Ethernet frames, each behind a 4-byte
//! big-endian length.
//!
//! # Theory of operation
//!
//! QEMU (`-netdev stream,server=off,addr.type=unix,addr.path=P`, QEMU >= 7.2, and the older
//! `-netdev socket,connect=`), passt's `--socket` clients and gvproxy's `-listen-qemu` peers
//! connect to a listening socket at `P`. `QemuListener` keeps accepting: many guests may be
//! connected at once and a guest that restarts simply connects again as a new link. Each
//! connection is a `QemuLink`, a `StreamFramer` with the `Be32` prefix over the socket.
//!
//! Binding removes a stale socket file (one nobody listens on) and refuses a live one, so two
//! slipway processes never steal each other's guests. The file is removed again when the
//! listener is dropped, if it is still ours.
//!
//! # Limits
//!
//! - Frame length: 14..=65553 (`MIN_FRAME..=MAX_FRAME`); anything else closes that link.
//! - 256 KiB receive buffer and a 4 MiB output queue per link; listen backlog 128.

use slipway_core::offload::RxChecksum;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use mio::event::Source;
use mio::net::{UnixListener, UnixStream};

use super::{
    accept_all, bind_socket_file, GuestLink, LengthPrefix, LinkCounters, LinkError, LinkListener,
    LinkStatus, SocketFile, StreamFramer, LISTEN_BACKLOG,
};

/// Listens for QEMU `stream` netdevs on a unix socket path.
pub struct QemuListener {
    listener: UnixListener,
    file: SocketFile,
    next_id: u64,
}

impl QemuListener {
    pub fn bind(path: impl AsRef<Path>) -> Result<QemuListener, LinkError> {
        let path = path.as_ref();
        let (socket, file) = bind_socket_file(path, socket2::Type::STREAM)?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener = UnixListener::from_std(OwnedFd::from(socket).into());
        Ok(QemuListener {
            listener,
            file,
            next_id: 1,
        })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.path()
    }
}

impl LinkListener for QemuListener {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.listener
    }

    fn accept(&mut self) -> io::Result<Vec<Box<dyn GuestLink>>> {
        let listener = &self.listener;
        let path = self.file.path().to_owned();
        let next_id = &mut self.next_id;
        accept_all(
            || listener.accept().map(|(stream, _)| stream),
            |stream| {
                let name = format!("qemu:{}#{}", path.display(), *next_id);
                *next_id += 1;
                tracing::debug!(link = %name, "guest connected");
                Ok(Box::new(QemuLink::from_stream(stream, name)) as Box<dyn GuestLink>)
            },
        )
    }

    fn describe(&self) -> String {
        format!("qemu listener on {}", self.file.path().display())
    }
}

/// One QEMU stream connection.
pub struct QemuLink {
    stream: UnixStream,
    framer: StreamFramer,
    name: String,
}

impl QemuLink {
    /// Wrap a connected, non-blocking unix stream (accepted here, or connected by the caller to
    /// a QEMU `server=on` socket).
    pub fn from_stream(stream: UnixStream, name: impl Into<String>) -> QemuLink {
        QemuLink {
            stream,
            framer: StreamFramer::new(LengthPrefix::Be32),
            name: name.into(),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}

impl GuestLink for QemuLink {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.stream
    }

    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError> {
        self.framer.read_frames(&mut self.stream, budget, &mut |f| {
            on_frame(f, RxChecksum::Unverified)
        })
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.framer.send_frames(&mut self.stream, frames)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.framer.flush(&mut self.stream)
    }

    fn has_pending_output(&self) -> bool {
        self.framer.has_pending_output()
    }

    fn counters(&self) -> &LinkCounters {
        &self.framer.counters
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testutil::{collect, frame, TempDir};
    use crate::link::{MAX_FRAME, OUTPUT_QUEUE_LIMIT};
    use std::io::{Read, Write};

    /// A link over one end of a socketpair; the other end is a blocking std stream (the guest).
    fn pair() -> (QemuLink, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (
            QemuLink::from_stream(UnixStream::from_std(a), "qemu:test"),
            b,
        )
    }

    fn framed(f: &[u8]) -> Vec<u8> {
        let mut v = (f.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(f);
        v
    }

    /// Parse a Be32 stream; panics on a truncated tail (a partial frame must never appear).
    fn parse(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            out.push(bytes[4..4 + len].to_vec());
            bytes = &bytes[4 + len..];
        }
        out
    }

    #[test]
    fn decodes_a_byte_fixture() {
        let (mut link, mut guest) = pair();
        // Two frames: 14 bytes of 0xaa, then 16 bytes 0..16.
        let mut fixture = vec![0, 0, 0, 14];
        fixture.extend_from_slice(&[0xaa; 14]);
        fixture.extend_from_slice(&[0, 0, 0, 16]);
        fixture.extend((0u8..16).collect::<Vec<_>>());
        guest.write_all(&fixture).unwrap();
        let (status, got) = collect(&mut link, 64);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(got, vec![vec![0xaa; 14], (0u8..16).collect::<Vec<_>>()]);
        assert_eq!(link.counters().frames_in, 2);
        assert_eq!(link.counters().bytes_in, 30);
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let (mut link, mut guest) = pair();
        let f1 = frame(1, 60);
        let f2 = frame(2, 1514);
        let mut stream = framed(&f1);
        stream.extend(framed(&f2));
        // Cut inside the first prefix, inside the first frame, inside the second prefix.
        let cuts = [2, 30, 66, 200, stream.len()];
        let mut all = Vec::new();
        let mut from = 0;
        for to in cuts {
            guest.write_all(&stream[from..to]).unwrap();
            from = to;
            let (status, got) = collect(&mut link, 64);
            assert_eq!(status.unwrap(), LinkStatus::Open);
            all.extend(got);
            if to < 64 {
                assert!(all.is_empty(), "no frame before the first is complete");
            }
        }
        assert_eq!(all, vec![f1, f2]);
    }

    #[test]
    fn many_frames_in_one_read_and_budget_is_respected() {
        let (mut link, mut guest) = pair();
        let frames: Vec<Vec<u8>> = (0..50).map(|i| frame(i, 100 + i as usize)).collect();
        let bytes: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        guest.write_all(&bytes).unwrap();
        let (status, first) = collect(&mut link, 20);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(first.len(), 20);
        let (_, rest) = collect(&mut link, 1000);
        assert_eq!(rest.len(), 30);
        assert_eq!([first, rest].concat(), frames);
    }

    #[test]
    fn bad_lengths_are_protocol_errors() {
        for len in [0u32, 13, MAX_FRAME as u32 + 1, u32::MAX] {
            let (mut link, mut guest) = pair();
            guest.write_all(&len.to_be_bytes()).unwrap();
            guest.write_all(&[0; 64]).unwrap();
            let (status, got) = collect(&mut link, 64);
            assert!(
                matches!(status, Err(LinkError::BadLength { .. })),
                "length {len}: {status:?}"
            );
            assert!(got.is_empty());
            assert_eq!(link.counters().bad_frames, 1);
        }
    }

    #[test]
    fn largest_frame_is_accepted() {
        let (mut link, guest) = pair();
        let f = frame(9, MAX_FRAME);
        let bytes = framed(&f);
        let writer = std::thread::spawn(move || {
            let mut guest = guest;
            guest.write_all(&bytes).unwrap();
            guest
        });
        let mut got = Vec::new();
        while got.is_empty() {
            let (status, frames) = collect(&mut link, 64);
            assert_eq!(status.unwrap(), LinkStatus::Open);
            got.extend(frames);
        }
        let _guest = writer.join().unwrap();
        assert_eq!(got, vec![f]);
    }

    #[test]
    fn hangup_reports_closed() {
        let (mut link, mut guest) = pair();
        guest.write_all(&framed(&frame(1, 20))).unwrap();
        drop(guest);
        // The frame comes in a short read, which ends the call as a drained socket does; the
        // event loop reads again after a hang-up event and meets the end of stream.
        let (status, got) = collect(&mut link, 64);
        assert_eq!(got.len(), 1);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        let (status, got) = collect(&mut link, 64);
        assert!(got.is_empty());
        assert_eq!(status.unwrap(), LinkStatus::Closed);
    }

    #[test]
    fn sends_a_batch_of_100_frames_in_order() {
        let (mut link, mut guest) = pair();
        let frames: Vec<Vec<u8>> = (0..100).map(|i| frame(i, 60 + 13 * i as usize)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        link.send_frames(&refs).unwrap();
        assert!(!link.has_pending_output());
        assert_eq!(link.counters().frames_out, 100);
        let total: usize = frames.iter().map(|f| 4 + f.len()).sum();
        let mut bytes = vec![0; total];
        guest.read_exact(&mut bytes).unwrap();
        assert_eq!(parse(&bytes), frames);
    }

    #[test]
    fn exact_bytes_on_the_wire() {
        let (mut link, mut guest) = pair();
        let f = [0x11u8; 14];
        link.send_frames(&[&f]).unwrap();
        let mut bytes = [0; 18];
        guest.read_exact(&mut bytes).unwrap();
        assert_eq!(&bytes[..4], &[0, 0, 0, 14]);
        assert_eq!(&bytes[4..], &f);
    }

    #[test]
    fn bad_outgoing_sizes_are_dropped_not_sent() {
        let (mut link, mut guest) = pair();
        let short = [0u8; 10];
        let huge = vec![0u8; MAX_FRAME + 1];
        let good = frame(5, 64);
        link.send_frames(&[&short, &huge, &good]).unwrap();
        assert_eq!(link.counters().dropped_bad_size, 2);
        let mut bytes = [0; 68];
        guest.read_exact(&mut bytes).unwrap();
        assert_eq!(parse(&bytes), vec![good]);
    }

    #[test]
    fn full_queue_drops_whole_frames_and_flush_completes_the_stream() {
        let (mut link, mut guest) = pair();
        // Keep sending while the guest reads nothing: the socket buffer fills, then the queue.
        let mut sent = 0u16;
        while link.counters().dropped_queue_full == 0 {
            let batch: Vec<Vec<u8>> = (0..32).map(|i| frame(sent.wrapping_add(i), 9000)).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|f| f.as_slice()).collect();
            link.send_frames(&refs).unwrap();
            sent = sent.wrapping_add(32);
            assert!(sent < 4000, "queue never filled");
        }
        assert!(link.has_pending_output());
        // One partial remainder may exceed the bound by at most one frame.
        assert!(link.framer.queued_output() <= OUTPUT_QUEUE_LIMIT + 4 + 9000);
        let accepted = link.counters().frames_out;
        let dropped = link.counters().dropped_queue_full;
        assert_eq!(accepted + dropped, sent as u64);

        // Now the guest reads everything while the link flushes.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            guest.read_to_end(&mut all).unwrap();
            all
        });
        while link.has_pending_output() {
            link.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(link);
        let bytes = reader.join().unwrap();
        let got = parse(&bytes);
        assert_eq!(got.len() as u64, accepted);
        // Every frame arrived whole and in order (sequence numbers strictly increase).
        let seqs: Vec<u16> = got
            .iter()
            .map(|f| u16::from_be_bytes([f[0], f[1]]))
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order broken");
        for f in &got {
            assert_eq!(f, &frame(u16::from_be_bytes([f[0], f[1]]), 9000));
        }
    }

    #[test]
    fn listener_accepts_many_and_reconnects() {
        let dir = TempDir::new();
        let path = dir.path("qemu.sock");
        let mut listener = QemuListener::bind(&path).unwrap();
        assert_eq!(listener.path(), path);
        let c1 = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let c2 = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let links = listener.accept().unwrap();
        assert_eq!(links.len(), 2);
        assert!(links[0].describe().starts_with("qemu:"));
        assert!(links[0].describe().ends_with("#1"));
        assert!(links[1].describe().ends_with("#2"));
        drop((c1, c2, links));
        let mut c3 = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let mut links = listener.accept().unwrap();
        assert_eq!(links.len(), 1);
        c3.write_all(&framed(&frame(3, 42))).unwrap();
        let (status, got) = collect(links[0].as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(got, vec![frame(3, 42)]);
        assert!(listener.accept().unwrap().is_empty());

        // A second listener on the same live path is refused with a clear error.
        let err = QemuListener::bind(&path).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(listener);
        assert!(!path.exists(), "the listener removes its socket file");
    }
}
