//! vpnkit link: hyperkit's `virtio-vpnkit` device, Docker Desktop and LinuxKit speak this on a
//! unix stream socket: a short handshake, then Ethernet frames behind a 2-byte little-endian
//! length.
//!
//! # Theory of operation
//!
//! `VpnkitListener` accepts connections; each is a `VpnkitLink` that runs the handshake itself,
//! inside `read_frames`, without ever blocking (all integers little-endian):
//! 1. The client sends a 49-byte Init: `"VMN3T"`, u32 version (22), a 40-byte commit id. The
//!    magic and the version are checked; the link answers with its own Init (version 22).
//! 2. The client sends a 41-byte Command: byte 0 the type (1 = Ethernet, 8 = Preferred_ipv4),
//!    bytes 1..37 a 36-character UUID (all zero: the server chooses), and for Preferred_ipv4 the
//!    wanted address as a u32 at 37..41.
//! 3. The link takes a MAC from the listener's allocator and answers a 258-byte Vif reply:
//!    byte 0 = 1, u16 MTU at 1..3, u16 maximum packet size (MTU + 50) at 3..5, the MAC at 5..11,
//!    zeros after. An unknown command gets a 258-byte Disconnect (byte 0 = 2, u8 length, the
//!    reason) and the link fails.
//! 4. Frames follow in both directions, each behind a u16 length (`StreamFramer`, `Le16`).
//!
//! Frames the switch sends before the handshake is done are dropped (`dropped_not_ready`). A
//! malformed handshake counts `handshake_failures` and returns `LinkError::Handshake`; the caller
//! closes that connection alone. Bytes that follow the Command in the same read are kept and
//! parsed as frames.
//!
//! # Limits
//!
//! - MTU 68..=65485 (MTU + 50 must fit the u16 maximum packet size).
//! - Frames 14..=65535 bytes (the u16 prefix); 256 KiB receive buffer, 4 MiB output queue.
//! - The handshake has no timeout of its own: a client that stalls holds only its connection.

use slipway_core::offload::RxChecksum;
use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::rc::Rc;

use mio::event::Source;
use mio::net::{UnixListener, UnixStream};

use super::{
    accept_all, bind_socket_file, GuestLink, LengthPrefix, LinkCounters, LinkError, LinkListener,
    LinkStatus, SocketFile, StreamFramer, LISTEN_BACKLOG,
};

/// The vmnet protocol version hyperkit and vpnkit speak.
pub const VPNKIT_PROTOCOL_VERSION: u32 = 22;
const MAGIC: &[u8; 5] = b"VMN3T";
const INIT_LEN: usize = 49;
const COMMAND_LEN: usize = 41;
const REPLY_LEN: usize = 258;
const COMMAND_ETHERNET: u8 = 1;
const COMMAND_PREFERRED_IPV4: u8 = 8;
const REPLY_VIF: u8 = 1;
const REPLY_DISCONNECT: u8 = 2;
/// Maximum packet size announced = MTU + this.
const MAX_PACKET_OVER_MTU: u16 = 50;
const MIN_MTU: u16 = 68;
const MAX_MTU: u16 = u16::MAX - MAX_PACKET_OVER_MTU;

/// The 40-byte "commit id" of our Init: `slipway` padded with ASCII zeros.
const SERVER_COMMIT: [u8; 40] = {
    let mut commit = [b'0'; 40];
    let name = b"slipway";
    let mut i = 0;
    while i < name.len() {
        commit[i] = name[i];
        i += 1;
    }
    commit
};

/// Hands out the MAC for each guest that completes a handshake.
pub type MacAllocator = Box<dyn FnMut() -> [u8; 6]>;

fn server_init() -> [u8; INIT_LEN] {
    let mut init = [0u8; INIT_LEN];
    init[..5].copy_from_slice(MAGIC);
    init[5..9].copy_from_slice(&VPNKIT_PROTOCOL_VERSION.to_le_bytes());
    init[9..].copy_from_slice(&SERVER_COMMIT);
    init
}

