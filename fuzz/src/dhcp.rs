//! Target `dhcp4_handle`: a sequence of DHCP messages into one `Dhcp4Server`.
//!
//! Input: one byte picks the network configuration ([`config`]), then records of
//! `[control] [length: u16 LE] [UDP payload]`. The control byte:
//!
//! - bits 0–2: how far virtual time advances before the message ([`STEPS`]);
//! - bit 3 set: the frame's source MAC is one of [`MACS`] (bits 4–5) instead of the request's own
//!   `chaddr`, so both the matching and the mismatching path are reachable;
//! - bit 6 set: instead of `handle`, call the driver-side API for that MAC: `assign` (bit 7
//!   clear) or `release` (bit 7 set), then `lease_of` and `leases`.
//!
//! Oracles: every reply decodes as a BOOTREPLY with the request's xid, is at least the 300-byte
//! BOOTP minimum and fits the link (`max(MTU, 576) − 28` bytes), as the module documents.

use crate::input::Cursor;
use dhcproto::v4::{Message, Opcode};
use dhcproto::{Decodable, Decoder};
use slipway_core::config::{IpCidr, Mac, NetworkConfig};
use slipway_core::services::dhcp4::Dhcp4Server;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Messages handled per input at most.
pub const MAX_MESSAGES: usize = 512;

pub const MACS: [Mac; 4] = [
    [2, 0, 0, 0, 0, 0xa],
    [2, 0, 0, 0, 0, 0xb],
    [0x52, 0x54, 0, 0x12, 0x34, 0x56],
    [2, 0, 0, 0, 0, 0xd],
];

pub const STEPS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(61),
    Duration::from_secs(601),
    Duration::from_secs(3601),
    Duration::from_secs(86_400),
];

/// Four network plans: the default /24 with a search list; a /29 whose pool is nearly gone with
/// a static lease; a /24 with a 1 s lease, a jumbo MTU and a long search list; a /16 without
/// host-loopback alias and with the minimum MTU.
pub fn config(which: u8) -> NetworkConfig {
    match which % 4 {
        0 => NetworkConfig {
            search_domains: vec!["example.test".into(), "corp.example.test".into()],
            ..NetworkConfig::default()
        },
        1 => {
            let mut c = NetworkConfig::from_subnet(cidr([10, 0, 0, 0], 29)).expect("valid plan");
            c.static_leases = vec![
                (MACS[1], Ipv4Addr::new(10, 0, 0, 3)),
                (MACS[2], Ipv4Addr::new(10, 9, 9, 9)),
            ];
            c
        }
        2 => NetworkConfig {
            lease_time: Duration::from_secs(1),
            mtu: 9000,
            search_domains: (0..40)
                .map(|i| format!("d{i}.some-long-search-domain-name.example.test"))
                .collect(),
            static_leases: vec![
                (MACS[0], Ipv4Addr::new(192, 168, 127, 200)),
                (MACS[3], Ipv4Addr::new(192, 168, 127, 1)),
            ],
            ..NetworkConfig::default()
        },
        _ => {
            let mut c = NetworkConfig::from_subnet(cidr([172, 20, 0, 0], 16)).expect("valid plan");
            c.host_loopback_alias = None;
            c.mtu = 576;
            c.search_domains = vec!["bad domain!".into(), "ok.test".into()];
            c
        }
    }
}

fn cidr(a: [u8; 4], prefix: u8) -> IpCidr {
    IpCidr::new(IpAddr::V4(Ipv4Addr::from(a)), prefix).expect("valid prefix")
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let cfg = config(input.byte_or_zero());
    let max_reply = usize::from(cfg.mtu).max(576) - 28;
    let mut server = Dhcp4Server::new(&cfg);
    let mut now = Duration::from_secs(1);
    for _ in 0..MAX_MESSAGES {
        let Some(ctl) = input.byte() else { break };
        now += STEPS[usize::from(ctl & 7)];
        let chosen = MACS[usize::from((ctl >> 4) & 3)];
        if ctl & 0x40 != 0 {
            if ctl & 0x80 == 0 {
                if let Some(ip) = server.assign(now, chosen) {
                    assert_eq!(
                        server.lease_of(&chosen),
                        Some(ip),
                        "an assigned address is not the MAC's lease"
                    );
                }
            } else {
                let _ = server.release(now, &chosen);
            }
            let _ = server.leases(now);
            continue;
        }
        let payload = input.record();
        let mac = if ctl & 0x08 != 0 {
            chosen
        } else {
            payload
                .get(28..34)
                .and_then(|m| m.try_into().ok())
                .unwrap_or(chosen)
        };
        let Ok(Some(reply)) = server.handle(now, mac, payload) else {
            continue;
        };
        assert!(
            reply.payload.len() >= 300,
            "reply of {} bytes, below the BOOTP minimum",
            reply.payload.len()
        );
        assert!(
            reply.payload.len() <= max_reply,
            "reply of {} bytes exceeds the link ({max_reply})",
            reply.payload.len()
        );
        let msg = Message::decode(&mut Decoder::new(&reply.payload))
            .expect("a reply slipway built decodes");
        assert_eq!(msg.opcode(), Opcode::BootReply);
        assert_eq!(
            msg.xid().to_be_bytes()[..],
            payload[4..8],
            "reply xid differs from the request's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for (_, input) in crate::seeds::dhcp4_handle() {
            run(&input);
        }
    }

    #[test]
    fn discover_gets_an_offer() {
        // Checks that the seed reaches the reply path (and so the oracles): the harness would
        // otherwise be fuzzing only the parser's error exits.
        let cfg = config(0);
        let mut server = Dhcp4Server::new(&cfg);
        let discover =
            crate::seeds::dhcp_message(MACS[0], dhcproto::v4::MessageType::Discover, None);
        let reply = server
            .handle(Duration::from_secs(1), MACS[0], &discover)
            .unwrap()
            .unwrap();
        assert_eq!(reply.dst_mac, MACS[0]);
        assert!(cfg.in_subnet(reply.dst_ip));
    }
}
