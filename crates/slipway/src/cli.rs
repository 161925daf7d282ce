//! The command line: `slipway serve [OPTIONS]`, validated into one [`NetworkConfig`] plus the
//! list of guest links to open.

use clap::{Args, Parser, Subcommand};
use slipway_core::{IpCidr, NetworkConfig, PortForward};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "slipway",
    version,
    about = "A user-mode network stack for virtual machines and containers",
    long_about = "slipway gives VMs and network namespaces a complete network without root, \
                  bridges or NAT rules: it answers as their router (ARP, DHCP, DNS, ICMP) and \
                  replays their TCP, UDP and ping traffic as ordinary host sockets.\n\n\
                  Drop-in mode: invoked as `gvproxy` (a symlink) or `slipway gvproxy ...`, it \
                  takes gvproxy's flags (see `slipway gvproxy -help`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of `serve`'s options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one virtual network in the foreground.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Run a command in a new network namespace whose network is slipway (no root needed).
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Published ports of a running slipway (over its --api socket).
    Forward {
        #[command(subcommand)]
        command: ForwardCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// DHCP leases of a running slipway.
    Leases(ClientArgs),
    /// Live TCP and UDP flows of a running slipway.
    Flows(ClientArgs),
    /// Counters (and drops by reason) of a running slipway.
    Counters(ClientArgs),
    /// Local DNS records of a running slipway.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How a client command reaches a running slipway.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The API socket of the running slipway (its `serve --api PATH`).
    #[arg(long, value_name = "PATH", env = "SLIPWAY_API", global = true)]
    pub api: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ForwardCommand {
    /// Publish a port: the same SPEC as `serve -p`, e.g. 8080:80 or 127.0.0.1:5353:53/udp.
    Add { spec: String },
    /// List published ports.
    Ls,
    /// Stop a published port, by the ID `ls` shows.
    Rm { id: u32 },
}

#[derive(Subcommand, Debug, Clone)]
pub enum DnsCommand {
    /// Add a local name: NAME=IP, e.g. db.internal=192.168.127.77.
    Add { record: String },
    /// List local names.
    Ls,
    /// Remove a local name.
    Rm { name: String },
}

const SERVE_EXAMPLES: &str = "\
Examples:
  # A QEMU guest (QEMU 7.2+):
  slipway serve --qemu /tmp/slipway.sock &
  qemu-system-x86_64 ... -device virtio-net-pci,netdev=n0 -netdev \\
    stream,id=n0,server=off,addr.type=unix,addr.path=/tmp/slipway.sock

  # A network namespace (slipway creates tap0 in it and configures it):
  ip netns add demo && slipway serve --netns /run/netns/demo

  # Publish the guest's port 80 on the host's 127.0.0.1:8080:
  slipway serve --netns /run/netns/demo -p 8080:80

  # In the guest, the host's 127.0.0.1 is 192.168.127.254
  # (host.slipway.internal).
";

const RUN_EXAMPLES: &str = "\
Examples:
  # Fetch a page from a server on the host's 127.0.0.1:8000:
  slipway run -- curl http://host.slipway.internal:8000/

  # A shell whose only way out is the host's loopback, with its port 80 published on 8080:
  slipway run --egress-allow 127.0.0.0/8 -p 8080:80 -- sh

The command runs in new user, network and mount namespaces (as root of that user namespace), \
with tap0 at 192.168.127.2/24, a default route via 192.168.127.1 and a resolv.conf naming \
192.168.127.1. slipway forwards signals to it and exits with its exit status.
";

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Listen on a unix stream socket for QEMU guests (4-byte big-endian length framing;
    /// QEMU `-netdev stream` / `-netdev socket`). Repeatable; keeps accepting guests.
    #[arg(long, value_name = "PATH")]
    pub qemu: Vec<PathBuf>,
    /// Unix datagram socket, one frame per datagram (QEMU `-netdev dgram`, vfkit). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub dgram: Vec<PathBuf>,
    /// Unix stream socket speaking vpnkit/hyperkit's handshake and framing. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub vpnkit: Vec<PathBuf>,
    /// Unix seqpacket socket, one frame per message (User Mode Linux BESS). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub bess: Vec<PathBuf>,
    /// One guest on stdin/stdout (2-byte little-endian length framing).
    #[arg(long)]
    pub stdio: bool,
    /// Attach a network namespace: a PID or a path such as /run/netns/NAME or /proc/PID/ns/net.
    /// slipway creates a TAP device inside it and configures address, route and MTU. Repeatable.
    /// Without root, a PID's namespace is entered through that process's user namespace (for
    /// one the caller owns, e.g. made by `unshare --user --net`).
    #[arg(long, value_name = "TARGET")]
    pub netns: Vec<String>,
    /// Name of the TAP device created inside each --netns namespace.
    #[arg(long, value_name = "NAME", default_value = "tap0")]
    pub tap_name: String,
    /// MAC address of the TAP device in the first --netns namespace (default: random, locally
    /// administered).
    #[arg(long, value_name = "MAC")]
    pub tap_mac: Option<String>,
    /// Write `1` to file descriptor FD and close it once the network runs (as slirp4netns's
    /// --ready-fd), for supervisors that start slipway.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// The guest subnet: gateway and DNS at .1, host-loopback alias at .254, DHCP from .2.
    #[arg(long, value_name = "CIDR", default_value = "192.168.127.0/24")]
    pub subnet: String,
    /// The guests' IPv6 prefix (a /64): gateway and DNS at ::1, host-loopback alias at ::fe
    /// (reaching the host's ::1); guests configure themselves from router advertisements.
    #[arg(long, value_name = "CIDR", default_value = slipway_core::config::DEFAULT_PREFIX6)]
    pub subnet6: String,
    /// IPv6 on the guest network: `on` (dual-stack, the default) or `off` (IPv6 frames dropped).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    pub ipv6: String,
    /// Link MTU announced to guests (DHCP option 26) and used for TCP segments (576..=65521).
    #[arg(long, value_name = "N", default_value_t = 1500)]
    pub mtu: u32,
    /// DNS server to forward queries to (repeatable; tried in order). Default: the nameservers
    /// of /etc/resolv.conf, re-read when it changes.
    #[arg(
        long,
        value_name = "ADDR[:PORT]",
        env = "SLIPWAY_DNS_UPSTREAM",
        value_delimiter = ','
    )]
    pub dns_upstream: Vec<String>,
    /// A local DNS name answered by the gateway (repeatable), e.g. db.internal=192.168.127.254.
    #[arg(long, value_name = "NAME=IP")]
    pub dns_record: Vec<String>,
    /// Always give this guest MAC this address by DHCP (repeatable), e.g.
    /// 5a:94:ef:e4:0c:ee=192.168.127.2.
    #[arg(long, value_name = "MAC=IP")]
    pub static_lease: Vec<String>,
    /// Do not map the alias addresses (IPv4 and IPv6) to the host's loopback.
    #[arg(long)]
    pub no_host_loopback: bool,
    /// Only these host-side destinations may be reached (repeatable, IPv4 or IPv6 prefixes); the
    /// alias counts as 127.0.0.1 (the IPv6 alias as ::1). Anything else is refused with a TCP RST or ICMP unreachable and counted.
    /// Also from SLIPWAY_EGRESS_ALLOW (comma-separated), which the drop-in modes honour too.
    #[arg(
        long,
        value_name = "CIDR",
        env = "SLIPWAY_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<String>,
    /// Connections to the host (other than to its loopback) leave from this local IPv4 address,
    /// or from the first IPv4 address of this interface (as slirp4netns's --outbound-addr).
    #[arg(long, value_name = "ADDR|IFACE")]
    pub outbound_addr: Option<String>,
    /// The same for IPv6 destinations.
    #[arg(long, value_name = "ADDR|IFACE")]
    pub outbound_addr6: Option<String>,
    /// Publish a guest port on the host (repeatable), Docker's forms:
    /// [HOST_IP:]HOST_PORT[-END]:[GUEST_IP:]GUEST_PORT[-END][/tcp|/udp], e.g. 8080:80,
    /// 127.0.0.1:8080:80, [::1]:8080:80, 8000-8010:9000-9010/udp,
    /// 127.0.0.1:8080:192.168.127.3:80. The host address defaults to 127.0.0.1 (all interfaces
    /// only when asked: 0.0.0.0 or [::]); the guest address to the first guest (.2). The guest
    /// sees each client's real address; loopback clients appear as the host-loopback alias.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Close a forward's host listener while its guest is disconnected and open it again when
    /// the guest is back. Default: keep listening; clients wait up to 3 s for the guest, then
    /// are refused.
    #[arg(long)]
    pub unpublish_while_away: bool,
    /// Guest connections to the gateway's TCP PORT go to the host unix socket PATH
    /// (repeatable), e.g. 2375=/run/docker.sock: the guest reaches a host engine socket at
    /// 192.168.127.1:2375.
    #[arg(long, value_name = "PORT=PATH")]
    pub gateway_unix: Vec<String>,
    /// Serve the HTTP API (slipway's /v1 and gvproxy's paths) on a unix socket at PATH,
    /// created with mode 0600. See docs/api.md.
    #[arg(long, value_name = "PATH")]
    pub api: Option<PathBuf>,
    /// Serve gvproxy's forwarder paths to guests at http://GATEWAY:80/services/forwarder/
    /// (expose, unexpose, all): guests may then publish their own ports on the host.
    #[arg(long)]
    pub guest_api: bool,
    /// Let guests of --guest-api create unix sockets (gvproxy's `"protocol":"unix"` expose) in
    /// DIR only, by plain name, with mode 0600; a guest can never replace or remove a file that
    /// is not a socket it made. Without it, guests' unix exposes are refused. (The gvproxy
    /// drop-in takes it from the environment variable SLIPWAY_GUEST_API_UNIX_DIR.)
    #[arg(long, value_name = "DIR", requires = "guest_api")]
    pub guest_api_unix_dir: Option<PathBuf>,
    /// Write every frame crossing the switch to FILE (pcap format).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// While events come close together (request/response traffic), poll for up to USEC
    /// microseconds before sleeping: an answer that arrives within it costs no wake-up, and the
    /// spinning takes CPU that would otherwise go to sleeping and waking. Sparse traffic, idle
    /// networks and bulk transfers never spin; spins yield the CPU to anything runnable and back
    /// off when they catch nothing. Default 50 (suits servers on loopback); 0 turns it off; at
    /// most 1000.
    #[arg(long, value_name = "USEC", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub busy_poll: Option<u32>,
    /// More log output (-v info about each guest, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// slirp4netns's address plan around --subnet (set by the slirp4netns drop-in).
    #[arg(skip)]
    pub slirp4netns_plan: bool,
    /// No DNS service (the slirp4netns drop-in's --disable-dns).
    #[arg(skip)]
    pub disable_dns: bool,
    /// `/connect` links use QEMU's 4-byte big-endian framing (gvproxy mode with -listen-qemu).
    #[arg(skip)]
    pub connect_be32: bool,
}

