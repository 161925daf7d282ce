//! The virtual router's own protocols: ARP and IPv6 neighbor discovery for the addresses it
//! owns, ICMP echo to them.

pub mod arp;
pub mod icmp;
pub mod ndp;
