#![no_main]
//! What people, runtimes and API clients hand slipway's control plane: publish specs (`-p`, the
//! API's POST /v1/forwards), gvproxy and slirp4netns command lines (NUL-separated arguments),
//! the JSON bodies of the native, gvproxy and slirp4netns API calls, CNI network configurations
//! and environments, the user-namespace helper's arguments, and gvproxy's /tunnel and /connect
//! request lines. Byte 0 picks the parser, the
//! rest is its input. Nothing may panic; a spec that parses must describe what it was given.

use slipway::api::{gvproxy, native, slirp4netns};
use slipway::compat::cni;
use slipway_core::forward::{parse_publish, ForwardHost, MAX_RANGE};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let args = || -> Vec<String> {
        rest.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    match which % 8 {
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
            if let Ok(mode) = slipway::compat::gvproxy::parse(&args()) {
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
        3 => {
            let _ = serde_json::from_slice::<native::AddForward>(rest);
            let _ = serde_json::from_slice::<native::RecordJson>(rest);
        }
        4 => {
            if let Ok(mode) = slipway::compat::slirp4netns::parse(&args()) {
                if mode.print.is_none() {
                    assert!(mode.target.is_some(), "accepted without a namespace");
                    let _ = mode.serve.network_config();
                }
            }
        }
        5 => {
            let api = slirp4netns::SlirpApi {
                default_guest: std::net::Ipv4Addr::new(10, 0, 2, 100),
            };
            match slirp4netns::parse(rest, api) {
                Ok(slirp4netns::Request::Add(f)) => assert!(f.guest_port > 0),
                Ok(_) => {}
                Err(reply) => assert!(reply["error"]["desc"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("bad request: "))),
            }
        }
        6 => {
            // A CNI configuration on stdin, with a fixed ADD environment.
            if let Ok(conf) = cni::netconf(rest) {
                let env = cni::Environment {
                    command: cni::Operation::Add,
                    container_id: "fuzz".into(),
                    netns: Some("/run/netns/fuzz".into()),
                    ifname: "eth0".into(),
                };
                let dir = cni::attachment_dir(&conf, &env);
                if let Ok(plan) = cni::plan(&conf, &env, &dir, [2, 0, 0, 0, 0, 1]) {
                    let _ = cni::result(&conf, &env, &plan, &[]);
                }
            }
        }
        _ => {
            // CNI_* variables as NUL-separated KEY=VALUE pairs, and the helper's arguments.
            let vars = args();
            let _ = cni::environment(|k| {
                vars.iter()
                    .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                    .map(String::from)
            });
            let _ = slipway::netns::helper::decode(&vars);
            // gvproxy's raw endpoints: a request line and a tunnel query.
            let text = String::from_utf8_lossy(rest);
            let _ = slipway::api::raw::route_of(&text);
            if let Ok((_, port)) = slipway::api::raw::tunnel_target(&text) {
                assert!(port > 0);
            }
        }
    }
});
