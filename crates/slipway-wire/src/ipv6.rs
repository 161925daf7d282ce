//! IPv6 headers (RFC 8200).
//!
//! Theory of operation: [`Ipv6Packet::new_checked`] checks the fixed 40-byte header against the
//! buffer, then walks the extension-header chain (hop-by-hop, routing, destination options,
//! fragment) to the upper-layer header, so callers see the upper-layer protocol and its bytes
//! directly. Trailing Ethernet padding after the payload length is ignored.
//!
//! Limits: at most [`MAX_EXTENSION_HEADERS`] extension headers are walked (more is `Malformed`);
//! fragments are reported ([`Ipv6Packet::is_fragment`]), not reassembled; jumbograms (payload
//! length 0 with a hop-by-hop jumbo option) are `Unsupported`; AH/ESP end the walk as the
//! "upper layer" and are dropped by callers as unknown protocols.

use crate::{be16, put16, WireError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;
pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_NONE: u8 = 59;
pub const NEXT_DEST_OPTS: u8 = 60;
/// Extension headers walked before a packet is called malformed.
pub const MAX_EXTENSION_HEADERS: usize = 8;

#[derive(Clone, Copy)]
pub struct Ipv6Packet<'a> {
    /// Exactly the packet (fixed header + payload length).
    buf: &'a [u8],
    /// Offset of the upper-layer header.
    upper: usize,
    next_header: u8,
    fragment: bool,
}

impl<'a> Ipv6Packet<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if buf[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        let payload_len = usize::from(be16(buf, 4));
        if payload_len == 0 && buf[6] == NEXT_HOP_BY_HOP {
            // Possibly a jumbogram (RFC 2675); never legitimate on a link of at most 64 KiB.
            return Err(WireError::Unsupported);
        }
        let total = HEADER_LEN + payload_len;
        if buf.len() < total {
            return Err(WireError::Truncated);
        }
        let buf = &buf[..total];
        let mut next = buf[6];
        let mut at = HEADER_LEN;
        let mut fragment = false;
        let mut walked = 0;
        while let NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_FRAGMENT = next {
            walked += 1;
            if walked > MAX_EXTENSION_HEADERS {
                return Err(WireError::Malformed);
            }
            if next == NEXT_HOP_BY_HOP && walked != 1 {
                // Hop-by-hop options must come first (RFC 8200 §4.1).
                return Err(WireError::Malformed);
            }
            if buf.len() < at + 8 {
                return Err(WireError::Truncated);
            }
            let len = if next == NEXT_FRAGMENT {
                fragment = true;
                8
            } else {
                (usize::from(buf[at + 1]) + 1) * 8
            };
            if buf.len() < at + len {
                return Err(WireError::Truncated);
            }
            next = buf[at];
            at += len;
        }
        Ok(Self {
            buf,
            upper: at,
            next_header: next,
            fragment,
        })
    }
    pub fn src(&self) -> Ipv6Addr {
        addr_at(self.buf, 8)
    }
    pub fn dst(&self) -> Ipv6Addr {
        addr_at(self.buf, 24)
    }
    /// The upper-layer protocol after any extension headers.
    pub fn next_header(&self) -> u8 {
        self.next_header
    }
    pub fn hop_limit(&self) -> u8 {
        self.buf[7]
    }
    pub fn traffic_class(&self) -> u8 {
        (self.buf[0] << 4) | (self.buf[1] >> 4)
    }
    /// A fragment header was present: the upper-layer bytes are one fragment only.
    pub fn is_fragment(&self) -> bool {
        self.fragment
    }
    /// Fixed header plus extension headers.
    pub fn header_len(&self) -> usize {
        self.upper
    }
    /// The whole packet (quoted in ICMPv6 errors).
    pub fn packet(&self) -> &'a [u8] {
        self.buf
    }
    /// The upper-layer header and its data.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.upper..]
    }
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

/// Write a 40-byte IPv6 header (traffic class and flow label zero) for a payload of
/// `payload_len` bytes directly after it.
#[inline]
pub fn write_header(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload_len: usize,
    hop_limit: u8,
) {
    buf[0] = 0x60;
    buf[1] = 0;
    buf[2] = 0;
    buf[3] = 0;
    put16(buf, 4, payload_len as u16);
    buf[6] = next_header;
    buf[7] = hop_limit;
    buf[8..24].copy_from_slice(&src.octets());
    buf[24..40].copy_from_slice(&dst.octets());
}

