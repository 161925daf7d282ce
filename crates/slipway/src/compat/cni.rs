//! A CNI plugin (spec 1.0.0) for a network of `"type": "slipway"`: runtimes run the executable
//! named like the type, so `slipway` itself in CNI_PATH (with no arguments and `CNI_COMMAND`
//! set), or explicitly `slipway-cni` (a symlink) or `slipway cni`.
//!
//! # Theory of operation
//!
//! A runtime runs the plugin once per operation, with `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME` (and `CNI_ARGS`, `CNI_PATH`) in the environment and the network
//! configuration as JSON on stdin; the plugin answers with a result or an error object on stdout.
//!
//! - `ADD` starts a supervisor (`slipway __cni-supervise DIR -- serve …`, its own session, stdio
//!   detached) that runs `slipway serve --netns CNI_NETNS --tap-name CNI_IFNAME …` and restarts it
//!   if it fails (at most [`MAX_RESTARTS`] times a minute), and stops when DEL asks or the
//!   namespace file disappears. The plugin waits until the network runs (serve's `--ready-fd`)
//!   and prints the result: the interface (name, MAC, sandbox), its address (the network's first
//!   guest, `.2`), the default route and DNS (the gateway). State lives in one directory per
//!   attachment under `stateDir` (default [`DEFAULT_STATE_DIR`]): the supervisor's PID, the
//!   API socket, the log and the result.
//! - `DEL` stops the supervisor (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and removes the
//!   directory. Nothing to delete is success: DEL is idempotent.
//! - `CHECK` checks that the supervisor runs, its API answers and the namespace exists.
//! - `VERSION` lists the supported versions.
//!
//! Configuration keys beyond the spec's: `mtu`, `subnet`, `subnet6` (the IPv6 /64; the result
//! then also holds the interface's IPv6 address and route), `ipv6` (false: IPv4 only),
//! `egressAllow` (CIDR list),
//! `disableHostLoopback`, `dnsUpstreams` (list of ADDR[:PORT]), `stateDir`, and the
//! `portMappings` capability (`runtimeConfig.portMappings`: hostPort, containerPort, protocol,
//! hostIP) published with slipway's forwards, which keep the client's address.
//!
//! Errors are the spec's error object (`cniVersion`, `code`, `msg`, `details`) with exit status 1:
//! 1 incompatible version, 4 bad environment, 5 I/O, 6 undecodable JSON, 7 bad configuration,
//! 100 (plugin-specific) the container already has this interface.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where attachments keep their state by default.
pub const DEFAULT_STATE_DIR: &str = "/run/slipway/cni";
/// Versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0"];
/// The supervisor gives up after this many restarts within a minute.
pub const MAX_RESTARTS: usize = 5;
/// How long DEL waits for the supervisor before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long ADD waits for the network to run.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A CNI error: the spec's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const BAD_ENVIRONMENT: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODING_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const ALREADY_ATTACHED: u32 = 100;

/// The operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Del,
    Check,
    Version,
}

/// The CNI_* environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Operation,
    pub container_id: String,
    /// Absent is allowed for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
}

/// Read the CNI_* variables through `get` (std::env::var in the binary).
pub fn environment(get: impl Fn(&str) -> Option<String>) -> Result<Environment, CniError> {
    let bad = |msg: String| CniError::new(BAD_ENVIRONMENT, msg, "");
    let command = match get("CNI_COMMAND").as_deref() {
        Some("ADD") => Operation::Add,
        Some("DEL") => Operation::Del,
        Some("CHECK") => Operation::Check,
        Some("VERSION") => Operation::Version,
        Some(other) => {
            return Err(bad(format!(
                "unknown CNI_COMMAND {other:?}: expected ADD, DEL, CHECK or VERSION"
            )))
        }
        None => {
            return Err(bad(
                "CNI_COMMAND is not set: this is a CNI plugin, run by a container runtime".into(),
            ))
        }
    };
    if command == Operation::Version {
        return Ok(Environment {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
        });
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    if container_id.is_empty()
        || !container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad(format!(
            "CNI_CONTAINERID {container_id:?}: must be non-empty letters, digits, '-', '_' or '.'"
        )));
    }
    let netns = get("CNI_NETNS")
        .filter(|n| !n.is_empty())
        .map(PathBuf::from);
    if netns.is_none() && command != Operation::Del {
        return Err(bad(
            "CNI_NETNS is not set: give the network namespace's path".into(),
        ));
    }
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    crate::netns::validate_tap_name(&ifname)
        .map_err(|e| bad(format!("CNI_IFNAME {ifname:?}: {e}")))?;
    Ok(Environment {
        command,
        container_id,
        netns,
        ifname,
    })
}

