//! Port forwards ("publish"): a host listener whose connections and datagrams enter a guest.
//!
//! Theory of operation: a [`PortForward`] names a host address to listen on, a protocol and a
//! guest address and port. The driver binds the listener; the network resolves the guest's MAC
//! (its neighbour table, else its DHCP lease; else it asks with ARP and the kernel's accept
//! backlog holds the client meanwhile). A TCP client accepted on the listener becomes a flow of
//! the TCP engine that starts with our SYN to the guest — the same translation as outbound flows,
//! with the accepted socket as the host side. A UDP datagram from a new client opens a UDP flow
//! whose replies go back through the listener to that client; it expires when idle.
//!
//! The guest sees who is connecting: a client's real address and port when it is of the guest
//! address's family, except that loopback clients (127.0.0.0/8, ::1) and clients of the other
//! family appear as the host-loopback alias of the guest's family (or the gateway when the alias
//! is off), with their real source port. An IPv6 listener may forward to an IPv4 guest and the
//! other way round.
//!
//! Specs follow Docker's `-p`: `[HOST_IP:]HOST_PORT[-END]:[GUEST_IP:]GUEST_PORT[-END][/tcp|/udp]`,
//! IPv6 host addresses in brackets. The host address defaults to 127.0.0.1 (publishing on every
//! interface must be asked for with 0.0.0.0 or [::]); the guest address defaults to the
//! network's first guest address (the first address of the DHCP pool). A host unix socket is
//! published with `PATH:[GUEST_IP:]GUEST_PORT` (PATH absolute): its clients become TCP
//! connections to the guest, appearing as the host alias with a port slipway picks.
//!
//! Limits: [`MAX_RANGE`] ports per spec.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The most ports one spec may publish.
pub const MAX_RANGE: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardProto {
    Tcp,
    Udp,
}

impl ForwardProto {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardProto::Tcp => "tcp",
            ForwardProto::Udp => "udp",
        }
    }
}

impl fmt::Display for ForwardProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a forward listens on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardHost {
    Inet(SocketAddr),
    /// A unix stream socket (TCP forwards only).
    Unix(PathBuf),
}

impl fmt::Display for ForwardHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardHost::Inet(a) => write!(f, "{a}"),
            ForwardHost::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortForward {
    pub proto: ForwardProto,
    /// Where the host listens.
    pub host: ForwardHost,
    /// The guest address (either family); None = the network's first guest address (IPv4).
    pub guest_ip: Option<IpAddr>,
    pub guest_port: u16,
}

impl PortForward {
    /// `tcp`, `udp`, or `unix` for a unix socket listener.
    pub fn kind(&self) -> &'static str {
        match self.host {
            ForwardHost::Unix(_) => "unix",
            ForwardHost::Inet(_) => self.proto.as_str(),
        }
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.guest_ip {
            Some(ip) => write!(
                f,
                "{} → {}",
                self.host,
                SocketAddr::new(ip, self.guest_port)
            )?,
            None => write!(f, "{} → first guest:{}", self.host, self.guest_port)?,
        }
        write!(f, "/{}", self.proto)
    }
}

/// What is wrong with a publish spec, said so that a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("-p {spec}: expected [HOST_IP:]HOST_PORT[-END]:[GUEST_IP:]GUEST_PORT[-END][/tcp|/udp], e.g. 8080:80, 127.0.0.1:8080:80/udp or 8000-8010:9000-9010")]
    Shape { spec: String },
    #[error("-p {spec}: '{proto}' is not a protocol; use /tcp or /udp")]
    Proto { spec: String, proto: String },
    #[error("-p {spec}: '{value}' is not a port or port range (1-65535, e.g. 8080 or 8000-8010)")]
    Port { spec: String, value: String },
    #[error("-p {spec}: '{value}' is not an IP address")]
    Address { spec: String, value: String },
    #[error("-p {spec}: the host range has {host} ports but the guest range {guest}; give ranges of the same length")]
    RangeMismatch { spec: String, host: u32, guest: u32 },
    #[error("-p {spec}: a range may hold at most {MAX_RANGE} ports")]
    RangeTooLong { spec: String },
    #[error("-p {spec}: a unix socket forward is PATH:[GUEST_IP:]GUEST_PORT with an absolute PATH and one TCP port, e.g. /run/app.sock:8080")]
    Unix { spec: String },
}

