//! gvproxy's HTTP API paths with gvproxy's request and response shapes (PROTOCOLS.md), so that
//! existing clients (podman machine, CRC, Lima) work unchanged. Errors are plain text, as
//! gvproxy's are. The requests are translated onto the same commands as the native API (D6).
//!
//! Differences, also in docs/api.md: `/stats` has gvproxy's shape but only the fields slipway
//! counts with the same meaning, plus slipway's own counters under `slipway`. `/tunnel` and
//! `/connect` leave HTTP and are served before the router sees them ([`super::raw`]); the routes
//! here only answer them when they arrive as a later request on a kept-alive connection.
//! `protocol: unix` works as in gvproxy for the owner (the API socket): `local` is a socket path,
//! `remote` is `tcp://IP:PORT`; an existing file there is replaced only if it is a stale socket.
//!
//! Guests (`--guest-api`, at `http://GATEWAY:80`) are not trusted with the host's files: a guest's
//! `unix` expose is refused unless the owner named a directory for guests' sockets
//! (`--guest-api-unix-dir DIR`), and then `local` must be a plain name in it (`NAME` or
//! `DIR/NAME`); the socket is made there with mode 0600 ([`crate::unix_socket`]). A guest may
//! unexpose only the forwards it exposed itself, never the owner's or another guest's.
//! DNS zones take names, `Regexp` records (matched against the asked name with its trailing
//! dot, within the zone) and a `DefaultIP`, kept in the local zone's patterns.

use super::native::{add_to_zone, counters_json};
use super::{format_mac, ApiState, GuestPeer};
use crate::control::{Command, ControlError, ForwardOrigin};
use crate::sockets::UNIX_FORWARD_MODE;
use crate::unix_socket::SocketPlace;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slipway_core::{ForwardHost, ForwardProto, PortForward};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Every (method, path) served here; the OpenAPI test checks docs/openapi.json against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/services/forwarder/expose"),
    ("POST", "/services/forwarder/unexpose"),
    ("GET", "/services/forwarder/all"),
    ("GET", "/stats"),
    ("GET", "/leases"),
    ("GET", "/services/dhcp/leases"),
    ("GET", "/services/dns/all"),
    ("POST", "/services/dns/add"),
    ("GET", "/tunnel"),
    ("POST", "/connect"),
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/services/forwarder/expose", post(expose))
        .route("/services/forwarder/unexpose", post(unexpose))
        .route("/services/forwarder/all", get(all))
        .route("/stats", get(stats))
        .route("/leases", get(leases))
        .route("/services/dhcp/leases", get(leases))
        .route("/services/dns/all", get(dns_all))
        .route("/services/dns/add", post(dns_add))
        .route("/tunnel", get(not_first_request))
        .route("/connect", post(not_first_request))
}

/// A plain-text answer, as gvproxy gives.
fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// `POST /services/forwarder/expose` body (Go decodes keys case-insensitively; so do we).
#[derive(Debug, Deserialize)]
pub struct ExposeRequest {
    /// The host address to listen on, `IP:PORT` or `:PORT` (every interface).
    #[serde(alias = "Local")]
    pub local: String,
    /// The guest address, `IP:PORT` or `:PORT` (the network's first guest).
    #[serde(alias = "Remote", default)]
    pub remote: String,
    /// `tcp` (default), `udp` or `unix`.
    #[serde(alias = "Protocol", default)]
    pub protocol: String,
}

/// One forward in `GET /services/forwarder/all`.
#[derive(Debug, Serialize)]
pub struct ExposedPort {
    pub local: String,
    pub remote: String,
    pub protocol: &'static str,
}

/// A plain-text refusal (status, text).
type Refusal = (StatusCode, String);

/// gvproxy's protocol names: `tcp` (or empty), `udp`, `unix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
    Unix,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Unix => "unix",
        }
    }
}

