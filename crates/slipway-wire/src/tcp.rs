//! TCP headers (RFC 9293): a checked view with the options slipway uses, and a header builder.
//!
//! Options understood: MSS, window scale (RFC 7323) and SACK-permitted on SYNs; SACK blocks
//! (RFC 2018) on any segment. An option list that is malformed (a length below 2 or past the
//! header) ends the walk silently; a SACK option whose length is not 2 + 8·n with n in 1..=4 is
//! skipped. Parsing never allocates: at most [`MAX_SACK_BLOCKS`] blocks, in a fixed array.

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
    /// SACK-permitted (RFC 2018, option kind 4).
    pub sack_permitted: bool,
}

/// The most SACK blocks one option can carry (40 bytes of options: 2 + 4 × 8).
pub const MAX_SACK_BLOCKS: usize = 4;

/// The SACK blocks of one segment, as (left edge, right edge) sequence numbers in the order
/// the sender listed them (RFC 2018: the most recently changed block first). Not validated
/// against any window: that is the receiver of the blocks' job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SackBlocks {
    blocks: [(u32, u32); MAX_SACK_BLOCKS],
    len: u8,
}

impl SackBlocks {
    pub const EMPTY: SackBlocks = SackBlocks {
        blocks: [(0, 0); MAX_SACK_BLOCKS],
        len: 0,
    };
    /// Blocks from a slice; those beyond [`MAX_SACK_BLOCKS`] are left out.
    pub fn from_slice(blocks: &[(u32, u32)]) -> Self {
        let mut out = Self::EMPTY;
        for &b in blocks.iter().take(MAX_SACK_BLOCKS) {
            out.blocks[usize::from(out.len)] = b;
            out.len += 1;
        }
        out
    }
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.blocks[..usize::from(self.len)]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
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
    /// Parse MSS, window-scale and SACK-permitted options; malformed option lists end the walk
    /// silently.
    pub fn syn_options(&self) -> SynOptions {
        let mut out = SynOptions::default();
        self.walk_options(|kind, body| match (kind, body.len()) {
            (2, 2) => out.mss = Some(be16(body, 0)),
            (3, 1) => out.window_scale = Some(body[0].min(14)),
            (4, 0) => out.sack_permitted = true,
            _ => {}
        });
        out
    }

    /// The SACK blocks of the first well-formed SACK option (RFC 2018), if any.
    pub fn sack_blocks(&self) -> SackBlocks {
        let mut out = SackBlocks::EMPTY;
        let mut seen = false;
        self.walk_options(|kind, body| {
            let n = body.len() / 8;
            if kind != 5 || seen || body.len() % 8 != 0 || !(1..=MAX_SACK_BLOCKS).contains(&n) {
                return;
            }
            seen = true;
            for k in 0..n {
                out.blocks[k] = (be32(body, 8 * k), be32(body, 8 * k + 4));
            }
            out.len = n as u8;
        });
        out
    }

    /// Call `f(kind, body)` for each option with a length field, in order.
    fn walk_options(&self, mut f: impl FnMut(u8, &[u8])) {
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
                    f(kind, &opts[i + 2..i + len]);
                    i += len;
                }
            }
        }
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
    /// MSS and window scale (and SACK-permitted), only sent on SYN segments.
    pub syn_options: Option<SynOptions>,
    /// SACK blocks to send (after any SYN options; at most as many as fit in 40 bytes).
    pub sack: SackBlocks,
}

impl TcpHeader {
    pub fn header_len(&self) -> usize {
        let n = self.sack_fitting();
        HEADER_LEN + self.syn_options_len() + if n > 0 { 4 + 8 * n } else { 0 }
    }
    /// MSS (4) + NOP + window scale (3), then NOP NOP SACK-permitted (2).
    fn syn_options_len(&self) -> usize {
        match self.syn_options {
            Some(o) if o.sack_permitted => 12,
            Some(_) => 8,
            None => 0,
        }
    }
    /// How many of the SACK blocks fit in the 40 bytes of options after the SYN options.
    fn sack_fitting(&self) -> usize {
        usize::from(self.sack.len).min((40 - self.syn_options_len() - 4) / 8)
    }
}

