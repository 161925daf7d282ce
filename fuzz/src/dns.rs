//! Target `dns_zone` (feature `dns`): one DNS message into the gateway's local zone.
//!
//! The input is the message a guest sent. It goes to `LocalZone::answer` of a zone built from a
//! plan with configured records, and to `servfail`, the error reply the forwarder sends when
//! upstream fails.
//!
//! Oracles: an answer carries the query's id and fits the 512-byte UDP minimum, as the module's
//! limits promise.

use slipway_core::config::NetworkConfig;
use slipway_core::services::dns::{self, LocalZone};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn run(data: &[u8]) {
    let cfg = NetworkConfig {
        dns_records: vec![
            (
                "db.example.test".into(),
                IpAddr::V4(Ipv4Addr::new(192, 168, 127, 3)),
            ),
            ("db.example.test".into(), IpAddr::V6(Ipv6Addr::LOCALHOST)),
            (
                "a.b.c.slipway.internal".into(),
                IpAddr::V4(Ipv4Addr::new(192, 168, 127, 4)),
            ),
        ],
        ..NetworkConfig::default()
    };
    let mut zone = LocalZone::new(&cfg);
    // gvproxy-style patterns: an expression, and a zone default.
    zone.add_pattern(
        "apps.test",
        Some("^[a-z]+\\.apps"),
        IpAddr::V4(Ipv4Addr::new(192, 168, 127, 5)),
    )
    .expect("a valid pattern");
    zone.add_pattern(
        "corp.test",
        None,
        IpAddr::V4(Ipv4Addr::new(192, 168, 127, 6)),
    )
    .expect("a zone default");
    // Bytes after a 0xff separator are also tried as an untrusted expression.
    if let Some(i) = data.iter().position(|&b| b == 0xff) {
        let expr = String::from_utf8_lossy(&data[i + 1..]);
        let _ = zone.add_pattern(
            "x.test",
            Some(&expr),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        );
    }
    if let Ok(Some(answer)) = zone.answer(data) {
        assert_eq!(answer[..2], data[..2], "answer id differs from the query's");
        assert!(
            answer.len() <= 512,
            "local answer of {} bytes exceeds 512",
            answer.len()
        );
    }
    let _ = dns::servfail(data);
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_pass() {
        for (_, input) in crate::seeds::dns_zone() {
            super::run(&input);
        }
    }
}
