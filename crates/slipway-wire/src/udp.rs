//! UDP headers (RFC 768).

use crate::checksum;
use crate::{be16, put16, WireError};
use std::net::{IpAddr, Ipv4Addr};

/// Offset of the checksum field in the UDP header.
pub const CHECKSUM_OFFSET: usize = 6;

pub const HEADER_LEN: usize = 8;

#[derive(Clone, Copy)]
pub struct UdpDatagram<'a> {
    buf: &'a [u8],
}

impl<'a> UdpDatagram<'a> {
    /// `buf` is the IP payload; the UDP length field must fit inside it.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(be16(buf, 4));
        if len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if len > buf.len() {
            return Err(WireError::Truncated);
        }
        Ok(Self { buf: &buf[..len] })
    }
    /// Verify the checksum (a zero checksum means "none" over IPv4).
    pub fn verify_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.verify(src.into(), dst.into())
    }
    /// Verify the checksum for either family. Zero means "none" over IPv4 and is invalid over
    /// IPv6 (RFC 8200 §8.1).
    pub fn verify(&self, src: IpAddr, dst: IpAddr) -> bool {
        if be16(self.buf, 6) == 0 {
            return src.is_ipv4();
        }
        let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_UDP, self.buf.len());
        checksum::finish(checksum::sum(self.buf, acc)) == 0
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

/// Write the UDP header into `dgram[..8]` (payload already in place after it) with checksum.
pub fn write_header_v4(
    dgram: &mut [u8],
    src_port: u16,
    dst_port: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) {
    write_header(dgram, src_port, dst_port, src.into(), dst.into());
}

/// [`write_header_v4`] for either family.
pub fn write_header(dgram: &mut [u8], src_port: u16, dst_port: u16, src: IpAddr, dst: IpAddr) {
    let len = dgram.len() as u16;
    put16(dgram, 0, src_port);
    put16(dgram, 2, dst_port);
    put16(dgram, 4, len);
    put16(dgram, 6, 0);
    let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_UDP, usize::from(len));
    let mut c = checksum::finish(checksum::sum(dgram, acc));
    if c == 0 {
        c = 0xffff;
    }
    put16(dgram, 6, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut d = [0u8; 13];
        d[8..].copy_from_slice(b"hello");
        let (s, t) = (Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 100));
        write_header_v4(&mut d, 53, 5353, s, t);
        let u = UdpDatagram::new_checked(&d).unwrap();
        assert!(u.verify_v4(s, t));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (53, 5353, &b"hello"[..])
        );
        d[9] ^= 0xff;
        assert!(!UdpDatagram::new_checked(&d).unwrap().verify_v4(s, t));
        d[5] = 200;
        assert_eq!(
            UdpDatagram::new_checked(&d).err(),
            Some(WireError::Truncated)
        );
        d[5] = 3;
        assert_eq!(
            UdpDatagram::new_checked(&d).err(),
            Some(WireError::Malformed)
        );
    }
}