/// One `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub udp: bool,
    pub host_ip: Option<String>,
}

/// The network configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub mtu: Option<u32>,
    pub subnet: Option<String>,
    /// `subnet6` (the IPv6 /64) and `ipv6` (default true).
    pub subnet6: Option<String>,
    pub ipv6: bool,
    pub egress_allow: Vec<String>,
    pub disable_host_loopback: bool,
    pub dns_upstreams: Vec<String>,
    pub state_dir: PathBuf,
    pub port_mappings: Vec<PortMapping>,
}

/// Parse the configuration from stdin.
pub fn netconf(bytes: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        CniError::new(
            DECODING_FAILURE,
            "the network configuration is not JSON",
            e.to_string(),
        )
    })?;
    let invalid = |msg: String| CniError::new(INVALID_CONFIG, msg, "");
    let obj = v
        .as_object()
        .ok_or_else(|| invalid("the network configuration must be a JSON object".into()))?;
    let string = |key: &str| obj.get(key).and_then(Value::as_str).map(String::from);
    let cni_version =
        string("cniVersion").ok_or_else(|| invalid("cniVersion is missing".into()))?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("cniVersion {cni_version} is not supported"),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let name = string("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("name is missing".into()))?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(format!(
            "name {name:?}: letters, digits, '-', '_' or '.' only"
        )));
    }
    match string("type").as_deref() {
        Some("slipway") => {}
        Some(other) => {
            return Err(invalid(format!(
                "type \"{other}\": this plugin serves \"slipway\""
            )))
        }
        None => {
            return Err(invalid(
                "type is missing (this plugin serves \"slipway\")".into(),
            ))
        }
    }
    let mtu = match obj.get("mtu") {
        None | Some(Value::Null) => None,
        Some(m) => Some(
            m.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| invalid("mtu must be a number".into()))?,
        ),
    };
    let list = |key: &str| -> Result<Vec<String>, CniError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid(format!("{key} must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(invalid(format!("{key} must be a list of strings"))),
        }
    };
    let disable_host_loopback = match obj.get("disableHostLoopback") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("disableHostLoopback must be true or false".into())),
    };
    let ipv6 = match obj.get("ipv6") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("ipv6 must be true or false".into())),
    };
    let mut port_mappings = Vec::new();
    if let Some(pm) = obj.get("runtimeConfig").and_then(|r| r.get("portMappings")) {
        let entries = pm
            .as_array()
            .ok_or_else(|| invalid("runtimeConfig.portMappings must be a list".into()))?;
        for e in entries {
            let port = |key: &str| {
                e.get(key)
                    .and_then(Value::as_u64)
                    .filter(|p| (1..=65535).contains(p))
                    .map(|p| p as u16)
                    .ok_or_else(|| invalid(format!("portMappings: {key} must be a port 1-65535")))
            };
            let udp = match e.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
                "tcp" | "TCP" => false,
                "udp" | "UDP" => true,
                p => return Err(invalid(format!("portMappings: protocol {p:?}: tcp or udp"))),
            };
            port_mappings.push(PortMapping {
                host_port: port("hostPort")?,
                container_port: port("containerPort")?,
                udp,
                host_ip: e
                    .get("hostIP")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            });
        }
    }
    Ok(NetConf {
        cni_version,
        name,
        mtu,
        subnet: string("subnet"),
        subnet6: string("subnet6"),
        ipv6,
        egress_allow: list("egressAllow")?,
        disable_host_loopback,
        dns_upstreams: list("dnsUpstreams")?,
        state_dir: string("stateDir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        port_mappings,
    })
}

/// The attachment's state directory.
pub fn attachment_dir(conf: &NetConf, env: &Environment) -> PathBuf {
    conf.state_dir
        .join(format!("{}-{}-{}", conf.name, env.container_id, env.ifname))
}

/// `slipway serve` arguments for an attachment, and the address plan it gets.
#[derive(Debug)]
pub struct Plan {
    pub serve_args: Vec<String>,
    pub mac: [u8; 6],
    pub config: slipway_core::NetworkConfig,
}

