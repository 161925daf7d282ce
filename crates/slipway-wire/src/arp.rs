//! ARP for IPv4 over Ethernet (RFC 826). Other hardware/protocol types are `Unsupported`.

use crate::{be16, put16, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

#[derive(Clone, Copy)]
pub struct ArpPacket<'a> {
    buf: &'a [u8],
}

impl<'a> ArpPacket<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        // htype Ethernet, ptype IPv4, hlen 6, plen 4
        if be16(buf, 0) != 1 || be16(buf, 2) != 0x0800 || buf[4] != 6 || buf[5] != 4 {
            return Err(WireError::Unsupported);
        }
        Ok(Self { buf })
    }
    pub fn operation(&self) -> u16 {
        be16(self.buf, 6)
    }
    pub fn sender_mac(&self) -> [u8; 6] {
        self.buf[8..14].try_into().unwrap_or_default()
    }
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[14], self.buf[15], self.buf[16], self.buf[17])
    }
    pub fn target_mac(&self) -> [u8; 6] {
        self.buf[18..24].try_into().unwrap_or_default()
    }
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[24], self.buf[25], self.buf[26], self.buf[27])
    }
}

/// Write a 28-byte ARP packet into `buf`.
pub fn write(
    buf: &mut [u8],
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) {
    put16(buf, 0, 1);
    put16(buf, 2, 0x0800);
    buf[4] = 6;
    buf[5] = 4;
    put16(buf, 6, op);
    buf[8..14].copy_from_slice(&sender_mac);
    buf[14..18].copy_from_slice(&sender_ip.octets());
    buf[18..24].copy_from_slice(&target_mac);
    buf[24..28].copy_from_slice(&target_ip.octets());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let mut b = [0u8; 28];
        let a = Ipv4Addr::new(192, 168, 127, 2);
        let g = Ipv4Addr::new(192, 168, 127, 1);
        write(&mut b, OP_REQUEST, [2, 0, 0, 0, 0, 9], a, [0; 6], g);
        let p = ArpPacket::new_checked(&b).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_ip(), a);
        assert_eq!(p.target_ip(), g);
        assert_eq!(p.sender_mac(), [2, 0, 0, 0, 0, 9]);
        assert_eq!(
            ArpPacket::new_checked(&b[..27]).err(),
            Some(WireError::Truncated)
        );
        b[5] = 16;
        assert_eq!(
            ArpPacket::new_checked(&b).err(),
            Some(WireError::Unsupported)
        );
    }
}