fn parse_proto(p: &str) -> Result<Protocol, Refusal> {
    match p.to_ascii_lowercase().as_str() {
        "" | "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "unix" => Ok(Protocol::Unix),
        other => Err((
            StatusCode::BAD_REQUEST,
            format!("unknown protocol '{other}'; use tcp, udp or unix"),
        )),
    }
}

/// The listener of `local` for `protocol`.
fn local_host(protocol: Protocol, local: &str) -> Option<ForwardHost> {
    match protocol {
        Protocol::Unix => (local.starts_with('/') && local.len() > 1)
            .then(|| ForwardHost::Unix(PathBuf::from(local))),
        _ => parse_host_port(local, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).map(ForwardHost::Inet),
    }
}

fn same_forward(f: &crate::control::ForwardInfo, protocol: Protocol, host: &ForwardHost) -> bool {
    f.kind == protocol.name() && &f.host == host
}

/// `IP:PORT`, `[IPv6]:PORT` or `:PORT` (the host part defaults to `default`).
fn parse_host_port(s: &str, default: IpAddr) -> Option<SocketAddr> {
    if let Some(port) = s.strip_prefix(':') {
        return Some(SocketAddr::new(default, port.parse().ok()?));
    }
    s.parse().ok()
}

fn body_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("cannot decode the request: {e}"),
        )
    })
}

/// gvproxy's forwarder paths as guests see them at `http://GATEWAY:80`.
pub fn guest_routes() -> Router<ApiState> {
    Router::new()
        .route("/services/forwarder/expose", post(guest_expose))
        .route("/services/forwarder/unexpose", post(guest_unexpose))
        .route("/services/forwarder/all", get(all))
}

async fn expose(State(s): State<ApiState>, body: Bytes) -> Response {
    let first = s.network.first_guest;
    expose_for(s, body, first, ForwardOrigin::Owner).await
}

/// A guest's own expose: an empty host in `remote` means that guest.
async fn guest_expose(
    State(s): State<ApiState>,
    ConnectInfo(GuestPeer(caller)): ConnectInfo<GuestPeer>,
    body: Bytes,
) -> Response {
    expose_for(s, body, caller, ForwardOrigin::Guest(caller)).await
}

/// Where a guest's unix socket goes: a plain name in the owner's directory for guests' sockets
/// (`NAME`, or `DIR/NAME` with the directory exactly as the owner gave it), or a refusal.
fn guest_socket_place(s: &ApiState, local: &str) -> Result<(PathBuf, SocketPlace), Refusal> {
    let Some(dir) = &s.guest_unix_dir else {
        return Err((
            StatusCode::FORBIDDEN,
            "guests may not create unix sockets on the host; the host's owner can allow them in \
             one directory with --guest-api-unix-dir DIR (SLIPWAY_GUEST_API_UNIX_DIR in the \
             gvproxy mode)"
                .into(),
        ));
    };
    let local = Path::new(local);
    let name = match local.parent() {
        Some(p) if p.as_os_str().is_empty() => local.as_os_str(),
        Some(p) if p == dir.path() => local.file_name().unwrap_or_default(),
        _ => {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "guests' unix sockets go in {} only: give a plain NAME or {}/NAME",
                    dir.path().display(),
                    dir.path().display()
                ),
            ))
        }
    };
    let place =
        SocketPlace::in_dir(dir, name).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((place.path(), place))
}

