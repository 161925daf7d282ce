//! Services the gateway offers to guests: DHCPv4 and DNS message handling.

pub mod dhcp4;
pub mod dhcp6;
pub mod dns;