/// Parse one `-p` spec into the forwards it publishes (one per port of a range).
pub fn parse_publish(spec: &str) -> Result<Vec<PortForward>, PublishError> {
    let s = spec.trim();
    if s.starts_with('/') {
        return parse_unix(spec).map(|f| vec![f]);
    }
    let shape = || PublishError::Shape {
        spec: spec.to_string(),
    };
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, p)) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "tcp" => ForwardProto::Tcp,
                "udp" => ForwardProto::Udp,
                _ => {
                    return Err(PublishError::Proto {
                        spec: spec.to_string(),
                        proto: p.to_string(),
                    })
                }
            };
            (b, proto)
        }
        None => (s, ForwardProto::Tcp),
    };
    let parts = split_fields(body).ok_or_else(shape)?;
    let (host_ip, host_ports, guest_ip, guest_ports) = match parts.as_slice() {
        [hp, gp] => (None, *hp, None, *gp),
        [hip, hp, gp] => (Some(*hip), *hp, None, *gp),
        [hip, hp, gip, gp] => (Some(*hip), *hp, Some(*gip), *gp),
        _ => return Err(shape()),
    };
    let address = |v: &str| -> Result<IpAddr, PublishError> {
        v.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| PublishError::Address {
                spec: spec.to_string(),
                value: v.to_string(),
            })
    };
    let host_ip = match host_ip {
        Some(v) => address(v)?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let guest_ip = match guest_ip {
        Some(v) => Some(address(v)?),
        None => None,
    };
    let (h0, h1) = port_range(spec, host_ports)?;
    let (g0, g1) = port_range(spec, guest_ports)?;
    let (hn, gn) = (u32::from(h1 - h0) + 1, u32::from(g1 - g0) + 1);
    if hn != gn {
        return Err(PublishError::RangeMismatch {
            spec: spec.to_string(),
            host: hn,
            guest: gn,
        });
    }
    if hn > MAX_RANGE {
        return Err(PublishError::RangeTooLong {
            spec: spec.to_string(),
        });
    }
    Ok((0..hn as u16)
        .map(|i| PortForward {
            proto,
            host: ForwardHost::Inet(SocketAddr::new(host_ip, h0 + i)),
            guest_ip,
            guest_port: g0 + i,
        })
        .collect())
}

/// `PATH:[GUEST_IP:]GUEST_PORT[/tcp]`.
fn parse_unix(spec: &str) -> Result<PortForward, PublishError> {
    let bad = || PublishError::Unix {
        spec: spec.to_string(),
    };
    let s = spec.trim();
    let s = s.strip_suffix("/tcp").unwrap_or(s);
    let (rest, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let guest_port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let (path, guest_ip) = match rest.rsplit_once(':') {
        Some((path, ip)) if ip.parse::<Ipv4Addr>().is_ok() => {
            (path, ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
        }
        _ => (rest, None),
    };
    if path.len() < 2 || path.ends_with('/') {
        return Err(bad());
    }
    Ok(PortForward {
        proto: ForwardProto::Tcp,
        host: ForwardHost::Unix(PathBuf::from(path)),
        guest_ip,
        guest_port,
    })
}

/// Split at ':' outside brackets; None for an unbalanced bracket.
fn split_fields(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut depth = 0u8;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            ']' if depth == 1 => depth = 0,
            '[' | ']' => return None,
            ':' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    out.push(&s[start..]);
    Some(out)
}

fn port_range(spec: &str, v: &str) -> Result<(u16, u16), PublishError> {
    let bad = || PublishError::Port {
        spec: spec.to_string(),
        value: v.to_string(),
    };
    let port = |p: &str| -> Result<u16, PublishError> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad()),
        }
    };
    match v.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let p = port(v)?;
            Ok((p, p))
        }
    }
}