/// Expose `local` → `remote` for `origin`; `remote` without a host goes to `default_guest`.
async fn expose_for(
    s: ApiState,
    body: Bytes,
    default_guest: Ipv4Addr,
    origin: ForwardOrigin,
) -> Response {
    let req: ExposeRequest = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let proto = match parse_proto(&req.protocol) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    // A guest's unix socket: only in the owner's directory for them.
    let mut place = None;
    let mut local = req.local.clone();
    if proto == Protocol::Unix && origin != ForwardOrigin::Owner {
        match guest_socket_place(&s, &req.local) {
            Ok((path, p)) => {
                local = path.to_string_lossy().into_owned();
                place = Some(p);
            }
            Err(r) => return r.into_response(),
        }
    }
    let Some(host) = local_host(proto, &local) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "local '{}' is not IP:PORT or :PORT (or an absolute socket path for unix)",
                req.local
            ),
        );
    };
    // gvproxy writes the remote of a unix forward as tcp://IP:PORT.
    let remote_text = req.remote.strip_prefix("tcp://").unwrap_or(&req.remote);
    let remote = parse_host_port(remote_text, IpAddr::V4(default_guest));
    let Some(SocketAddr::V4(remote)) = remote else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "remote '{}' is not an IPv4 guest address IP:PORT or :PORT",
                req.remote
            ),
        );
    };
    let existing = match list(&s).await {
        Ok(all) => all,
        Err(r) => return r,
    };
    if existing.iter().any(|f| same_forward(f, proto, &host)) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "proxy already running");
    }
    let rule = PortForward {
        proto: if proto == Protocol::Udp {
            ForwardProto::Udp
        } else {
            ForwardProto::Tcp
        },
        host,
        guest_ip: Some(IpAddr::V4(*remote.ip())),
        guest_port: remote.port(),
    };
    let mode = match origin {
        ForwardOrigin::Owner => UNIX_FORWARD_MODE,
        ForwardOrigin::Guest(_) => GUEST_SOCKET_MODE,
    };
    match s
        .control
        .add_forwards(vec![(rule, place)], origin, mode)
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

/// The mode of the socket files guests make (in `--guest-api-unix-dir`): the owner's only.
pub const GUEST_SOCKET_MODE: u32 = 0o600;

/// `POST /services/forwarder/unexpose` body.
#[derive(Debug, Deserialize)]
pub struct UnexposeRequest {
    #[serde(alias = "Local")]
    pub local: String,
    #[serde(alias = "Protocol", default)]
    pub protocol: String,
}

async fn unexpose(State(s): State<ApiState>, body: Bytes) -> Response {
    unexpose_for(s, body, ForwardOrigin::Owner).await
}

/// A guest's unexpose: of its own forwards only.
async fn guest_unexpose(
    State(s): State<ApiState>,
    ConnectInfo(GuestPeer(caller)): ConnectInfo<GuestPeer>,
    body: Bytes,
) -> Response {
    unexpose_for(s, body, ForwardOrigin::Guest(caller)).await
}

