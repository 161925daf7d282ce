//! gvproxy's two endpoints that leave HTTP once the request is read: `/tunnel` and `/connect`.
//!
//! # Theory of operation
//!
//! gvproxy takes these connections over from its HTTP server ("hijacks" them) without sending
//! any HTTP response: `GET /tunnel?ip=IP&port=N` answers the two bytes `OK` and the connection
//! is then a byte stream to the guest's TCP port; `POST /connect` answers nothing and the
//! connection is then a guest link, frames behind 2-byte little-endian lengths (gvproxy's
//! default protocol; 4-byte big-endian ones when gvproxy mode has `-listen-qemu`).
//!
//! So every connection to the API socket is classified before HTTP sees it ([`classify`]): its
//! first line is peeked (`MSG_PEEK`, so nothing is consumed); `/tunnel` and `/connect` requests
//! have their head read here, everything else goes to the HTTP server untouched.
//!
//! - A tunnel is a temporary unix-socket forward to the guest's port (next to the API socket,
//!   `API.tunnel-IP-PORT`, shared by the tunnels to one target and removed after the last one
//!   closes), so it goes through the same TCP translation as every forward; the API thread copies
//!   bytes between the two sockets. The guest sees the host alias as the client. Errors before
//!   `OK` are HTTP 500 with a plain-text reason, as gvproxy's.
//! - A connect hands the socket to the event loop ([`Command::AddLink`]), like any accepted
//!   guest link.
//!
//! Limits: the first line within [`HEAD_TIMEOUT`] and at most [`MAX_HEAD`] bytes of head; a
//! connection that says nothing in that time is closed.

use crate::control::{Command, ControlHandle, ForwardOrigin, LinkFraming};
use slipway_core::{ForwardHost, ForwardProto, PortForward};
use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// The longest request head read for a raw endpoint.
pub const MAX_HEAD: usize = 8192;
/// How long a new connection has to send its request line.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Ordinary HTTP: leave it to the router.
    Http,
    /// `/tunnel` with its query string.
    Tunnel(String),
    /// `/connect`.
    Connect,
}

/// Route a request line (`METHOD SP TARGET SP VERSION`).
pub fn route_of(line: &str) -> Route {
    let mut parts = line.split(' ');
    let (Some(_method), Some(target)) = (parts.next(), parts.next()) else {
        return Route::Http;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/tunnel" => Route::Tunnel(query.to_string()),
        "/connect" => Route::Connect,
        _ => Route::Http,
    }
}

/// `ip` and `port` of a tunnel's query, or gvproxy's error text.
pub fn tunnel_target(query: &str) -> Result<(Ipv4Addr, u16), String> {
    let mut ip = None;
    let mut port = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "ip" => ip = Some(v.to_string()),
            "port" => port = Some(v.to_string()),
            _ => {}
        }
    }
    let ip = ip.filter(|s| !s.is_empty()).ok_or("ip is mandatory")?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("ip {ip}: not an IPv4 address"))?;
    let port = port.unwrap_or_default();
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?}: not a TCP port"))?;
    Ok((ip, port))
}