/// Build the serve command line (validated by parsing it as `serve` would).
pub fn plan(conf: &NetConf, env: &Environment, dir: &Path, mac: [u8; 6]) -> Result<Plan, CniError> {
    use clap::Parser;
    let invalid =
        |e: String| CniError::new(INVALID_CONFIG, "invalid slipway network configuration", e);
    let netns = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::new(BAD_ENVIRONMENT, "CNI_NETNS is not set", ""))?;
    let mut a: Vec<String> = vec![
        "serve".into(),
        "--netns".into(),
        netns.display().to_string(),
        "--tap-name".into(),
        env.ifname.clone(),
        "--tap-mac".into(),
        crate::api::format_mac(&mac),
        "--api".into(),
        dir.join("api.sock").display().to_string(),
    ];
    if let Some(m) = conf.mtu {
        a.extend(["--mtu".into(), m.to_string()]);
    }
    if let Some(s) = &conf.subnet {
        a.extend(["--subnet".into(), s.clone()]);
    }
    if let Some(s) = &conf.subnet6 {
        a.extend(["--subnet6".into(), s.clone()]);
    }
    if !conf.ipv6 {
        a.extend(["--ipv6".into(), "off".into()]);
    }
    for e in &conf.egress_allow {
        a.extend(["--egress-allow".into(), e.clone()]);
    }
    for d in &conf.dns_upstreams {
        a.extend(["--dns-upstream".into(), d.clone()]);
    }
    if conf.disable_host_loopback {
        a.push("--no-host-loopback".into());
    }
    for pm in &conf.port_mappings {
        let host = match &pm.host_ip {
            Some(ip) if ip.contains(':') => format!("[{ip}]:"),
            Some(ip) => format!("{ip}:"),
            None => String::new(),
        };
        let proto = if pm.udp { "/udp" } else { "" };
        a.extend([
            "-p".into(),
            format!("{host}{}:{}{proto}", pm.host_port, pm.container_port),
        ]);
    }
    let cli = crate::cli::Cli::try_parse_from(
        std::iter::once("slipway".to_string()).chain(a.iter().cloned()),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let crate::cli::Command::Serve(serve) = cli.command else {
        return Err(invalid("not a serve command line".into()));
    };
    let config = serve.network_config().map_err(|e| invalid(e.to_string()))?;
    serve.forwards().map_err(|e| invalid(e.to_string()))?;
    Ok(Plan {
        serve_args: a,
        mac,
        config,
    })
}

/// The ADD result in the configuration's version.
pub fn result(conf: &NetConf, env: &Environment, plan: &Plan, search: &[String]) -> Value {
    let cfg = &plan.config;
    let address = format!("{}/{}", cfg.pool_start, cfg.prefix);
    let mut ip = json!({
        "address": address,
        "gateway": cfg.gateway.to_string(),
        "interface": 0,
    });
    if conf.cni_version == "0.4.0" {
        ip["version"] = json!("4");
    }
    let mut ips = vec![ip];
    let mut routes = vec![json!({ "dst": "0.0.0.0/0", "gw": cfg.gateway.to_string() })];
    if let Some(v6) = &cfg.ipv6 {
        // serve --netns gives the interface its SLAAC address at once.
        let address6 = slipway_wire::ipv6::eui64_address(v6.prefix, plan.mac);
        let mut ip6 = json!({
            "address": format!("{address6}/64"),
            "gateway": cfg.gateway_link_local().to_string(),
            "interface": 0,
        });
        if conf.cni_version == "0.4.0" {
            ip6["version"] = json!("6");
        }
        ips.push(ip6);
        routes.push(json!({ "dst": "::/0", "gw": cfg.gateway_link_local().to_string() }));
    }
    let mut dns = json!({ "nameservers": [cfg.dns_server.to_string()] });
    if !search.is_empty() {
        dns["search"] = json!(search);
    }
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": [{
            "name": env.ifname,
            "mac": crate::api::format_mac(&plan.mac),
            "sandbox": env.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        }],
        "ips": ips,
        "routes": routes,
        "dns": dns,
    })
}

