//! The HTTP API on a unix socket (`--api PATH`): slipway's own versioned REST API under `/v1`
//! ([`native`]) and gvproxy's paths with gvproxy's shapes ([`gvproxy`]), documented in
//! `docs/api.md` and `docs/openapi.json` (kept in sync by a test below).
//!
//! Theory of operation: the server runs on its own thread (a tokio current-thread runtime with
//! axum), off the data path. It owns no network state: forwards, leases, flows and counters are
//! asked of the event loop through typed commands ([`crate::control`]); DNS records live in the
//! local zone that the DNS thread answers from. The socket is created with mode 0600; a stale
//! socket file is replaced, a live one (another slipway) refused.
//!
//! With `--guest-api` (on in gvproxy mode) the same thread also serves gvproxy's forwarder paths
//! to guests at `http://GATEWAY:80`: the TCP engine hands each such guest connection over as one
//! end of a socket pair ([`GuestConnections`]), with the guest's address for "the caller".
//!
//! Limits: request bodies up to [`MAX_BODY`] bytes; the control queue's bound
//! ([`crate::control::MAX_QUEUED`]).

pub mod client;
pub mod gvproxy;
pub mod native;
pub mod raw;
pub mod slirp4netns;

use crate::control::ControlHandle;
use crate::unix_socket::{SocketFile, SocketFileError, SocketPlace};
use axum::Router;
use slipway_core::services::dns::LocalZone;
use slipway_core::NetworkConfig;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub control: ControlHandle,
    pub zone: Arc<RwLock<LocalZone>>,
    pub network: NetworkInfo,
    /// Zones added through gvproxy's `/services/dns/add`, for `/services/dns/all`.
    pub gvproxy_zones: GvproxyZones,
    /// The API socket's path (tunnels' sockets go next to it).
    pub api_path: Option<PathBuf>,
    /// How `/connect` links are framed.
    pub connect_framing: crate::control::LinkFraming,
    pub tunnels: Arc<raw::Tunnels>,
    /// The directory where guests may create unix sockets (`--guest-api-unix-dir`); none: they
    /// may not.
    pub guest_unix_dir: Option<Arc<crate::unix_socket::SocketDir>>,
}

/// Zone name → its (record name, address) pairs.
pub type GvproxyZones = Arc<Mutex<BTreeMap<String, Vec<(String, IpAddr)>>>>;

/// Facts about the network the API reports.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub host_alias: Option<Ipv4Addr>,
    pub mtu: u16,
    /// The network's first guest address (the default forward target).
    pub first_guest: Ipv4Addr,
}

impl NetworkInfo {
    pub fn of(cfg: &NetworkConfig) -> Self {
        Self {
            subnet: cfg.subnet,
            prefix: cfg.prefix,
            gateway: cfg.gateway,
            host_alias: cfg.host_loopback_alias,
            mtu: cfg.mtu,
            first_guest: cfg.pool_start,
        }
    }
}

/// Why the API socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ApiBindError {
    #[error("--api {0}: another process is serving this socket (is another slipway running?); choose another path or stop it")]
    InUse(PathBuf),
    #[error("--api: {0}")]
    Create(#[source] SocketFileError),
}

/// Create the API socket at `path`, with mode 0600 from the start. A stale socket there is
/// replaced; a live one, or anything that is not a socket, is refused. The file is removed when
/// the returned [`SocketFile`] is dropped (if it is still ours).
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), ApiBindError> {
    let bound = SocketPlace::of_path(path).and_then(|place| {
        let (socket, file) = place.bind(socket2::Type::STREAM, 0o600)?;
        let io = |e| SocketFileError::io_at(path.to_path_buf(), e);
        socket.listen(128).map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        Ok((std::os::fd::OwnedFd::from(socket).into(), file))
    });
    bound.map_err(|e| match e {
        SocketFileError::InUse(p) => ApiBindError::InUse(p),
        e => ApiBindError::Create(e),
    })
}