/// The address under which a guest sees a host client, given the network's host-loopback alias
/// of the guest's family (or the gateway, when the alias is off). Loopback clients and clients
/// of the other family appear as `alias`; IPv4-mapped IPv6 clients count as IPv4.
pub fn guest_visible_client(client: IpAddr, alias: IpAddr) -> IpAddr {
    let client = match client {
        IpAddr::V6(ip) => ip.to_ipv4_mapped().map_or(client, IpAddr::V4),
        v4 => v4,
    };
    if client.is_loopback() || client.is_unspecified() || client.is_ipv4() != alias.is_ipv4() {
        return alias;
    }
    if let IpAddr::V6(v6) = client {
        if slipway_wire::ipv6::is_link_local(&v6) || v6.is_multicast() {
            return alias;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortForward {
        let v = parse_publish(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v[0].clone()
    }

    fn inet(s: &str) -> ForwardHost {
        ForwardHost::Inet(s.parse().unwrap())
    }

    #[test]
    fn unix_socket_forwards() {
        let f = one("/run/app.sock:8080");
        assert_eq!(f.host, ForwardHost::Unix("/run/app.sock".into()));
        assert_eq!((f.guest_ip, f.guest_port, f.kind()), (None, 8080, "unix"));
        let f = one("/run/a.sock:192.168.127.3:22/tcp");
        assert_eq!(
            f.guest_ip,
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 127, 3)))
        );
        let e = |s: &str| parse_publish(s).unwrap_err().to_string();
        assert!(e("/run/a.sock").contains("a unix socket forward is PATH"));
        assert!(e("/run/a.sock:0").contains("a unix socket forward"));
        assert!(e("/:80").contains("a unix socket forward"));
    }

    #[test]
    fn docker_forms() {
        let f = one("8080:80");
        assert_eq!(f.proto, ForwardProto::Tcp);
        assert_eq!(f.host, inet("127.0.0.1:8080"));
        assert_eq!((f.guest_ip, f.guest_port), (None, 80));
        assert_eq!(one("0.0.0.0:8080:80").host, inet("0.0.0.0:8080"));
        assert_eq!(one("[::1]:8080:80").host, inet("[::1]:8080"));
        assert_eq!(one("[::]:8080:80/udp").host, inet("[::]:8080"));
        assert_eq!(one("[::]:8080:80/udp").proto, ForwardProto::Udp);
        assert_eq!(one("8080:80/TCP").proto, ForwardProto::Tcp);
        let f = one("127.0.0.1:8080:192.168.127.3:80");
        assert_eq!(
            f.guest_ip,
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 127, 3)))
        );
        let f = one("[::1]:8080:[fd00:5119::2]:80");
        assert_eq!(f.guest_ip, Some("fd00:5119::2".parse().unwrap()));
        assert_eq!(f.to_string(), "[::1]:8080 → [fd00:5119::2]:80/tcp");
        let f = one("[::1]:8080:[192.168.127.3]:80");
        assert_eq!(
            f.guest_ip,
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 127, 3)))
        );
    }

    #[test]
    fn ranges_expand_pairwise() {
        let v = parse_publish("8000-8002:9000-9002/udp").unwrap();
        let pairs: Vec<_> = v
            .iter()
            .map(|f| match f.host {
                ForwardHost::Inet(a) => (a.port(), f.guest_port),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(pairs, vec![(8000, 9000), (8001, 9001), (8002, 9002)]);
        assert!(v.iter().all(|f| f.proto == ForwardProto::Udp));
        assert_eq!(parse_publish("1-1024:1-1024").unwrap().len(), 1024);
        assert_eq!(
            parse_publish("65535:65535").unwrap()[0].host,
            inet("127.0.0.1:65535")
        );
    }

    #[test]
    fn mistakes_say_what_to_write() {
        let e = |s: &str| parse_publish(s).unwrap_err().to_string();
        assert!(
            e("80").contains("expected [HOST_IP:]HOST_PORT"),
            "{}",
            e("80")
        );
        assert!(e("1:2:3:4:5").contains("expected"));
        assert!(e("[::1:8080:80").contains("expected"));
        assert_eq!(
            e("8080:80/sctp"),
            "-p 8080:80/sctp: 'sctp' is not a protocol; use /tcp or /udp"
        );
        assert!(e("0:80").contains("'0' is not a port"));
        assert!(e("8080:70000").contains("'70000' is not a port"));
        assert!(e("9-8:1-2").contains("'9-8' is not a port"));
        assert!(e("127.0.0.1::80").contains("'' is not a port"));
        assert!(e("host:8080:80").contains("'host' is not an IP address"));
        assert_eq!(
            e("1-3:1-2"),
            "-p 1-3:1-2: the host range has 3 ports but the guest range 2; give ranges of the same length"
        );
        assert!(e("1-2000:1-2000").contains("at most 1024"));
        assert!(e("[::1]:8080:[fd00::2:80").contains("expected"));
    }

    #[test]
    fn clients_seen_by_the_guest() {
        let alias: IpAddr = "192.168.127.254".parse().unwrap();
        let c = |s: &str| guest_visible_client(s.parse().unwrap(), alias);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c("127.0.0.1"), alias);
        assert_eq!(c("127.3.4.5"), alias);
        assert_eq!(c("::1"), alias);
        assert_eq!(c("198.51.100.2"), ip("198.51.100.2"));
        assert_eq!(c("::ffff:198.51.100.2"), ip("198.51.100.2"));
        assert_eq!(c("::ffff:127.0.0.1"), alias);
        assert_eq!(c("2001:db8::1"), alias);
        // An IPv6 guest.
        let alias6: IpAddr = "fd00:5119::fe".parse().unwrap();
        let c6 = |s: &str| guest_visible_client(s.parse().unwrap(), alias6);
        assert_eq!(c6("::1"), alias6);
        assert_eq!(c6("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(c6("fe80::1"), alias6);
        assert_eq!(c6("198.51.100.2"), alias6);
        assert_eq!(c6("::ffff:198.51.100.2"), alias6);
    }
}