/// `--busy-poll`'s default, in microseconds. Measured (bench/results/2026-12-03-busy-poll.md):
/// 1.4× the connections per second for the same CPU per connection, no loss when client, server
/// and slipway share one CPU (the spin yields), and no more CPU than sleeping for request /
/// response traffic whose answers come too late for it (the spin backs off).
pub const DEFAULT_BUSY_POLL_US: u32 = 50;

/// A mistake on the command line, said so that a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--subnet {value}: {reason}")]
    Subnet { value: String, reason: String },
    #[error("{0}")]
    Subnet6(String),
    #[error("--egress-allow {value}: {reason}")]
    EgressAllow { value: String, reason: String },
    #[error("--dns-upstream {0}: expected an IP address with an optional port, e.g. 127.0.0.1:5353 or [::1]:53")]
    DnsUpstream(String),
    #[error("--dns-record {0}: expected NAME=IP, e.g. db.internal=192.168.127.254")]
    DnsRecord(String),
    #[error(transparent)]
    Config(#[from] slipway_core::config::ConfigError),
    #[error(transparent)]
    Publish(#[from] slipway_core::forward::PublishError),
    #[error("--static-lease {0}: expected MAC=IP with an address of the guest subnet, e.g. 5a:94:ef:e4:0c:ee=192.168.127.2")]
    StaticLease(String),
    #[error("--gateway-unix {0}: expected PORT=PATH with a TCP port other than 53 and an absolute socket path, e.g. 2375=/run/docker.sock")]
    GatewayUnix(String),
    #[error("--tap-mac {0}: expected a unicast MAC such as 02:00:00:00:00:01")]
    TapMac(String),
    #[error("--{option} {value}: {reason}")]
    Outbound {
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error("no guest link given: use --qemu, --dgram, --vpnkit, --bess, --stdio or --netns (see --help)")]
    NoLinks,
}

/// `aa:bb:cc:dd:ee:ff` (or with dashes).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// An outbound address: an IP literal, or the first address of family `v6` on interface
/// `value`; checked by binding a UDP socket to it.
fn resolve_outbound(option: &'static str, value: &str, v6: bool) -> Result<IpAddr, CliError> {
    let err = |reason: String| CliError::Outbound {
        option,
        value: value.to_string(),
        reason,
    };
    let ip = match value.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => interface_address(value, v6).ok_or_else(|| {
            err(format!(
                "neither an IP address nor an interface with an {} address (see `ip addr`)",
                if v6 { "IPv6" } else { "IPv4" }
            ))
        })?,
    };
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
        .map_err(|e| err(format!("{ip} is not usable as a local address here: {e}")))?;
    Ok(ip)
}

