//! slipway: a user-mode network stack for virtual machines and containers.
//!
//! This crate is the driver around the sans-IO core (`slipway-core`), in data-path order: guest
//! links ([`link`], and [`netns`] for TAP devices inside network namespaces) → the core's switch,
//! gateway and flow engines → host sockets ([`sockets`]), all run by one readiness loop
//! ([`event_loop`]). DNS forwarding runs on its own thread ([`dns_forwarder`]), and so does the
//! HTTP API ([`api`]), which reaches the loop only through typed commands ([`control`]). The `slipway`
//! binary (`main.rs`) is the command line ([`cli`], and the drop-ins in [`compat`]; [`sandbox`]
//! hardens the slirp4netns drop-in) around it; the library form exists so that
//! fuzz targets and tests can reach the parsers here.

pub mod api;
pub mod cli;
pub mod compat;
pub mod control;
pub mod dns_forwarder;
pub mod event_loop;
pub mod link;
pub mod netns;
pub mod pcap;
pub mod run;
pub mod sandbox;
pub mod sockets;
pub mod timer;
pub mod unix_socket;