/// Write the TCP header into `seg[..h.header_len()]`, where `seg` is the whole segment (header
/// then payload already in place), and fill in the checksum for IPv4 `src` → `dst`.
pub fn write_header_v4(seg: &mut [u8], h: &TcpHeader, src: Ipv4Addr, dst: Ipv4Addr) {
    write_header(seg, h, src.into(), dst.into());
}

/// [`write_header_v4`] for either family.
pub fn write_header(seg: &mut [u8], h: &TcpHeader, src: IpAddr, dst: IpAddr) {
    write_header_fields(seg, h);
    let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_TCP, seg.len());
    let c = checksum::finish(checksum::sum(seg, acc));
    put16(seg, CHECKSUM_OFFSET, c);
}

/// Every header field and option, with a zero checksum.
fn write_header_fields(seg: &mut [u8], h: &TcpHeader) {
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
        if o.sack_permitted {
            seg[28..32].copy_from_slice(&[1, 1, 4, 2]);
        }
    }
    let n = h.sack_fitting();
    if n > 0 {
        let at = HEADER_LEN + h.syn_options_len();
        seg[at..at + 4].copy_from_slice(&[1, 1, 5, (2 + 8 * n) as u8]);
        for (k, &(left, right)) in h.sack.as_slice()[..n].iter().enumerate() {
            put32(seg, at + 4 + 8 * k, left);
            put32(seg, at + 8 + 8 * k, right);
        }
    }
}

/// Offset of the checksum field in the TCP header.
pub const CHECKSUM_OFFSET: usize = 16;

