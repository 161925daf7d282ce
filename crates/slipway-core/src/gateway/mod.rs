//! The virtual router's own protocols: ARP for the addresses it owns, ICMP echo to them.

pub mod arp;
pub mod icmp;