fn peek(conn: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv with MSG_PEEK into `buf`, on a socket we own.
    let n = unsafe {
        libc::recv(
            conn.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Peek until `done(bytes)` says how long the wanted part is, EOF, or `limit` bytes.
async fn peek_until(
    conn: &UnixStream,
    limit: usize,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut buf = vec![0u8; limit];
    let mut last = usize::MAX;
    loop {
        conn.readable().await?;
        let n = match conn.try_io(Interest::READABLE, || peek(conn, &mut buf)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if let Some(len) = done(&buf[..n]) {
            buf.truncate(n);
            return Ok(Some((buf, len)));
        }
        if n == 0 || n == limit || n == last {
            // EOF, too long, or no new bytes since the last wake-up (the peer stopped): give up
            // once nothing more can come.
            if n == 0 || n == limit {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        last = n;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Classify a new connection; for a raw route its head has been read.
pub async fn classify(conn: &mut UnixStream) -> io::Result<Option<Route>> {
    let first = tokio::time::timeout(
        HEAD_TIMEOUT,
        peek_until(conn, 2048, |b| find(b, b"\r\n").map(|i| i + 2)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request line"))??;
    let Some((bytes, line_len)) = first else {
        // Not HTTP we can route (or a line longer than 2 KiB): let the HTTP server answer it.
        return Ok(Some(Route::Http));
    };
    let line = String::from_utf8_lossy(&bytes[..line_len - 2]).into_owned();
    let route = route_of(&line);
    if route == Route::Http {
        return Ok(Some(route));
    }
    let head = tokio::time::timeout(
        HEAD_TIMEOUT,
        peek_until(conn, MAX_HEAD, |b| find(b, b"\r\n\r\n").map(|i| i + 4)),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "incomplete request head"))??;
    let Some((_, head_len)) = head else {
        return Ok(None);
    };
    let mut sink = vec![0u8; head_len];
    conn.read_exact(&mut sink).await?;
    Ok(Some(route))
}

/// One target's tunnel forward: its forward id, socket path, and how many tunnels use it.
type TunnelForward = (u32, PathBuf, usize);

/// Tunnel forwards in use, by target.
#[derive(Default)]
pub struct Tunnels {
    open: tokio::sync::Mutex<HashMap<(Ipv4Addr, u16), TunnelForward>>,
}

async fn http_error(conn: &mut UnixStream, text: &str) {
    let body = format!("{text}\n");
    let reply = format!(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Serve one tunnel.
pub async fn tunnel(
    mut conn: UnixStream,
    query: &str,
    api_path: &Path,
    tunnels: &Arc<Tunnels>,
    control: &ControlHandle,
) {
    let (ip, port) = match tunnel_target(query) {
        Ok(t) => t,
        Err(e) => return http_error(&mut conn, &e).await,
    };
    // Take (or create) the forward for this target; the table stays locked while a forward is
    // added, so two tunnels to one target share it.
    let path = {
        let mut open = tunnels.open.lock().await;
        if let Some(entry) = open.get_mut(&(ip, port)) {
            entry.2 += 1;
            entry.1.clone()
        } else {
            let mut p = api_path.as_os_str().to_owned();
            p.push(format!(".tunnel-{ip}-{port}"));
            let path = PathBuf::from(p);
            let rule = PortForward {
                proto: ForwardProto::Tcp,
                host: ForwardHost::Unix(path.clone()),
                guest_ip: Some(ip.into()),
                guest_port: port,
            };
            // The tunnel's socket is as private as the API socket next to it.
            match control
                .add_forwards(vec![(rule, None)], ForwardOrigin::Owner, 0o600)
                .await
            {
                Ok(added) if !added.is_empty() => {
                    open.insert((ip, port), (added[0].id, path.clone(), 1));
                    path
                }
                Ok(_) => {
                    drop(open);
                    return http_error(&mut conn, "cannot open the tunnel").await;
                }
                Err(e) => {
                    drop(open);
                    let text = format!("cannot dial {ip}:{port}: {}", e.message());
                    return http_error(&mut conn, &text).await;
                }
            }
        }
    };
    match UnixStream::connect(&path).await {
        Ok(mut guest) => {
            if conn.write_all(b"OK").await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut guest).await;
            }
        }
        Err(e) => http_error(&mut conn, &format!("cannot dial {ip}:{port}: {e}")).await,
    }
    // Release the forward after the last tunnel to this target.
    let mut open = tunnels.open.lock().await;
    let last = match open.get_mut(&(ip, port)) {
        Some(entry) if entry.2 > 1 => {
            entry.2 -= 1;
            None
        }
        Some(_) => open.remove(&(ip, port)).map(|(id, _, _)| id),
        None => None,
    };
    if let Some(id) = last {
        let _ = control
            .call(|reply| Command::RemoveForward(id, ForwardOrigin::Owner, reply))
            .await;
    }
}

/// Hand a `/connect` connection to the event loop as a guest link.
pub async fn connect(conn: UnixStream, framing: LinkFraming, control: &ControlHandle) {
    let std = match conn.into_std() {
        Ok(s) => s,
        Err(e) => return tracing::warn!("/connect: cannot take the connection over: {e}"),
    };
    match control
        .call(|reply| Command::AddLink(std, framing, reply))
        .await
    {
        Ok(Ok(port)) => tracing::info!("/connect: a guest link on port {port}"),
        Ok(Err(e)) | Err(e) => tracing::warn!("/connect: {}", e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_routed() {
        assert_eq!(
            route_of("GET /tunnel?ip=192.168.127.2&port=22 HTTP/1.1"),
            Route::Tunnel("ip=192.168.127.2&port=22".into())
        );
        assert_eq!(route_of("POST /connect HTTP/1.1"), Route::Connect);
        assert_eq!(
            route_of("GET /services/forwarder/all HTTP/1.1"),
            Route::Http
        );
        assert_eq!(route_of("GET /tunnelx HTTP/1.1"), Route::Http);
        assert_eq!(route_of("garbage"), Route::Http);
    }

    #[test]
    fn tunnel_queries_are_checked_with_gvproxys_texts() {
        assert_eq!(
            tunnel_target("ip=192.168.127.2&port=22"),
            Ok((Ipv4Addr::new(192, 168, 127, 2), 22))
        );
        assert_eq!(tunnel_target("port=22"), Err("ip is mandatory".into()));
        assert!(tunnel_target("ip=x&port=22")
            .unwrap_err()
            .contains("not an IPv4"));
        assert!(tunnel_target("ip=192.168.127.2")
            .unwrap_err()
            .contains("not a TCP port"));
        assert!(tunnel_target("ip=192.168.127.2&port=0").is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn classify_reads_a_raw_head_and_leaves_http_untouched() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"GET /tunnel?ip=1.2.3.4&port=5 HTTP/1.1\r\nHost: x\r\n\r\nDATA")
            .await
            .unwrap();
        assert_eq!(
            classify(&mut a).await.unwrap(),
            Some(Route::Tunnel("ip=1.2.3.4&port=5".into()))
        );
        let mut rest = [0u8; 4];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"DATA", "only the head was consumed");

        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"GET /v1/info HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(classify(&mut a).await.unwrap(), Some(Route::Http));
        let mut all = [0u8; 6];
        a.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"GET /v", "HTTP requests are not consumed");
    }
}
