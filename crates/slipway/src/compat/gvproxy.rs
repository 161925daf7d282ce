//! Drop-in for gvisor-tap-vsock's `gvproxy`: its command line translated onto `slipway serve`
//! (ARCHITECTURE.md D6), so that podman machine, CRC or Lima can use slipway by changing a
//! binary path. Invoked as `gvproxy` (a symlink to slipway) or `slipway gvproxy …`.
//!
//! Flags follow Go's `flag` package: `-name value`, `-name=value`, `--name …`; booleans as `-debug`
//! or `-debug=true`. Endpoints are URLs: `unix:///path` for `-listen`, `-listen-qemu`,
//! `-listen-vpnkit`, `-services`; `unixgram:///path` for `-listen-vfkit`; `unixpacket:///path`
//! for `-listen-bess`; `-listen-stdio accept`. gvproxy's defaults come with it: the network
//! 192.168.127.0/24 (gateway and DNS .1, host loopback at .254), the static lease 192.168.127.2
//! for 5a:94:ef:e4:0c:ee, and `-ssh-port 2222` forwarding 127.0.0.1:2222 to the guest's port 22
//! (`-1` turns it off), and its forwarder API served to guests at http://192.168.127.1:80.
//!
//! Not supported, refused with a message rather than ignored: TCP and vsock endpoints,
//! `-forward-sock`/`-forward-dest`/`-forward-user`/`-forward-identity` (forwarding over SSH).

use crate::cli::ServeArgs;
use std::path::PathBuf;

/// The MAC gvproxy's static lease 192.168.127.2 belongs to.
pub const GVPROXY_GUEST_MAC: &str = "5a:94:ef:e4:0c:ee";

/// A gvproxy command line, translated.
#[derive(Debug, Default)]
pub struct GvproxyMode {
    pub serve: ServeArgs,
    /// `-pid-file`: written at start, removed at exit.
    pub pid_file: Option<PathBuf>,
    /// `-log-file`: logs go there instead of stderr.
    pub log_file: Option<PathBuf>,
    /// `-help` or `-version` was asked for: print this and exit.
    pub print: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GvproxyError {
    #[error("gvproxy mode: flag provided but not defined: -{0} (see `gvproxy -help`)")]
    UnknownFlag(String),
    #[error("gvproxy mode: flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("gvproxy mode: -{flag} {value}: {reason}")]
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("gvproxy mode: -{0} (forwarding a socket over SSH) is not supported by slipway; publish the port with -p, the API's /services/forwarder/expose, or slipway's unix forwards instead")]
    Unsupported(String),
    #[error("gvproxy mode: unexpected argument '{0}' (gvproxy takes flags only)")]
    Positional(String),
}