fn vif_reply(mtu: u16, mac: [u8; 6]) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    reply[0] = REPLY_VIF;
    reply[1..3].copy_from_slice(&mtu.to_le_bytes());
    reply[3..5].copy_from_slice(&(mtu + MAX_PACKET_OVER_MTU).to_le_bytes());
    reply[5..11].copy_from_slice(&mac);
    reply
}

fn disconnect_reply(reason: &str) -> [u8; REPLY_LEN] {
    let mut reply = [0u8; REPLY_LEN];
    let text = &reason.as_bytes()[..reason.len().min(255)];
    reply[0] = REPLY_DISCONNECT;
    reply[1] = text.len() as u8;
    reply[2..2 + text.len()].copy_from_slice(text);
    reply
}

/// Listens for vpnkit clients on a unix socket path.
pub struct VpnkitListener {
    listener: UnixListener,
    file: SocketFile,
    mtu: u16,
    allocator: Rc<RefCell<MacAllocator>>,
    next_id: u64,
}

impl VpnkitListener {
    pub fn bind(
        path: impl AsRef<Path>,
        mtu: u16,
        mac_allocator: MacAllocator,
    ) -> Result<VpnkitListener, LinkError> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(LinkError::InvalidMtu { mtu });
        }
        let path = path.as_ref();
        let (socket, file) = bind_socket_file(path, socket2::Type::STREAM)?;
        socket.listen(LISTEN_BACKLOG)?;
        let listener = UnixListener::from_std(std::os::fd::OwnedFd::from(socket).into());
        Ok(VpnkitListener {
            listener,
            file,
            mtu,
            allocator: Rc::new(RefCell::new(mac_allocator)),
            next_id: 1,
        })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.file.path()
    }
}

impl LinkListener for VpnkitListener {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.listener
    }

    fn accept(&mut self) -> io::Result<Vec<Box<dyn GuestLink>>> {
        let listener = &self.listener;
        let path = self.file.path().to_owned();
        let next_id = &mut self.next_id;
        let (mtu, allocator) = (self.mtu, &self.allocator);
        accept_all(
            || listener.accept().map(|(stream, _)| stream),
            |stream| {
                let name = format!("vpnkit:{}#{}", path.display(), *next_id);
                *next_id += 1;
                tracing::debug!(link = %name, "guest connected");
                Ok(
                    Box::new(VpnkitLink::new(stream, name, mtu, allocator.clone()))
                        as Box<dyn GuestLink>,
                )
            },
        )
    }

    fn describe(&self) -> String {
        format!("vpnkit listener on {}", self.file.path().display())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitInit,
    AwaitCommand,
    Ready,
}

/// One vpnkit connection: handshake, then u16-framed Ethernet frames.
pub struct VpnkitLink {
    stream: UnixStream,
    framer: StreamFramer,
    phase: Phase,
    mtu: u16,
    allocator: Rc<RefCell<MacAllocator>>,
    mac: Option<[u8; 6]>,
    requested_ipv4: Option<Ipv4Addr>,
    uuid: [u8; 36],
    name: String,
}

impl VpnkitLink {
    fn new(
        stream: UnixStream,
        name: String,
        mtu: u16,
        allocator: Rc<RefCell<MacAllocator>>,
    ) -> VpnkitLink {
        VpnkitLink {
            stream,
            framer: StreamFramer::new(LengthPrefix::Le16),
            phase: Phase::AwaitInit,
            mtu,
            allocator,
            mac: None,
            requested_ipv4: None,
            uuid: [0; 36],
            name,
        }
    }

    /// The handshake is done and frames flow.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The 36 UUID bytes of the client's Command (all zero: the client let the server choose).
    pub fn uuid(&self) -> &[u8; 36] {
        &self.uuid
    }

    fn on_init(&mut self) -> Result<(), LinkError> {
        let mut init = [0u8; INIT_LEN];
        init.copy_from_slice(&self.framer.buffered()[..INIT_LEN]);
        self.framer.consume(INIT_LEN);
        if &init[..5] != MAGIC {
            return Err(LinkError::Handshake(format!(
                "expected the \"VMN3T\" magic, got {:?}; is the client a vpnkit/hyperkit device?",
                String::from_utf8_lossy(&init[..5])
            )));
        }
        let version = u32::from_le_bytes([init[5], init[6], init[7], init[8]]);
        if version != VPNKIT_PROTOCOL_VERSION {
            return Err(LinkError::Handshake(format!(
                "client speaks protocol version {version}; slipway speaks {VPNKIT_PROTOCOL_VERSION}"
            )));
        }
        self.framer.send_raw(&mut self.stream, &server_init())?;
        self.phase = Phase::AwaitCommand;
        Ok(())
    }

