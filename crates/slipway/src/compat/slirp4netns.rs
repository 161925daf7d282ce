//! Drop-in for `slirp4netns`: its command line translated onto slipway's configuration
//! (ARCHITECTURE.md D6), so that rootlesskit and podman can use slipway by changing a binary
//! path. Invoked as `slirp4netns` (a symlink to slipway) or `slipway slirp4netns …`.
//!
//! `slirp4netns [OPTION]... PID|PATH TAPNAME`, options as getopt_long takes them: `-c`, `-e FD`,
//! `-eFD`, `--exit-fd FD`, `--exit-fd=FD`; short flags may be grouped (`-cr3`). slirp4netns's
//! plan comes with it: 10.0.2.0/24 (`--cidr`), the gateway 10.0.2.2 which is also the host's
//! loopback (unless `--disable-host-loopback`), DNS at 10.0.2.3, and with `--configure` the
//! namespace at 10.0.2.100 with `lo` up and a default route. Without `--configure` the TAP is
//! opened (an existing one too: rootlesskit creates `tap0` first) and left as it is.
//!
//! Process protocol, as slirp4netns: `--ready-fd FD` gets `1` written and is closed once the
//! network runs; slipway exits when `--exit-fd FD` becomes readable or is closed.
//!
//! What differs from slirp4netns, on purpose: forwarded connections keep the client's real
//! address (loopback clients appear as 10.0.2.2, as before), and the API socket is served on
//! its own thread, so a request never stalls traffic. Refused with a reason rather than
//! ignored: `--target-type=bess`. With `--enable-ipv6`, slirp4netns's IPv6 plan: fd00::/64,
//! the gateway (and host alias, reaching ::1) fd00::2, DNS fd00::3, the namespace configuring
//! itself from router advertisements (with `--configure`, slipway sets its SLAAC address and
//! default route at once); forwards may then target IPv6 too.

