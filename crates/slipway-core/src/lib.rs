//! slipway's sans-IO core.
//!
//! Frames from guests go in, frames to guests and host-socket operations come out. Nothing here
//! reads a clock or makes a system call: time arrives as an argument, and the TCP/UDP engines act
//! on host sockets only through the [`flows::HostSockets`] trait, which the driver implements with
//! real sockets and tests implement with simulated ones.

pub mod config;
pub mod services;

pub use config::{IpCidr, Mac, NetworkConfig};
