//! The CLI's client for the API socket: `slipway forward add|ls|rm`, `slipway leases`,
//! `slipway flows`, `slipway dns add|ls|rm`, `slipway counters` — human tables by default, the
//! API's JSON with `--json`.
//!
//! One HTTP/1.1 request per connection (`Connection: close`), the answer read to the end of the
//! stream. Limits: answers up to [`MAX_ANSWER`] bytes; [`TIMEOUT`] per request.

use serde_json::Value;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const MAX_ANSWER: u64 = 16 << 20;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request failed, said for a person.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the slipway API at {path}: {source}; is `slipway serve --api {path}` running?")]
    Connect { path: String, source: io::Error },
    #[error("the API at {path} failed mid-request: {source}")]
    Io { path: String, source: io::Error },
    #[error("the API answered something that is not HTTP")]
    BadAnswer,
    /// The API's own error (its message, or the body for non-JSON answers).
    #[error("{0}")]
    Api(String),
}

/// An answer: status and body parsed as JSON (Null when empty).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Send `method path` with an optional JSON body to the API socket at `socket`.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, ClientError> {
    let p = socket.display().to_string();
    let mut s = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: p.clone(),
        source,
    })?;
    let io_err = |source| ClientError::Io {
        path: p.clone(),
        source,
    };
    s.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: slipway\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).map_err(io_err)?;
    s.write_all(payload.as_bytes()).map_err(io_err)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io_err)?;
    parse_answer(&raw)
}

/// Status line, headers, body (Content-Length or to the end; chunked is decoded).
fn parse_answer(raw: &[u8]) -> Result<Answer, ClientError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ClientError::BadAnswer)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| ClientError::BadAnswer)?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(ClientError::BadAnswer)?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or(ClientError::BadAnswer)?;
    }
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Ok(Answer {
        status,
        body: value,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The answer's body if its status is a success, else the API's error as a [`ClientError`].
pub fn expect_ok(a: Answer) -> Result<Value, ClientError> {
    if (200..300).contains(&a.status) {
        return Ok(a.body);
    }
    let msg = a.body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| match &a.body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    Err(ClientError::Api(msg))
}

/// Rows of `columns` (JSON keys) from an array of objects, as an aligned table.
pub fn table(items: &Value, columns: &[&str]) -> String {
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    for item in items.as_array().into_iter().flatten() {
        rows.push(columns.iter().map(|c| cell(&item[*c])).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_with_length_chunked_and_errors() {
        let a =
            parse_answer(b"HTTP/1.1 201 Created\r\ncontent-length: 9\r\n\r\n[{\"a\":1}]").unwrap();
        assert_eq!((a.status, a.body[0]["a"].as_u64()), (201, Some(1)));
        let a = parse_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(a.body, serde_json::json!([1, 2]));
        let a = parse_answer(b"HTTP/1.1 500 Internal Server Error\r\n\r\nproxy not found").unwrap();
        assert_eq!(expect_ok(a).unwrap_err().to_string(), "proxy not found");
        let a = parse_answer(
            b"HTTP/1.1 409 Conflict\r\n\r\n{\"error\":{\"code\":\"conflict\",\"message\":\"in use\"}}",
        )
        .unwrap();
        assert_eq!(expect_ok(a).unwrap_err().to_string(), "in use");
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn tables_align() {
        let v = serde_json::json!([{"id": 0, "host": "127.0.0.1:8080"}, {"id": 12, "host": null}]);
        assert_eq!(
            table(&v, &["id", "host"]),
            "ID  HOST\n0   127.0.0.1:8080\n12  -\n"
        );
    }
}
