//! slipway's own API, version 1: forwards, DHCP leases, DNS records, live flows and counters as
//! JSON, every error typed: `{"error":{"code":"…","message":"…"}}` (docs/api.md).

use super::{format_mac, ApiState};
use crate::control::{Command, ControlError, FlowReport, ForwardInfo, ForwardOrigin};
use crate::sockets::UNIX_FORWARD_MODE;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Every (method, path) served here; the OpenAPI test checks docs/openapi.json against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/info"),
    ("GET", "/v1/forwards"),
    ("POST", "/v1/forwards"),
    ("DELETE", "/v1/forwards/{id}"),
    ("GET", "/v1/leases"),
    ("GET", "/v1/dns/records"),
    ("POST", "/v1/dns/records"),
    ("DELETE", "/v1/dns/records/{name}"),
    ("GET", "/v1/flows"),
    ("GET", "/v1/counters"),
];

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/forwards", get(list_forwards).post(add_forwards))
        .route("/v1/forwards/{id}", delete(remove_forward))
        .route("/v1/leases", get(leases))
        .route("/v1/dns/records", get(list_records).post(add_record))
        .route("/v1/dns/records/{name}", delete(remove_record))
        .route("/v1/flows", get(flows))
        .route("/v1/counters", get(counters))
}

/// A typed API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            ControlError::NotAGuest(m) => Self::new(StatusCode::BAD_REQUEST, "not_a_guest", m),
            ControlError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            ControlError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            ControlError::Other(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
        }
    }
}

/// The JSON body of a request, whatever its Content-Type says (curl -d sends a form type).
fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!("the request body is not what this call takes: {e}"))
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A published port.
#[derive(Debug, Serialize)]
pub struct ForwardJson {
    /// Names the forward in `DELETE /v1/forwards/{id}`.
    pub id: u32,
    /// `tcp`, `udp`, or `unix` for a unix socket listener.
    pub proto: &'static str,
    /// The host address listened on (a socket path for `unix`).
    pub host: String,
    pub guest_ip: String,
    pub guest_port: u16,
}

impl From<&ForwardInfo> for ForwardJson {
    fn from(f: &ForwardInfo) -> Self {
        Self {
            id: f.id,
            proto: f.kind,
            host: f.host.to_string(),
            guest_ip: f.guest_ip.to_string(),
            guest_port: f.guest_port,
        }
    }
}

/// Body of `POST /v1/forwards`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddForward {
    /// A publish spec as for `-p`: `[HOST_IP:]HOST_PORT[-END]:[GUEST_IP:]GUEST_PORT[-END][/tcp|/udp]`.
    pub spec: String,
}

/// A local DNS record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordJson {
    /// The name, without a trailing dot (e.g. `db.internal`).
    pub name: String,
    /// Its IPv4 or IPv6 address.
    pub ip: String,
}

async fn info(State(s): State<ApiState>) -> Json<Value> {
    let n = &s.network;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "subnet": format!("{}/{}", n.subnet, n.prefix),
        "gateway": n.gateway.to_string(),
        "host_alias": n.host_alias.map(|a| a.to_string()),
        "mtu": n.mtu,
    }))
}

async fn list_forwards(State(s): State<ApiState>) -> ApiResult<Json<Vec<ForwardJson>>> {
    let mut all = s.control.call(Command::ListForwards).await?;
    all.sort_by_key(|f| f.id);
    Ok(Json(all.iter().map(ForwardJson::from).collect()))
}

async fn add_forwards(
    State(s): State<ApiState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Vec<ForwardJson>>)> {
    let body: AddForward = json_body(&body)?;
    let rules = slipway_core::forward::parse_publish(&body.spec)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string()))?;
    let rules = rules.into_iter().map(|r| (r, None)).collect();
    let added = s
        .control
        .add_forwards(rules, ForwardOrigin::Owner, UNIX_FORWARD_MODE)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(added.iter().map(ForwardJson::from).collect()),
    ))
}

async fn remove_forward(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ForwardJson>> {
    let id: u32 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no forward with id {id}"),
        )
    })?;
    let removed = s
        .control
        .call(|reply| Command::RemoveForward(id, ForwardOrigin::Owner, reply))
        .await??;
    Ok(Json(ForwardJson::from(&removed)))
}

async fn leases(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let leases = s.control.call(Command::Leases).await?;
    Ok(Json(Value::Array(
        leases
            .iter()
            .map(|(ip, mac)| json!({ "ip": ip.to_string(), "mac": format_mac(mac) }))
            .collect(),
    )))
}

fn zone_records(s: &ApiState) -> ApiResult<Vec<(String, IpAddr)>> {
    let zone = s.zone.read().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the DNS zone is unavailable",
        )
    })?;
    Ok(zone.records())
}

async fn list_records(State(s): State<ApiState>) -> ApiResult<Json<Vec<RecordJson>>> {
    Ok(Json(
        zone_records(&s)?
            .into_iter()
            .map(|(name, ip)| RecordJson {
                name,
                ip: ip.to_string(),
            })
            .collect(),
    ))
}

async fn add_record(
    State(s): State<ApiState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RecordJson>)> {
    let rec: RecordJson = json_body(&body)?;
    let ip: IpAddr = rec
        .ip
        .parse()
        .map_err(|_| ApiError::invalid(format!("'{}' is not an IP address", rec.ip)))?;
    let name = add_to_zone(&s, &rec.name, ip)?;
    Ok((
        StatusCode::CREATED,
        Json(RecordJson {
            name,
            ip: ip.to_string(),
        }),
    ))
}

/// Add `name` → `ip` to the local zone; returns the name as stored.
pub(super) fn add_to_zone(s: &ApiState, name: &str, ip: IpAddr) -> ApiResult<String> {
    let name = slipway_core::services::dns::validate_name(name)
        .map_err(|e| ApiError::invalid(format!("'{name}': {e}")))?;
    let mut zone = s.zone.write().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the DNS zone is unavailable",
        )
    })?;
    zone.add(&name, ip)
        .map_err(|e| ApiError::invalid(format!("'{name}': {e}")))?;
    Ok(name)
}

async fn remove_record(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let removed = s
        .zone
        .write()
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the DNS zone is unavailable",
            )
        })?
        .remove(&name);
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no local DNS record named {name}"),
        ))
    }
}

fn flow_json(f: &FlowReport) -> Value {
    json!({
        "proto": f.proto.as_str(),
        "guest": f.guest.to_string(),
        "remote": f.remote.to_string(),
        "state": f.state,
        "bytes_from_guest": f.bytes_from_guest,
        "bytes_to_guest": f.bytes_to_guest,
        "age_ms": f.age.as_millis() as u64,
    })
}

async fn flows(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    let flows = s.control.call(Command::Flows).await?;
    Ok(Json(Value::Array(flows.iter().map(flow_json).collect())))
}

/// The counters as one JSON object (also served as gvproxy's `/stats`).
pub(super) async fn counters_json(s: &ApiState) -> ApiResult<Value> {
    let c = s.control.call(Command::Counters).await?;
    let mut obj = serde_json::Map::new();
    for (name, v) in c.values {
        obj.insert(name.into(), v.into());
    }
    let drops: serde_json::Map<String, Value> = c
        .drops
        .into_iter()
        .map(|(r, n)| (r.to_string(), n.into()))
        .collect();
    obj.insert("drops".into(), Value::Object(drops));
    Ok(Value::Object(obj))
}

async fn counters(State(s): State<ApiState>) -> ApiResult<Json<Value>> {
    Ok(Json(counters_json(&s).await?))
}