const USAGE: &str = "\
Usage of gvproxy (slipway's drop-in):
  -listen URL          HTTP API endpoint (unix:///path; repeatable)
  -services URL        the same HTTP API (unix:///path)
  -listen-qemu URL     QEMU stream socket (unix:///path)
  -listen-vfkit URL    vfkit datagram socket (unixgram:///path)
  -listen-vpnkit URL   vpnkit/hyperkit socket (unix:///path)
  -listen-bess URL     BESS seqpacket socket (unixpacket:///path)
  -listen-stdio accept one guest on stdin/stdout
  -mtu N               link MTU (default 1500)
  -ssh-port N          host port forwarded to the guest's port 22 (default 2222, -1 off)
  -pcap FILE           capture every frame to FILE
  -pid-file FILE       write the process id to FILE
  -log-file FILE       log to FILE
  -debug               debug logging
Network: 192.168.127.0/24, gateway .1, host loopback .254, 192.168.127.2 for 5a:94:ef:e4:0c:ee.
";

/// The path of a `SCHEME:///path` endpoint whose scheme is one of `schemes`.
fn endpoint(flag: &str, value: &str, schemes: &[&str]) -> Result<PathBuf, GvproxyError> {
    let bad = |reason: String| GvproxyError::BadValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason,
    };
    let (scheme, rest) = value
        .split_once("://")
        .ok_or_else(|| bad(format!("expected {}:///PATH", schemes[0])))?;
    if !schemes.contains(&scheme) {
        return Err(bad(format!(
            "slipway serves this endpoint only as {}:///PATH (not {scheme}://)",
            schemes.join(":// or ")
        )));
    }
    if rest.is_empty() {
        return Err(bad("the socket path is empty".into()));
    }
    Ok(PathBuf::from(rest))
}

/// Translate gvproxy's arguments (without the program name).
pub fn parse(args: &[String]) -> Result<GvproxyMode, GvproxyError> {
    let mut mode = GvproxyMode::default();
    let s = &mut mode.serve;
    s.subnet = "192.168.127.0/24".into();
    s.mtu = 1500;
    s.tap_name = "tap0".into();
    s.static_lease = vec![format!("{GVPROXY_GUEST_MAC}=192.168.127.2")];
    // gvproxy serves its forwarder paths to guests at 192.168.127.1:80.
    s.guest_api = true;
    s.apply_env();
    let mut ssh_port: i64 = 2222;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(GvproxyError::Positional(arg.clone()));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.to_string(), None),
        };
        let boolean = matches!(name.as_str(), "debug" | "help" | "h" | "version");
        if boolean {
            let on = match inline.as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(v) => {
                    return Err(GvproxyError::BadValue {
                        flag: name,
                        value: v.into(),
                        reason: "expected true or false".into(),
                    })
                }
            };
            match name.as_str() {
                "debug" if on => s.verbose = 2,
                "help" | "h" if on => mode.print = Some(USAGE.to_string()),
                "version" if on => {
                    mode.print = Some(format!(
                        "gvproxy (slipway {}) drop-in\n",
                        env!("CARGO_PKG_VERSION")
                    ))
                }
                _ => {}
            }
            continue;
        }
        const VALUED: &[&str] = &[
            "listen",
            "services",
            "listen-qemu",
            "listen-vfkit",
            "listen-vpnkit",
            "listen-bess",
            "listen-stdio",
            "mtu",
            "ssh-port",
            "pcap",
            "pid-file",
            "log-file",
            "forward-sock",
            "forward-dest",
            "forward-user",
            "forward-identity",
        ];
        if !VALUED.contains(&name.as_str()) {
            return Err(GvproxyError::UnknownFlag(name));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| GvproxyError::MissingValue(name.clone()))?,
        };
        let number = |v: &str| -> Result<i64, GvproxyError> {
            v.parse().map_err(|_| GvproxyError::BadValue {
                flag: name.clone(),
                value: v.to_string(),
                reason: "not a number".into(),
            })
        };
        match name.as_str() {
            "listen" | "services" => {
                let p = endpoint(&name, &value, &["unix"])?;
                if s.api.is_some() && s.api.as_ref() != Some(&p) {
                    return Err(GvproxyError::BadValue {
                        flag: name,
                        value,
                        reason: "slipway serves one API socket; give -listen/-services once".into(),
                    });
                }
                s.api = Some(p);
            }
            "listen-qemu" => {
                s.qemu.push(endpoint(&name, &value, &["unix"])?);
                // gvproxy frames /connect links like its QEMU listener then.
                s.connect_be32 = true;
            }
            "listen-vfkit" => s.dgram.push(endpoint(&name, &value, &["unixgram"])?),
            "listen-vpnkit" => s.vpnkit.push(endpoint(&name, &value, &["unix"])?),
            "listen-bess" => s.bess.push(endpoint(&name, &value, &["unixpacket"])?),
            "listen-stdio" => {
                if value != "accept" {
                    return Err(GvproxyError::BadValue {
                        flag: name,
                        value,
                        reason: "the only value is 'accept'".into(),
                    });
                }
                s.stdio = true;
            }
            "mtu" => {
                let n = number(&value)?;
                s.mtu = u32::try_from(n).map_err(|_| GvproxyError::BadValue {
                    flag: name.clone(),
                    value: value.clone(),
                    reason: "not an MTU".into(),
                })?;
            }
            "ssh-port" => ssh_port = number(&value)?,
            "pcap" => s.pcap = Some(PathBuf::from(value)),
            "pid-file" => mode.pid_file = Some(PathBuf::from(value)),
            "log-file" => mode.log_file = Some(PathBuf::from(value)),
            "forward-sock" | "forward-dest" | "forward-user" | "forward-identity" => {
                return Err(GvproxyError::Unsupported(name))
            }
            _ => return Err(GvproxyError::UnknownFlag(name)),
        }
    }
    match ssh_port {
        -1 => {}
        1..=65535 => s.publish.push(format!("127.0.0.1:{ssh_port}:22")),
        _ => {
            return Err(GvproxyError::BadValue {
                flag: "ssh-port".into(),
                value: ssh_port.to_string(),
                reason: "a port 1-65535, or -1 for none".into(),
            })
        }
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn podman_machine_command_line() {
        let m = parse(&args(&[
            "-debug",
            "-mtu",
            "65520",
            "-ssh-port",
            "40123",
            "-listen-qemu",
            "unix:///run/vm/qemu.sock",
            "--listen=unix:///run/vm/api.sock",
            "-pid-file",
            "/run/vm/gvproxy.pid",
            "-log-file=/run/vm/gvproxy.log",
        ]))
        .unwrap();
        let s = &m.serve;
        assert_eq!(s.verbose, 2);
        assert_eq!(s.mtu, 65520);
        assert_eq!(s.qemu, vec![PathBuf::from("/run/vm/qemu.sock")]);
        assert_eq!(s.api, Some(PathBuf::from("/run/vm/api.sock")));
        assert_eq!(s.publish, vec!["127.0.0.1:40123:22".to_string()]);
        assert_eq!(m.pid_file, Some(PathBuf::from("/run/vm/gvproxy.pid")));
        assert_eq!(m.log_file, Some(PathBuf::from("/run/vm/gvproxy.log")));
        let cfg = s.network_config().unwrap();
        assert_eq!(cfg.gateway.to_string(), "192.168.127.1");
        assert_eq!(
            cfg.static_leases,
            vec![(
                [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee],
                "192.168.127.2".parse().unwrap()
            )]
        );
        assert_eq!(
            cfg.host_loopback_alias,
            Some("192.168.127.254".parse().unwrap())
        );
    }

    #[test]
    fn defaults_and_other_links() {
        let m = parse(&args(&[
            "-listen-vfkit",
            "unixgram:///tmp/v.sock",
            "-listen-bess",
            "unixpacket:///tmp/b.sock",
            "-listen-vpnkit",
            "unix:///tmp/k.sock",
            "-listen-stdio",
            "accept",
            "-ssh-port",
            "-1",
        ]))
        .unwrap();
        assert_eq!(m.serve.dgram, vec![PathBuf::from("/tmp/v.sock")]);
        assert_eq!(m.serve.bess, vec![PathBuf::from("/tmp/b.sock")]);
        assert_eq!(m.serve.vpnkit, vec![PathBuf::from("/tmp/k.sock")]);
        assert!(m.serve.stdio && m.serve.publish.is_empty());
        assert_eq!(
            parse(&[]).unwrap().serve.publish,
            vec!["127.0.0.1:2222:22".to_string()]
        );
        assert!(parse(&args(&["-help"])).unwrap().print.is_some());
    }

    #[test]
    fn refusals_say_why() {
        let e = |v: &[&str]| parse(&args(v)).unwrap_err().to_string();
        assert!(e(&["-forward-sock", "/x"]).contains("not supported by slipway"));
        assert!(e(&["-listen", "tcp://127.0.0.1:7777"]).contains("only as unix:///PATH"));
        assert!(e(&["-listen", "vsock://:1024"]).contains("not vsock://"));
        assert!(e(&["-nonsense"]).contains("flag provided but not defined: -nonsense"));
        assert!(e(&["-mtu"]).contains("needs an argument"));
        assert!(e(&["-ssh-port", "70000"]).contains("-1 for none"));
        assert!(e(&["stray"]).contains("unexpected argument"));
        assert!(e(&["-listen-stdio", "yes"]).contains("only value is 'accept'"));
    }
}