async fn unexpose_for(s: ApiState, body: Bytes, origin: ForwardOrigin) -> Response {
    let req: UnexposeRequest = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let proto = match parse_proto(&req.protocol) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    // A guest names its socket as it exposed it: NAME or DIR/NAME.
    let local = match (&s.guest_unix_dir, proto, origin) {
        (Some(dir), Protocol::Unix, ForwardOrigin::Guest(_)) if !req.local.starts_with('/') => {
            dir.path().join(&req.local).to_string_lossy().into_owned()
        }
        _ => req.local.clone(),
    };
    let host = local_host(proto, &local);
    let existing = match list(&s).await {
        Ok(all) => all,
        Err(r) => return r,
    };
    let Some(f) = existing
        .iter()
        .find(|f| host.as_ref().is_some_and(|h| same_forward(f, proto, h)))
    else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "proxy not found");
    };
    let id = f.id;
    match s
        .control
        .call(|reply| Command::RemoveForward(id, origin, reply))
        .await
    {
        Ok(Ok(_)) => StatusCode::OK.into_response(),
        Ok(Err(ControlError::Forbidden(m))) => text(StatusCode::FORBIDDEN, m),
        Ok(Err(_)) => text(StatusCode::INTERNAL_SERVER_ERROR, "proxy not found"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

async fn all(State(s): State<ApiState>) -> Response {
    let forwards = match list(&s).await {
        Ok(all) => all,
        Err(r) => return r,
    };
    let mut out: Vec<ExposedPort> = forwards
        .iter()
        .map(|f| {
            let remote = SocketAddr::new(f.guest_ip, f.guest_port);
            ExposedPort {
                local: f.host.to_string(),
                remote: if f.kind == "unix" {
                    format!("tcp://{remote}")
                } else {
                    remote.to_string()
                },
                protocol: f.kind,
            }
        })
        .collect();
    out.sort_by(|a, b| a.local.cmp(&b.local).then(a.protocol.cmp(b.protocol)));
    Json(out).into_response()
}

async fn stats(State(s): State<ApiState>) -> Response {
    match counters_json(&s).await {
        Ok(v) => Json(stats_json(&v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// gvproxy's `/stats` shape from slipway's counters (the `/v1/counters` object). Only the fields
/// slipway counts with the same meaning are present (a Go client decodes the missing ones as
/// 0); slipway's own counters follow under `slipway`. In gvproxy's stack, a guest's connection
/// is a passive opening and a port forward's an active one.
pub fn stats_json(c: &Value) -> Value {
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let d = |k: &str| c["drops"][k].as_u64().unwrap_or(0);
    let dropped: u64 = c["drops"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    json!({
        "BytesSent": n("bytes_to_guests"),
        "BytesReceived": n("bytes_from_guests"),
        "UnknownProtocolRcvdPackets": d("unknown_ip_protocol"),
        "MalformedRcvdPackets": d("tcp_malformed") + d("udp_malformed") + d("icmp_malformed"),
        "DroppedPackets": dropped,
        "TCP": {
            "ActiveConnectionOpenings": n("forwarded_connections"),
            "PassiveConnectionOpenings": n("tcp_flows_opened").saturating_sub(n("forwarded_connections")),
            "FailedConnectionAttempts": d("tcp_connect_failed") + d("tcp_connect_timeout")
                + d("forward_refused_by_guest"),
            "InvalidSegmentsReceived": d("tcp_malformed") + d("tcp_bad_checksum"),
        },
        "UDP": {
            "UnknownPortErrors": d("udp_closed_port"),
            "MalformedPacketsReceived": d("udp_malformed") + d("udp_bad_checksum"),
        },
        "slipway": c,
    })
}

async fn leases(State(s): State<ApiState>) -> Response {
    match s.control.call(Command::Leases).await {
        Ok(leases) => {
            let map: serde_json::Map<String, Value> = leases
                .iter()
                .map(|(ip, mac)| (ip.to_string(), Value::String(format_mac(mac))))
                .collect();
            Json(Value::Object(map)).into_response()
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    }
}

/// gvproxy's zone (`types.Zone`, Go field names).
#[derive(Debug, Serialize, Deserialize)]
pub struct Zone {
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    #[serde(rename = "Records", alias = "records", default)]
    pub records: Vec<Record>,
    #[serde(
        rename = "DefaultIP",
        alias = "defaultIP",
        alias = "defaultip",
        default
    )]
    pub default_ip: Option<String>,
}

/// gvproxy's record (`types.Record`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "Name", alias = "name", default)]
    pub name: String,
    #[serde(rename = "IP", alias = "ip", alias = "Ip", default)]
    pub ip: Option<String>,
    /// An expression matched against the asked name written out with its trailing dot (Go's
    /// `regexp.Regexp`, a string in JSON).
    #[serde(rename = "Regexp", alias = "regexp", default)]
    pub regexp: Option<Value>,
}

async fn dns_all(State(s): State<ApiState>) -> Response {
    let zones = match s.gvproxy_zones.lock() {
        Ok(z) => z.clone(),
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the DNS zone is unavailable",
            )
        }
    };
    // Names added through /services/dns/add are listed under their zone; every other local
    // name (built-ins, --dns-record, the native API) under a zone named "".
    let listed: Vec<String> = zones
        .iter()
        .flat_map(|(zone, recs)| recs.iter().map(move |(n, _)| full_name(n, zone)))
        .collect();
    let others = match s.zone.read() {
        Ok(z) => z.records(),
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the DNS zone is unavailable",
            )
        }
    };
    let mut out = vec![Zone {
        name: String::new(),
        records: others
            .into_iter()
            .filter(|(n, _)| !listed.contains(n))
            .map(|(n, ip)| Record {
                name: n,
                ip: Some(ip.to_string()),
                regexp: None,
            })
            .collect(),
        default_ip: None,
    }];
    for (zone, recs) in zones {
        out.push(Zone {
            name: zone,
            records: recs
                .into_iter()
                .map(|(n, ip)| Record {
                    name: n,
                    ip: Some(ip.to_string()),
                    regexp: None,
                })
                .collect(),
            default_ip: None,
        });
    }
    // Expressions and zone defaults, under their zone (named as it was added, when it was).
    let patterns = s.zone.read().map(|z| z.patterns()).unwrap_or_default();
    for (zone, regexp, ip) in patterns {
        let same = |z: &Zone| z.name.trim_end_matches('.').eq_ignore_ascii_case(&zone);
        let index = match out.iter().position(same) {
            Some(i) => i,
            None => {
                out.push(Zone {
                    name: if zone.is_empty() {
                        zone.clone()
                    } else {
                        format!("{zone}.")
                    },
                    records: Vec::new(),
                    default_ip: None,
                });
                out.len() - 1
            }
        };
        match regexp {
            Some(re) => out[index].records.push(Record {
                name: String::new(),
                ip: Some(ip.to_string()),
                regexp: Some(Value::String(re)),
            }),
            None => out[index].default_ip = Some(ip.to_string()),
        }
    }
    Json(out).into_response()
}

/// `a` in zone `zone.internal.` → `a.zone.internal`.
fn full_name(name: &str, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match (name.is_empty(), zone.is_empty()) {
        (true, _) => zone.to_string(),
        (false, true) => name.to_string(),
        (false, false) => format!("{name}.{zone}"),
    }
    .to_ascii_lowercase()
}

async fn dns_add(State(s): State<ApiState>, body: Bytes) -> Response {
    let req: Zone = match body_json(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let mut added = Vec::new();
    // Errors as (status, text), turned into a response by the caller.
    let pattern = |regexp: Option<&str>, ip: IpAddr| -> Result<(), (StatusCode, String)> {
        let mut zone = s.zone.write().map_err(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the DNS zone is unavailable".to_string(),
            )
        })?;
        zone.add_pattern(&req.name, regexp, ip)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("zone '{}': {e}", req.name)))
    };
    for r in &req.records {
        let regexp = match &r.regexp {
            None | Some(Value::Null) => None,
            Some(Value::String(re)) => Some(re.as_str()),
            Some(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "a record's Regexp must be a string (a regular expression)",
                )
            }
        };
        let Some(ip) = r.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!("record '{}' has no valid IP address", r.name),
            );
        };
        if let Some(re) = regexp {
            if let Err((status, why)) = pattern(Some(re), ip) {
                return text(status, why);
            }
            continue;
        }
        if let Err(e) = add_to_zone(&s, &full_name(&r.name, &req.name), ip) {
            return e.into_response();
        }
        added.push((r.name.clone(), ip));
    }
    if let Some(default) = &req.default_ip {
        let Ok(ip) = default.parse::<IpAddr>() else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "zone '{}': DefaultIP '{default}' is not an IP address",
                    req.name
                ),
            );
        };
        if let Err((status, why)) = pattern(None, ip) {
            return text(status, why);
        }
    }
    if let Ok(mut zones) = s.gvproxy_zones.lock() {
        let entry = zones.entry(req.name.clone()).or_default();
        for (name, ip) in added {
            entry.retain(|(n, _)| *n != name);
            entry.push((name, ip));
        }
    }
    StatusCode::OK.into_response()
}

