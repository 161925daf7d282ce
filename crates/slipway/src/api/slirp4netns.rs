//! slirp4netns's API socket (`--api-socket PATH` in the slirp4netns drop-in), as rootlesskit's
//! `slirp4netns` port driver and podman speak it.
//!
//! # Theory of operation
//!
//! One JSON request per connection: the client writes it and half-closes (or just waits), the
//! server answers with one JSON object and closes. Three commands:
//!
//! - `{"execute":"add_hostfwd","arguments":{"proto":"tcp"|"udp","host_addr":"0.0.0.0",
//!   "host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}}` → `{"return":{"id":N}}`;
//!   `host_addr` defaults to `0.0.0.0` (as in slirp4netns), `guest_addr` to the namespace's
//!   address (`.100`);
//! - `{"execute":"list_hostfwd"}` → `{"return":{"entries":[{"id":…,"proto":…,"host_addr":…,
//!   "host_port":…,"guest_addr":…,"guest_port":…}]}}`;
//! - `{"execute":"remove_hostfwd","arguments":{"id":N}}` → `{"return":{}}`.
//!
//! IDs start at 1, as slirp4netns's do (slipway's own forward ID plus one).
//!
//! Errors are `{"error":{"desc":"bad request: …"}}`, as slirp4netns writes them, with the reason
//! appended where slipway knows one. Forwards are the same forwards as `-p` and `/v1/forwards`
//! (through [`crate::control`]), so the guest sees each client's real address. Unlike
//! slirp4netns, a request never stalls traffic: it is served on the API thread.
//!
//! Limits: a request of at most [`crate::api::MAX_BODY`] bytes, read within [`READ_TIMEOUT`]
//! (a client that keeps the connection open without half-closing is answered as soon as its
//! bytes form a complete JSON value).

use crate::control::{Command, ControlHandle, ForwardInfo, ForwardOrigin};
use crate::sockets::UNIX_FORWARD_MODE;
use serde_json::{json, Value};
use slipway_core::{ForwardHost, ForwardProto, PortForward};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a client has to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the slirp4netns API needs to know about the network.
#[derive(Debug, Clone, Copy)]
pub struct SlirpApi {
    /// The default `guest_addr` (the namespace's address, `.100`).
    pub default_guest: Ipv4Addr,
}

fn error(desc: impl std::fmt::Display) -> Value {
    json!({ "error": { "desc": format!("bad request: {desc}") } })
}

/// A parsed request: what to ask the event loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Add(PortForward),
    List,
    Remove(u32),
}

/// Parse one request, or the error reply to send.
pub fn parse(bytes: &[u8], api: SlirpApi) -> Result<Request, Value> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| error(format!("invalid JSON: {e}")))?;
    let execute = v
        .get("execute")
        .and_then(Value::as_str)
        .ok_or_else(|| error("no execute"))?;
    let args = v.get("arguments");
    match execute {
        "add_hostfwd" => {
            let args = args
                .and_then(Value::as_object)
                .ok_or_else(|| error("add_hostfwd: bad arguments"))?;
            let proto = match args.get("proto").and_then(Value::as_str) {
                Some("tcp") => ForwardProto::Tcp,
                Some("udp") => ForwardProto::Udp,
                _ => return Err(error("add_hostfwd: bad arguments.proto")),
            };
            let addr = |key: &str, default: IpAddr| -> Result<IpAddr, Value> {
                match args.get(key) {
                    None | Some(Value::Null) => Ok(default),
                    // rootlesskit sends "" for "any address".
                    Some(Value::String(s)) if s.is_empty() => Ok(default),
                    // IPv6 host and guest addresses as slirp4netns 1.1+ takes them.
                    Some(Value::String(s)) => s
                        .parse::<IpAddr>()
                        .map_err(|_| error(format!("add_hostfwd: bad arguments.{key}"))),
                    Some(_) => Err(error(format!("add_hostfwd: bad arguments.{key}"))),
                }
            };
            let port = |key: &str| -> Result<u16, Value> {
                args.get(key)
                    .and_then(Value::as_u64)
                    .filter(|p| (1..=65535).contains(p))
                    .map(|p| p as u16)
                    .ok_or_else(|| error(format!("add_hostfwd: bad arguments.{key}")))
            };
            let host_addr = addr("host_addr", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
            let host_port = port("host_port")?;
            let guest_ip = addr("guest_addr", IpAddr::V4(api.default_guest))?;
            let guest_port = port("guest_port")?;
            Ok(Request::Add(PortForward {
                proto,
                host: ForwardHost::Inet(SocketAddr::new(host_addr, host_port)),
                guest_ip: Some(guest_ip),
                guest_port,
            }))
        }
        "list_hostfwd" => Ok(Request::List),
        "remove_hostfwd" => {
            let id = args
                .and_then(|a| a.get("id"))
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| error("remove_hostfwd: bad arguments.id"))?;
            Ok(Request::Remove(id))
        }
        other => Err(error(format!("unknown execute \"{other}\""))),
    }
}

