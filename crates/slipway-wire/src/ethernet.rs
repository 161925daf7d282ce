//! Ethernet II frames.

use crate::{be16, put16, WireError};

pub const HEADER_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// True for broadcast and multicast destinations (the group bit of the first octet).
#[inline]
pub fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

/// A checked view of an Ethernet II frame.
#[derive(Clone, Copy)]
pub struct EthernetFrame<'a> {
    buf: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Self { buf })
    }
    #[inline]
    pub fn dst(&self) -> [u8; 6] {
        self.buf[0..6].try_into().unwrap_or_default()
    }
    #[inline]
    pub fn src(&self) -> [u8; 6] {
        self.buf[6..12].try_into().unwrap_or_default()
    }
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, 12)
    }
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

/// Write an Ethernet header into the first 14 bytes of `buf` (which must hold them).
#[inline]
pub fn write_header(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    put16(buf, 12, ethertype);
}

/// Format a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_and_build_round_trip() {
        let mut b = [0u8; 20];
        write_header(&mut b, BROADCAST, [2, 0, 0, 0, 0, 1], ETHERTYPE_ARP);
        let f = EthernetFrame::new_checked(&b).unwrap();
        assert_eq!(f.dst(), BROADCAST);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 6);
        assert!(EthernetFrame::new_checked(&b[..13]).is_err());
        assert!(is_multicast(&BROADCAST));
        assert!(!is_multicast(&[2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn mac_text() {
        let m = parse_mac("5a:94:ef:e4:0c:ee").unwrap();
        assert_eq!(format_mac(&m), "5a:94:ef:e4:0c:ee");
        assert!(parse_mac("5a:94:ef:e4:0c").is_none());
        assert!(parse_mac("5a:94:ef:e4:0c:ee:00").is_none());
        assert!(parse_mac("zz:94:ef:e4:0c:ee").is_none());
    }
}
