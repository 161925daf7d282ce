//! Checked packet views, builders and checksums for slipway.
//!
//! Theory of operation: every received frame is untrusted. A view (`EthernetFrame::new_checked`,
//! `Ipv4Packet::new_checked`, ...) checks once that the buffer is long enough for every field it
//! exposes and that length fields agree with the buffer; after that, accessors read fixed offsets
//! and cannot panic. Builders write headers into caller-provided buffers at fixed offsets and
//! compute checksums; nothing here allocates or performs I/O.
//!
//! Limits: Ethernet II only (no 802.1Q tags: tagged frames are reported as their TPID ethertype
//! and dropped by the caller); IPv4 options and IPv6 extension headers are skipped, fragments are
//! reported (not reassembled); TCP options understood: MSS, window scale (others skipped).

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::EthernetFrame;
pub use icmp::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpSegment;
pub use udp::UdpDatagram;

/// Why a buffer was not accepted as a packet. Each variant is a drop reason callers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the header or than a length field says.
    Truncated,
    /// A field holds a value the protocol does not allow (bad version, header length, ...).
    Malformed,
    /// A checksum does not match.
    BadChecksum,
    /// Valid but not handled (e.g. non-Ethernet ARP, IPv4 fragment).
    Unsupported,
}

impl WireError {
    pub fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::Malformed => "malformed",
            WireError::BadChecksum => "bad_checksum",
            WireError::Unsupported => "unsupported",
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for WireError {}

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
