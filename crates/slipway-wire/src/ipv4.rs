//! IPv4 headers (RFC 791). Options are skipped; fragments are reported, not reassembled.

use crate::checksum;
use crate::{be16, put16, WireError};
use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

#[derive(Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
    header_len: usize,
    total_len: usize,
}

impl<'a> Ipv4Packet<'a> {
    /// Check version, header length, total length against the buffer (trailing Ethernet padding
    /// is ignored) and the header checksum.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if buf[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        let total_len = usize::from(be16(buf, 2));
        if header_len < HEADER_LEN || total_len < header_len {
            return Err(WireError::Malformed);
        }
        if buf.len() < total_len {
            return Err(WireError::Truncated);
        }
        if checksum::checksum(&buf[..header_len]) != 0 {
            return Err(WireError::BadChecksum);
        }
        Ok(Self {
            buf,
            header_len,
            total_len,
        })
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }
    pub fn ttl(&self) -> u8 {
        self.buf[8]
    }
    pub fn tos(&self) -> u8 {
        self.buf[1]
    }
    pub fn ident(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// True when this is a fragment (more-fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x3fff != 0
    }
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The header and payload, without Ethernet padding.
    pub fn packet(&self) -> &'a [u8] {
        &self.buf[..self.total_len]
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.total_len]
    }
}

/// Write a 20-byte IPv4 header (DF set, no options) for a payload of `payload_len` bytes.
#[inline]
pub fn write_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    ttl: u8,
    ident: u16,
) {
    buf[0] = 0x45;
    buf[1] = 0;
    put16(buf, 2, (HEADER_LEN + payload_len) as u16);
    put16(buf, 4, ident);
    put16(buf, 6, 0x4000);
    buf[8] = ttl;
    buf[9] = protocol;
    put16(buf, 10, 0);
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&buf[..HEADER_LEN]);
    put16(buf, 10, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse() {
        let mut b = [0u8; 28];
        let s = Ipv4Addr::new(10, 0, 2, 100);
        let d = Ipv4Addr::new(10, 0, 2, 2);
        write_header(&mut b, s, d, PROTO_UDP, 8, 64, 7);
        let p = Ipv4Packet::new_checked(&b).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.protocol(), p.ttl(), p.ident()),
            (s, d, PROTO_UDP, 64, 7)
        );
        assert_eq!(p.payload().len(), 8);
        assert!(!p.is_fragment());
    }

    #[test]
    fn rejects_bad_headers() {
        let mut b = [0u8; 28];
        write_header(
            &mut b,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::LOCALHOST,
            PROTO_TCP,
            8,
            64,
            1,
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..27]).err(),
            Some(WireError::Truncated)
        );
        let mut bad = b;
        bad[11] ^= 1;
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(WireError::BadChecksum)
        );
        let mut bad = b;
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(WireError::Malformed)
        );
        let mut bad = b;
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad).err(),
            Some(WireError::Malformed)
        );
        // Padding after total length is ignored.
        let mut padded = [0u8; 60];
        padded[..28].copy_from_slice(&b);
        assert_eq!(Ipv4Packet::new_checked(&padded).unwrap().payload().len(), 8);
    }
}