/// The VERSION answer.
pub fn version_result(version: &str) -> Value {
    json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> Result<Environment, CniError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        environment(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/t1"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn environment_is_read_and_checked() {
        let e = env_of(ADD).unwrap();
        assert_eq!(e.command, Operation::Add);
        assert_eq!(e.netns, Some(PathBuf::from("/run/netns/t1")));
        let err = env_of(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert_eq!(err.code, BAD_ENVIRONMENT);
        assert!(err.msg.contains("CNI_NETNS"));
        // DEL without a namespace is allowed (the container may be gone).
        assert!(env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0")
        ])
        .is_ok());
        assert_eq!(
            env_of(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Operation::Version
        );
        assert_eq!(env_of(&[]).unwrap_err().code, BAD_ENVIRONMENT);
        assert_eq!(
            env_of(&[("CNI_COMMAND", "GET")]).unwrap_err().code,
            BAD_ENVIRONMENT
        );
        let mut bad_id = ADD.to_vec();
        bad_id[1] = ("CNI_CONTAINERID", "../etc");
        assert_eq!(env_of(&bad_id).unwrap_err().code, BAD_ENVIRONMENT);
    }

    #[test]
    fn configuration_keys_and_port_mappings() {
        let c = netconf(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","mtu":65520,
            "subnet":"10.9.0.0/24","egressAllow":["127.0.0.0/8"],"stateDir":"/tmp/st",
            "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"},
            {"hostPort":5353,"containerPort":53,"protocol":"udp"}]}}"#).unwrap();
        assert_eq!(c.mtu, Some(65520));
        assert_eq!(c.port_mappings.len(), 2);
        let env = env_of(ADD).unwrap();
        let dir = attachment_dir(&c, &env);
        assert_eq!(dir, PathBuf::from("/tmp/st/sw-abc123-eth0"));
        let p = plan(&c, &env, &dir, [2, 0, 0, 0, 0, 9]).unwrap();
        assert!(p
            .serve_args
            .windows(2)
            .any(|w| w == ["-p", "127.0.0.1:8080:80"]));
        assert!(p.serve_args.windows(2).any(|w| w == ["-p", "5353:53/udp"]));
        let r = result(&c, &env, &p, &["corp.example".into()]);
        assert_eq!(
            r,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:09", "sandbox": "/run/netns/t1"}],
                "ips": [
                    {"address": "10.9.0.2/24", "gateway": "10.9.0.1", "interface": 0},
                    {"address": "fd00:5119::ff:fe00:9/64", "gateway": "fe80::5894:efff:fee4:cdd", "interface": 0}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "10.9.0.1"},
                    {"dst": "::/0", "gw": "fe80::5894:efff:fee4:cdd"}
                ],
                "dns": {"nameservers": ["10.9.0.1"], "search": ["corp.example"]}
            })
        );
        // IPv4 only.
        let c = netconf(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","ipv6":false}"#)
            .unwrap();
        let p = plan(&c, &env, &dir, [2, 0, 0, 0, 0, 9]).unwrap();
        assert!(p.serve_args.windows(2).any(|w| w == ["--ipv6", "off"]));
        assert_eq!(
            result(&c, &env, &p, &[])["ips"].as_array().unwrap().len(),
            1
        );
        assert!(
            netconf(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","ipv6":"no"}"#).is_err()
        );
    }

    #[test]
    fn old_versions_get_their_result_shape_and_unknown_ones_an_error() {
        let c = netconf(br#"{"cniVersion":"0.4.0","name":"sw","type":"slipway"}"#).unwrap();
        let env = env_of(ADD).unwrap();
        let p = plan(&c, &env, Path::new("/tmp/x"), [2, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(result(&c, &env, &p, &[])["ips"][0]["version"], "4");
        let e = netconf(br#"{"cniVersion":"0.2.0","name":"sw","type":"slipway"}"#).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert_eq!(
            e.to_json("0.2.0"),
            json!({"cniVersion":"0.2.0","code":1,"msg":"cniVersion 0.2.0 is not supported","details":"supported: 0.4.0, 1.0.0"})
        );
    }

    #[test]
    fn bad_configurations_are_refused_with_the_right_code() {
        let code = |b: &[u8]| netconf(b).unwrap_err().code;
        assert_eq!(code(b"{nope"), DECODING_FAILURE);
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","name":"sw","type":"bridge"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","type":"slipway"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","name":"a/b","type":"slipway"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","mtu":"big"}"#),
            INVALID_CONFIG
        );
        assert_eq!(
            code(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#),
            INVALID_CONFIG
        );
        // Values serve refuses are refused here too, before anything starts.
        let c =
            netconf(br#"{"cniVersion":"1.0.0","name":"sw","type":"slipway","mtu":100}"#).unwrap();
        let e = plan(
            &c,
            &env_of(ADD).unwrap(),
            Path::new("/tmp/x"),
            [2, 0, 0, 0, 0, 1],
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.details.contains("576"), "{}", e.details);
    }

    #[test]
    fn version_lists_what_is_supported() {
        assert_eq!(
            version_result("1.0.0"),
            json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]})
        );
    }
}