/// [`write_header`] for a link that offloads checksums: the field gets only the pseudo-header
/// sum ([`checksum::partial_field`]), and the receiving kernel — or
/// [`checksum::complete_partial`] — finishes it. Saves summing the payload here.
pub fn write_header_partial(seg: &mut [u8], h: &TcpHeader, src: IpAddr, dst: IpAddr) {
    write_header_fields(seg, h);
    let acc = checksum::pseudo(src, dst, crate::ipv4::PROTO_TCP, seg.len());
    put16(seg, CHECKSUM_OFFSET, checksum::partial_field(acc));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_checksum_completes_to_the_full_one() {
        let (s, d): (IpAddr, IpAddr) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let h = TcpHeader {
            src_port: 80,
            dst_port: 40000,
            seq: 7,
            ack: 9,
            flags: ACK | PSH,
            window: 1000,
            sack: SackBlocks::EMPTY,
            syn_options: None,
        };
        let mut full = vec![0x5au8; HEADER_LEN + 999];
        let mut partial = full.clone();
        write_header(&mut full, &h, s, d);
        write_header_partial(&mut partial, &h, s, d);
        assert!(!TcpSegment::new_checked(&partial[..]).unwrap().verify(s, d));
        assert!(checksum::complete_partial(&mut partial, 0, CHECKSUM_OFFSET));
        assert_eq!(partial, full);
        assert!(TcpSegment::new_checked(&partial[..]).unwrap().verify(s, d));
    }

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
                sack_permitted: false,
            }),
            sack: SackBlocks::EMPTY,
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
                window_scale: Some(7),
                sack_permitted: false,
            }
        );
        assert!(t.sack_blocks().is_empty());
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
        let _ = t.sack_blocks();
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

    fn header(syn_options: Option<SynOptions>, sack: &[(u32, u32)]) -> TcpHeader {
        TcpHeader {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: if syn_options.is_some() {
                SYN | ACK
            } else {
                ACK
            },
            window: 5,
            syn_options,
            sack: SackBlocks::from_slice(sack),
        }
    }

    fn round_trip(h: &TcpHeader) -> (SynOptions, SackBlocks) {
        let mut seg = vec![0u8; h.header_len()];
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        write_header_v4(&mut seg, h, s, d);
        let t = TcpSegment::new_checked(&seg).unwrap();
        assert!(t.verify_v4(s, d));
        assert_eq!(t.ack(), 4);
        (t.syn_options(), t.sack_blocks())
    }

    #[test]
    fn sack_permitted_round_trips() {
        let o = SynOptions {
            mss: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
        };
        let h = header(Some(o), &[]);
        assert_eq!(h.header_len(), 32);
        assert_eq!(round_trip(&h), (o, SackBlocks::EMPTY));
    }

    #[test]
    fn sack_blocks_round_trip_up_to_four() {
        let blocks = [(10, 20), (30, 40), (u32::MAX - 5, 7), (50, 60)];
        for n in 0..=4 {
            let h = header(None, &blocks[..n]);
            assert_eq!(
                h.header_len(),
                HEADER_LEN + if n > 0 { 4 + 8 * n } else { 0 }
            );
            let (syn, sack) = round_trip(&h);
            assert_eq!(syn, SynOptions::default());
            assert_eq!(sack.as_slice(), &blocks[..n]);
        }
        // More than four are cut to four; after SYN options with SACK-permitted only three fit.
        let five = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)];
        assert_eq!(round_trip(&header(None, &five)).1.as_slice(), &five[..4]);
        let o = SynOptions {
            mss: Some(1000),
            window_scale: None,
            sack_permitted: true,
        };
        let h = header(Some(o), &five);
        assert_eq!(h.header_len(), 60);
        assert_eq!(round_trip(&h).1.as_slice(), &five[..3]);
    }

    /// A segment with exactly these option bytes (padded with end-of-list).
    fn with_options(opts: &[u8]) -> Vec<u8> {
        let hl = (HEADER_LEN + opts.len()).div_ceil(4) * 4;
        let mut seg = vec![0u8; hl];
        seg[12] = ((hl / 4) as u8) << 4;
        seg[HEADER_LEN..HEADER_LEN + opts.len()].copy_from_slice(opts);
        seg
    }

    #[test]
    fn malformed_sack_options_are_skipped() {
        let block = [0, 0, 0, 1, 0, 0, 0, 2];
        // Length not 2 + 8n: skipped, a later good option is still found.
        let mut opts = vec![5, 6, 0, 0, 0, 0, 5, 10];
        opts.extend_from_slice(&block);
        let seg = with_options(&opts);
        let t = TcpSegment::new_checked(&seg).unwrap();
        assert_eq!(t.sack_blocks().as_slice(), &[(1, 2)]);
        // Five blocks (length 42) cannot fit in 40 bytes of options: the walk stops.
        let mut opts = vec![5, 42];
        for _ in 0..5 {
            opts.extend_from_slice(&block);
        }
        opts.truncate(38);
        let seg = with_options(&opts);
        assert!(TcpSegment::new_checked(&seg)
            .unwrap()
            .sack_blocks()
            .is_empty());
        // A length running past the header, a length of 2 (no blocks), a truncated kind.
        for opts in [&[5u8, 18, 0, 0][..], &[5, 2, 1, 1], &[1, 1, 1, 5]] {
            let seg = with_options(opts);
            assert!(TcpSegment::new_checked(&seg)
                .unwrap()
                .sack_blocks()
                .is_empty());
        }
        // Only the first SACK option counts.
        let mut opts = vec![5, 10];
        opts.extend_from_slice(&block);
        opts.extend_from_slice(&[5, 10, 0, 0, 0, 9, 0, 0, 0, 9]);
        let seg = with_options(&opts);
        assert_eq!(
            TcpSegment::new_checked(&seg)
                .unwrap()
                .sack_blocks()
                .as_slice(),
            &[(1, 2)]
        );
    }
}
