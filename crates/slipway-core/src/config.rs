//! The one validated configuration of a virtual network.
//!
//! The command line (and later the drop-in front-ends) build a [`NetworkConfig`]; every component
//! receives its part at construction. Runtime changes arrive as typed commands, never by mutating
//! this struct from the outside.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// An IPv4 or IPv6 prefix such as `192.168.127.0/24` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        Ok(Self { addr, prefix })
    }

    /// True when `ip` lies inside this prefix (an IPv4 address never matches an IPv6 prefix).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The netmask of an IPv4 prefix length as a host-order integer.
pub fn prefix_mask_v4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("expected ADDRESS/PREFIX, e.g. 192.168.127.0/24")]
    MissingSlash,
    #[error("'{0}' is not an IP address")]
    BadAddress(String),
    #[error("'{0}' is not a prefix length")]
    BadPrefix(String),
    #[error("prefix length {prefix} is longer than {max}")]
    PrefixTooLong { prefix: u8, max: u8 },
}

impl FromStr for IpCidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or(CidrError::MissingSlash)?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| CidrError::BadPrefix(prefix.to_string()))?;
        IpCidr::new(addr, prefix)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// Everything the core needs to know about one virtual network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The guest subnet's network address (host bits zero).
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// The router's address. Default: the subnet's `.1`.
    pub gateway: Ipv4Addr,
    /// The DNS server's address: the gateway itself by default; its own address in slirp4netns's
    /// plan (`.3`).
    pub dns_server: Ipv4Addr,
    /// Answer DNS at `dns_server` (off: slirp4netns's `--disable-dns`, port 53 is closed).
    pub dns_service: bool,
    /// The address that reaches the host's 127.0.0.1, or `None` (`--no-host-loopback`). It may
    /// be the gateway's own address (slirp4netns's plan: `.2` is both): then the gateway's own
    /// services (DNS, guest API, unix targets) keep their ports and every other port is the host's.
    pub host_loopback_alias: Option<Ipv4Addr>,
    /// First and last address DHCP hands out (inclusive).
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    /// The link MTU announced to guests (DHCP option 26, TAP MTU) and used for the TCP MSS.
    pub mtu: u16,
    /// The MAC address of the gateway (and of every address slipway owns).
    pub gateway_mac: Mac,
    /// Local DNS names answered authoritatively (lower case, no trailing dot).
    pub dns_records: Vec<(String, IpAddr)>,
    /// The DNS search list handed to guests (DHCP option 119).
    pub search_domains: Vec<String>,
    /// When non-empty, only host-side destinations inside one of these prefixes may be reached.
    pub egress_allow: Vec<IpCidr>,
    /// DHCP lease time.
    pub lease_time: Duration,
    /// Addresses that must always be handed to a given MAC (gvproxy's static lease).
    pub static_leases: Vec<(Mac, Ipv4Addr)>,
    /// TCP ports of the gateway whose connections go to a host unix socket (the driver knows
    /// which); others, but DNS, are refused.
    pub gateway_unix_ports: Vec<u16>,
    /// Serve gvproxy's forwarder API to guests at the gateway's TCP port 80.
    pub guest_api: bool,
    /// The IPv6 side of the network, or `None` (`--ipv6=off`): IPv6 frames are then dropped.
    pub ipv6: Option<Ipv6Config>,
}

/// The IPv6 plan of a network. Guests configure themselves by SLAAC from the router
/// advertisements (or ask DHCPv6); slipway's own addresses all share the gateway's MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Config {
    /// The guests' prefix, always a /64 (what SLAAC needs), host bits zero.
    pub prefix: Ipv6Addr,
    /// The router's address inside the prefix (guests route through its link-local address).
    pub gateway: Ipv6Addr,
    /// The DNS server's address: the gateway by default; `fd00::3` in slirp4netns's plan.
    pub dns_server: Ipv6Addr,
    /// The address that reaches the host's `::1`, or `None`. May equal the gateway (slirp4netns's
    /// plan), with the same port rules as for IPv4.
    pub host_loopback_alias: Option<Ipv6Addr>,
    /// First and last address DHCPv6 hands out to guests that ask for one (inclusive).
    pub pool_start: Ipv6Addr,
    pub pool_end: Ipv6Addr,
}

/// The default IPv6 prefix.
pub const DEFAULT_PREFIX6: &str = "fd00:5119::/64";

impl Ipv6Config {
    /// The default plan inside a /64: gateway and DNS `::1`, host alias `::fe`, DHCPv6 pool
    /// `::1000`–`::1fff`.
    pub fn from_prefix(cidr: IpCidr) -> Result<Self, ConfigError> {
        let IpAddr::V6(addr) = cidr.addr else {
            return Err(ConfigError::Subnet6NotIpv6(cidr));
        };
        if cidr.prefix != 64 {
            return Err(ConfigError::Subnet6Size(cidr));
        }
        let net = u128::from(addr) & !(u128::from(u64::MAX));
        let at = |host: u128| Ipv6Addr::from(net | host);
        if addr.is_multicast() || slipway_wire::ipv6::is_link_local(&addr) || addr.is_loopback() {
            return Err(ConfigError::Subnet6Kind(cidr));
        }
        Ok(Self {
            prefix: at(0),
            gateway: at(1),
            dns_server: at(1),
            host_loopback_alias: Some(at(0xfe)),
            pool_start: at(0x1000),
            pool_end: at(0x1fff),
        })
    }

