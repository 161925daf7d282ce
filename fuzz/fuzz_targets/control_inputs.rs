#![no_main]
//! What people and API clients hand slipway's control plane: publish specs (`-p`, the API's
//! POST /v1/forwards), gvproxy command lines (NUL-separated arguments), and the JSON bodies of
//! the native and gvproxy API calls. Byte 0 picks the parser, the rest is its input. Nothing
//! may panic; a spec that parses must describe what it was given.

use slipway::api::{gvproxy, native};
use slipway_core::forward::{parse_publish, ForwardHost, MAX_RANGE};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let Ok(spec) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(forwards) = parse_publish(spec) {
                assert!(!forwards.is_empty() && forwards.len() as u32 <= MAX_RANGE);
                for f in &forwards {
                    assert!(f.guest_port > 0, "{spec}: guest port 0");
                    if let ForwardHost::Inet(a) = f.host {
                        assert!(a.port() > 0, "{spec}: host port 0");
                    }
                }
            }
        }
        1 => {
            let args: Vec<String> = rest
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if let Ok(mode) = slipway::compat::gvproxy::parse(&args) {
                // Whatever it accepted must make a valid network or a clear error.
                let _ = mode.serve.network_config();
                let _ = mode.serve.forwards();
            }
        }
        2 => {
            let _ = serde_json::from_slice::<gvproxy::ExposeRequest>(rest);
            let _ = serde_json::from_slice::<gvproxy::UnexposeRequest>(rest);
            let _ = serde_json::from_slice::<gvproxy::Zone>(rest);
        }
        _ => {
            let _ = serde_json::from_slice::<native::AddForward>(rest);
            let _ = serde_json::from_slice::<native::RecordJson>(rest);
        }
    }
});
