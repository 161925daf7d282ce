//! Target `dhcp6_handle`: a sequence of DHCPv6 messages into one `Dhcp6Server`.
//!
//! Input: one byte picks the configuration ([`config`]), then records of
//! `[control] [length: u16 LE] [UDP payload]`. The control byte:
//!
//! - bits 0–2: how far virtual time advances before the message ([`STEPS`]);
//! - bits 3–4: the frame's source MAC, one of [`MACS`];
//! - bit 5 set: the server's own Server Identifier option is appended to the payload, so that
//!   Request, Renew, Release and Decline get past the identifier check without the fuzzer
//!   having to find the 14 bytes first (and messages that must not carry one are dropped).
//!
//! Oracles: every reply is at most `MAX_REPLY_LEN` bytes and decodes as an Advertise or Reply
//! with the request's transaction id and the server's DUID; every address a reply leases (valid
//! lifetime above 0) lies in the configured pool, and none is a DNS server or the
//! Subnet-Router anycast address; `leases` lists each address once, at most
//! `MAX_LEASES_PER_MAC` per MAC, and `holder_of` agrees with it.

use crate::dhcp::{MACS, STEPS};
use crate::input::Cursor;
use dhcproto::v6::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder};
use slipway_core::services::dhcp6::{Dhcp6Config, Dhcp6Server, MAX_LEASES_PER_MAC, MAX_REPLY_LEN};
use std::net::Ipv6Addr;
use std::time::Duration;

/// Messages handled per input at most.
pub const MAX_MESSAGES: usize = 512;

pub const SERVER_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];

fn ula(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0, 0, 0, host)
}

/// Four plans: a 256-address pool with one DNS server and a short search list; a 3-address
/// pool holding the DNS server, with a 1 s valid lifetime (leases expire and are reused at
/// once); the whole /64 from the Subnet-Router address, 8 DNS servers and a search list too
/// long for one reply; an empty pool without DNS or search list.
pub fn config(which: u8) -> Dhcp6Config {
    let base = Dhcp6Config {
        server_mac: SERVER_MAC,
        prefix: ula(0),
        pool_start: ula(0x100),
        pool_end: ula(0x1ff),
        dns_servers: vec![ula(1)],
        search_domains: vec!["example.test".into(), "corp.example.test".into()],
        preferred_lifetime: Duration::from_secs(1800),
        valid_lifetime: Duration::from_secs(3600),
    };
    match which % 4 {
        0 => base,
        1 => Dhcp6Config {
            pool_start: ula(0x10),
            pool_end: ula(0x12),
            dns_servers: vec![ula(0x11)],
            preferred_lifetime: Duration::from_secs(5),
            valid_lifetime: Duration::from_secs(1),
            ..base
        },
        2 => Dhcp6Config {
            pool_start: ula(0),
            pool_end: Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff),
            dns_servers: (1..=8).map(ula).collect(),
            search_domains: (0..40)
                .map(|i| format!("d{i}.some-long-search-domain-name.example.test"))
                .collect(),
            preferred_lifetime: Duration::MAX,
            valid_lifetime: Duration::MAX,
            ..base
        },
        _ => Dhcp6Config {
            pool_start: ula(0x200),
            pool_end: ula(0x1ff),
            dns_servers: Vec::new(),
            search_domains: Vec::new(),
            ..base
        },
    }
}

/// The Server Identifier option the server sends: DUID-LL of [`SERVER_MAC`].
pub fn server_id_option() -> Vec<u8> {
    let mut o = vec![0, 2, 0, 10, 0, 3, 0, 1];
    o.extend(SERVER_MAC);
    o
}

fn leases_in_pool(cfg: &Dhcp6Config, addr: Ipv6Addr) -> bool {
    let host = u128::from(addr) & u128::from(u64::MAX);
    addr >= cfg.pool_start
        && addr <= cfg.pool_end
        && u128::from(addr) >> 64 == u128::from(cfg.prefix) >> 64
        && host != 0
        && !cfg.dns_servers.contains(&addr)
}

pub fn run(data: &[u8]) {
    let mut input = Cursor::new(data);
    let cfg = config(input.byte_or_zero());
    let mut server = Dhcp6Server::new(cfg.clone());
    let server_duid = server.server_duid().to_vec();
    let mut now = Duration::from_secs(1);
    let mut payload = Vec::new();
    for _ in 0..MAX_MESSAGES {
        let Some(ctl) = input.byte() else { break };
        now += STEPS[usize::from(ctl & 7)];
        let mac = MACS[usize::from((ctl >> 3) & 3)];
        payload.clear();
        payload.extend_from_slice(input.record());
        if ctl & 0x20 != 0 {
            payload.extend(server_id_option());
        }
        if let Ok(Some(reply)) = server.handle(now, mac, &payload) {
            check_reply(&cfg, &server_duid, &payload, &reply);
        }
        let leases = server.leases(now);
        for pair in leases.windows(2) {
            assert!(pair[0].0 < pair[1].0, "leases not sorted or listed twice");
        }
        for (addr, holder) in &leases {
            assert!(
                leases_in_pool(&cfg, *addr),
                "lease of {addr} outside the pool"
            );
            assert_eq!(server.holder_of(*addr), Some(*holder), "holder_of({addr})");
        }
        for m in MACS {
            let held = leases.iter().filter(|(_, h)| *h == m).count();
            assert!(held <= MAX_LEASES_PER_MAC, "{held} leases for one MAC");
        }
    }
}

fn check_reply(cfg: &Dhcp6Config, server_duid: &[u8], request: &[u8], reply: &[u8]) {
    assert!(
        reply.len() <= MAX_REPLY_LEN,
        "reply of {} bytes exceeds {MAX_REPLY_LEN}",
        reply.len()
    );
    let msg = Message::decode(&mut Decoder::new(reply)).expect("a reply slipway built decodes");
    assert!(
        matches!(msg.msg_type(), MessageType::Advertise | MessageType::Reply),
        "reply of type {:?}",
        msg.msg_type()
    );
    assert_eq!(
        msg.xid()[..],
        request[1..4],
        "reply xid differs from the request's"
    );
    assert_eq!(
        msg.opts().get(OptionCode::ServerId),
        Some(&DhcpOption::ServerId(server_duid.to_vec())),
        "reply without our server id"
    );
    for opt in msg.opts().iter() {
        let DhcpOption::IANA(ia) = opt else { continue };
        for sub in ia.opts.iter() {
            if let DhcpOption::IAAddr(a) = sub {
                assert!(a.preferred_life <= a.valid_life, "preferred above valid");
                if a.valid_life > 0 {
                    assert!(
                        leases_in_pool(cfg, a.addr),
                        "leased {} outside the pool",
                        a.addr
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for (_, input) in crate::seeds::dhcp6_handle() {
            run(&input);
        }
    }

    #[test]
    fn seed_reaches_a_lease() {
        // Checks that the seeds reach the lease path (and so the oracles): the harness would
        // otherwise be fuzzing only the parser's error exits.
        let mut server = Dhcp6Server::new(config(0));
        let now = Duration::from_secs(1);
        let solicit = crate::seeds::dhcp6_message(MACS[0], 1, &[]);
        assert!(server.handle(now, MACS[0], &solicit).unwrap().is_some());
        let mut request = crate::seeds::dhcp6_message(MACS[0], 3, &[ula(0x100)]);
        request.extend(server_id_option());
        assert!(server.handle(now, MACS[0], &request).unwrap().is_some());
        assert_eq!(server.leases(now), vec![(ula(0x100), MACS[0])]);
    }
}