/// Every forward, or the plain-text failure to answer with.
async fn list(s: &ApiState) -> Result<Vec<crate::control::ForwardInfo>, Response> {
    s.control
        .call(Command::ListForwards)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.message()))
}

async fn not_first_request() -> Response {
    text(
        StatusCode::BAD_REQUEST,
        "/tunnel and /connect take the connection over: send them as the first request on a new connection",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn stats_have_gvproxys_shape_with_what_slipway_counts() {
        let counters = serde_json::json!({
            "bytes_to_guests": 1000, "bytes_from_guests": 2000, "tcp_flows_opened": 7,
            "forwarded_connections": 2,
            "drops": {"tcp_connect_failed": 1, "udp_closed_port": 3, "unknown_ip_protocol": 4}
        });
        let s = super::stats_json(&counters);
        assert_eq!(s["BytesSent"], 1000);
        assert_eq!(s["BytesReceived"], 2000);
        assert_eq!(s["DroppedPackets"], 8);
        assert_eq!(s["UnknownProtocolRcvdPackets"], 4);
        assert_eq!(s["TCP"]["ActiveConnectionOpenings"], 2);
        assert_eq!(s["TCP"]["PassiveConnectionOpenings"], 5);
        assert_eq!(s["TCP"]["FailedConnectionAttempts"], 1);
        assert_eq!(s["UDP"]["UnknownPortErrors"], 3);
        assert_eq!(s["slipway"], counters, "slipway's own counters come along");
        assert!(
            s["TCP"].get("Retransmits").is_none(),
            "what slipway does not count is absent"
        );
    }

    use super::*;

    #[test]
    fn addresses_as_gvproxy_takes_them() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            parse_host_port(":2222", any),
            Some("0.0.0.0:2222".parse().unwrap())
        );
        assert_eq!(
            parse_host_port("127.0.0.1:2222", any),
            Some("127.0.0.1:2222".parse().unwrap())
        );
        assert_eq!(
            parse_host_port("[::1]:80", any),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_host_port("nonsense", any), None);
        assert_eq!(full_name("a", "zone.internal."), "a.zone.internal");
        assert_eq!(full_name("", "zone.internal."), "zone.internal");
    }

    fn state(dir: Option<&Path>) -> ApiState {
        use slipway_core::services::dns::LocalZone;
        use std::sync::{Arc, RwLock};
        let (control, _queue) = crate::control::channel(Arc::new(|| {}));
        let cfg = slipway_core::NetworkConfig::default();
        ApiState {
            control,
            zone: Arc::new(RwLock::new(LocalZone::new(&cfg))),
            network: super::super::NetworkInfo::of(&cfg),
            gvproxy_zones: Arc::default(),
            api_path: None,
            connect_framing: crate::control::LinkFraming::Le16,
            tunnels: Arc::default(),
            guest_unix_dir: dir.map(|d| Arc::new(crate::unix_socket::SocketDir::open(d).unwrap())),
        }
    }

    #[test]
    fn guests_get_unix_sockets_only_by_name_in_the_owners_directory() {
        // No directory: every unix expose of a guest is refused, saying how to allow it.
        let (status, text) = guest_socket_place(&state(None), "/tmp/x.sock").unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(text.contains("--guest-api-unix-dir"), "{text}");
        assert!(guest_socket_place(&state(None), "x.sock").is_err());

        let dir = std::env::temp_dir();
        let s = state(Some(&dir));
        let (path, _) = guest_socket_place(&s, "x.sock").unwrap();
        assert_eq!(path, dir.join("x.sock"));
        let (path, _) = guest_socket_place(&s, &dir.join("y.sock").to_string_lossy()).unwrap();
        assert_eq!(path, dir.join("y.sock"));
        for bad in ["../x", "a/b", "/etc/passwd", ".", ".."] {
            assert!(guest_socket_place(&s, bad).is_err(), "{bad}");
        }
        let traversal = format!("{}/../x", dir.display());
        assert!(guest_socket_place(&s, &traversal).is_err());
    }
}