/// A forward in list_hostfwd's shape; None for forwards slirp4netns cannot express (unix).
pub fn entry(f: &ForwardInfo) -> Option<Value> {
    let ForwardHost::Inet(host) = &f.host else {
        return None;
    };
    Some(json!({
        "id": slirp_id(f.id),
        "proto": match f.proto { ForwardProto::Tcp => "tcp", ForwardProto::Udp => "udp" },
        "host_addr": host.ip().to_string(),
        "host_port": host.port(),
        "guest_addr": f.guest_ip.to_string(),
        "guest_port": f.guest_port,
    }))
}

/// slirp4netns numbers forwards from 1; slipway from 0.
fn slirp_id(id: u32) -> u64 {
    u64::from(id) + 1
}

/// Carry out one request through the event loop.
pub async fn handle(bytes: &[u8], api: SlirpApi, control: &ControlHandle) -> Value {
    let request = match parse(bytes, api) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    match request {
        Request::Add(rule) => match control
            .add_forwards(vec![(rule, None)], ForwardOrigin::Owner, UNIX_FORWARD_MODE)
            .await
        {
            Ok(added) => match added.first() {
                Some(f) => json!({ "return": { "id": slirp_id(f.id) } }),
                None => error("add_hostfwd: nothing was added"),
            },
            Err(e) => error(format!("add_hostfwd: {}", e.message())),
        },
        Request::List => match control.call(Command::ListForwards).await {
            Ok(all) => {
                let entries: Vec<Value> = all.iter().filter_map(entry).collect();
                json!({ "return": { "entries": entries } })
            }
            Err(e) => error(format!("list_hostfwd: {}", e.message())),
        },
        Request::Remove(0) => error("remove_hostfwd: bad arguments.id"),
        Request::Remove(id) => match control
            .call(|reply| Command::RemoveForward(id - 1, ForwardOrigin::Owner, reply))
            .await
        {
            Ok(Ok(_)) => json!({ "return": {} }),
            Ok(Err(_)) => error("remove_hostfwd: bad arguments.id"),
            Err(e) => error(format!("remove_hostfwd: {}", e.message())),
        },
    }
}

