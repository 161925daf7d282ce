//! IPv6 Neighbor Discovery (RFC 4861) for the router: neighbor advertisements for the addresses
//! slipway owns, and router advertisements that let guests configure themselves (SLAAC, RFC
//! 4862) with the MTU, the DNS server (RDNSS) and search list (DNSSL, RFC 8106).
//!
//! Theory of operation: [`check_solicitation`] validates a router or neighbor solicitation the
//! way RFC 4861 §6.1.1 and §7.1.1 require (hop limit 255, code 0, length, well-formed options,
//! the rules for an unspecified source) and tells the network what to answer. The bodies of the
//! answers are written by [`router_advert`] and [`neighbor_advert`] into caller buffers; the
//! network wraps them in ICMPv6/IPv6/Ethernet. Advertisements from guests only teach the
//! neighbour table; a router advertisement from a guest is ignored (there is one router here).
//!
//! Every owned address (gateway, DNS server, host alias and the gateway's link-local address)
//! answers with the gateway's MAC and the router flag. Router advertisements come from the
//! link-local address (RFC 4861 §4.2), announce the /64 with the on-link and autonomous flags,
//! the "other configuration" flag when DHCPv6 serves information, and are sent when a guest
//! solicits one and every [`RA_INTERVAL`] to all nodes.
//!
//! Limits: no redirects; the DNS search list is cut to what fits in [`MAX_DNSSL_LEN`] bytes.

use crate::config::{Ipv6Config, Mac, NetworkConfig};
use slipway_wire::icmpv6::{self, Icmpv6Packet};
use slipway_wire::ipv6;
use std::net::Ipv6Addr;
use std::time::Duration;

/// How often unsolicited router advertisements are sent.
pub const RA_INTERVAL: Duration = Duration::from_secs(200);
/// Router lifetime, RDNSS and DNSSL lifetime: several intervals, so one lost RA changes nothing.
pub const ROUTER_LIFETIME: u16 = 1800;
pub const PREFIX_VALID_LIFETIME: u32 = 86_400;
pub const PREFIX_PREFERRED_LIFETIME: u32 = 14_400;
/// Largest DNSSL option written.
pub const MAX_DNSSL_LEN: usize = 512;
/// Room needed for the largest router advertisement body this module writes.
pub const MAX_RA_BODY: usize = 8 + 8 + 8 + 32 + 24 + MAX_DNSSL_LEN;
/// Neighbor advertisement body: target and target link-layer address option.
pub const NA_BODY: usize = 16 + 8;

/// The all-nodes multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The all-routers multicast address.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// What a valid solicitation asks of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solicited {
    /// A router solicitation: answer with a router advertisement.
    Router,
    /// A neighbor solicitation for an address slipway owns; `dad` when the sender is doing
    /// duplicate address detection (unspecified source): answer to all nodes.
    Neighbor { target: Ipv6Addr, dad: bool },
    /// A neighbor solicitation for some other address (a guest's): not ours to answer.
    NotOurs,
}

/// Check an RS or NS from `src` to `dst` with the IPv6 `hop_limit`; `None` when invalid.
pub fn check_solicitation(
    cfg: &NetworkConfig,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &Icmpv6Packet<'_>,
) -> Option<Solicited> {
    if hop_limit != 255 || msg.code() != 0 || !msg.nd_options().valid() {
        return None;
    }
    let has_slla = msg
        .nd_options()
        .link_layer_addr(icmpv6::OPT_SOURCE_LL_ADDR)
        .is_some();
    let unspecified = src.is_unspecified();
    if unspecified && has_slla {
        return None;
    }
    match msg.msg_type() {
        icmpv6::ROUTER_SOLICIT => Some(Solicited::Router),
        icmpv6::NEIGHBOR_SOLICIT => {
            let target = msg.nd_target()?;
            if target.is_multicast() {
                return None;
            }
            if unspecified && dst != ipv6::solicited_node(target) {
                return None;
            }
            if cfg.owns6(target) {
                Some(Solicited::Neighbor {
                    target,
                    dad: unspecified,
                })
            } else {
                Some(Solicited::NotOurs)
            }
        }
        _ => None,
    }
}

/// The 4-byte rest-of-header of our router advertisement: hop limit, flags, router lifetime.
pub fn router_advert_rest(other_config: bool) -> [u8; 4] {
    let flags = if other_config { icmpv6::RA_OTHER } else { 0 };
    let l = ROUTER_LIFETIME.to_be_bytes();
    [64, flags, l[0], l[1]]
}

