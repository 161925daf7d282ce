//! stdio link: frames on standard input and output, each behind a 2-byte little-endian length,
//! no handshake (gvproxy `-listen-stdio`, used over `ssh host slipway ...`).
//!
//! # Theory of operation
//!
//! `StdioLink::new()` takes fds 0 and 1 over: it moves them to new close-on-exec descriptors and
//! points 0 and 1 at `/dev/null`, so nothing else in the process (a stray print, a child) can
//! read frames or corrupt the outgoing stream, and closing the link is a real EOF for the peer.
//! Both descriptors are made non-blocking (this affects whoever shares the open file, as for any
//! program that does non-blocking stdio). Logs must go to stderr.
//!
//! Input and output are two fds behind one mio source: `register` adds the input for
//! READABLE and the output for WRITABLE under the same token, so the caller sees one link.
//! Reading and writing are plain `read()`/`writev()` (stdio may be pipes, a tty or a socket);
//! framing is the shared `StreamFramer` with the `Le16` prefix.
//!
//! # Limits
//!
//! - Frames 14..=65535 bytes; 256 KiB receive buffer; 4 MiB output queue.

use slipway_core::offload::RxChecksum;
use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::{
    nonblocking, sys, GuestLink, LengthPrefix, LinkCounters, LinkError, LinkStatus, StreamFramer,
    StreamIo,
};

/// The input and output fds, registered as one mio source.
struct StdioPair {
    input: File,
    output: File,
    input_registered: bool,
    output_registered: bool,
}

impl StreamIo for StdioPair {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }

    fn write_some(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.output.write_vectored(bufs)
    }
}

impl StdioPair {
    /// Bring one fd's registration in line with the wanted interest.
    fn update(
        fd: &File,
        registered: &mut bool,
        wanted: Option<Interest>,
        registry: &Registry,
        token: Token,
    ) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        let mut source = SourceFd(&raw);
        match (*registered, wanted) {
            (false, Some(interest)) => source.register(registry, token, interest)?,
            (true, Some(interest)) => source.reregister(registry, token, interest)?,
            (true, None) => source.deregister(registry)?,
            (false, None) => {}
        }
        *registered = wanted.is_some();
        Ok(())
    }

    fn apply(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        let read = interests.is_readable().then_some(Interest::READABLE);
        let write = interests.is_writable().then_some(Interest::WRITABLE);
        Self::update(
            &self.input,
            &mut self.input_registered,
            read,
            registry,
            token,
        )?;
        Self::update(
            &self.output,
            &mut self.output_registered,
            write,
            registry,
            token,
        )
    }
}

impl Source for StdioPair {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.apply(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.apply(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let token = Token(0); // unused when deregistering
        Self::update(
            &self.input,
            &mut self.input_registered,
            None,
            registry,
            token,
        )?;
        Self::update(
            &self.output,
            &mut self.output_registered,
            None,
            registry,
            token,
        )
    }
}

/// Frames over stdin/stdout (or any pair of fds).
pub struct StdioLink {
    io: StdioPair,
    framer: StreamFramer,
    name: String,
}

impl StdioLink {
    /// Take over fds 0 and 1 (see the module documentation).
    pub fn new() -> Result<StdioLink, LinkError> {
        let input = sys::dup_cloexec(0)?;
        let output = sys::dup_cloexec(1)?;
        sys::redirect_to_dev_null(0)?;
        sys::redirect_to_dev_null(1)?;
        Ok(StdioLink::from_fds(input, output, "stdio")?)
    }

