//! ICMPv4 (RFC 792): echo and the error messages slipway sends.

use crate::checksum;
use crate::{be16, put16, WireError};

pub const HEADER_LEN: usize = 8;
pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
/// Destination-unreachable codes.
pub const CODE_NET_UNREACHABLE: u8 = 0;
pub const CODE_HOST_UNREACHABLE: u8 = 1;
pub const CODE_PORT_UNREACHABLE: u8 = 3;
pub const CODE_FRAG_NEEDED: u8 = 4;
pub const CODE_ADMIN_PROHIBITED: u8 = 13;

#[derive(Clone, Copy)]
pub struct Icmpv4Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Icmpv4Packet<'a> {
    /// `buf` is the IP payload; the checksum is verified.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if checksum::checksum(buf) != 0 {
            return Err(WireError::BadChecksum);
        }
        Ok(Self { buf })
    }
    pub fn msg_type(&self) -> u8 {
        self.buf[0]
    }
    pub fn code(&self) -> u8 {
        self.buf[1]
    }
    /// Echo identifier (meaningful for echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf, 4)
    }
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf, 6)
    }
    /// Bytes after the 8-byte header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Write an ICMP header for a message whose body is already at `msg[8..]`; `rest` is the 4-byte
/// type-specific field (echo id/seq, or zero for unreachable).
pub fn write_header(msg: &mut [u8], msg_type: u8, code: u8, rest: [u8; 4]) {
    msg[0] = msg_type;
    msg[1] = code;
    put16(msg, 2, 0);
    msg[4..8].copy_from_slice(&rest);
    let c = checksum::checksum(msg);
    put16(msg, 2, c);
}

/// The 4-byte rest-of-header of an echo message.
pub fn echo_rest(ident: u16, seq: u16) -> [u8; 4] {
    let i = ident.to_be_bytes();
    let s = seq.to_be_bytes();
    [i[0], i[1], s[0], s[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip() {
        let mut m = [0u8; 12];
        m[8..].copy_from_slice(b"ping");
        write_header(&mut m, ECHO_REQUEST, 0, echo_rest(0x1234, 7));
        let p = Icmpv4Packet::new_checked(&m).unwrap();
        assert_eq!(
            (
                p.msg_type(),
                p.code(),
                p.echo_ident(),
                p.echo_seq(),
                p.payload()
            ),
            (ECHO_REQUEST, 0, 0x1234, 7, &b"ping"[..])
        );
        m[9] ^= 1;
        assert_eq!(
            Icmpv4Packet::new_checked(&m).err(),
            Some(WireError::BadChecksum)
        );
        assert_eq!(
            Icmpv4Packet::new_checked(&m[..7]).err(),
            Some(WireError::Truncated)
        );
    }
}