/// The first address of the given family on interface `name`.
fn interface_address(name: &str, v6: bool) -> Option<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates the list, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    // SAFETY: walking the list getifaddrs returned; each entry's name is a C string and its
    // address, when not null, a sockaddr of the family it names.
    unsafe {
        while !cur.is_null() && found.is_none() {
            let ifa = &*cur;
            let ifname = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if ifname == name && !ifa.ifa_addr.is_null() {
                let family = i32::from((*ifa.ifa_addr).sa_family);
                if family == libc::AF_INET && !v6 {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    found = Some(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                        a.sin_addr.s_addr,
                    ))));
                } else if family == libc::AF_INET6 && v6 {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    found = Some(IpAddr::V6(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Parse `ADDR[:PORT]` with port 53 by default.
pub fn parse_dns_upstream(s: &str) -> Result<SocketAddr, CliError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let trimmed = s.trim_start_matches('[').trim_end_matches(']');
    trimmed
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| CliError::DnsUpstream(s.to_string()))
}

impl ServeArgs {
    /// `--busy-poll`, or its default (the drop-in modes get the default too).
    pub fn busy_poll_us(&self) -> u32 {
        self.busy_poll.unwrap_or(DEFAULT_BUSY_POLL_US)
    }

    /// The environment's SLIPWAY_EGRESS_ALLOW and SLIPWAY_DNS_UPSTREAM (comma-separated), for
    /// the drop-in modes whose command lines have no such options (`serve` reads them through
    /// its options).
    pub fn apply_env(&mut self) {
        let list = |name: &str| -> Vec<String> {
            std::env::var(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        self.egress_allow.extend(list("SLIPWAY_EGRESS_ALLOW"));
        self.dns_upstream.extend(list("SLIPWAY_DNS_UPSTREAM"));
        if self.guest_api_unix_dir.is_none() {
            self.guest_api_unix_dir = std::env::var_os("SLIPWAY_GUEST_API_UNIX_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
        }
    }

    /// Validate everything into the network's configuration.
    pub fn network_config(&self) -> Result<NetworkConfig, CliError> {
        let cidr: IpCidr = self
            .subnet
            .parse()
            .map_err(|e: slipway_core::config::CidrError| CliError::Subnet {
                value: self.subnet.clone(),
                reason: e.to_string(),
            })?;
        let plan = if self.slirp4netns_plan {
            NetworkConfig::slirp4netns(cidr)
        } else {
            NetworkConfig::from_subnet(cidr)
        };
        let mut cfg = plan.map_err(|e| CliError::Subnet {
            value: self.subnet.clone(),
            reason: e.to_string(),
        })?;
        cfg.dns_service = !self.disable_dns;
        cfg.set_mtu(self.mtu)?;
        cfg.guest_api = self.guest_api;
        // (Empty values come from drop-in modes that build ServeArgs by hand: the defaults.)
        cfg.ipv6 = match self.ipv6.as_str() {
            "off" => None,
            _ if self.slirp4netns_plan => Some(slipway_core::config::Ipv6Config::slirp4netns()),
            _ => {
                let subnet6 = match self.subnet6.as_str() {
                    "" => slipway_core::config::DEFAULT_PREFIX6,
                    s => s,
                };
                let cidr: IpCidr =
                    subnet6
                        .parse()
                        .map_err(|e: slipway_core::config::CidrError| {
                            CliError::Subnet6(format!("--subnet6 {}: {e}", self.subnet6))
                        })?;
                Some(
                    slipway_core::config::Ipv6Config::from_prefix(cidr)
                        .map_err(|e| CliError::Subnet6(e.to_string()))?,
                )
            }
        };
        if cfg.ipv6.is_some() && cfg.mtu < 1280 {
            return Err(CliError::Subnet6(format!(
                "--mtu {}: IPv6 needs a link MTU of at least 1280; raise --mtu or give --ipv6 off",
                cfg.mtu
            )));
        }
        if self.no_host_loopback {
            cfg.host_loopback_alias = None;
            if let Some(v6) = cfg.ipv6.as_mut() {
                v6.host_loopback_alias = None;
            }
        }
        for e in &self.egress_allow {
            let c: IpCidr = e.parse().map_err(|err: slipway_core::config::CidrError| {
                CliError::EgressAllow {
                    value: e.clone(),
                    reason: err.to_string(),
                }
            })?;
            cfg.egress_allow.push(c);
        }
        for (port, _) in self.gateway_unix_targets()? {
            cfg.gateway_unix_ports.push(port);
        }
        for l in &self.static_lease {
            let bad = || CliError::StaticLease(l.clone());
            let (mac, ip) = l.split_once('=').ok_or_else(bad)?;
            let mac = parse_mac(mac.trim()).ok_or_else(bad)?;
            let ip: std::net::Ipv4Addr = ip.trim().parse().map_err(|_| bad())?;
            if !cfg.in_subnet(ip) || cfg.owns(ip) {
                return Err(bad());
            }
            cfg.static_leases.push((mac, ip));
        }
        for r in &self.dns_record {
            let (name, ip) = r
                .split_once('=')
                .ok_or_else(|| CliError::DnsRecord(r.clone()))?;
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| CliError::DnsRecord(r.clone()))?;
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                return Err(CliError::DnsRecord(r.clone()));
            }
            cfg.dns_records.push((name, ip));
        }
        Ok(cfg)
    }

    /// Every forward the `--publish` specs ask for, in order.
    pub fn forwards(&self) -> Result<Vec<PortForward>, CliError> {
        let mut out = Vec::new();
        for spec in &self.publish {
            out.extend(slipway_core::forward::parse_publish(spec)?);
        }
        Ok(out)
    }

    /// The `--gateway-unix` pairs (gateway TCP port, host socket path).
    pub fn gateway_unix_targets(&self) -> Result<Vec<(u16, PathBuf)>, CliError> {
        self.gateway_unix
            .iter()
            .map(|g| {
                let bad = || CliError::GatewayUnix(g.clone());
                let (port, path) = g.split_once('=').ok_or_else(bad)?;
                let port: u16 = port.trim().parse().map_err(|_| bad())?;
                if port == 0 || port == 53 || !path.starts_with('/') {
                    return Err(bad());
                }
                Ok((port, PathBuf::from(path)))
            })
            .collect()
    }

    /// The `--outbound-addr` and `--outbound-addr6` addresses: literal, or an interface's first
    /// address of that family; each must be an address of this host.
    pub fn outbound(
        &self,
    ) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>), CliError> {
        let v4 = match &self.outbound_addr {
            Some(v) => match resolve_outbound("outbound-addr", v, false)? {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => {
                    return Err(CliError::Outbound {
                        option: "outbound-addr",
                        value: v.clone(),
                        reason: "an IPv6 address: use --outbound-addr6".into(),
                    })
                }
            },
            None => None,
        };
        let v6 = match &self.outbound_addr6 {
            Some(v) => match resolve_outbound("outbound-addr6", v, true)? {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => {
                    return Err(CliError::Outbound {
                        option: "outbound-addr6",
                        value: v.clone(),
                        reason: "an IPv4 address: use --outbound-addr".into(),
                    })
                }
            },
            None => None,
        };
        Ok((v4, v6))
    }

    /// The `--tap-mac` address, checked.
    pub fn tap_mac(&self) -> Result<Option<[u8; 6]>, CliError> {
        self.tap_mac
            .as_deref()
            .map(|m| {
                parse_mac(m)
                    .filter(|mac| mac[0] & 1 == 0 && *mac != [0; 6])
                    .ok_or_else(|| CliError::TapMac(m.to_string()))
            })
            .transpose()
    }

    pub fn dns_upstreams(&self) -> Result<Vec<SocketAddr>, CliError> {
        self.dns_upstream
            .iter()
            .map(|s| parse_dns_upstream(s))
            .collect()
    }

    pub fn has_links(&self) -> bool {
        !(self.qemu.is_empty()
            && self.dgram.is_empty()
            && self.vpnkit.is_empty()
            && self.bess.is_empty()
            && !self.stdio
            && self.netns.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> RunArgs {
        let mut v = vec!["slipway", "run"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Run(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn outbound_addresses_by_literal_or_interface() {
        let a = serve(&["--outbound-addr", "127.0.0.1"]);
        assert_eq!(a.outbound().unwrap().0, Some("127.0.0.1".parse().unwrap()));
        let a = serve(&["--outbound-addr", "lo"]);
        assert_eq!(a.outbound().unwrap().0, Some("127.0.0.1".parse().unwrap()));
        let e = serve(&["--outbound-addr", "no-such-if0"])
            .outbound()
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an IP address nor an interface"), "{e}");
        // TEST-NET-1 is no address of this host.
        let e = serve(&["--outbound-addr", "192.0.2.77"])
            .outbound()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not usable as a local address"), "{e}");
        let e = serve(&["--outbound-addr", "::1"])
            .outbound()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--outbound-addr6"), "{e}");
    }

    #[test]
    fn run_takes_serve_options_then_the_command_with_its_own_options() {
        let r = run(&["--mtu", "9000", "-p", "8080:80", "--", "sh", "-c", "exit 3"]);
        assert_eq!(r.serve.mtu, 9000);
        assert_eq!(r.serve.publish, vec!["8080:80"]);
        assert_eq!(r.command, vec!["sh", "-c", "exit 3"]);
        // Without `--`, everything from the command on is the command's, -v included.
        let r = run(&["--egress-allow", "127.0.0.0/8", "curl", "-v", "http://x/"]);
        assert_eq!(r.serve.egress_allow, vec!["127.0.0.0/8"]);
        assert_eq!(r.command, vec!["curl", "-v", "http://x/"]);
        assert_eq!(r.serve.verbose, 0);
        assert!(
            Cli::try_parse_from(["slipway", "run"]).is_err(),
            "a command is required"
        );
    }

    fn serve(args: &[&str]) -> ServeArgs {
        let mut v = vec!["slipway", "serve"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Serve(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn ipv6_options() {
        let cfg = |a: &[&str]| serve(a).network_config();
        let c = cfg(&[]).unwrap();
        assert_eq!(c.ipv6.unwrap().gateway.to_string(), "fd00:5119::1");
        assert!(cfg(&["--ipv6", "off"]).unwrap().ipv6.is_none());
        let c = cfg(&["--subnet6", "fd12:3456::/64", "--no-host-loopback"]).unwrap();
        let v6 = c.ipv6.unwrap();
        assert_eq!(v6.gateway.to_string(), "fd12:3456::1");
        assert_eq!(v6.host_loopback_alias, None);
        let e = |a: &[&str]| cfg(a).unwrap_err().to_string();
        assert!(e(&["--subnet6", "fd12::/48"]).contains("/64"));
        assert!(e(&["--subnet6", "fd12::"]).contains("--subnet6 fd12::"));
        assert!(e(&["--mtu", "1000"]).contains("at least 1280"));
        assert!(cfg(&["--mtu", "1000", "--ipv6", "off"]).is_ok());
    }

    #[test]
    fn busy_poll_has_a_default_can_be_turned_off_and_is_bounded() {
        assert_eq!(serve(&[]).busy_poll_us(), DEFAULT_BUSY_POLL_US);
        assert_eq!(serve(&["--busy-poll", "0"]).busy_poll_us(), 0);
        assert_eq!(ServeArgs::default().busy_poll_us(), DEFAULT_BUSY_POLL_US);
        assert_eq!(serve(&["--busy-poll", "50"]).busy_poll_us(), 50);
        let too_long = ["slipway", "serve", "--busy-poll", "5000"];
        let e = Cli::try_parse_from(too_long).err().unwrap().to_string();
        assert!(e.contains("5000"), "{e}");
    }

    #[test]
    fn bad_subnet_says_what_is_wrong() {
        let e = serve(&["--subnet", "300.1.2.3/24"])
            .network_config()
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--subnet 300.1.2.3/24: '300.1.2.3' is not an IP address");
        let e = serve(&["--subnet", "10.0.0.0/31"])
            .network_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("between /8 and /30"), "{e}");
        let e = serve(&["--mtu", "70000"])
            .network_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains("576 and 65521"), "{e}");
    }

    #[test]
    fn options_reach_the_config() {
        let a = serve(&[
            "--subnet",
            "10.0.2.0/24",
            "--mtu",
            "65520",
            "--no-host-loopback",
            "--egress-allow",
            "127.0.0.0/8",
            "--dns-record",
            "DB.Internal.=10.0.2.254",
            "--dns-upstream",
            "127.0.0.1:5353",
            "--dns-upstream",
            "::1",
            "--qemu",
            "/tmp/x",
        ]);
        let c = a.network_config().unwrap();
        assert_eq!(c.gateway.to_string(), "10.0.2.1");
        assert_eq!(c.mtu, 65520);
        assert_eq!(c.host_loopback_alias, None);
        assert_eq!(c.egress_allow.len(), 1);
        assert_eq!(
            c.dns_records,
            vec![("db.internal".to_string(), "10.0.2.254".parse().unwrap())]
        );
        assert_eq!(
            a.dns_upstreams().unwrap(),
            vec![
                "127.0.0.1:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(a.has_links());
        assert!(serve(&["--dns-record", "nonsense"])
            .network_config()
            .is_err());
        assert!(serve(&["--dns-upstream", "host:53"])
            .dns_upstreams()
            .is_err());
    }
}
