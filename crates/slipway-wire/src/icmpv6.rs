//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages built on it (RFC 4861): a checked view,
//! a walk over ND options, and builders.
//!
//! Theory of operation: the view checks the checksum over the IPv6 pseudo-header once; accessors
//! then read fixed offsets. ND options are walked with [`NdOptions`], which stops (and reports
//! [`NdOptions::malformed`]) at an option of length zero or one that runs past the message, the
//! two cases RFC 4861 §4.6 says invalidate the message. Builders write into caller buffers.
//!
//! Limits: only the options slipway reads are named (source/target link-layer address); callers
//! skip the others.

use crate::checksum;
use crate::ipv6::NEXT_ICMPV6;
use crate::{be16, put16, WireError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 8;
pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAMETER_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const MLD_QUERY: u8 = 130;
pub const MLD_REPORT: u8 = 131;
pub const MLD_DONE: u8 = 132;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const REDIRECT: u8 = 137;
pub const MLD2_REPORT: u8 = 143;

pub const CODE_NO_ROUTE: u8 = 0;
pub const CODE_ADMIN_PROHIBITED: u8 = 1;
pub const CODE_ADDR_UNREACHABLE: u8 = 3;
pub const CODE_PORT_UNREACHABLE: u8 = 4;

pub const OPT_SOURCE_LL_ADDR: u8 = 1;
pub const OPT_TARGET_LL_ADDR: u8 = 2;
pub const OPT_PREFIX_INFO: u8 = 3;
pub const OPT_MTU: u8 = 5;
pub const OPT_RDNSS: u8 = 25;
pub const OPT_DNSSL: u8 = 31;

/// Neighbor advertisement flags (byte 4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// Router advertisement flags (byte 5).
pub const RA_MANAGED: u8 = 0x80;
pub const RA_OTHER: u8 = 0x40;

/// Length of an NS or NA without options (header + reserved/flags + target).
pub const ND_TARGET_MSG_LEN: usize = 24;
/// Length of a router advertisement without options.
pub const RA_LEN: usize = 16;

#[derive(Clone, Copy)]
pub struct Icmpv6Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Icmpv6Packet<'a> {
    /// `buf` is the upper-layer payload of an IPv6 packet from `src` to `dst`; the checksum is
    /// verified against the pseudo-header.
    pub fn new_checked(buf: &'a [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let acc = checksum::pseudo_v6(src, dst, NEXT_ICMPV6, buf.len() as u32);
        if checksum::finish(checksum::sum(buf, acc)) != 0 {
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
    /// The target address of a neighbor solicitation or advertisement.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        let b = self.buf.get(8..24)?;
        let mut o = [0u8; 16];
        o.copy_from_slice(b);
        Some(Ipv6Addr::from(o))
    }
    /// Neighbor advertisement flags (router, solicited, override).
    pub fn na_flags(&self) -> u8 {
        self.buf[4]
    }
    /// The ND options of an RS (after 8 bytes), NS/NA (after 24) or RA (after 16).
    pub fn nd_options(&self) -> NdOptions<'a> {
        let start = match self.msg_type() {
            ROUTER_SOLICIT => HEADER_LEN,
            ROUTER_ADVERT => RA_LEN,
            NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT => ND_TARGET_MSG_LEN,
            REDIRECT => 40,
            _ => self.buf.len(),
        };
        NdOptions {
            rest: self.buf.get(start..).unwrap_or(&[]),
            malformed: self.buf.len() < start,
        }
    }
}

/// Iterator over ND options as (type, option bytes including type and length).
#[derive(Clone)]
pub struct NdOptions<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> NdOptions<'a> {
    /// The link-layer address carried in the first option of `kind` (source or target).
    pub fn link_layer_addr(self, kind: u8) -> Option<[u8; 6]> {
        self.filter(|(t, o)| *t == kind && o.len() >= 8)
            .map(|(_, o)| [o[2], o[3], o[4], o[5], o[6], o[7]])
            .next()
    }
    /// True when the whole option area is well formed (every length non-zero and in bounds).
    pub fn valid(mut self) -> bool {
        while self.next().is_some() {}
        !self.malformed
    }
}

