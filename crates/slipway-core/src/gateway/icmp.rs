//! ICMP echo answered by the router itself (pings of the gateway and the host-loopback alias).

use slipway_wire::icmp::{self, Icmpv4Packet};

/// Whether `msg` is an echo request the gateway answers; the reply keeps identifier, sequence
/// and data (RFC 792).
pub fn is_echo_request(msg: &Icmpv4Packet<'_>) -> bool {
    msg.msg_type() == icmp::ECHO_REQUEST && msg.code() == 0
}