    /// slirp4netns's IPv6 plan: `fd00::/64`, gateway and host alias `fd00::2`, DNS `fd00::3`.
    pub fn slirp4netns() -> Self {
        let mut c = Self::from_prefix(IpCidr {
            addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)),
            prefix: 64,
        })
        .expect("fd00::/64 is a valid prefix");
        c.gateway = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
        c.dns_server = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
        c.host_loopback_alias = Some(c.gateway);
        c
    }

    /// True for an address inside the guests' /64.
    pub fn in_prefix(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) >> 64 == u128::from(self.prefix) >> 64
    }
}

impl Default for Ipv6Config {
    fn default() -> Self {
        Self::from_prefix(DEFAULT_PREFIX6.parse().expect("valid prefix")).expect("valid plan")
    }
}

/// The largest MTU slipway accepts: a frame of at most 65535 bytes with its 14-byte Ethernet
/// header (the kernel's limit for a TAP, and slirp4netns's `--mtu` maximum).
pub const MAX_MTU: u16 = 65521;
/// The smallest MTU slipway accepts (IPv4 requires 576, IPv6 1280).
pub const MIN_MTU: u16 = 576;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--subnet {0}: only IPv4 subnets are supported here")]
    SubnetNotIpv4(IpCidr),
    #[error("--subnet {0}: the prefix must be between /8 and /30 so that the gateway, the host alias and guests fit")]
    SubnetSize(IpCidr),
    #[error(
        "--cidr {0}: slirp4netns's plan puts the namespace at .100, which needs a /25 or larger"
    )]
    SlirpSubnetSize(IpCidr),
    #[error("--mtu {0}: must be between {MIN_MTU} and {MAX_MTU}")]
    Mtu(u32),
    #[error("--subnet6 {0}: give an IPv6 prefix, e.g. fd00:5119::/64")]
    Subnet6NotIpv6(IpCidr),
    #[error("--subnet6 {0}: the prefix must be a /64 (stateless autoconfiguration needs one)")]
    Subnet6Size(IpCidr),
    #[error("--subnet6 {0}: use a unique-local (fd00::/8) or global prefix, not multicast, link-local or loopback")]
    Subnet6Kind(IpCidr),
}

impl NetworkConfig {
    /// The default plan around `subnet`: gateway and DNS `.1`, host alias `.254` (the last usable
    /// address of larger subnets), DHCP pool from `.2` up to the address before the alias.
    pub fn from_subnet(cidr: IpCidr) -> Result<Self, ConfigError> {
        let IpAddr::V4(addr) = cidr.addr else {
            return Err(ConfigError::SubnetNotIpv4(cidr));
        };
        if !(8..=30).contains(&cidr.prefix) {
            return Err(ConfigError::SubnetSize(cidr));
        }
        let mask = prefix_mask_v4(cidr.prefix);
        let net = u32::from(addr) & mask;
        let broadcast = net | !mask;
        let gateway = net + 1;
        // .254 for a /24; in general the last usable address, capped at .254 of the first /24.
        let alias = if cidr.prefix <= 24 {
            net + 254
        } else {
            broadcast - 1
        };
        let pool_start = net + 2;
        let pool_end = (alias - 1).min(broadcast - 1);
        Ok(Self {
            subnet: Ipv4Addr::from(net),
            prefix: cidr.prefix,
            gateway: Ipv4Addr::from(gateway),
            dns_server: Ipv4Addr::from(gateway),
            dns_service: true,
            host_loopback_alias: Some(Ipv4Addr::from(alias)),
            pool_start: Ipv4Addr::from(pool_start),
            pool_end: Ipv4Addr::from(pool_end),
            mtu: 1500,
            gateway_mac: [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd],
            dns_records: Vec::new(),
            search_domains: Vec::new(),
            egress_allow: Vec::new(),
            lease_time: Duration::from_secs(3600),
            static_leases: Vec::new(),
            gateway_unix_ports: Vec::new(),
            guest_api: false,
            ipv6: Some(Ipv6Config::default()),
        })
    }

