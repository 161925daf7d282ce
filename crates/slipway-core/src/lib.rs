//! slipway's sans-IO core.
//!
//! Frames from guests go in, frames to guests and host-socket operations come out. Nothing here
//! reads a clock or makes a system call: time arrives as an argument, and the TCP/UDP/ICMP
//! engines act on host sockets only through the [`flows::HostSockets`] trait, which the driver
//! implements with real sockets and tests implement with simulated ones.
//!
//! Data path: [`switch`] → [`network`] (the gateway: [`gateway`] ARP/ICMP, [`services`] DHCP and
//! DNS) → [`flows`] (TCP, UDP, ICMP echo translation) → host sockets; and back through [`tx`].
//! Host listeners of port forwards ([`forward`]) enter the same flows from the other side.

pub mod config;
pub mod counters;
pub mod flows;
pub mod forward;
pub mod frames;
pub mod gateway;
pub mod hash;
pub mod network;
pub mod offload;
pub mod services;
pub mod switch;
pub mod tx;

pub use config::{IpCidr, Mac, NetworkConfig};
pub use forward::{ForwardHost, ForwardProto, PortForward};
pub use network::Network;
