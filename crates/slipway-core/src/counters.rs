//! Counters: every drop has a reason, every reason a count.
//!
//! Normal outcomes of untrusted input ("malformed frame", "flow table full") are counted here, not
//! logged per packet. The driver exposes them (log at exit, API later).

macro_rules! reasons {
    ($($name:ident => $text:literal,)*) => {
        /// Why a frame, datagram or flow was dropped or refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($name,)* }
        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

reasons! {
    EthernetTruncated => "ethernet_truncated",
    UnknownEthertype => "unknown_ethertype",
    BadSourceMac => "bad_source_mac",
    MacTableFull => "mac_table_full",
    ArpMalformed => "arp_malformed",
    ArpNotForUs => "arp_not_for_us",
    Ipv4Malformed => "ipv4_malformed",
    Ipv4Fragment => "ipv4_fragment",
    Ipv4NotForGateway => "ipv4_not_for_gateway",
    Ipv6Disabled => "ipv6_disabled",
    Ipv6Malformed => "ipv6_malformed",
    Ipv6Fragment => "ipv6_fragment",
    Ipv6NotForGateway => "ipv6_not_for_gateway",
    Icmpv6Malformed => "icmpv6_malformed",
    NdpInvalid => "ndp_invalid",
    NdpNotForUs => "ndp_not_for_us",
    MulticastNotRouted => "multicast_not_routed",
    Dhcp6Dropped => "dhcp6_dropped",
    UnknownIpProtocol => "unknown_ip_protocol",
    TcpMalformed => "tcp_malformed",
    TcpBadChecksum => "tcp_bad_checksum",
    TcpNoFlow => "tcp_no_flow",
    TcpFlowTableFull => "tcp_flow_table_full",
    TcpPendingConnectsFull => "tcp_pending_connects_full",
    TcpOutOfWindow => "tcp_out_of_window",
    TcpConnectFailed => "tcp_connect_failed",
    TcpConnectTimeout => "tcp_connect_timeout",
    TcpRetransmitLimit => "tcp_retransmit_limit",
    TcpIdleTimeout => "tcp_idle_timeout",
    TcpBadSackBlock => "tcp_bad_sack_block",
    UdpMalformed => "udp_malformed",
    UdpBadChecksum => "udp_bad_checksum",
    UdpFlowTableFull => "udp_flow_table_full",
    UdpSendFailed => "udp_send_failed",
    UdpDatagramTooLarge => "udp_datagram_too_large",
    UdpNotRouted => "udp_not_routed",
    UdpClosedPort => "udp_closed_port",
    IcmpMalformed => "icmp_malformed",
    IcmpUnsupportedType => "icmp_unsupported_type",
    IcmpFlowTableFull => "icmp_flow_table_full",
    IcmpSendFailed => "icmp_send_failed",
    EgressDenied => "egress_denied",
    DhcpDropped => "dhcp_dropped",
    DnsQueueFull => "dns_queue_full",
    DnsReplyTruncated => "dns_reply_truncated",
    NoPortForGuest => "no_port_for_guest",
    NeighborTableFull => "neighbor_table_full",
    ForwardAcceptFailed => "forward_accept_failed",
    ForwardClientClash => "forward_client_clash",
    ForwardRefusedByGuest => "forward_refused_by_guest",
    ForwardGuestUnreachable => "forward_guest_unreachable",
    ForwardFlowClash => "forward_flow_clash",
}

/// All counters of one network.
/// Room for drop reasons (the counters are a fixed array).
const MAX_REASONS: usize = 80;

#[derive(Debug, Clone)]
pub struct Counters {
    pub frames_from_guests: u64,
    pub bytes_from_guests: u64,
    pub frames_to_guests: u64,
    pub bytes_to_guests: u64,
    pub tcp_flows_opened: u64,
    pub tcp_flows_closed: u64,
    pub udp_flows_opened: u64,
    pub udp_flows_expired: u64,
    pub icmp_echo_forwarded: u64,
    pub dns_queries: u64,
    /// Host clients accepted on TCP forwards.
    pub forwarded_connections: u64,
    /// Datagrams from host clients sent to guests through UDP forwards.
    pub forwarded_datagrams: u64,
    drops: [u64; MAX_REASONS],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            frames_from_guests: 0,
            bytes_from_guests: 0,
            frames_to_guests: 0,
            bytes_to_guests: 0,
            tcp_flows_opened: 0,
            tcp_flows_closed: 0,
            udp_flows_opened: 0,
            udp_flows_expired: 0,
            icmp_echo_forwarded: 0,
            dns_queries: 0,
            forwarded_connections: 0,
            forwarded_datagrams: 0,
            drops: [0; MAX_REASONS],
        }
    }
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every counter by name (drops aside), for reports and the API.
    pub fn values(&self) -> [(&'static str, u64); 12] {
        [
            ("frames_from_guests", self.frames_from_guests),
            ("bytes_from_guests", self.bytes_from_guests),
            ("frames_to_guests", self.frames_to_guests),
            ("bytes_to_guests", self.bytes_to_guests),
            ("tcp_flows_opened", self.tcp_flows_opened),
            ("tcp_flows_closed", self.tcp_flows_closed),
            ("udp_flows_opened", self.udp_flows_opened),
            ("udp_flows_expired", self.udp_flows_expired),
            ("icmp_echo_forwarded", self.icmp_echo_forwarded),
            ("dns_queries", self.dns_queries),
            ("forwarded_connections", self.forwarded_connections),
            ("forwarded_datagrams", self.forwarded_datagrams),
        ]
    }

    /// Non-zero drop counts, for reports.
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.drops[*r as usize]))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_and_count() {
        assert!(DropReason::ALL.len() <= MAX_REASONS);
        let mut c = Counters::default();
        c.drop(DropReason::Ipv4Fragment);
        c.drop(DropReason::Ipv4Fragment);
        assert_eq!(c.dropped(DropReason::Ipv4Fragment), 2);
        assert_eq!(c.drops().collect::<Vec<_>>(), vec![("ipv4_fragment", 2)]);
    }
}