/// The plugin's process side: run one operation; returns what to print and the exit status.
pub mod plugin {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    /// The supervisor's first argument.
    pub const SUPERVISE_ARG: &str = "__cni-supervise";

    fn io_error(msg: impl Into<String>, e: impl std::fmt::Display) -> CniError {
        CniError::new(IO_FAILURE, msg, e.to_string())
    }

    /// One plugin invocation: (stdout text, exit status).
    pub fn main(stdin: &[u8], get: impl Fn(&str) -> Option<String>) -> (String, i32) {
        let version = serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| {
                v.get("cniVersion")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_else(|| "1.0.0".into());
        let outcome = environment(get).and_then(|env| match env.command {
            Operation::Version => Ok(Some(version_result(&version))),
            op => {
                let conf = netconf(stdin)?;
                match op {
                    Operation::Add => add(&conf, &env).map(Some),
                    Operation::Del => del(&conf, &env).map(|()| None),
                    Operation::Check => check(&conf, &env).map(|()| None),
                    Operation::Version => unreachable!(),
                }
            }
        });
        match outcome {
            Ok(Some(v)) => (format!("{v}\n"), 0),
            Ok(None) => (String::new(), 0),
            Err(e) => (format!("{}\n", e.to_json(&version)), 1),
        }
    }

    /// The supervisor's PID, if it still runs (and is ours: its command line names `dir`).
    fn running_supervisor(dir: &Path) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(dir.join("supervisor.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let ours = String::from_utf8_lossy(&cmdline).contains(SUPERVISE_ARG)
            && String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        (ours && !zombie).then_some(pid)
    }

    fn add(conf: &NetConf, env: &Environment) -> Result<Value, CniError> {
        let dir = attachment_dir(conf, env);
        if dir.exists() {
            if running_supervisor(&dir).is_some() {
                return Err(CniError::new(
                    ALREADY_ATTACHED,
                    format!(
                        "container {} already has {} on network {}",
                        env.container_id, env.ifname, conf.name
                    ),
                    "run DEL first",
                ));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let mac = crate::netns::tap_mac_random();
        let plan = plan(conf, env, &dir, mac)?;
        let netns = env.netns.clone().unwrap_or_default();
        if !netns.exists() {
            return Err(CniError::new(
                3,
                format!("no network namespace at {}", netns.display()),
                "",
            ));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error(format!("cannot create {}", dir.display()), e))?;
        let started = start_supervisor(&dir, &netns, &plan.serve_args);
        if let Err(e) = started {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let search = crate::dns_forwarder::read_resolv_conf(Path::new("/etc/resolv.conf"))
            .map(|rc| rc.search)
            .unwrap_or_default();
        let r = result(conf, env, &plan, &search);
        let _ = std::fs::write(dir.join("result.json"), r.to_string());
        Ok(r)
    }

    fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fds owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    fn start_supervisor(dir: &Path, netns: &Path, serve_args: &[String]) -> Result<(), CniError> {
        let exe =
            std::env::current_exe().map_err(|e| io_error("cannot find slipway's executable", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .map_err(|e| io_error("cannot create the log", e))?;
        let (ready_r, ready_w) = pipe().map_err(|e| io_error("cannot create a pipe", e))?;
        let w: RawFd = ready_w.as_raw_fd();
        let mut cmd = Command::new(&exe);
        cmd.arg(SUPERVISE_ARG)
            .arg(dir)
            .arg(netns)
            .arg("--")
            .args(serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: setsid, dup2 and fcntl only, all async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if w == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(w, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| io_error("cannot start slipway", e))?;
        drop(ready_w);
        let pid = child.id() as libc::pid_t;
        std::fs::write(dir.join("supervisor.pid"), format!("{pid}\n"))
            .map_err(|e| io_error("cannot write the PID file", e))?;
        // Wait for "1" (running), or EOF (it failed), or the timeout.
        let mut p = libc::pollfd {
            fd: ready_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        let n = unsafe { libc::poll(&mut p, 1, READY_TIMEOUT.as_millis() as libc::c_int) };
        let mut byte = [0u8; 1];
        let mut reader = std::fs::File::from(ready_r);
        let ready = n > 0 && matches!(reader.read(&mut byte), Ok(1)) && byte[0] == b'1';
        if ready {
            // The supervisor is not our child to wait for: the runtime's init adopts it.
            std::mem::forget(child);
            return Ok(());
        }
        stop(pid);
        let mut child = child;
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let details: Vec<&str> = tail.into_iter().rev().collect();
        Err(CniError::new(
            IO_FAILURE,
            if n == 0 {
                "slipway did not start in time"
            } else {
                "slipway could not attach the namespace"
            },
            details.join("\n"),
        ))
    }

    /// SIGTERM, then SIGKILL after STOP_TIMEOUT.
    fn stop(pid: libc::pid_t) {
        // SAFETY: signalling a process we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if !alive(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }

    fn alive(pid: libc::pid_t) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    fn del(conf: &NetConf, env: &Environment) -> Result<(), CniError> {
        let dir = attachment_dir(conf, env);
        if !dir.exists() {
            return Ok(());
        }
        if let Some(pid) = running_supervisor(&dir) {
            stop(pid);
        }
        std::fs::remove_dir_all(&dir)
            .map_err(|e| io_error(format!("cannot remove {}", dir.display()), e))
    }

    fn check(conf: &NetConf, env: &Environment) -> Result<(), CniError> {
        let dir = attachment_dir(conf, env);
        let missing = |what: String| CniError::new(IO_FAILURE, what, "");
        if running_supervisor(&dir).is_none() {
            return Err(missing(format!(
                "no slipway runs for container {} ({} on {})",
                env.container_id, env.ifname, conf.name
            )));
        }
        if let Some(ns) = &env.netns {
            if !ns.exists() {
                return Err(CniError::new(
                    3,
                    format!("no network namespace at {}", ns.display()),
                    "",
                ));
            }
        }
        crate::api::client::request(&dir.join("api.sock"), "GET", "/v1/info", None)
            .map_err(|e| missing(format!("slipway's API does not answer: {e}")))?;
        Ok(())
    }

    static TERM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static SERVE_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

    extern "C" fn on_term(_: libc::c_int) {
        use std::sync::atomic::Ordering;
        TERM.store(true, Ordering::Relaxed);
        let pid = SERVE_PID.load(Ordering::Relaxed);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }

    /// The supervisor: `slipway __cni-supervise DIR NETNS -- serve ARGS…` with the ready pipe on
    /// fd 3. Returns its exit status.
    pub fn supervise(args: &[String]) -> i32 {
        use std::sync::atomic::Ordering;
        let [dir, netns, dashes, serve @ ..] = args else {
            eprintln!("usage: slipway {SUPERVISE_ARG} DIR NETNS -- serve ARGS");
            return 2;
        };
        if dashes != "--" {
            eprintln!("usage: slipway {SUPERVISE_ARG} DIR NETNS -- serve ARGS");
            return 2;
        }
        let (dir, netns) = (PathBuf::from(dir), PathBuf::from(netns));
        // SAFETY: the handler stores to atomics and calls kill.
        unsafe {
            libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
            libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        }
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("slipway cni: cannot find the executable: {e}");
                return 1;
            }
        };
        let mut restarts: Vec<Instant> = Vec::new();
        let mut first = true;
        loop {
            let mut cmd = Command::new(&exe);
            cmd.args(serve).stdin(Stdio::null()).stdout(Stdio::null());
            if first {
                cmd.args(["--ready-fd", "3"]);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("slipway cni: cannot start slipway serve: {e}");
                    return 1;
                }
            };
            SERVE_PID.store(child.id() as i32, Ordering::Relaxed);
            if first {
                // Only the first serve reports readiness; our copy of the pipe goes away.
                // SAFETY: closing the inherited fd 3, which nothing else here uses.
                unsafe { libc::close(3) };
                first = false;
            }
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break Some(s),
                    Ok(None) => {}
                    Err(_) => break None,
                }
                if !TERM.load(Ordering::Relaxed) && !netns.exists() {
                    eprintln!("slipway cni: {} is gone: stopping", netns.display());
                    TERM.store(true, Ordering::Relaxed);
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            SERVE_PID.store(0, Ordering::Relaxed);
            if TERM.load(Ordering::Relaxed) {
                if !netns.exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return 0;
            }
            let now = Instant::now();
            restarts.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            if restarts.len() >= MAX_RESTARTS {
                eprintln!("slipway cni: slipway serve failed {MAX_RESTARTS} times within a minute; giving up");
                return 1;
            }
            restarts.push(now);
            eprintln!(
                "slipway cni: slipway serve exited ({}); restarting",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown status".into())
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
