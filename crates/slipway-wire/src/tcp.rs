//! TCP headers (RFC 9293): a checked view with the options slipway uses, and a header builder.

use crate::checksum;
use crate::{be16, be32, put16, put32, WireError};
use std::net::{IpAddr, Ipv4Addr};

pub const HEADER_LEN: usize = 20;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

#[derive(Clone, Copy)]
pub struct TcpSegment<'a> {
    buf: &'a [u8],
    header_len: usize,
}

/// Options from a SYN that slipway honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
}

impl<'a> TcpSegment<'a> {
    /// `buf` is the IP payload (exactly the segment).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = usize::from(buf[12] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if buf.len() < header_len {
            return Err(WireError::Truncated);
        }
        Ok(Self { buf, header_len })
    }
    /// Verify the checksum against an IPv4 pseudo-header.
    pub fn verify_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.verify(src.into(), dst.into())
    }
    /// Verify the checksum against the pseudo-header of either family.
    pub fn verify(&self, src: IpAddr, dst: IpAddr) -> bool {
        let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_TCP, self.buf.len());
        checksum::finish(checksum::sum(self.buf, acc)) == 0
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buf, 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buf, 8)
    }
    pub fn flags(&self) -> u8 {
        self.buf[13]
    }
    pub fn window(&self) -> u16 {
        be16(self.buf, 14)
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
    /// Parse MSS and window-scale options; malformed option lists end the walk silently.
    pub fn syn_options(&self) -> SynOptions {
        let mut out = SynOptions::default();
        let opts = &self.buf[HEADER_LEN..self.header_len];
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let Some(&len) = opts.get(i + 1) else { break };
                    let len = usize::from(len);
                    if len < 2 || i + len > opts.len() {
                        break;
                    }
                    match (kind, len) {
                        (2, 4) => out.mss = Some(be16(opts, i + 2)),
                        (3, 3) => out.window_scale = Some(opts[i + 2].min(14)),
                        _ => {}
                    }
                    i += len;
                }
            }
        }
        out
    }
}

/// Header fields for [`write_header`].
#[derive(Debug, Clone, Copy)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// MSS and window scale, only sent on SYN segments.
    pub syn_options: Option<SynOptions>,
}

impl TcpHeader {
    pub fn header_len(&self) -> usize {
        match self.syn_options {
            Some(_) => HEADER_LEN + 8, // MSS (4) + NOP + window scale (3)
            None => HEADER_LEN,
        }
    }
}

/// Write the TCP header into `seg[..h.header_len()]`, where `seg` is the whole segment (header
/// then payload already in place), and fill in the checksum for IPv4 `src` → `dst`.
pub fn write_header_v4(seg: &mut [u8], h: &TcpHeader, src: Ipv4Addr, dst: Ipv4Addr) {
    write_header(seg, h, src.into(), dst.into());
}

/// [`write_header_v4`] for either family.
pub fn write_header(seg: &mut [u8], h: &TcpHeader, src: IpAddr, dst: IpAddr) {
    let hl = h.header_len();
    put16(seg, 0, h.src_port);
    put16(seg, 2, h.dst_port);
    put32(seg, 4, h.seq);
    put32(seg, 8, h.ack);
    seg[12] = ((hl / 4) as u8) << 4;
    seg[13] = h.flags;
    put16(seg, 14, h.window);
    put16(seg, 16, 0);
    put16(seg, 18, 0);
    if let Some(o) = h.syn_options {
        seg[20] = 2;
        seg[21] = 4;
        put16(seg, 22, o.mss.unwrap_or(536));
        seg[24] = 1;
        seg[25] = 3;
        seg[26] = 3;
        seg[27] = o.window_scale.unwrap_or(0);
    }
    let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_TCP, seg.len());
    let c = checksum::finish(checksum::sum(seg, acc));
    put16(seg, 16, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_syn() {
        let mut seg = [0u8; 28];
        let h = TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 1,
            ack: 2,
            flags: SYN | ACK,
            window: 65535,
            syn_options: Some(SynOptions {
                mss: Some(1460),
                window_scale: Some(7),
            }),
        };
        let (s, d) = (
            Ipv4Addr::new(192, 168, 127, 254),
            Ipv4Addr::new(192, 168, 127, 2),
        );
        write_header_v4(&mut seg, &h, s, d);
        let t = TcpSegment::new_checked(&seg).unwrap();
        assert!(t.verify_v4(s, d));
        assert!(!t.verify_v4(d, Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            (
                t.src_port(),
                t.dst_port(),
                t.seq(),
                t.ack(),
                t.flags(),
                t.window()
            ),
            (80, 40000, 1, 2, SYN | ACK, 65535)
        );
        assert_eq!(
            t.syn_options(),
            SynOptions {
                mss: Some(1460),
                window_scale: Some(7)
            }
        );
        assert!(t.payload().is_empty());
    }

    #[test]
    fn hostile_options_do_not_panic() {
        let mut seg = [0u8; 60];
        seg[12] = 15 << 4;
        for (i, b) in seg[20..].iter_mut().enumerate() {
            *b = [2, 0, 3, 255, 1, 9, 1][i % 7];
        }
        let t = TcpSegment::new_checked(&seg).unwrap();
        let _ = t.syn_options();
        seg[12] = 4 << 4;
        assert_eq!(
            TcpSegment::new_checked(&seg).err(),
            Some(WireError::Malformed)
        );
        seg[12] = 15 << 4;
        assert_eq!(
            TcpSegment::new_checked(&seg[..40]).err(),
            Some(WireError::Truncated)
        );
    }
}
