//! ARP (RFC 826) for the addresses slipway owns: the gateway and the host-loopback alias.
//!
//! Requests for an owned address are answered with the gateway MAC. Requests for anything else
//! (guests asking about each other) are left to the switch's flooding. Gratuitous ARP and replies
//! only teach the neighbour table.

use crate::config::{Mac, NetworkConfig};
use slipway_wire::arp::{self, ArpPacket};
use slipway_wire::ethernet;
use std::net::Ipv4Addr;

/// The reply frame (42 bytes) to an ARP request for an address we own, if it is one.
pub fn reply_to(cfg: &NetworkConfig, req: &ArpPacket<'_>, out: &mut [u8; 42]) -> bool {
    if req.operation() != arp::OP_REQUEST || !cfg.owns(req.target_ip()) {
        return false;
    }
    if req.sender_ip() == req.target_ip() {
        return false; // gratuitous announcement
    }
    ethernet::write_header(
        out,
        req.sender_mac(),
        cfg.gateway_mac,
        ethernet::ETHERTYPE_ARP,
    );
    arp::write(
        &mut out[14..],
        arp::OP_REPLY,
        cfg.gateway_mac,
        req.target_ip(),
        req.sender_mac(),
        req.sender_ip(),
    );
    true
}

/// The broadcast request (42 bytes) by which the gateway asks who has `target`.
pub fn request(cfg: &NetworkConfig, target: Ipv4Addr, out: &mut [u8; 42]) {
    ethernet::write_header(out, [0xff; 6], cfg.gateway_mac, ethernet::ETHERTYPE_ARP);
    arp::write(
        &mut out[14..],
        arp::OP_REQUEST,
        cfg.gateway_mac,
        cfg.gateway,
        [0; 6],
        target,
    );
}

/// The (ip, mac) a guest announced about itself, if usable for the neighbour table.
pub fn sender_binding(cfg: &NetworkConfig, pkt: &ArpPacket<'_>) -> Option<(Ipv4Addr, Mac)> {
    let ip = pkt.sender_ip();
    (cfg.in_subnet(ip) && !cfg.owns(ip) && !ip.is_unspecified()).then(|| (ip, pkt.sender_mac()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_for_owned_addresses_only() {
        let cfg = NetworkConfig::default();
        let guest_mac = [2, 0, 0, 0, 0, 2];
        let guest_ip = Ipv4Addr::new(192, 168, 127, 2);
        let mut req = [0u8; 28];
        arp::write(
            &mut req,
            arp::OP_REQUEST,
            guest_mac,
            guest_ip,
            [0; 6],
            cfg.gateway,
        );
        let mut out = [0u8; 42];
        assert!(reply_to(
            &cfg,
            &ArpPacket::new_checked(&req).unwrap(),
            &mut out
        ));
        let eth = ethernet::EthernetFrame::new_checked(&out).unwrap();
        assert_eq!(eth.dst(), guest_mac);
        let rep = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (
                rep.operation(),
                rep.sender_ip(),
                rep.sender_mac(),
                rep.target_ip()
            ),
            (arp::OP_REPLY, cfg.gateway, cfg.gateway_mac, guest_ip)
        );

        arp::write(
            &mut req,
            arp::OP_REQUEST,
            guest_mac,
            guest_ip,
            [0; 6],
            Ipv4Addr::new(192, 168, 127, 254),
        );
        assert!(reply_to(
            &cfg,
            &ArpPacket::new_checked(&req).unwrap(),
            &mut out
        ));
        arp::write(
            &mut req,
            arp::OP_REQUEST,
            guest_mac,
            guest_ip,
            [0; 6],
            Ipv4Addr::new(192, 168, 127, 3),
        );
        assert!(!reply_to(
            &cfg,
            &ArpPacket::new_checked(&req).unwrap(),
            &mut out
        ));
        let mut nolo = cfg.clone();
        nolo.host_loopback_alias = None;
        arp::write(
            &mut req,
            arp::OP_REQUEST,
            guest_mac,
            guest_ip,
            [0; 6],
            Ipv4Addr::new(192, 168, 127, 254),
        );
        assert!(!reply_to(
            &nolo,
            &ArpPacket::new_checked(&req).unwrap(),
            &mut out
        ));
    }
}