    fn on_command(&mut self) -> Result<(), LinkError> {
        let mut command = [0u8; COMMAND_LEN];
        command.copy_from_slice(&self.framer.buffered()[..COMMAND_LEN]);
        self.framer.consume(COMMAND_LEN);
        self.uuid.copy_from_slice(&command[1..37]);
        match command[0] {
            COMMAND_ETHERNET => {}
            COMMAND_PREFERRED_IPV4 => {
                let ip = u32::from_le_bytes([command[37], command[38], command[39], command[40]]);
                self.requested_ipv4 = Some(Ipv4Addr::from(ip));
            }
            other => {
                let reason = format!("unsupported command {other}");
                // Best effort: the client learns why before the connection closes.
                let _ = self
                    .framer
                    .send_raw(&mut self.stream, &disconnect_reply(&reason));
                return Err(LinkError::Handshake(format!(
                    "{reason}; only Ethernet (1) and Preferred_ipv4 (8) are served"
                )));
            }
        }
        let mac = (self.allocator.borrow_mut())();
        self.framer
            .send_raw(&mut self.stream, &vif_reply(self.mtu, mac))?;
        self.mac = Some(mac);
        self.phase = Phase::Ready;
        tracing::debug!(link = %self.name, mac = ?mac, "vpnkit handshake done");
        Ok(())
    }

    /// Advance the handshake with what the socket has; `Some(status)` when it must wait.
    fn handshake(&mut self) -> Result<Option<LinkStatus>, LinkError> {
        while self.phase != Phase::Ready {
            let need = match self.phase {
                Phase::AwaitInit => INIT_LEN,
                Phase::AwaitCommand | Phase::Ready => COMMAND_LEN,
            };
            if let Some(status) = self.framer.fill_to(&mut self.stream, need)? {
                return Ok(Some(status));
            }
            match self.phase {
                Phase::AwaitInit => self.on_init()?,
                Phase::AwaitCommand | Phase::Ready => self.on_command()?,
            }
        }
        Ok(None)
    }
}

impl GuestLink for VpnkitLink {
    fn source(&mut self) -> &mut dyn Source {
        &mut self.stream
    }

    fn read_frames(
        &mut self,
        budget: usize,
        on_frame: &mut dyn FnMut(&[u8], RxChecksum),
    ) -> Result<LinkStatus, LinkError> {
        match self.handshake() {
            Ok(None) => {}
            Ok(Some(status)) => return Ok(status),
            Err(e) => {
                if matches!(e, LinkError::Handshake(_)) {
                    self.framer.counters.handshake_failures += 1;
                }
                return Err(e);
            }
        }
        self.framer.read_frames(&mut self.stream, budget, &mut |f| {
            on_frame(f, RxChecksum::Unverified)
        })
    }