use crate::cli::ServeArgs;
use crate::netns::NetnsTarget;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// A slirp4netns command line, translated.
#[derive(Debug, Default)]
pub struct Slirp4netnsMode {
    pub serve: ServeArgs,
    /// `-h` or `-v`: print this and exit.
    pub print: Option<String>,
    pub target: Option<NetnsTarget>,
    /// `--userns-path`: join this user namespace before the network namespace.
    pub userns: Option<PathBuf>,
    pub tap: String,
    /// `-c`: bring up lo and the TAP, address .100, default route via .2.
    pub configure: bool,
    /// `--macaddress`.
    pub mac: Option<[u8; 6]>,
    pub exit_fd: Option<RawFd>,
    pub ready_fd: Option<RawFd>,
    pub api_socket: Option<PathBuf>,
    pub sandbox: bool,
    pub seccomp: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Slirp4netnsError {
    #[error("slirp4netns mode: unrecognized option '{0}' (see `slirp4netns --help`)")]
    UnknownOption(String),
    #[error("slirp4netns mode: option '{0}' requires an argument")]
    MissingValue(String),
    #[error("slirp4netns mode: option '{0}' takes no argument")]
    UnexpectedValue(String),
    #[error("slirp4netns mode: {option} {value}: {reason}")]
    BadValue {
        option: String,
        value: String,
        reason: String,
    },
    #[error("slirp4netns mode: {0}")]
    Unsupported(String),
    #[error("slirp4netns mode: {0} (usage: slirp4netns [OPTION]... PID|PATH TAPNAME)")]
    Usage(String),
}

/// slirp4netns's version this drop-in follows.
pub const SLIRP4NETNS_VERSION: &str = "1.2.0";

/// The options rootlesskit and podman detect features by (`--netns-type`, `--cidr`,
/// `--disable-host-loopback`, `--api-socket`, `--enable-sandbox`, `--enable-seccomp`, …) are
/// all named here, so those tools pass them.
const USAGE: &str = "\
Usage: slirp4netns [OPTION]... PID|PATH TAPNAME
User-mode networking for unprivileged network namespaces (slipway's drop-in).

-c, --configure          bring up the interface: 10.0.2.100/24, default route via 10.0.2.2,
                         lo up
-e, --exit-fd=FD         exit when FD becomes readable or is closed
-r, --ready-fd=FD        write '1' to FD and close it once the network runs
-m, --mtu=MTU            MTU (default 1500, max 65521)
-6, --enable-ipv6        enable IPv6: fd00::/64, gateway and host fd00::2, DNS fd00::3
-a, --api-socket=PATH    the JSON API socket (add_hostfwd, list_hostfwd, remove_hostfwd)
--cidr=CIDR              the network (default 10.0.2.0/24): .2 gateway and host, .3 DNS,
                         .100 the namespace
--disable-host-loopback  10.0.2.2 does not reach the host's 127.0.0.1
--netns-type=TYPE        what PID|PATH is: pid (default) or path
--userns-path=PATH       join this user namespace first
--enable-sandbox         after start-up, live in a new mount namespace holding only /etc and
                         /run, with capabilities dropped
--enable-seccomp         after start-up, refuse system calls slipway never needs
--outbound-addr=ADDR     outgoing connections leave from this IPv4 address (or interface)
--outbound-addr6=ADDR    the same for IPv6
--disable-dns            no DNS service at 10.0.2.3
--macaddress=MAC         the interface's MAC address (with --configure)
--target-type=TYPE       netns (default); bess is not supported by slipway
-h, --help               show this help and exit
-v, --version            show the version and exit

Forwarded connections keep the client's address; loopback clients appear as 10.0.2.2.
";

/// Options that take a value, by long name; and their short letters.
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("exit-fd", Some('e')),
    ("ready-fd", Some('r')),
    ("mtu", Some('m')),
    ("api-socket", Some('a')),
    ("cidr", None),
    ("netns-type", None),
    ("userns-path", None),
    ("outbound-addr", None),
    ("outbound-addr6", None),
    ("macaddress", None),
    ("target-type", None),
];
const FLAGS: &[(&str, Option<char>)] = &[
    ("configure", Some('c')),
    ("enable-ipv6", Some('6')),
    ("disable-host-loopback", None),
    ("enable-sandbox", None),
    ("enable-seccomp", None),
    ("disable-dns", None),
    ("help", Some('h')),
    ("version", Some('v')),
];

/// Split the command line into (long option name, value) pairs and positionals.
#[allow(clippy::type_complexity)]
fn getopt(
    args: &[String],
) -> Result<(Vec<(String, Option<String>)>, Vec<String>), Slirp4netnsError> {
    let mut opts = Vec::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            positional.extend(it.by_ref().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if WITH_VALUE.iter().any(|(n, _)| *n == name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Slirp4netnsError::MissingValue(format!("--{name}")))?,
                };
                opts.push((name.to_string(), Some(v)));
            } else if FLAGS.iter().any(|(n, _)| *n == name) {
                if inline.is_some() {
                    return Err(Slirp4netnsError::UnexpectedValue(format!("--{name}")));
                }
                opts.push((name.to_string(), None));
            } else {
                return Err(Slirp4netnsError::UnknownOption(arg.clone()));
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let letters: Vec<char> = arg[1..].chars().collect();
            let mut i = 0;
            while i < letters.len() {
                let c = letters[i];
                if let Some((name, _)) = WITH_VALUE.iter().find(|(_, s)| *s == Some(c)) {
                    let rest: String = letters[i + 1..].iter().collect();
                    let v = if rest.is_empty() {
                        it.next()
                            .cloned()
                            .ok_or_else(|| Slirp4netnsError::MissingValue(format!("-{c}")))?
                    } else {
                        rest
                    };
                    opts.push((name.to_string(), Some(v)));
                    break;
                } else if let Some((name, _)) = FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                    opts.push((name.to_string(), None));
                    i += 1;
                } else {
                    return Err(Slirp4netnsError::UnknownOption(format!("-{c}")));
                }
            }
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((opts, positional))
}

fn parse_fd(option: &str, value: &str) -> Result<RawFd, Slirp4netnsError> {
    value
        .parse::<RawFd>()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| Slirp4netnsError::BadValue {
            option: option.to_string(),
            value: value.to_string(),
            reason: "expected a file descriptor number".into(),
        })
}