    pub fn set_mtu(&mut self, mtu: u32) -> Result<(), ConfigError> {
        if !(u32::from(MIN_MTU)..=u32::from(MAX_MTU)).contains(&mtu) {
            return Err(ConfigError::Mtu(mtu));
        }
        self.mtu = mtu as u16;
        Ok(())
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask_v4(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) | !prefix_mask_v4(self.prefix))
    }

    /// True for an address inside the guest subnet.
    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = prefix_mask_v4(self.prefix);
        u32::from(ip) & mask == u32::from(self.subnet)
    }

    /// True for the addresses slipway itself answers ARP for.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        ip == self.gateway || ip == self.dns_server || Some(ip) == self.host_loopback_alias
    }

    /// slirp4netns's plan around `cidr` (its `--cidr`, default 10.0.2.0/24): gateway and host
    /// alias `.2`, DNS `.3`, DHCP from `.15`; the namespace itself is `.100` ([`Self::slirp_guest`]).
    pub fn slirp4netns(cidr: IpCidr) -> Result<Self, ConfigError> {
        let mut cfg = Self::from_subnet(cidr)?;
        let net = u32::from(cfg.subnet);
        let broadcast = u32::from(cfg.broadcast());
        if net + 100 >= broadcast {
            return Err(ConfigError::SlirpSubnetSize(cidr));
        }
        cfg.gateway = Ipv4Addr::from(net + 2);
        cfg.dns_server = Ipv4Addr::from(net + 3);
        cfg.host_loopback_alias = Some(cfg.gateway);
        cfg.pool_start = Ipv4Addr::from(net + 15);
        cfg.pool_end = Ipv4Addr::from(broadcast - 1);
        Ok(cfg)
    }

    /// The gateway's IPv6 link-local address (from its MAC): the source of router
    /// advertisements and the guests' IPv6 next hop.
    pub fn gateway_link_local(&self) -> Ipv6Addr {
        slipway_wire::ipv6::eui64_address(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
            self.gateway_mac,
        )
    }

    /// True for the IPv6 addresses slipway itself answers neighbor solicitations for.
    pub fn owns6(&self, ip: Ipv6Addr) -> bool {
        let Some(v6) = &self.ipv6 else {
            return false;
        };
        ip == v6.gateway
            || ip == v6.dns_server
            || Some(ip) == v6.host_loopback_alias
            || ip == self.gateway_link_local()
    }

    /// True for an address of either family that slipway owns.
    pub fn owns_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.owns(v4),
            IpAddr::V6(v6) => self.owns6(v6),
        }
    }

    /// The address slirp4netns gives the namespace with `--configure`: the subnet's `.100`.
    pub fn slirp_guest(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 100)
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self::from_subnet(IpCidr {
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 127, 0)),
            prefix: 24,
        })
        .expect("the default subnet is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_matches_gvproxy() {
        let c = NetworkConfig::default();
        assert_eq!(c.gateway, Ipv4Addr::new(192, 168, 127, 1));
        assert_eq!(
            c.host_loopback_alias,
            Some(Ipv4Addr::new(192, 168, 127, 254))
        );
        assert_eq!(c.pool_start, Ipv4Addr::new(192, 168, 127, 2));
        assert_eq!(c.pool_end, Ipv4Addr::new(192, 168, 127, 253));
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 168, 127, 255));
    }

    #[test]
    fn cidr_parse_errors_say_what_is_wrong() {
        assert_eq!(
            "300.1.2.3/24".parse::<IpCidr>(),
            Err(CidrError::BadAddress("300.1.2.3".into()))
        );
        assert_eq!("10.0.0.0".parse::<IpCidr>(), Err(CidrError::MissingSlash));
        assert_eq!(
            "10.0.0.0/33".parse::<IpCidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        let c: IpCidr = "10.0.2.0/24".parse().unwrap();
        assert!(c.contains("10.0.2.77".parse().unwrap()));
        assert!(!c.contains("10.0.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
    }

    #[test]
    fn ipv6_plans() {
        let c = NetworkConfig::default();
        let v6 = c.ipv6.as_ref().unwrap();
        assert_eq!(v6.gateway, "fd00:5119::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.dns_server, v6.gateway);
        assert_eq!(
            v6.host_loopback_alias,
            Some("fd00:5119::fe".parse().unwrap())
        );
        assert!(v6.in_prefix("fd00:5119::5054:ff:fe12:3456".parse().unwrap()));
        assert!(!v6.in_prefix("fd00:5118::1".parse().unwrap()));
        assert_eq!(
            c.gateway_link_local(),
            "fe80::5894:efff:fee4:cdd".parse::<Ipv6Addr>().unwrap()
        );
        assert!(c.owns6(c.gateway_link_local()));
        let s = Ipv6Config::slirp4netns();
        assert_eq!(s.gateway, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(s.dns_server, "fd00::3".parse::<Ipv6Addr>().unwrap());
        assert_eq!(s.host_loopback_alias, Some(s.gateway));
        for (bad, err) in [
            ("fd00::/48", "/64"),
            ("10.0.0.0/24", "IPv6 prefix"),
            ("fe80::/64", "unique-local"),
        ] {
            let e = Ipv6Config::from_prefix(bad.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(err), "{bad}: {e}");
        }
    }

    #[test]
    fn small_subnet_plan() {
        let c = NetworkConfig::from_subnet("10.0.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.host_loopback_alias, Some(Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(c.pool_end, Ipv4Addr::new(10, 0, 0, 5));
    }
}