    fn send_frames(&mut self, frames: &[&[u8]]) -> Result<(), LinkError> {
        if self.phase != Phase::Ready {
            self.framer.counters.dropped_not_ready += frames.len() as u64;
            return Ok(());
        }
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

    fn assigned_mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    fn requested_ipv4(&self) -> Option<Ipv4Addr> {
        self.requested_ipv4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::testutil::{collect, frame, TempDir};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdStream;
    use std::time::Duration;

    struct Setup {
        _dir: TempDir,
        listener: VpnkitListener,
        path: std::path::PathBuf,
        allocated: Rc<RefCell<u8>>,
    }

    fn setup(mtu: u16) -> Setup {
        let dir = TempDir::new();
        let path = dir.path("vpnkit.sock");
        let allocated = Rc::new(RefCell::new(0u8));
        let counter = allocated.clone();
        let listener = VpnkitListener::bind(
            &path,
            mtu,
            Box::new(move || {
                *counter.borrow_mut() += 1;
                [0x02, 0x50, 0x00, 0x00, 0x00, *counter.borrow()]
            }),
        )
        .unwrap();
        Setup {
            _dir: dir,
            listener,
            path,
            allocated,
        }
    }

    fn connect(s: &mut Setup) -> (Box<dyn GuestLink>, StdStream) {
        let client = StdStream::connect(&s.path).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut links = s.listener.accept().unwrap();
        assert_eq!(links.len(), 1);
        (links.pop().unwrap(), client)
    }

    fn client_init(version: u32) -> Vec<u8> {
        let mut init = b"VMN3T".to_vec();
        init.extend_from_slice(&version.to_le_bytes());
        init.extend_from_slice(b"2f061e447e1435cdf1b9eda364cea6414f2c606b");
        assert_eq!(init.len(), 49);
        init
    }

    fn command(kind: u8, uuid: &[u8; 36], ip: [u8; 4]) -> Vec<u8> {
        let mut c = vec![kind];
        c.extend_from_slice(uuid);
        c.extend_from_slice(&ip);
        assert_eq!(c.len(), 41);
        c
    }

    fn le16(f: &[u8]) -> Vec<u8> {
        let mut v = (f.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(f);
        v
    }

    #[test]
    fn handshake_step_by_step_with_exact_bytes() {
        let mut s = setup(1500);
        let (mut link, mut client) = connect(&mut s);

        // Nothing sent yet: the link waits without blocking.
        let (status, got) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert!(got.is_empty());

        client.write_all(&client_init(22)).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        let mut init = [0u8; 49];
        client.read_exact(&mut init).unwrap();
        assert_eq!(&init[..5], b"VMN3T");
        assert_eq!(&init[5..9], &[22, 0, 0, 0]);
        assert_eq!(&init[9..], b"slipway000000000000000000000000000000000");

        // Frames the switch sends now are dropped: the guest has no MAC yet.
        link.send_frames(&[&frame(0, 60)]).unwrap();
        assert_eq!(link.counters().dropped_not_ready, 1);

        client.write_all(&command(1, &[0; 36], [0; 4])).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        let mut vif = [0u8; 258];
        client.read_exact(&mut vif).unwrap();
        assert_eq!(vif[0], 1, "Vif");
        assert_eq!(&vif[1..3], &[0xdc, 0x05], "MTU 1500");
        assert_eq!(&vif[3..5], &[0x0e, 0x06], "max packet size 1550");
        assert_eq!(&vif[5..11], &[0x02, 0x50, 0, 0, 0, 1], "allocated MAC");
        assert!(vif[11..].iter().all(|&b| b == 0), "zero padding");
        assert_eq!(link.assigned_mac(), Some([0x02, 0x50, 0, 0, 0, 1]));
        assert_eq!(link.requested_ipv4(), None);

        // Frames both ways with u16 little-endian prefixes.
        let up = frame(7, 300);
        client.write_all(&le16(&up)).unwrap();
        let (status, got) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(got, vec![up]);
        let down = frame(8, 1514);
        link.send_frames(&[&down]).unwrap();
        let mut bytes = vec![0u8; 2 + 1514];
        client.read_exact(&mut bytes).unwrap();
        assert_eq!(&bytes[..2], &[0xea, 0x05]);
        assert_eq!(&bytes[2..], &down[..]);
        assert_eq!(link.counters().handshake_failures, 0);

        drop(client);
        let (status, _) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Closed);
    }

    #[test]
    fn pipelined_handshake_and_frames_in_one_read() {
        let mut s = setup(9000);
        let (mut link, mut client) = connect(&mut s);
        let mut all = client_init(22);
        let uuid = *b"d5d41a64-3b7a-4b62-8f0e-2a4c6c1a7f0e";
        all.extend(command(
            8,
            &uuid,
            u32::from(Ipv4Addr::new(192, 168, 65, 3)).to_le_bytes(),
        ));
        all.extend(le16(&frame(1, 60)));
        all.extend(le16(&frame(2, 61)));
        client.write_all(&all).unwrap();
        let (status, got) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Open);
        assert_eq!(got, vec![frame(1, 60), frame(2, 61)]);
        assert_eq!(link.requested_ipv4(), Some(Ipv4Addr::new(192, 168, 65, 3)));
        let mut replies = [0u8; 49 + 258];
        client.read_exact(&mut replies).unwrap();
        let vif = &replies[49..];
        assert_eq!(&vif[1..3], &9000u16.to_le_bytes());
        assert_eq!(&vif[3..5], &9050u16.to_le_bytes());
    }

    #[test]
    fn each_connection_gets_its_own_mac() {
        let mut s = setup(1500);
        let mut macs = Vec::new();
        for _ in 0..2 {
            let (mut link, mut client) = connect(&mut s);
            let mut all = client_init(22);
            all.extend(command(1, &[0; 36], [0; 4]));
            client.write_all(&all).unwrap();
            collect(link.as_mut(), 8).0.unwrap();
            macs.push(link.assigned_mac().unwrap());
        }
        assert_eq!(*s.allocated.borrow(), 2);
        assert_ne!(macs[0], macs[1]);
    }

    #[test]
    fn malformed_init_fails_and_is_counted() {
        let mut s = setup(1500);
        let (mut link, mut client) = connect(&mut s);
        let mut bad = client_init(22);
        bad[..5].copy_from_slice(b"HTTP/");
        client.write_all(&bad).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        assert!(matches!(status, Err(LinkError::Handshake(_))), "{status:?}");
        assert_eq!(link.counters().handshake_failures, 1);
        assert_eq!(
            *s.allocated.borrow(),
            0,
            "no MAC spent on a failed handshake"
        );

        let (mut link, mut client) = connect(&mut s);
        client.write_all(&client_init(21)).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        let err = status.unwrap_err();
        assert!(err.to_string().contains("version 21"), "{err}");
        assert_eq!(link.counters().handshake_failures, 1);
    }

    #[test]
    fn unknown_command_gets_a_disconnect_reply() {
        let mut s = setup(1500);
        let (mut link, mut client) = connect(&mut s);
        let mut all = client_init(22);
        all.extend(command(6, &[0; 36], [0; 4]));
        client.write_all(&all).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        assert!(matches!(status, Err(LinkError::Handshake(_))), "{status:?}");
        assert_eq!(link.counters().handshake_failures, 1);
        let mut replies = [0u8; 49 + 258];
        client.read_exact(&mut replies).unwrap();
        let reply = &replies[49..];
        assert_eq!(reply[0], 2, "Disconnect");
        let len = reply[1] as usize;
        assert_eq!(&reply[2..2 + len], b"unsupported command 6");
    }

    #[test]
    fn frames_after_handshake_are_checked() {
        let mut s = setup(1500);
        let (mut link, mut client) = connect(&mut s);
        let mut all = client_init(22);
        all.extend(command(1, &[0; 36], [0; 4]));
        all.extend([5, 0, 1, 2, 3, 4, 5]); // a 5-byte "frame"
        client.write_all(&all).unwrap();
        let (status, _) = collect(link.as_mut(), 8);
        assert!(
            matches!(status, Err(LinkError::BadLength { len: 5, .. })),
            "{status:?}"
        );
    }

    #[test]
    fn client_hanging_up_mid_handshake_is_a_close() {
        let mut s = setup(1500);
        let (mut link, mut client) = connect(&mut s);
        client.write_all(&client_init(22)[..20]).unwrap();
        drop(client);
        let (status, _) = collect(link.as_mut(), 8);
        assert_eq!(status.unwrap(), LinkStatus::Closed);
    }

    #[test]
    fn mtu_must_fit_the_protocol() {
        let dir = TempDir::new();
        let path = dir.path("m.sock");
        for mtu in [0u16, 67, 65486, u16::MAX] {
            let err = VpnkitListener::bind(&path, mtu, Box::new(|| [2, 0, 0, 0, 0, 1]))
                .err()
                .unwrap();
            assert!(matches!(err, LinkError::InvalidMtu { .. }), "{err}");
        }
        VpnkitListener::bind(&path, 65485, Box::new(|| [2, 0, 0, 0, 0, 1])).unwrap();
    }
}
