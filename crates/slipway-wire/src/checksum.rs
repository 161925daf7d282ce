//! The Internet checksum (RFC 1071), summed 8 bytes at a time.
//!
//! `sum` accumulates 16-bit big-endian words into a wide accumulator; `fold` reduces it to the
//! one's-complement 16-bit result. Pseudo-header helpers cover TCP/UDP over IPv4 and IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Add `data` to a running checksum accumulator. Odd lengths are padded with a zero byte, so only
/// the last chunk of a message may have an odd length.
#[inline]
pub fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc: u64 = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Native-endian 64-bit loads; the one's-complement sum is byte-order independent as long
        // as the final fold swaps back (RFC 1071 §2(B)). We sum 32-bit halves to keep carries.
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc = acc.wrapping_add(v & 0xffff_ffff).wrapping_add(v >> 32);
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc = acc.wrapping_add(u64::from(u16::from_ne_bytes([rest[i], rest[i + 1]])));
        i += 2;
    }
    if i < rest.len() {
        acc = acc.wrapping_add(u64::from(u16::from_ne_bytes([rest[i], 0])));
    }
    acc
}

/// The checksum of `data` alone (e.g. an IPv4 header or an ICMP message).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Fold and complement, returning the value to store big-endian in the checksum field.
#[inline]
pub fn finish(acc: u64) -> u16 {
    let mut acc = acc;
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The accumulator holds native-endian 16-bit words; interpret as big-endian.
    let native = acc as u16;
    !u16::from_be(native)
}

/// Accumulator for the IPv4 pseudo-header of a TCP/UDP segment of `len` bytes.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u64 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[9] = protocol;
    b[10..12].copy_from_slice(&len.to_be_bytes());
    sum(&b, 0)
}

/// Accumulator for the pseudo-header of either family. Mixed families cannot occur in one
/// packet; an IPv4 address paired with an IPv6 one is taken in its IPv4-mapped form.
#[inline]
pub fn pseudo(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_v4(s, d, protocol, len as u16),
        (s, d) => pseudo_v6(to_v6(s), to_v6(d), protocol, len as u32),
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Accumulator for the IPv6 pseudo-header of an upper-layer packet of `len` bytes.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u64 {
    let mut b = [0u8; 40];
    b[0..16].copy_from_slice(&src.octets());
    b[16..32].copy_from_slice(&dst.octets());
    b[32..36].copy_from_slice(&len.to_be_bytes());
    b[39] = next_header;
    sum(&b, 0)
}

/// The value a sender that offloads its checksum leaves in the field: the folded pseudo-header
/// sum, not complemented (what Linux stores for `CHECKSUM_PARTIAL`). Summing the whole segment
/// with this in place and complementing gives the full checksum; see [`complete_partial`].
#[inline]
pub fn partial_field(pseudo_acc: u64) -> u16 {
    !finish(pseudo_acc)
}

/// Complete a checksum left partial by an offloading sender: the one's-complement sum of
/// `packet[start..]` (whose field at `start + offset` holds the pseudo-header sum) goes, complemented,
/// into that field. False (nothing written) when the field does not lie inside `packet`.
pub fn complete_partial(packet: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start.saturating_add(offset);
    if start >= packet.len() || at.saturating_add(2) > packet.len() {
        return false;
    }
    let c = finish(sum(&packet[start..], 0));
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        let src = Ipv4Addr::new(192, 168, 127, 1);
        let dst = Ipv4Addr::new(192, 168, 127, 2);
        for len in [20usize, 21, 1460, 65000] {
            let mut seg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            seg[16] = 0;
            seg[17] = 0;
            let acc = pseudo_v4(src, dst, 6, len as u16);
            let full = finish(sum(&seg, acc));
            seg[16..18].copy_from_slice(&partial_field(acc).to_be_bytes());
            let mut frame = vec![0xaa; 34];
            frame.extend_from_slice(&seg);
            assert!(complete_partial(&mut frame, 34, 16));
            assert_eq!(
                u16::from_be_bytes([frame[50], frame[51]]),
                full,
                "len {len}"
            );
            assert_eq!(finish(sum(&frame[34..], acc)), 0);
        }
        let mut short = [0u8; 10];
        assert!(!complete_partial(&mut short, 4, 5));
        assert!(!complete_partial(&mut short, 10, 0));
        assert!(!complete_partial(&mut short, usize::MAX, usize::MAX));
    }

    /// Straightforward RFC 1071 reference: big-endian 16-bit words, end-around carry.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example bytes: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_known_value() {
        // A classic IPv4 header with checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    proptest::proptest! {
        #[test]
        fn matches_reference(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn split_sums_compose(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let acc = sum(&data[cut..], sum(&data[..cut], 0));
            proptest::prop_assert_eq!(finish(acc), reference(&data));
        }
    }
}
