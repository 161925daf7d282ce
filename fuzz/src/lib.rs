//! Harnesses behind slipway's fuzz targets, kept in a library so that the seed generator
//! (`examples/make_seeds.rs`) and the unit tests drive exactly the code the fuzzers run.
//!
//! # Theory of operation
//!
//! Each `fuzz_targets/*.rs` is one line that calls a `run` function here:
//!
//! - [`wire::run`]: the bytes as an Ethernet frame through every checked view of `slipway-wire`
//!   (and the same bytes straight into each L3/L4 view), with accessors, builder round trips and
//!   a reference Internet checksum as oracles.
//! - [`dhcp::run`]: a sequence of DHCP messages into one `Dhcp4Server` with advancing time.
//! - [`dhcp6::run`]: a sequence of DHCPv6 messages into one `Dhcp6Server` with advancing time.
//! - [`network::run`]: a script of operations against one whole `Network`: guest frames on two
//!   switch ports, batch ends, TX drains, virtual time and timers, host-socket readiness and
//!   host-side data from a deterministic simulated host ([`sim::SimHost`]) that never touches
//!   a real socket.
//! - `dns::run` (feature `dns`): DNS messages into the local zone.
//!
//! Inputs are cut into records with [`input::Cursor`], which never fails: a short input simply
//! ends the script. Nothing here panics on any input; a panic is a finding in slipway's code or
//! a broken oracle (each `assert!` says which invariant it checks).
//!
//! # Limits
//!
//! - `network::run`: at most [`network::MAX_OPS`] operations per input, at most
//!   [`sim::MAX_HOST_QUEUE`] bytes queued by the simulated host per TCP socket, at most
//!   [`sim::MAX_DATAGRAMS`] datagrams queued per UDP or ping socket.
//! - `dhcp::run`: at most [`dhcp::MAX_MESSAGES`] messages per input.
//! - `dhcp6::run`: at most [`dhcp6::MAX_MESSAGES`] messages per input.

pub mod dhcp;
pub mod dhcp6;
#[cfg(feature = "dns")]
pub mod dns;
pub mod input;
pub mod network;
pub mod seeds;
pub mod sim;
pub mod wire;
