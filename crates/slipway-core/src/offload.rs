//! Checksum offload: TCP/UDP checksums that a link's kernel computes or has already checked.
//!
//! # Theory of operation
//!
//! A TAP device opened with a vnet header (`IFF_VNET_HDR`, `TUN_F_CSUM`) tells, per frame,
//! what the namespace's kernel did about the L4 checksum, and lets us tell it the same:
//!
//! - From the guest, a frame may be [`RxChecksum::Partial`]: its TCP/UDP checksum field holds
//!   only the pseudo-header sum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, Linux's `CHECKSUM_PARTIAL`).
//!   The data came from the guest's own memory, not off a wire, so there is nothing to verify;
//!   the gateway accepts the segment without summing it. Or [`RxChecksum::Valid`]: the kernel
//!   has verified it (`DATA_VALID`). Everything else is [`RxChecksum::Unverified`] and checked.
//! - To the guest, the TCP engine may leave a data segment's checksum partial when the
//!   destination port [accepts it](crate::tx::TxQueue::set_offload); the frame carries a
//!   [`PartialCsum`] and the link writes `NEEDS_CSUM` in its vnet header, so neither we nor the
//!   guest's kernel sum the payload (the reason veth is cheap).
//!
//! Frames the switch copies from one guest to another have a partial checksum completed on the
//! copy, so a port that doesn't offload never sees one.
//!
//! # Limits
//!
//! - A `Partial` frame is trusted only when the field is where the protocol puts it (the L4
//!   header right after the IP header, offset 16 for TCP, 6 for UDP); otherwise the ordinary
//!   verification runs and fails, and the frame is dropped as a bad checksum.
//! - Only TCP data segments are sent partial; control segments, UDP and ICMP are summed here.
//! - No segmentation offload: one frame is one segment (the MTU is already 65520).

/// Where an offloading sender left a checksum to finish: the sum runs from `start` (bytes from
/// the frame's first byte) to the end of the frame, into the field `offset` bytes after `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialCsum {
    pub start: u16,
    pub offset: u16,
}

impl PartialCsum {
    /// Finish the checksum in `frame` (see [`slipway_wire::checksum::complete_partial`]).
    pub fn complete(self, frame: &mut [u8]) -> bool {
        slipway_wire::checksum::complete_partial(
            frame,
            usize::from(self.start),
            usize::from(self.offset),
        )
    }
}

/// What the link knows about a received frame's TCP/UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxChecksum {
    /// Nothing: verify it.
    #[default]
    Unverified,
    /// The link's kernel verified it.
    Valid,
    /// Left for us to finish (the guest's kernel offloaded it to its "hardware", which is us).
    Partial(PartialCsum),
}

impl RxChecksum {
    /// Whether the L4 checksum of a packet of protocol `proto` (TCP 6 or UDP 17) whose header
    /// starts `l4_start` bytes into the frame needs no verification.
    pub fn trusted(self, proto: u8, l4_start: usize) -> bool {
        match self {
            RxChecksum::Unverified => false,
            RxChecksum::Valid => true,
            RxChecksum::Partial(p) => {
                let field = match proto {
                    6 => slipway_wire::tcp::CHECKSUM_OFFSET,
                    17 => slipway_wire::udp::CHECKSUM_OFFSET,
                    _ => return false,
                };
                usize::from(p.start) == l4_start && usize::from(p.offset) == field
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_is_trusted_only_where_the_protocol_puts_its_field() {
        let tcp = RxChecksum::Partial(PartialCsum {
            start: 34,
            offset: 16,
        });
        assert!(tcp.trusted(6, 34));
        assert!(!tcp.trusted(6, 54), "a different L4 start");
        assert!(!tcp.trusted(17, 34), "TCP's field offset on a UDP packet");
        assert!(!tcp.trusted(1, 34), "ICMP is never offloaded");
        let udp = RxChecksum::Partial(PartialCsum {
            start: 54,
            offset: 6,
        });
        assert!(udp.trusted(17, 54));
        assert!(RxChecksum::Valid.trusted(6, 0));
        assert!(!RxChecksum::Unverified.trusted(6, 34));
    }
}