/// Write the body of a router advertisement after its 8-byte header (reachable time, retrans
/// timer, options) into `out` (at least [`MAX_RA_BODY`] bytes); returns its length.
pub fn router_advert(cfg: &NetworkConfig, v6: &Ipv6Config, out: &mut [u8]) -> usize {
    // Reachable time and retrans timer: unspecified (0), the guest keeps its defaults.
    out[..8].fill(0);
    let mut at = 8;
    icmpv6::write_ll_option(&mut out[at..], icmpv6::OPT_SOURCE_LL_ADDR, cfg.gateway_mac);
    at += 8;
    // MTU.
    out[at..at + 8].copy_from_slice(&[icmpv6::OPT_MTU, 1, 0, 0, 0, 0, 0, 0]);
    out[at + 4..at + 8].copy_from_slice(&u32::from(cfg.mtu).to_be_bytes());
    at += 8;
    // Prefix information: on-link and autonomous.
    let p = &mut out[at..at + 32];
    p[0] = icmpv6::OPT_PREFIX_INFO;
    p[1] = 4;
    p[2] = 64;
    p[3] = 0xc0;
    p[4..8].copy_from_slice(&PREFIX_VALID_LIFETIME.to_be_bytes());
    p[8..12].copy_from_slice(&PREFIX_PREFERRED_LIFETIME.to_be_bytes());
    p[12..16].fill(0);
    p[16..32].copy_from_slice(&v6.prefix.octets());
    at += 32;
    // Recursive DNS server.
    let lifetime = u32::from(ROUTER_LIFETIME).to_be_bytes();
    let r = &mut out[at..at + 24];
    r[0] = icmpv6::OPT_RDNSS;
    r[1] = 3;
    r[2..4].fill(0);
    r[4..8].copy_from_slice(&lifetime);
    r[8..24].copy_from_slice(&v6.dns_server.octets());
    at += 24;
    // DNS search list, names in wire format, padded with zeros to 8 bytes.
    if !cfg.search_domains.is_empty() {
        let start = at;
        let mut names = start + 8;
        // The same plain names DHCP hands out; in wire format a name takes its length plus 2.
        let domains = crate::services::plain_search_domains(&cfg.search_domains, 32);
        for domain in domains {
            if names + domain.len() + 2 > start + MAX_DNSSL_LEN {
                continue;
            }
            for label in domain.split('.') {
                out[names] = label.len() as u8;
                out[names + 1..names + 1 + label.len()].copy_from_slice(label.as_bytes());
                names += 1 + label.len();
            }
            out[names] = 0;
            names += 1;
        }
        if names > start + 8 {
            let len = (names - start).div_ceil(8) * 8;
            out[names..start + len].fill(0);
            out[start] = icmpv6::OPT_DNSSL;
            out[start + 1] = (len / 8) as u8;
            out[start + 2..start + 4].fill(0);
            out[start + 4..start + 8].copy_from_slice(&lifetime);
            at = start + len;
        }
    }
    at
}

/// The 4-byte rest-of-header of a neighbor advertisement (router, solicited unless answering
/// duplicate address detection, override).
pub fn neighbor_advert_rest(solicited: bool) -> [u8; 4] {
    let mut flags = icmpv6::NA_ROUTER | icmpv6::NA_OVERRIDE;
    if solicited {
        flags |= icmpv6::NA_SOLICITED;
    }
    [flags, 0, 0, 0]
}

/// Write a neighbor advertisement body for `target` (owned, so its MAC is the gateway's).
pub fn neighbor_advert(gateway_mac: Mac, target: Ipv6Addr, out: &mut [u8; NA_BODY]) {
    out[..16].copy_from_slice(&target.octets());
    icmpv6::write_ll_option(&mut out[16..], icmpv6::OPT_TARGET_LL_ADDR, gateway_mac);
}