impl<'a> Iterator for NdOptions<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.malformed {
            return None;
        }
        if self.rest.len() < 2 {
            self.malformed = true;
            return None;
        }
        let len = usize::from(self.rest[1]) * 8;
        if len == 0 || len > self.rest.len() {
            self.malformed = true;
            return None;
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some((opt[0], opt))
    }
}

/// Write an ICMPv6 header for a message whose body is already at `msg[8..]` (`msg` is exactly
/// the message), with the checksum for `src` → `dst`.
pub fn write_header(
    msg: &mut [u8],
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    src: Ipv6Addr,
    dst: Ipv6Addr,
) {
    msg[0] = msg_type;
    msg[1] = code;
    put16(msg, 2, 0);
    msg[4..8].copy_from_slice(&rest);
    finish_checksum(msg, src, dst);
}

/// (Re)compute the checksum of a complete ICMPv6 message in place.
pub fn finish_checksum(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    put16(msg, 2, 0);
    let acc = checksum::pseudo_v6(src, dst, NEXT_ICMPV6, msg.len() as u32);
    let c = checksum::finish(checksum::sum(msg, acc));
    put16(msg, 2, c);
}

/// Write a link-layer address option (8 bytes) at `buf[..8]`.
pub fn write_ll_option(buf: &mut [u8], kind: u8, mac: [u8; 6]) {
    buf[0] = kind;
    buf[1] = 1;
    buf[2..8].copy_from_slice(&mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "fe80::1".parse().unwrap(),
            "ff02::1:ff00:1".parse().unwrap(),
        )
    }

    #[test]
    fn neighbor_solicitation_round_trip() {
        let (s, d) = addrs();
        let target: Ipv6Addr = "fd00:5119::1".parse().unwrap();
        let mut m = [0u8; 32];
        m[8..24].copy_from_slice(&target.octets());
        write_ll_option(&mut m[24..], OPT_SOURCE_LL_ADDR, [2, 0, 0, 0, 0, 9]);
        write_header(&mut m, NEIGHBOR_SOLICIT, 0, [0; 4], s, d);
        let p = Icmpv6Packet::new_checked(&m, s, d).unwrap();
        assert_eq!(p.msg_type(), NEIGHBOR_SOLICIT);
        assert_eq!(p.nd_target(), Some(target));
        assert!(p.nd_options().valid());
        assert_eq!(
            p.nd_options().link_layer_addr(OPT_SOURCE_LL_ADDR),
            Some([2, 0, 0, 0, 0, 9])
        );
        assert_eq!(p.nd_options().link_layer_addr(OPT_TARGET_LL_ADDR), None);
        // The checksum covers the pseudo-header.
        assert_eq!(
            Icmpv6Packet::new_checked(&m, "fe80::2".parse().unwrap(), d).err(),
            Some(WireError::BadChecksum)
        );
    }

    #[test]
    fn bad_option_lengths_are_reported() {
        let (s, d) = addrs();
        for opt in [[1u8, 0, 0, 0, 0, 0, 0, 0], [1, 2, 0, 0, 0, 0, 0, 0]] {
            let mut m = [0u8; 32];
            m[24..].copy_from_slice(&opt);
            write_header(&mut m, NEIGHBOR_SOLICIT, 0, [0; 4], s, d);
            let p = Icmpv6Packet::new_checked(&m, s, d).unwrap();
            assert!(!p.nd_options().valid());
            assert_eq!(p.nd_options().count(), 0);
        }
        // A truncated NS (no room for the target).
        let mut m = [0u8; 12];
        write_header(&mut m, NEIGHBOR_SOLICIT, 0, [0; 4], s, d);
        let p = Icmpv6Packet::new_checked(&m, s, d).unwrap();
        assert_eq!(p.nd_target(), None);
        assert!(!p.nd_options().valid());
    }

    #[test]
    fn echo_fields() {
        let (s, d) = addrs();
        let mut m = [0u8; 12];
        m[8..].copy_from_slice(b"ping");
        write_header(&mut m, ECHO_REQUEST, 0, [0x12, 0x34, 0, 7], s, d);
        let p = Icmpv6Packet::new_checked(&m, s, d).unwrap();
        assert_eq!(
            (p.echo_ident(), p.echo_seq(), p.payload()),
            (0x1234, 7, &b"ping"[..])
        );
        assert_eq!(
            Icmpv6Packet::new_checked(&m[..7], s, d).err(),
            Some(WireError::Truncated)
        );
    }
}