/// The solicited-node multicast address of `ip` (ff02::1:ffXX:XXXX, RFC 4291 §2.7.1).
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet multicast address of an IPv6 multicast address (33:33 + low 32 bits, RFC 2464).
pub fn multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The modified EUI-64 interface identifier of `mac` inside `prefix` (a /64): SLAAC's address
/// (RFC 4291 appendix A). With `fe80::` this is the link-local address.
pub fn eui64_address(prefix: Ipv6Addr, mac: [u8; 6]) -> Ipv6Addr {
    let mut o = prefix.octets();
    o[8] = mac[0] ^ 0x02;
    o[9] = mac[1];
    o[10] = mac[2];
    o[11] = 0xff;
    o[12] = 0xfe;
    o[13] = mac[3];
    o[14] = mac[4];
    o[15] = mac[5];
    Ipv6Addr::from(o)
}

/// True for fe80::/10.
pub fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        let s: Ipv6Addr = "fd00:5119::2".parse().unwrap();
        let d: Ipv6Addr = "fd00:5119::1".parse().unwrap();
        write_header(&mut b, s, d, next, ext.len() + payload.len(), 64);
        b.extend_from_slice(ext);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn build_then_parse() {
        let b = packet(NEXT_UDP, &[], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let p = Ipv6Packet::new_checked(&b).unwrap();
        assert_eq!(p.src(), "fd00:5119::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst(), "fd00:5119::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(
            (p.next_header(), p.hop_limit(), p.header_len()),
            (17, 64, 40)
        );
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!p.is_fragment());
        // Padding after the payload length is ignored.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(Ipv6Packet::new_checked(&padded).unwrap().payload().len(), 8);
    }

    #[test]
    fn walks_extension_headers() {
        // Hop-by-hop (router alert, as MLD uses) then a fragment header, then UDP.
        let hbh = [NEXT_FRAGMENT, 0, 5, 2, 0, 0, 1, 0];
        let frag = [NEXT_UDP, 0, 0, 0, 0, 0, 0, 1];
        let mut ext = hbh.to_vec();
        ext.extend_from_slice(&frag);
        let b = packet(NEXT_HOP_BY_HOP, &ext, &[9; 8]);
        let p = Ipv6Packet::new_checked(&b).unwrap();
        assert_eq!((p.next_header(), p.header_len()), (NEXT_UDP, 56));
        assert!(p.is_fragment());
        assert_eq!(p.payload(), &[9; 8]);
    }

    #[test]
    fn rejects_bad_packets() {
        let b = packet(NEXT_UDP, &[], &[0; 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..47]).err(),
            Some(WireError::Truncated)
        );
        let mut bad = b.clone();
        bad[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&bad).err(),
            Some(WireError::Malformed)
        );
        // An extension header longer than the packet.
        let b = packet(NEXT_DEST_OPTS, &[NEXT_UDP, 3, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&b).err(),
            Some(WireError::Truncated)
        );
        // Hop-by-hop not first.
        let b = packet(
            NEXT_DEST_OPTS,
            &[
                NEXT_HOP_BY_HOP,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                NEXT_UDP,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
            &[],
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b).err(),
            Some(WireError::Malformed)
        );
        // A chain longer than the limit.
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXTENSION_HEADERS {
            ext.extend_from_slice(&[NEXT_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        let b = packet(NEXT_DEST_OPTS, &ext, &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&b).err(),
            Some(WireError::Malformed)
        );
        // Jumbogram marker.
        let mut j = packet(NEXT_HOP_BY_HOP, &[], &[]);
        j.extend_from_slice(&[0; 8]);
        assert_eq!(
            Ipv6Packet::new_checked(&j).err(),
            Some(WireError::Unsupported)
        );
    }

    #[test]
    fn address_helpers() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(
            eui64_address("fe80::".parse().unwrap(), mac),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        let ip: Ipv6Addr = "fd00:5119::5054:ff:fe12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
        assert!(is_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_link_local(&"fd00::1".parse().unwrap()));
    }
}