/// Serve the socket until the process ends.
pub async fn serve(listener: tokio::net::UnixListener, api: SlirpApi, control: ControlHandle) {
    loop {
        let mut conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!("slirp4netns API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let control = control.clone();
        tokio::spawn(async move {
            let reply = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut conn)).await {
                Ok(Ok(bytes)) => handle(&bytes, api, &control).await,
                Ok(Err(reply)) => reply,
                Err(_) => error("no complete request within 10 s"),
            };
            let mut out = reply.to_string().into_bytes();
            out.push(b'\n');
            let _ = conn.write_all(&out).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Read until EOF or until the bytes so far form one JSON value.
async fn read_request(conn: &mut tokio::net::UnixStream) -> Result<Vec<u8>, Value> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn
            .read(&mut chunk)
            .await
            .map_err(|e| error(format!("reading the request: {e}")))?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() + n > crate::api::MAX_BODY {
            return Err(error(format!(
                "the request is larger than {} bytes",
                crate::api::MAX_BODY
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        if serde_json::from_slice::<Value>(&buf).is_ok() {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: SlirpApi = SlirpApi {
        default_guest: Ipv4Addr::new(10, 0, 2, 100),
    };

    fn desc(v: Value) -> String {
        v["error"]["desc"].as_str().unwrap().to_string()
    }

    #[test]
    fn add_hostfwd_in_rootlesskits_shape() {
        let r = parse(
            br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}}"#,
            API,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Add(PortForward {
                proto: ForwardProto::Tcp,
                host: ForwardHost::Inet("127.0.0.1:8080".parse().unwrap()),
                guest_ip: Some(Ipv4Addr::new(10, 0, 2, 100).into()),
                guest_port: 80,
            })
        );
    }

    #[test]
    fn defaults_are_slirp4netns_ones() {
        // No host_addr: all interfaces, as slirp4netns does; "" (rootlesskit) likewise. No
        // guest_addr: the namespace.
        for body in [
            r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":5353,"guest_port":53}}"#,
            r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"","host_port":5353,"guest_addr":"","guest_port":53}}"#,
        ] {
            assert_eq!(
                parse(body.as_bytes(), API).unwrap(),
                Request::Add(PortForward {
                    proto: ForwardProto::Udp,
                    host: ForwardHost::Inet("0.0.0.0:5353".parse().unwrap()),
                    guest_ip: Some(Ipv4Addr::new(10, 0, 2, 100).into()),
                    guest_port: 53,
                })
            );
        }
    }

    #[test]
    fn list_and_remove() {
        assert_eq!(
            parse(br#"{"execute":"list_hostfwd"}"#, API).unwrap(),
            Request::List
        );
        assert_eq!(
            parse(br#"{"execute":"remove_hostfwd","arguments":{"id":7}}"#, API).unwrap(),
            Request::Remove(7)
        );
    }

    #[test]
    fn errors_have_slirp4netns_shape() {
        let cases: [(&[u8], &str); 8] = [
            (b"nonsense", "bad request: invalid JSON"),
            (br#"{"arguments":{}}"#, "bad request: no execute"),
            (br#"{"execute":"reboot"}"#, "bad request: unknown execute \"reboot\""),
            (
                br#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.proto",
            ),
            (
                br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":0,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port",
            ),
            (
                br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":70000,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_port",
            ),
            (
                br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1:","host_port":1,"guest_port":1}}"#,
                "bad request: add_hostfwd: bad arguments.host_addr",
            ),
            (
                br#"{"execute":"remove_hostfwd","arguments":{"id":"x"}}"#,
                "bad request: remove_hostfwd: bad arguments.id",
            ),
        ];
        for (body, want) in cases {
            let got = desc(parse(body, API).unwrap_err());
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn ipv6_addresses_are_taken() {
        let Request::Add(f) = parse(
            br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":8080,"guest_addr":"fd00::5054:ff:fe12:3456","guest_port":80}}"#,
            API,
        )
        .unwrap() else {
            panic!("not an add")
        };
        assert_eq!(f.host, ForwardHost::Inet("[::1]:8080".parse().unwrap()));
        assert_eq!(f.guest_ip, Some("fd00::5054:ff:fe12:3456".parse().unwrap()));
    }

    #[test]
    fn list_entries_skip_unix_listeners() {
        let tcp = ForwardInfo {
            id: 3,
            proto: ForwardProto::Tcp,
            kind: "tcp",
            host: ForwardHost::Inet("0.0.0.0:8080".parse().unwrap()),
            guest_ip: Ipv4Addr::new(10, 0, 2, 100).into(),
            guest_port: 80,
            origin: ForwardOrigin::Owner,
        };
        assert_eq!(
            entry(&tcp).unwrap(),
            json!({"id":4,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80})
        );
        let unix = ForwardInfo {
            host: ForwardHost::Unix("/tmp/x.sock".into()),
            kind: "unix",
            ..tcp
        };
        assert!(entry(&unix).is_none());
    }
}