/// Every route of the API.
pub fn router(state: ApiState) -> Router {
    native::routes()
        .merge(gvproxy::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Guest connections waiting for the guest-side API (bounded; more are refused).
pub const GUEST_BACKLOG: usize = 64;

/// Guests' connections to the gateway's API port, as an axum listener.
pub struct GuestConnections {
    rx: tokio::sync::mpsc::Receiver<(UnixStream, Ipv4Addr)>,
    gateway: Ipv4Addr,
}

/// The address of the guest calling the guest-side API.
#[derive(Debug, Clone, Copy)]
pub struct GuestPeer(pub Ipv4Addr);

/// The guest-side API's queue: the handler the TCP engine's socket table calls for each guest
/// connection, and the listener the API thread serves.
pub fn guest_channel(gateway: Ipv4Addr) -> (crate::sockets::GuestApiHandler, GuestConnections) {
    let (tx, rx) = tokio::sync::mpsc::channel(GUEST_BACKLOG);
    (
        Box::new(move |stream, guest| tx.try_send((stream, guest)).is_ok()),
        GuestConnections { rx, gateway },
    )
}

impl axum::serve::Listener for GuestConnections {
    type Io = tokio::net::UnixStream;
    type Addr = Ipv4Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some((stream, guest)) = self.rx.recv().await else {
                // The network stopped: no more guests.
                std::future::pending::<()>().await;
                continue;
            };
            match tokio::net::UnixStream::from_std(stream) {
                Ok(s) => return (s, guest),
                Err(e) => tracing::debug!("a guest API connection was lost: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.gateway)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuestConnections>>
    for GuestPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GuestConnections>) -> Self {
        GuestPeer(*stream.remote_addr())
    }
}

/// Classified HTTP connections waiting for the router.
const HOST_BACKLOG: usize = 64;

/// Accept API connections, take `/tunnel` and `/connect` over ([`raw`]) and pass the rest on.
async fn classify_connections(
    listener: tokio::net::UnixListener,
    http: tokio::sync::mpsc::Sender<tokio::net::UnixStream>,
    state: ApiState,
) {
    loop {
        let mut conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!("API: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (http, state) = (http.clone(), state.clone());
        tokio::spawn(async move {
            match raw::classify(&mut conn).await {
                Ok(Some(raw::Route::Http)) => {
                    let _ = http.send(conn).await;
                }
                Ok(Some(raw::Route::Tunnel(query))) => {
                    let Some(path) = state.api_path.clone() else {
                        return;
                    };
                    raw::tunnel(conn, &query, &path, &state.tunnels, &state.control).await
                }
                Ok(Some(raw::Route::Connect)) => {
                    raw::connect(conn, state.connect_framing, &state.control).await
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("API: a connection was dropped: {e}"),
            }
        });
    }
}

/// The HTTP connections of the host's API socket, as an axum listener.
struct HostConnections {
    rx: tokio::sync::mpsc::Receiver<tokio::net::UnixStream>,
}

impl axum::serve::Listener for HostConnections {
    type Io = tokio::net::UnixStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => (conn, ()),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(())
    }
}

/// Serve the API (on the host socket, to guests, slirp4netns's JSON socket, or any of them) on
/// its own thread until the process ends.
pub fn spawn(
    host: Option<UnixListener>,
    guests: Option<GuestConnections>,
    slirp: Option<(UnixListener, slirp4netns::SlirpApi)>,
    state: ApiState,
) -> io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("slipway-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let host_side = async {
                    let Some(listener) = host else { return };
                    let l = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!("the API socket cannot be served: {e}"),
                    };
                    let (tx, rx) = tokio::sync::mpsc::channel(HOST_BACKLOG);
                    let classifier = classify_connections(l, tx, state.clone());
                    let server = async {
                        if let Err(e) =
                            axum::serve(HostConnections { rx }, router(state.clone())).await
                        {
                            tracing::error!("the API server stopped: {e}");
                        }
                    };
                    tokio::join!(classifier, server);
                };
                let guest_side = async {
                    let Some(guests) = guests else { return };
                    let app = gvproxy::guest_routes()
                        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
                        .with_state(state.clone())
                        .into_make_service_with_connect_info::<GuestPeer>();
                    if let Err(e) = axum::serve(guests, app).await {
                        tracing::error!("the guest API stopped: {e}");
                    }
                };
                let slirp_side = async {
                    let Some((listener, api)) = slirp else { return };
                    match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => slirp4netns::serve(l, api, state.control.clone()).await,
                        Err(e) => {
                            tracing::error!("the slirp4netns API socket cannot be served: {e}")
                        }
                    }
                };
                tokio::join!(host_side, guest_side, slirp_side);
            })
        })
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// Every operation documented in docs/openapi.json is routed, and every route is documented.
    #[tokio::test(flavor = "current_thread")]
    async fn openapi_description_matches_the_router() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/openapi.json"))
                .expect("docs/openapi.json is JSON");
        let paths = spec["paths"].as_object().expect("paths");
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                if ["get", "post", "delete", "put", "patch"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let (control, _queue) = crate::control::channel(Arc::new(|| {}));
        let cfg = NetworkConfig::default();
        let state = ApiState {
            control,
            zone: Arc::new(RwLock::new(LocalZone::new(&cfg))),
            network: NetworkInfo::of(&cfg),
            gvproxy_zones: Arc::default(),
            api_path: None,
            connect_framing: crate::control::LinkFraming::Le16,
            tunnels: Arc::default(),
            guest_unix_dir: None,
        };
        let app = router(state);
        let mut routed: Vec<(String, String)> = native::ROUTES
            .iter()
            .chain(gvproxy::ROUTES)
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routed.sort();
        documented.sort();
        assert_eq!(
            routed, documented,
            "docs/openapi.json and the ROUTES lists differ"
        );
        for (method, path) in &routed {
            let uri = path.replace("{id}", "0").replace("{name}", "x.internal");
            let req = Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .body(Body::from("not json"))
                .unwrap();
            // The control queue is never served, so calls that ask the event loop wait: a
            // route is missing only if the router answers at once with 405, or 404 and no body.
            let answer = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                app.clone().oneshot(req),
            )
            .await;
            if let Ok(r) = answer {
                let r = r.unwrap();
                let status = r.status();
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED
                        && !(status == StatusCode::NOT_FOUND && body.is_empty()),
                    "{method} {path} is listed but not routed ({status})"
                );
            }
        }
    }
}