/// Translate slirp4netns's arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Slirp4netnsMode, Slirp4netnsError> {
    let mut mode = Slirp4netnsMode::default();
    let s = &mut mode.serve;
    s.slirp4netns_plan = true;
    s.subnet = "10.0.2.0/24".into();
    s.mtu = 1500;
    s.ipv6 = "off".into();
    s.apply_env();
    let (opts, positional) = getopt(args)?;
    let mut netns_type = "pid".to_string();
    for (name, value) in opts {
        let v = value.unwrap_or_default();
        let bad = |reason: &str| Slirp4netnsError::BadValue {
            option: format!("--{name}"),
            value: v.clone(),
            reason: reason.to_string(),
        };
        match name.as_str() {
            "help" => {
                mode.print = Some(USAGE.to_string());
                return Ok(mode);
            }
            "version" => {
                mode.print = Some(format!(
                    "slirp4netns version {SLIRP4NETNS_VERSION}\nslipway: {}\n",
                    env!("CARGO_PKG_VERSION")
                ));
                return Ok(mode);
            }
            "configure" => mode.configure = true,
            "exit-fd" => mode.exit_fd = Some(parse_fd("--exit-fd", &v)?),
            "ready-fd" => mode.ready_fd = Some(parse_fd("--ready-fd", &v)?),
            "mtu" => {
                let mtu: u32 = v.parse().map_err(|_| bad("expected a number"))?;
                if !(576..=65521).contains(&mtu) {
                    return Err(bad("must be between 576 and 65521"));
                }
                mode.serve.mtu = mtu;
            }
            "api-socket" => mode.api_socket = Some(PathBuf::from(&v)),
            "cidr" => mode.serve.subnet = v.clone(),
            "netns-type" => match v.as_str() {
                "pid" | "path" => netns_type = v.clone(),
                _ => return Err(bad("expected pid or path")),
            },
            "userns-path" => mode.userns = Some(PathBuf::from(&v)),
            "macaddress" => {
                mode.mac = Some(
                    crate::cli::parse_mac(&v)
                        .filter(|m| m[0] & 1 == 0 && *m != [0; 6])
                        .ok_or_else(|| bad("expected a unicast MAC such as 02:00:00:00:00:01"))?,
                )
            }
            "disable-host-loopback" => mode.serve.no_host_loopback = true,
            "disable-dns" => mode.serve.disable_dns = true,
            "enable-sandbox" => mode.sandbox = true,
            "enable-seccomp" => mode.seccomp = true,
            "enable-ipv6" => mode.serve.ipv6 = "on".into(),
            "outbound-addr" => mode.serve.outbound_addr = Some(v.clone()),
            "outbound-addr6" => mode.serve.outbound_addr6 = Some(v.clone()),
            "target-type" => match v.as_str() {
                "netns" => {}
                "bess" => {
                    return Err(Slirp4netnsError::Unsupported(
                        "--target-type=bess: use `slipway serve --bess PATH` for a BESS guest"
                            .into(),
                    ))
                }
                _ => return Err(bad("expected netns or bess")),
            },
            _ => unreachable!("getopt returns only known options"),
        }
    }
    let [target, tap] = positional.as_slice() else {
        return Err(Slirp4netnsError::Usage(format!(
            "expected PID|PATH and TAPNAME, got {} argument(s)",
            positional.len()
        )));
    };
    mode.target = Some(if netns_type == "pid" {
        let pid = target
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Slirp4netnsError::BadValue {
                option: "PID".into(),
                value: target.clone(),
                reason: "expected a process ID (give --netns-type=path for a namespace file)"
                    .into(),
            })?;
        NetnsTarget::Pid(pid)
    } else {
        NetnsTarget::Path(PathBuf::from(target))
    });
    crate::netns::validate_tap_name(tap).map_err(|e| Slirp4netnsError::BadValue {
        option: "TAPNAME".into(),
        value: tap.clone(),
        reason: e.to_string(),
    })?;
    mode.tap = tap.clone();
    if mode.userns.is_none() {
        if let Some(NetnsTarget::Pid(pid)) = mode.target {
            // slirp4netns joins the target's user namespace; slipway does when it has to.
            mode.userns = Some(PathBuf::from(format!("/proc/{pid}/ns/user")));
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Slirp4netnsMode, Slirp4netnsError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn rootlesskits_command_line() {
        // rootlesskit: --mtu 65520 -r 3 [--disable-host-loopback] [--cidr] [--api-socket] PID tap0
        let m = p(&[
            "--mtu",
            "65520",
            "-r",
            "3",
            "--disable-host-loopback",
            "--api-socket",
            "/tmp/s.sock",
            "1234",
            "tap0",
        ])
        .unwrap();
        assert_eq!(m.serve.mtu, 65520);
        assert_eq!(m.ready_fd, Some(3));
        assert!(m.serve.no_host_loopback);
        assert_eq!(m.api_socket, Some(PathBuf::from("/tmp/s.sock")));
        assert_eq!(m.target, Some(NetnsTarget::Pid(1234)));
        assert_eq!(m.userns, Some(PathBuf::from("/proc/1234/ns/user")));
        assert_eq!(m.tap, "tap0");
        assert!(!m.configure);
        let cfg = m.serve.network_config().unwrap();
        assert_eq!(cfg.gateway.to_string(), "10.0.2.2");
        assert_eq!(cfg.dns_server.to_string(), "10.0.2.3");
        assert_eq!(cfg.host_loopback_alias, None);
        assert_eq!(cfg.slirp_guest().to_string(), "10.0.2.100");
    }

    #[test]
    fn podmans_command_line() {
        let m = p(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--netns-type=path",
            "/run/user/1000/netns/x",
            "tap0",
        ])
        .unwrap();
        assert!(m.configure && m.sandbox && m.seccomp);
        assert_eq!((m.ready_fd, m.exit_fd), (Some(3), Some(4)));
        assert_eq!(
            m.target,
            Some(NetnsTarget::Path("/run/user/1000/netns/x".into()))
        );
        assert_eq!(
            m.userns, None,
            "path mode joins no user namespace by default"
        );
    }

    #[test]
    fn short_options_group_and_attach() {
        let m = p(&["-cr3", "-e4", "-m1400", "99", "eth0"]).unwrap();
        assert!(m.configure);
        assert_eq!(
            (m.ready_fd, m.exit_fd, m.serve.mtu),
            (Some(3), Some(4), 1400)
        );
        let m = p(&[
            "--cidr=10.8.0.0/24",
            "--macaddress",
            "02:11:22:33:44:55",
            "9",
            "tap1",
        ])
        .unwrap();
        let cfg = m.serve.network_config().unwrap();
        assert_eq!(cfg.gateway.to_string(), "10.8.0.2");
        assert_eq!(cfg.host_loopback_alias.unwrap().to_string(), "10.8.0.2");
        assert_eq!(m.mac, Some([2, 0x11, 0x22, 0x33, 0x44, 0x55]));
    }

    #[test]
    fn help_names_what_rootlesskit_detects() {
        let help = p(&["--help"]).unwrap().print.unwrap();
        for o in [
            "--netns-type",
            "--cidr",
            "--disable-host-loopback",
            "--api-socket",
            "--enable-sandbox",
            "--enable-seccomp",
            "--mtu",
            "--ready-fd",
            "--exit-fd",
        ] {
            assert!(help.contains(o), "{o} missing from --help");
        }
        assert!(p(&["-v"])
            .unwrap()
            .print
            .unwrap()
            .starts_with("slirp4netns version "));
    }

    #[test]
    fn mistakes_and_unsupported_options_are_refused_with_a_reason() {
        let e = |args: &[&str]| p(args).unwrap_err().to_string();
        assert!(e(&["--frobnicate", "1", "tap0"]).contains("unrecognized option '--frobnicate'"));
        assert!(e(&["-x", "1", "tap0"]).contains("unrecognized option '-x'"));
        assert!(e(&["--mtu"]).contains("requires an argument"));
        assert!(e(&["--mtu", "70000", "1", "tap0"]).contains("between 576 and 65521"));
        assert!(e(&["1"]).contains("expected PID|PATH and TAPNAME"));
        assert!(e(&["abc", "tap0"]).contains("expected a process ID"));
        assert!(e(&["1", "much-too-long-name0"]).contains("TAPNAME"));
        assert_eq!(p(&["1", "tap0"]).unwrap().serve.ipv6, "off");
        let v6 = p(&["-6", "1", "tap0"]).unwrap().serve;
        assert_eq!(v6.ipv6, "on");
        let cfg = v6.network_config().unwrap().ipv6.unwrap();
        assert_eq!(cfg.gateway.to_string(), "fd00::2");
        assert_eq!(cfg.dns_server.to_string(), "fd00::3");
        let m = p(&["--outbound-addr=lo", "--outbound-addr6", "::1", "1", "tap0"]).unwrap();
        assert_eq!(m.serve.outbound_addr.as_deref(), Some("lo"));
        assert_eq!(m.serve.outbound_addr6.as_deref(), Some("::1"));
        assert!(e(&["--target-type=bess", "/x", "tap0"]).contains("--bess"));
        assert!(e(&["--configure=yes", "1", "tap0"]).contains("takes no argument"));
        let cidr = p(&["--cidr", "10.0.2.0/26", "1", "tap0"]).unwrap();
        assert!(cidr
            .serve
            .network_config()
            .unwrap_err()
            .to_string()
            .contains(".100"));
    }
}