    /// Frames read from `input` and written to `output` (both made non-blocking).
    pub fn from_fds(
        input: OwnedFd,
        output: OwnedFd,
        name: impl Into<String>,
    ) -> io::Result<StdioLink> {
        let input = nonblocking(input)?;
        let output = nonblocking(output)?;
        Ok(StdioLink {
            io: StdioPair {
                input: File::from(input),
                output: File::from(output),
                input_registered: false,
                output_registered: false,
            },
            framer: StreamFramer::new(LengthPrefix::Le16),
            name: name.into(),
        })
    }
}

impl GuestLink for StdioLink {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.io
    }

    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError> {
        self.framer.read_frames(&mut self.io, budget, &mut |f| {
            on_frame(f, RxChecksum::Unverified)
        })
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        self.framer.send_frames(&mut self.io, frames)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.framer.flush(&mut self.io)
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
    use crate::link::testutil::{collect, frame};
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// A pipe as (read end, write end).
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the two-element array we own.
        let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(ret, 0);
        // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    fn le16(f: &[u8]) -> Vec<u8> {
        let mut v = (f.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(f);
        v
    }

    #[test]
    fn frames_over_pipes_both_ways() {
        let (link_in, mut peer_out) = pipe();
        let (mut peer_in, link_out) = pipe();
        let mut link = StdioLink::from_fds(link_in.into(), link_out.into(), "stdio").unwrap();

        // Fixture: two frames, the second split across writes.
        let mut bytes = vec![0x0e, 0x00];
        bytes.extend_from_slice(&[0x55; 14]);
        bytes.extend(le16(&frame(2, 1514)));
        peer_out.write_all(&bytes[..100]).unwrap();
        let (status, first) = collect(&mut link, 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(first, vec![vec![0x55; 14]]);
        peer_out.write_all(&bytes[100..]).unwrap();
        let (_, second) = collect(&mut link, 8);
        assert_eq!(second, vec![frame(2, 1514)]);

        let out: Vec<Vec<u8>> = (0..100).map(|i| frame(i, 100 + i as usize)).collect();
        let refs: Vec<&[u8]> = out.iter().map(|f| f.as_slice()).collect();
        link.send_frames(&refs).unwrap();
        assert!(!link.has_pending_output());
        let want: Vec<u8> = out.iter().flat_map(|f| le16(f)).collect();
        let mut got = vec![0u8; want.len()];
        peer_in.read_exact(&mut got).unwrap();
        assert_eq!(got, want);

        drop(peer_out);
        let (status, _) = collect(&mut link, 8);
        assert_eq!(status.unwrap(), LinkStatus::Closed);
    }

    #[test]
    fn bad_length_is_an_error() {
        let (link_in, mut peer_out) = pipe();
        let (_peer_in, link_out) = pipe();
        let mut link = StdioLink::from_fds(link_in.into(), link_out.into(), "stdio").unwrap();
        peer_out.write_all(&[0, 0, 1, 2, 3]).unwrap();
        let (status, _) = collect(&mut link, 8);
        assert!(
            matches!(status, Err(LinkError::BadLength { len: 0, .. })),
            "{status:?}"
        );
    }

    #[test]
    fn one_source_signals_input_and_output() {
        let (a, mut guest) = UnixStream::pair().unwrap();
        let b = a.try_clone().unwrap();
        let mut link = StdioLink::from_fds(a.into(), b.into(), "stdio").unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(8);
        poll.registry()
            .register(
                link.source(),
                Token(7),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events
            .iter()
            .any(|e| e.token() == Token(7) && e.is_writable()));

        guest.write_all(&le16(&frame(1, 60))).unwrap();
        let mut readable = false;
        for _ in 0..10 {
            poll.poll(&mut events, Some(Duration::from_secs(1)))
                .unwrap();
            readable |= events
                .iter()
                .any(|e| e.token() == Token(7) && e.is_readable());
            if readable {
                break;
            }
        }
        assert!(readable);
        let (_, got) = collect(&mut link, 8);
        assert_eq!(got, vec![frame(1, 60)]);

        poll.registry()
            .reregister(link.source(), Token(8), Interest::READABLE)
            .unwrap();
        poll.registry().deregister(link.source()).unwrap();
    }
}