/// The body of a neighbor solicitation by which the gateway asks who has `target`.
pub fn neighbor_solicit(gateway_mac: Mac, target: Ipv6Addr, out: &mut [u8; NA_BODY]) {
    out[..16].copy_from_slice(&target.octets());
    icmpv6::write_ll_option(&mut out[16..], icmpv6::OPT_SOURCE_LL_ADDR, gateway_mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(ty: u8, body: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![0u8; 8 + body.len()];
        m[8..].copy_from_slice(body);
        icmpv6::write_header(&mut m, ty, 0, [0; 4], src, dst);
        m
    }

    #[test]
    fn solicitations_are_validated() {
        let cfg = NetworkConfig::default();
        let guest: Ipv6Addr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        let gw = cfg.ipv6.as_ref().unwrap().gateway;
        let mut body = [0u8; 24];
        body[..16].copy_from_slice(&gw.octets());
        icmpv6::write_ll_option(&mut body[16..], 1, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let dst = ipv6::solicited_node(gw);
        let m = msg(icmpv6::NEIGHBOR_SOLICIT, &body, guest, dst);
        let p = Icmpv6Packet::new_checked(&m, guest, dst).unwrap();
        assert_eq!(
            check_solicitation(&cfg, 255, guest, dst, &p),
            Some(Solicited::Neighbor {
                target: gw,
                dad: false
            })
        );
        // Forwarded by a router (hop limit below 255): invalid.
        assert_eq!(check_solicitation(&cfg, 64, guest, dst, &p), None);
        // DAD may not carry a source link-layer address.
        let m = msg(icmpv6::NEIGHBOR_SOLICIT, &body, Ipv6Addr::UNSPECIFIED, dst);
        let p = Icmpv6Packet::new_checked(&m, Ipv6Addr::UNSPECIFIED, dst).unwrap();
        assert_eq!(
            check_solicitation(&cfg, 255, Ipv6Addr::UNSPECIFIED, dst, &p),
            None
        );
        let m = msg(
            icmpv6::NEIGHBOR_SOLICIT,
            &body[..16],
            Ipv6Addr::UNSPECIFIED,
            dst,
        );
        let p = Icmpv6Packet::new_checked(&m, Ipv6Addr::UNSPECIFIED, dst).unwrap();
        assert_eq!(
            check_solicitation(&cfg, 255, Ipv6Addr::UNSPECIFIED, dst, &p),
            Some(Solicited::Neighbor {
                target: gw,
                dad: true
            })
        );
        // Somebody else's address.
        let other: Ipv6Addr = "fd00:5119::77".parse().unwrap();
        body[..16].copy_from_slice(&other.octets());
        let m = msg(
            icmpv6::NEIGHBOR_SOLICIT,
            &body,
            guest,
            ipv6::solicited_node(other),
        );
        let p = Icmpv6Packet::new_checked(&m, guest, ipv6::solicited_node(other)).unwrap();
        assert_eq!(
            check_solicitation(&cfg, 255, guest, ipv6::solicited_node(other), &p),
            Some(Solicited::NotOurs)
        );
        // A router solicitation with a zero-length option.
        let m = msg(
            icmpv6::ROUTER_SOLICIT,
            &[1, 0, 0, 0, 0, 0, 0, 0],
            guest,
            ALL_ROUTERS,
        );
        let p = Icmpv6Packet::new_checked(&m, guest, ALL_ROUTERS).unwrap();
        assert_eq!(check_solicitation(&cfg, 255, guest, ALL_ROUTERS, &p), None);
        let m = msg(icmpv6::ROUTER_SOLICIT, &[], guest, ALL_ROUTERS);
        let p = Icmpv6Packet::new_checked(&m, guest, ALL_ROUTERS).unwrap();
        assert_eq!(
            check_solicitation(&cfg, 255, guest, ALL_ROUTERS, &p),
            Some(Solicited::Router)
        );
    }

    #[test]
    fn router_advert_bytes() {
        let cfg = NetworkConfig {
            mtu: 65520,
            search_domains: vec!["example.test".into(), "bad..name".into()],
            ..Default::default()
        };
        let v6 = cfg.ipv6.clone().unwrap();
        let mut out = [0u8; MAX_RA_BODY];
        let n = router_advert(&cfg, &v6, &mut out);
        // SLLA, MTU, PIO, RDNSS, DNSSL (one good name: 14 bytes + 8 header, padded to 24).
        assert_eq!(n, 8 + 8 + 8 + 32 + 24 + 24);
        assert_eq!(&out[8..16], &[1, 1, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd]);
        assert_eq!(&out[16..24], &[5, 1, 0, 0, 0, 0, 0xff, 0xf0]);
        assert_eq!(&out[24..28], &[3, 4, 64, 0xc0]);
        assert_eq!(&out[40..56], &v6.prefix.octets());
        assert_eq!(&out[56..58], &[25, 3]);
        assert_eq!(&out[64..80], &v6.dns_server.octets());
        assert_eq!(&out[80..82], &[31, 3]);
        assert_eq!(&out[88..102], b"\x07example\x04test\x00");
        assert_eq!(&out[102..104], &[0, 0]);
        // Every option is well formed for a receiver.
        let mut m = vec![0u8; 8 + n];
        m[8..].copy_from_slice(&out[..n]);
        let ll = cfg.gateway_link_local();
        icmpv6::write_header(
            &mut m,
            icmpv6::ROUTER_ADVERT,
            0,
            router_advert_rest(true),
            ll,
            ALL_NODES,
        );
        let p = Icmpv6Packet::new_checked(&m, ll, ALL_NODES).unwrap();
        assert!(p.nd_options().valid());
        assert_eq!(p.nd_options().count(), 5);
        assert_eq!(m[5], icmpv6::RA_OTHER);
    }
}
