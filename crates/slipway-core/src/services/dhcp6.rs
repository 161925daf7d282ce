//! DHCPv6 server (RFC 8415) for guests that take their addresses from router advertisements
//! (SLAAC) and ask DHCPv6 only for DNS, or that also want an address from a pool: recursive DNS
//! servers and the domain search list (options 23 and 24, RFC 3646), stateless and stateful.
//!
//! # Theory of operation
//!
//! The server is sans-IO. [`Dhcp6Server::handle`] takes the UDP payload a guest sent to port 547,
//! the Ethernet source address of its frame and the current monotonic time, and returns the reply
//! payload; the caller sends it from the gateway's link-local address, port 547, to the client's
//! link-local address, port 546. A message that gets no reply for a reason worth counting comes
//! back as a [`Dhcp6Drop`]; `Ok(None)` is a valid message RFC 8415 says not to answer (a Confirm
//! without addresses). The datagram's destination (multicast or unicast, RFC 8415 §18.4) is not
//! checked: the caller hands over what reaches port 547 on the gateway.
//!
//! Parsing: guest bytes never reach `dhcproto`'s v6 decoder. In 0.15 it panics on a Status Code
//! shorter than 2 bytes and on a Vendor Class or Vendor-specific Information option shorter than
//! 4 (`len - 2`, `len - 4`: "attempt to subtract with overflow" in debug and fuzz builds); it
//! recurses without limit into IA_NA, IA_TA, IA Address, IA_PD, IA Prefix, Vendor-specific and
//! Relay Message options (64 KB of nested IA_TA headers overflow a 2 MiB stack: an abort, in
//! release builds too); it reads Preference, Elapsed Time, Rapid Commit, Server Unicast and
//! Reconfigure options at their fixed size whatever their length field says, so a wrong length
//! shifts every later option; and it silently drops every option after the first it cannot
//! decode. So the message is read with one checked walk over the raw bytes: the 4-byte header,
//! each top-level option's length, and in IA_NA and IA_TA the IA Address options (their own
//! sub-options are skipped). The walk keeps only what the server uses, borrowed from the payload
//! (no allocation); other options are skipped by their length. `dhcproto` only encodes replies.
//! Option 24 is encoded here: `dhcproto` compresses names there, which RFC 8415 §10 forbids.
//!
//! Validation follows RFC 8415 §16, each reject a drop reason: server messages (Advertise,
//! Reply, Reconfigure, Relay-reply) and unknown types are [`Dhcp6Drop::UnsupportedMessageType`];
//! Relay-forward is [`Dhcp6Drop::Relayed`] (a virtual link has no relays); Request, Renew,
//! Release and Decline must carry our Server Identifier, Solicit, Confirm and Rebind must carry
//! none, an Information-request may carry ours; a Server Identifier that is not ours is
//! [`Dhcp6Drop::NotForUs`]; a Client Identifier (a DUID of 3 to 130 bytes) is required except in
//! an Information-request, which must carry no IA. Options 1, 2 and 14 may appear once, an IAID
//! once per IA type, and Rapid Commit must be empty, or the message is
//! [`Dhcp6Drop::Malformed`].
//!
//! The Server Identifier is the DUID-LL (type 3, hardware type 1) of the server MAC: stable
//! across restarts, so guests keep renewing with the same server.
//!
//! Client identity is (client MAC, DUID, IAID): one lease per IA_NA of a client's DUID, seen on
//! the frame's source MAC. The MAC is part of the identity because DUIDs are not secret (a
//! Solicit is multicast): without it a guest could renew, release or decline another guest's
//! lease by copying its DUID (keeping guests from sending with a foreign source MAC is the
//! switch's job). A guest whose MAC changes gets a new lease; its old one expires. The MAC also
//! lets the network find a guest by address ([`Dhcp6Server::holder_of`]).
//!
//! State is one *lease* per address: (identity, state, expiry), *offered* (held [`OFFER_HOLD`]
//! after an Advertise) or *bound* (after a Reply, until the valid lifetime ends). Expired leases
//! stay tied to their identity, so a client that comes back gets the same address, until no
//! never-used pool address is left (or the table is full) and another client needs one; then the
//! longest-expired lease is reused, unrequested offers first. One MAC holds at most
//! [`MAX_LEASES_PER_MAC`] live leases: guests that boot with a fresh DUID each time (no saved
//! state) would otherwise pile up leases; a new one takes over the MAC's lease that expires
//! first.
//!
//! - Information-request → Reply with options 23, 24 and Information Refresh Time (32).
//! - Solicit → Advertise offering per IA_NA: the identity's lease; else a hinted address (an IA
//!   Address in the IA) if never used; else the lowest never-used pool address; else a reused
//!   expired lease; else the IA with status NoAddrsAvail. IA_TA gets NoAddrsAvail and IA_PD
//!   NoPrefixAvail inside the IA: no temporary addresses, no prefix delegation. The Advertise
//!   carries Preference 255 (the client need not wait for other servers). With Rapid Commit the
//!   addresses are bound and the answer is a Reply with Rapid Commit. When no IA gets an address,
//!   the Advertise carries only the IAs with their status, a top-level NoAddrsAvail and the
//!   identifiers (RFC 8415 §18.3.1), and a Rapid Commit is not honoured.
//! - Request → Reply binding each IA_NA as a Solicit would choose; NotOnLink in the IA when it
//!   names an address outside the prefix, NoAddrsAvail when nothing is left.
//! - Renew, Rebind → Reply extending the identity's lease; other addresses the client listed are
//!   returned with lifetimes 0 (stop using them). With no lease (slipway restarted) a listed
//!   address that is in the pool and free is bound again, so guests keep their address; else
//!   the IA has status NoBinding. IA_TA and IA_PD: NoBinding.
//! - Release → Reply with status Success; the lease ends now (it stays tied to the identity).
//!   Decline → Reply with status Success; the lease is removed and the address quarantined for
//!   [`DECLINE_HOLD`]. Only addresses the IA holds count; an IA without lease gets NoBinding.
//! - Confirm → Reply with status Success when every address in its IA_NA and IA_TA options lies
//!   inside the prefix, else NotOnLink; no reply without addresses.
//!
//! Advertise and Reply to Solicit, Request, Renew, Rebind and Information-request carry options
//! 23 and 24 when configured, whatever the Option Request option asks (it is not read). Replies
//! to Release, Decline and Confirm carry only identifiers and status. Options are sorted by code,
//! as `dhcproto` encodes them. T1 and T2 are 0.5 and 0.8 of the preferred lifetime.
//!
//! # Limits
//!
//! - Leases: at most min(pool size, [`MAX_LEASES`] = 65 536), each under 300 bytes (a DUID of at
//!   most 130 bytes held once), so under 20 MiB for a full table; at most
//!   [`MAX_LEASES_PER_MAC`] = 8 live ones per MAC.
//! - Declined addresses: at most min(pool size, 65 536), each quarantined 600 s; more Declines
//!   are dropped ([`Dhcp6Drop::DeclineTableFull`]).
//! - Offers are held 60 s ([`OFFER_HOLD`]).
//! - Per message: at most [`MAX_IAS`] = 4 IA options (more: [`Dhcp6Drop::TooManyIas`]) and the
//!   first [`MAX_ADDRESSES_PER_IA`] = 4 IA Addresses of each (later ones are ignored).
//! - Replies: at most [`MAX_REPLY_LEN`] = 1232 bytes (the IPv6 minimum MTU less IPv6 and UDP
//!   headers; DHCPv6 has no fragmentation-free way to send more): trailing search domains are
//!   left out of option 24 until the reply fits; without option 24 every reply fits (the
//!   largest, a Renew of 4 IA_NAs listing 4 stale addresses each with a 130-byte DUID and 8 DNS
//!   servers, is 908 bytes).
//! - DNS servers: at most [`MAX_DNS_SERVERS`] = 8 (unspecified and multicast ones skipped).
//!   Search list: at most [`MAX_SEARCH_DOMAINS`] = 32 names of letters, digits, `-` and `_`,
//!   labels of 1–63 bytes, names of at most 253 bytes; other names are skipped.
//! - Lifetimes: valid 1 s to 2³² − 2 s (0xFFFF_FFFF would mean "infinite"), preferred at most
//!   the valid lifetime. Information Refresh Time 3600 s ([`INFORMATION_REFRESH`]).
//! - The pool is clipped to the /64; the Subnet-Router anycast address (interface ID 0), the
//!   reserved subnet anycast addresses of RFC 2526 and the DNS servers are never leased.
//! - Work per message: parsing is linear in the input; a message that needs a new lease costs
//!   O(leases + declined) (the MAC's lease count, the lowest never-used address, the
//!   longest-expired lease); other messages O(log leases) per IA.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, MessageType, OptionCode, Status, StatusCode, UnknownOption,
    IANA, IAPD, IATA,
};
use dhcproto::{Encodable, Encoder};

use crate::config::Mac;

/// Most leases the server keeps (fewer when the pool is smaller).
pub const MAX_LEASES: usize = 65_536;
/// Most live leases of one guest MAC; a further one takes over the MAC's lease that expires
/// first.
pub const MAX_LEASES_PER_MAC: usize = 8;
/// How long an advertised address is held for the client it was offered to.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// How long a declined address is kept out of use.
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);
/// Most names in the domain search list (option 24).
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// Most recursive DNS servers (option 23).
pub const MAX_DNS_SERVERS: usize = 8;
/// Most IA options (IA_NA, IA_TA and IA_PD together) in one message.
pub const MAX_IAS: usize = 4;
/// IA Address options read from one IA; later ones are ignored.
pub const MAX_ADDRESSES_PER_IA: usize = 4;
/// The largest reply: the IPv6 minimum MTU (1280) less the IPv6 (40) and UDP (8) headers.
pub const MAX_REPLY_LEN: usize = 1232;
/// The Information Refresh Time (option 32) in replies to Information-request.
pub const INFORMATION_REFRESH: Duration = Duration::from_secs(3600);
/// The Preference option in Advertise: 255 lets the client go ahead without waiting for other
/// servers (RFC 8415 §18.2.1).
pub const PREFERENCE: u8 = 255;

/// Message type and transaction id.
const HEADER_LEN: usize = 4;
/// Option code and length.
const OPTION_HEADER_LEN: usize = 4;
/// A DUID is a 2-byte type and 1 to 128 bytes of identifier (RFC 8415 §11.1).
const MIN_DUID_LEN: usize = 3;
const MAX_DUID_LEN: usize = 130;
/// The fixed part of an IA_NA or IA_PD (IAID, T1, T2), of an IA_TA (IAID), of an IA Address
/// (address, preferred and valid lifetime).
const IA_NA_FIXED_LEN: usize = 12;
const IA_TA_FIXED_LEN: usize = 4;
const IA_ADDR_FIXED_LEN: usize = 24;

const OPTION_CLIENT_ID: u16 = 1;
const OPTION_SERVER_ID: u16 = 2;
const OPTION_IA_NA: u16 = 3;
const OPTION_IA_TA: u16 = 4;
const OPTION_IA_ADDR: u16 = 5;
const OPTION_RAPID_COMMIT: u16 = 14;
const OPTION_IA_PD: u16 = 25;

/// The network half of an address in a /64.
const PREFIX_MASK: u128 = !0 << 64;
/// Interface IDs of the reserved subnet anycast addresses (RFC 2526 §2, 64-bit IDs).
const RESERVED_ANYCAST_FIRST: u128 = 0xfdff_ffff_ffff_ff80;
const RESERVED_ANYCAST_LAST: u128 = 0xfdff_ffff_ffff_ffff;

const NO_ADDRESSES: &str = "no addresses available";

/// What the DHCPv6 server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Config {
    /// The gateway's MAC; the Server Identifier is the DUID-LL built from it.
    pub server_mac: Mac,
    /// The guests' /64 (host bits zero; they are ignored otherwise).
    pub prefix: Ipv6Addr,
    /// First address of the pool (inclusive). The pool is clipped to the prefix.
    pub pool_start: Ipv6Addr,
    /// Last address of the pool (inclusive); a pool with start > end is empty.
    pub pool_end: Ipv6Addr,
    /// Recursive DNS servers (option 23), at most [`MAX_DNS_SERVERS`].
    pub dns_servers: Vec<Ipv6Addr>,
    /// The domain search list (option 24), at most [`MAX_SEARCH_DOMAINS`].
    pub search_domains: Vec<String>,
    /// Preferred lifetime of leased addresses (at most the valid lifetime).
    pub preferred_lifetime: Duration,
    /// Valid lifetime of leased addresses: how long a lease lasts without renewal.
    pub valid_lifetime: Duration,
}

/// Why a message got no reply. Each is a counted drop reason ([`Dhcp6Drop::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dhcp6Drop {
    #[error("malformed DHCPv6 message")]
    Malformed,
    #[error("relayed DHCPv6 message (Relay-forward)")]
    Relayed,
    #[error("DHCPv6 message type not handled by a server")]
    UnsupportedMessageType,
    #[error("no client identifier")]
    MissingClientId,
    #[error("client identifier is not a DUID of 3 to 130 bytes")]
    InvalidClientId,
    #[error("no server identifier in a message that needs ours")]
    MissingServerId,
    #[error("server identifier in a message that must not carry one")]
    UnexpectedServerId,
    #[error("message for another DHCPv6 server")]
    NotForUs,
    #[error("IA option in an Information-request")]
    IaInInformationRequest,
    #[error("more than 4 IA options in one message")]
    TooManyIas,
    #[error("too many declined addresses")]
    DeclineTableFull,
    #[error("could not encode the DHCPv6 reply")]
    EncodeFailed,
}

impl Dhcp6Drop {
    /// Every drop reason, for registering counters.
    pub const ALL: [Dhcp6Drop; 12] = [
        Dhcp6Drop::Malformed,
        Dhcp6Drop::Relayed,
        Dhcp6Drop::UnsupportedMessageType,
        Dhcp6Drop::MissingClientId,
        Dhcp6Drop::InvalidClientId,
        Dhcp6Drop::MissingServerId,
        Dhcp6Drop::UnexpectedServerId,
        Dhcp6Drop::NotForUs,
        Dhcp6Drop::IaInInformationRequest,
        Dhcp6Drop::TooManyIas,
        Dhcp6Drop::DeclineTableFull,
        Dhcp6Drop::EncodeFailed,
    ];

    /// A stable snake_case name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dhcp6Drop::Malformed => "malformed",
            Dhcp6Drop::Relayed => "relayed",
            Dhcp6Drop::UnsupportedMessageType => "unsupported_message_type",
            Dhcp6Drop::MissingClientId => "missing_client_id",
            Dhcp6Drop::InvalidClientId => "invalid_client_id",
            Dhcp6Drop::MissingServerId => "missing_server_id",
            Dhcp6Drop::UnexpectedServerId => "unexpected_server_id",
            Dhcp6Drop::NotForUs => "not_for_us",
            Dhcp6Drop::IaInInformationRequest => "ia_in_information_request",
            Dhcp6Drop::TooManyIas => "too_many_ias",
            Dhcp6Drop::DeclineTableFull => "decline_table_full",
            Dhcp6Drop::EncodeFailed => "encode_failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IaKind {
    /// IA_NA: non-temporary addresses, the ones this server leases.
    NonTemporary,
    /// IA_TA: temporary addresses, never offered.
    Temporary,
    /// IA_PD: delegated prefixes, never offered.
    PrefixDelegation,
}

/// One IA option of a client message: its IAID and the first IA Addresses in it.
#[derive(Debug, Clone, Copy)]
struct Ia {
    kind: IaKind,
    id: u32,
    addresses: [Ipv6Addr; MAX_ADDRESSES_PER_IA],
    address_count: usize,
}

impl Ia {
    const EMPTY: Ia = Ia {
        kind: IaKind::NonTemporary,
        id: 0,
        addresses: [Ipv6Addr::UNSPECIFIED; MAX_ADDRESSES_PER_IA],
        address_count: 0,
    };

    fn addresses(&self) -> &[Ipv6Addr] {
        &self.addresses[..self.address_count]
    }
}

/// The fields of a client message the server uses, borrowed from the payload.
struct Request<'a> {
    kind: MessageType,
    xid: [u8; 3],
    client_id: Option<&'a [u8]>,
    server_id: Option<&'a [u8]>,
    rapid_commit: bool,
    ias: [Ia; MAX_IAS],
    ia_count: usize,
}

impl Request<'_> {
    fn ias(&self) -> &[Ia] {
        &self.ias[..self.ia_count]
    }

    /// The client's DUID (checked present for every message that has IAs).
    fn duid(&self) -> &[u8] {
        self.client_id.unwrap_or_default()
    }

    /// Whether `client` is one of the identities this message's IA_NAs stand for.
    fn names(&self, client: &ClientKey) -> bool {
        client.duid() == self.duid()
            && self
                .ias()
                .iter()
                .any(|ia| ia.kind == IaKind::NonTemporary && ia.id == client.iaid)
    }
}

/// A client's IA_NA as seen from one MAC. The DUID is stored inline (zero-padded) so that
/// looking a client up allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    mac: Mac,
    iaid: u32,
    duid_len: u8,
    duid: [u8; MAX_DUID_LEN],
}

impl ClientKey {
    fn new(mac: Mac, duid: &[u8], iaid: u32) -> Self {
        let len = duid.len().min(MAX_DUID_LEN);
        let mut bytes = [0; MAX_DUID_LEN];
        bytes[..len].copy_from_slice(&duid[..len]);
        Self {
            mac,
            iaid,
            duid_len: len as u8,
            duid: bytes,
        }
    }

    fn duid(&self) -> &[u8] {
        &self.duid[..usize::from(self.duid_len)]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    /// Advertised, not yet requested.
    Offered,
    /// Confirmed by a Reply (or released: then `expires` is the release time).
    Bound,
}

#[derive(Debug, Clone)]
struct Lease {
    client: Arc<ClientKey>,
    state: LeaseState,
    expires: Duration,
}

impl Lease {
    /// True while no other client may take the address.
    fn is_live(&self, now: Duration) -> bool {
        self.expires > now
    }
}

/// The DHCPv6 server of one virtual network.
#[derive(Debug)]
pub struct Dhcp6Server {
    /// DUID-LL of the server MAC: type 3, hardware type 1, the MAC.
    duid: [u8; 10],
    /// The /64, host bits zero.
    prefix: u128,
    /// Inclusive, inside the prefix; empty when start > end.
    pool_start: u128,
    pool_end: u128,
    /// DNS server addresses inside the pool (never leased).
    reserved: Vec<u128>,
    /// Pool addresses that may be leased.
    pool_size: u128,
    max_leases: usize,
    preferred_secs: u32,
    valid_secs: u32,
    dns_servers: Vec<Ipv6Addr>,
    search_domains: Vec<String>,
    /// Each search domain in DNS wire format, uncompressed.
    search_wire: Vec<Vec<u8>>,
    leases: BTreeMap<u128, Lease>,
    by_client: HashMap<Arc<ClientKey>, u128>,
    /// Quarantined pool address → end of quarantine.
    declined: BTreeMap<u128, Duration>,
    /// The earliest end of a quarantine (nothing to clean up before).
    next_quarantine_end: Duration,
}

impl Dhcp6Server {
    pub fn new(cfg: Dhcp6Config) -> Self {
        let mut duid = [0, 3, 0, 1, 0, 0, 0, 0, 0, 0];
        duid[4..].copy_from_slice(&cfg.server_mac);
        let prefix = u128::from(cfg.prefix) & PREFIX_MASK;
        let pool_start = u128::from(cfg.pool_start).max(prefix);
        let pool_end = u128::from(cfg.pool_end).min(prefix | !PREFIX_MASK);
        let valid_secs = cfg
            .valid_lifetime
            .as_secs()
            .clamp(1, u64::from(u32::MAX - 1)) as u32;
        let preferred_secs = cfg.preferred_lifetime.as_secs().min(u64::from(valid_secs)) as u32;
        let mut dns_servers: Vec<Ipv6Addr> = Vec::new();
        for ip in cfg.dns_servers {
            if dns_servers.len() < MAX_DNS_SERVERS
                && !ip.is_unspecified()
                && !ip.is_multicast()
                && !dns_servers.contains(&ip)
            {
                dns_servers.push(ip);
            }
        }
        let mut server = Self {
            duid,
            prefix,
            pool_start,
            pool_end,
            reserved: Vec::new(),
            pool_size: 0,
            max_leases: 0,
            preferred_secs,
            valid_secs,
            dns_servers,
            search_domains: Vec::new(),
            search_wire: Vec::new(),
            leases: BTreeMap::new(),
            by_client: HashMap::new(),
            declined: BTreeMap::new(),
            next_quarantine_end: Duration::MAX,
        };
        let mut reserved: Vec<u128> = server
            .dns_servers
            .iter()
            .map(|ip| u128::from(*ip))
            .filter(|ip| server.is_pool_address(*ip))
            .collect();
        reserved.sort_unstable();
        reserved.dedup();
        server.reserved = reserved;
        server.pool_size = server.count_pool();
        server.max_leases = server.pool_size.min(MAX_LEASES as u128) as usize;
        server.set_search_domains(cfg.search_domains);
        server
    }

    /// Handle one DHCPv6 message: the UDP payload a guest sent to port 547 (from its port 546).
    /// `client_mac` is the frame's source MAC; `now` a monotonic time. `Ok(Some(reply))` is the
    /// payload to send to the client's link-local address, port 546, from the gateway's
    /// link-local address, port 547.
    pub fn handle(
        &mut self,
        now: Duration,
        client_mac: Mac,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, Dhcp6Drop> {
        let req = parse_request(payload)?;
        self.check_identifiers(&req)?;
        self.end_quarantines(now);
        match req.kind {
            MessageType::Solicit => self.solicit(now, client_mac, &req).map(Some),
            MessageType::Request => self.request(now, client_mac, &req).map(Some),
            MessageType::Renew | MessageType::Rebind => self.renew(now, client_mac, &req).map(Some),
            MessageType::Release => self.release(now, client_mac, &req).map(Some),
            MessageType::Decline => self.decline(now, client_mac, &req).map(Some),
            MessageType::Confirm => self.confirm(&req),
            MessageType::InformationRequest => self.information_request(&req).map(Some),
            // `parse_request` lets only the types above through.
            _ => Err(Dhcp6Drop::UnsupportedMessageType),
        }
    }

    /// The MAC holding `ip`: the client it was last bound to, also after the lease expired or
    /// was released, as long as no other client took the address (as
    /// [`Dhcp4Server::holder_of`](crate::services::dhcp4::Dhcp4Server::holder_of)). None for an
    /// advertised but unrequested address, a declined one, or one never leased. Whether the
    /// lease is still running is for [`Dhcp6Server::leases`] to say.
    pub fn holder_of(&self, ip: Ipv6Addr) -> Option<Mac> {
        let lease = self.leases.get(&u128::from(ip))?;
        (lease.state == LeaseState::Bound).then_some(lease.client.mac)
    }

    /// Running leases (address, MAC), sorted by address.
    pub fn leases(&self, now: Duration) -> Vec<(Ipv6Addr, Mac)> {
        self.leases
            .iter()
            .filter(|(_, l)| l.state == LeaseState::Bound && l.is_live(now))
            .map(|(ip, l)| (Ipv6Addr::from(*ip), l.client.mac))
            .collect()
    }

    /// The Server Identifier option's DUID (DUID-LL of the server MAC).
    pub fn server_duid(&self) -> &[u8] {
        &self.duid
    }

    /// The search list handed to guests (after validation).
    pub fn search_domains(&self) -> &[String] {
        &self.search_domains
    }

    /// Replace the search list. Names that are not plain DNS names (letters, digits, `-`, `_`)
    /// are skipped, as are duplicates and names beyond [`MAX_SEARCH_DOMAINS`]. A trailing dot
    /// is removed.
    fn set_search_domains(&mut self, domains: Vec<String>) {
        self.search_domains.clear();
        self.search_wire.clear();
        for domain in super::plain_search_domains(&domains, MAX_SEARCH_DOMAINS) {
            self.search_wire.push(name_to_wire(domain));
            self.search_domains.push(domain.to_string());
        }
    }

    /// RFC 8415 §16: which messages must, may or must not carry which identifiers.
    fn check_identifiers(&self, req: &Request) -> Result<(), Dhcp6Drop> {
        use MessageType as M;
        match (req.kind, req.server_id) {
            (M::Solicit | M::Confirm | M::Rebind, Some(_)) => {
                return Err(Dhcp6Drop::UnexpectedServerId)
            }
            (M::Request | M::Renew | M::Release | M::Decline, None) => {
                return Err(Dhcp6Drop::MissingServerId)
            }
            (_, Some(id)) if id != self.duid => return Err(Dhcp6Drop::NotForUs),
            _ => {}
        }
        match req.client_id {
            None if req.kind != M::InformationRequest => return Err(Dhcp6Drop::MissingClientId),
            Some(id) if !(MIN_DUID_LEN..=MAX_DUID_LEN).contains(&id.len()) => {
                return Err(Dhcp6Drop::InvalidClientId)
            }
            _ => {}
        }
        if req.kind == M::InformationRequest && req.ia_count > 0 {
            return Err(Dhcp6Drop::IaInInformationRequest);
        }
        Ok(())
    }

    fn solicit(&mut self, now: Duration, mac: Mac, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let commit = req.rapid_commit;
        let mut opts = Vec::new();
        let mut assigned = false;
        for ia in req.ias() {
            opts.push(match ia.kind {
                IaKind::NonTemporary => match self.lease_for(now, mac, req, ia, commit) {
                    Some(addr) => {
                        assigned = true;
                        self.ia_na_lease(ia.id, addr, &[])
                    }
                    None => ia_na_status(ia.id, Status::NoAddrsAvail, NO_ADDRESSES),
                },
                IaKind::Temporary => ia_ta_status(
                    ia.id,
                    Status::NoAddrsAvail,
                    "temporary addresses are not offered",
                ),
                IaKind::PrefixDelegation => {
                    ia_pd_status(ia.id, Status::NoPrefixAvail, "prefixes are not delegated")
                }
            });
        }
        if !assigned {
            opts.push(status(Status::NoAddrsAvail, NO_ADDRESSES));
            return self.encode(MessageType::Advertise, req, opts, false);
        }
        if commit {
            opts.push(DhcpOption::RapidCommit);
            self.encode(MessageType::Reply, req, opts, true)
        } else {
            opts.push(DhcpOption::Preference(PREFERENCE));
            self.encode(MessageType::Advertise, req, opts, true)
        }
    }

    fn request(&mut self, now: Duration, mac: Mac, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let mut opts = Vec::new();
        for ia in req.ias() {
            opts.push(match ia.kind {
                IaKind::NonTemporary if ia.addresses().iter().any(|a| !self.on_link(*a)) => {
                    ia_na_status(ia.id, Status::NotOnLink, "address not on this link")
                }
                IaKind::NonTemporary => match self.lease_for(now, mac, req, ia, true) {
                    Some(addr) => self.ia_na_lease(ia.id, addr, &[]),
                    None => ia_na_status(ia.id, Status::NoAddrsAvail, NO_ADDRESSES),
                },
                IaKind::Temporary => ia_ta_status(
                    ia.id,
                    Status::NoAddrsAvail,
                    "temporary addresses are not offered",
                ),
                IaKind::PrefixDelegation => {
                    ia_pd_status(ia.id, Status::NoPrefixAvail, "prefixes are not delegated")
                }
            });
        }
        self.encode(MessageType::Reply, req, opts, true)
    }

    /// Renew and Rebind: the same but for the Server Identifier check.
    fn renew(&mut self, now: Duration, mac: Mac, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let mut opts = Vec::new();
        for ia in req.ias() {
            opts.push(match ia.kind {
                IaKind::NonTemporary => match self.renew_lease(now, mac, req, ia) {
                    Some(addr) => self.ia_na_lease(ia.id, addr, ia.addresses()),
                    None => ia_na_status(ia.id, Status::NoBinding, "no lease for this IA"),
                },
                IaKind::Temporary => ia_ta_status(ia.id, Status::NoBinding, "no lease for this IA"),
                IaKind::PrefixDelegation => {
                    ia_pd_status(ia.id, Status::NoBinding, "no lease for this IA")
                }
            });
        }
        self.encode(MessageType::Reply, req, opts, true)
    }

    fn release(&mut self, now: Duration, mac: Mac, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let mut opts = vec![status(Status::Success, "released")];
        for ia in req.ias() {
            match self.held_address(mac, req, ia) {
                Ok(Some(addr)) => {
                    if let Some(lease) = self.leases.get_mut(&addr) {
                        lease.expires = lease.expires.min(now);
                    }
                }
                Ok(None) => {}
                Err(no_binding) => opts.push(no_binding),
            }
        }
        self.encode(MessageType::Reply, req, opts, false)
    }

    fn decline(&mut self, now: Duration, mac: Mac, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let mut opts = vec![status(Status::Success, "declined")];
        let mut addresses = [0u128; MAX_IAS];
        let mut count = 0;
        for ia in req.ias() {
            match self.held_address(mac, req, ia) {
                Ok(Some(addr)) => {
                    addresses[count] = addr;
                    count += 1;
                }
                Ok(None) => {}
                Err(no_binding) => opts.push(no_binding),
            }
        }
        if self.declined.len() + count > self.max_leases {
            return Err(Dhcp6Drop::DeclineTableFull);
        }
        let until = now.saturating_add(DECLINE_HOLD);
        for addr in &addresses[..count] {
            self.remove_lease(*addr);
            self.declined.insert(*addr, until);
            self.next_quarantine_end = self.next_quarantine_end.min(until);
        }
        self.encode(MessageType::Reply, req, opts, false)
    }

    fn confirm(&self, req: &Request) -> Result<Option<Vec<u8>>, Dhcp6Drop> {
        let mut addresses = req
            .ias()
            .iter()
            .filter(|ia| ia.kind != IaKind::PrefixDelegation)
            .flat_map(|ia| ia.addresses())
            .peekable();
        if addresses.peek().is_none() {
            // RFC 8415 §18.3.3: no addresses, no reply.
            return Ok(None);
        }
        let answer = if addresses.all(|a| self.on_link(*a)) {
            status(Status::Success, "all addresses are on this link")
        } else {
            status(Status::NotOnLink, "address not on this link")
        };
        self.encode(MessageType::Reply, req, vec![answer], false)
            .map(Some)
    }

    fn information_request(&self, req: &Request) -> Result<Vec<u8>, Dhcp6Drop> {
        let refresh = INFORMATION_REFRESH.as_secs() as u32;
        let opts = vec![DhcpOption::InformationRefreshTime(refresh)];
        self.encode(MessageType::Reply, req, opts, true)
    }

    /// The address for IA_NA `ia` after a Solicit or Request: the identity's lease (re-offered,
    /// or bound when `commit`), else a new one. None when the pool has nothing left.
    fn lease_for(
        &mut self,
        now: Duration,
        mac: Mac,
        req: &Request,
        ia: &Ia,
        commit: bool,
    ) -> Option<u128> {
        let key = ClientKey::new(mac, req.duid(), ia.id);
        let (state, expires) = if commit {
            (LeaseState::Bound, self.lease_end(now))
        } else {
            (LeaseState::Offered, now.saturating_add(OFFER_HOLD))
        };
        if let Some(addr) = self.by_client.get(&key).copied() {
            if self.leases.get(&addr).is_some_and(|l| !l.is_live(now)) {
                // Coming back to life: keep the MAC under its cap.
                self.make_room(now, mac, req);
            }
            if let Some(lease) = self.leases.get_mut(&addr) {
                // An Advertise does not shorten a running lease.
                if commit || lease.state == LeaseState::Offered || !lease.is_live(now) {
                    lease.state = state;
                    lease.expires = expires;
                }
                return Some(addr);
            }
            self.by_client.remove(&key);
        }
        let addr = self.choose(now, mac, req, ia.addresses())?;
        self.insert_lease(addr, key, state, expires);
        Some(addr)
    }

    /// The address for IA_NA `ia` after a Renew or Rebind: the identity's lease, extended; else
    /// (slipway restarted) an address the client listed that is in the pool and free.
    fn renew_lease(&mut self, now: Duration, mac: Mac, req: &Request, ia: &Ia) -> Option<u128> {
        let key = ClientKey::new(mac, req.duid(), ia.id);
        let expires = self.lease_end(now);
        if let Some(addr) = self.by_client.get(&key).copied() {
            if self.leases.get(&addr).is_some_and(|l| !l.is_live(now)) {
                self.make_room(now, mac, req);
            }
            if let Some(lease) = self.leases.get_mut(&addr) {
                lease.state = LeaseState::Bound;
                lease.expires = expires;
                return Some(addr);
            }
            self.by_client.remove(&key);
        }
        let addr = ia
            .addresses()
            .iter()
            .map(|a| u128::from(*a))
            .find(|a| self.may_restore(now, *a))?;
        self.make_room(now, mac, req);
        self.insert_lease(addr, key, LeaseState::Bound, expires);
        Some(addr)
    }

    /// For Release and Decline: `Ok(Some(address))` when the IA holds a lease and lists its
    /// address, `Ok(None)` when it holds one but does not list it (ignored), else the IA with
    /// status NoBinding for the reply.
    fn held_address(&self, mac: Mac, req: &Request, ia: &Ia) -> Result<Option<u128>, DhcpOption> {
        let no_binding = "no lease for this IA";
        match ia.kind {
            IaKind::NonTemporary => {
                let key = ClientKey::new(mac, req.duid(), ia.id);
                let Some(&addr) = self.by_client.get(&key) else {
                    return Err(ia_na_status(ia.id, Status::NoBinding, no_binding));
                };
                let listed = ia.addresses().iter().any(|a| u128::from(*a) == addr);
                Ok(listed.then_some(addr))
            }
            IaKind::Temporary => Err(ia_ta_status(ia.id, Status::NoBinding, no_binding)),
            IaKind::PrefixDelegation => Err(ia_pd_status(ia.id, Status::NoBinding, no_binding)),
        }
    }

    /// A new address for `mac`: the address of its own lease that expires first when it is at
    /// its cap; else a listed address if never used; else the lowest never-used address; else
    /// the longest-expired lease, unrequested offers first.
    fn choose(
        &mut self,
        now: Duration,
        mac: Mac,
        req: &Request,
        hints: &[Ipv6Addr],
    ) -> Option<u128> {
        if let Some(addr) = self.make_room(now, mac, req) {
            return Some(addr);
        }
        if self.leases.len() < self.max_leases && self.has_unused_address() {
            if let Some(addr) = hints
                .iter()
                .map(|a| u128::from(*a))
                .find(|a| self.is_unused(*a))
            {
                return Some(addr);
            }
            // An unused address exists, so this stops after at most (leases + declined + DNS
            // servers + 129 reserved) busy addresses.
            let mut addr = self.pool_start;
            while addr <= self.pool_end {
                if self.is_unused(addr) {
                    return Some(addr);
                }
                addr += 1;
            }
        }
        self.leases
            .iter()
            .filter(|(_, l)| !l.is_live(now))
            .min_by_key(|(_, l)| (l.state != LeaseState::Offered, l.expires))
            .map(|(addr, _)| *addr)
    }

    /// When `mac` holds [`MAX_LEASES_PER_MAC`] live leases, remove the one that expires first
    /// (not one this message stands for) and return its address.
    fn make_room(&mut self, now: Duration, mac: Mac, req: &Request) -> Option<u128> {
        let mut live = 0;
        let mut first: Option<(Duration, u128)> = None;
        for (addr, lease) in &self.leases {
            if lease.client.mac != mac || !lease.is_live(now) {
                continue;
            }
            live += 1;
            if !req.names(&lease.client) && first.is_none_or(|(e, _)| lease.expires < e) {
                first = Some((lease.expires, *addr));
            }
        }
        if live < MAX_LEASES_PER_MAC {
            return None;
        }
        let (_, addr) = first?;
        self.remove_lease(addr);
        Some(addr)
    }

    /// Whether a Renew or Rebind may bind `addr` for a client the server has no lease of.
    fn may_restore(&self, now: Duration, addr: u128) -> bool {
        self.is_pool_address(addr)
            && !self.declined.contains_key(&addr)
            && match self.leases.get(&addr) {
                Some(lease) => !lease.is_live(now),
                None => self.leases.len() < self.max_leases,
            }
    }

    /// Lease `addr` to a client that has no lease yet (an expired lease there is taken over).
    fn insert_lease(&mut self, addr: u128, key: ClientKey, state: LeaseState, expires: Duration) {
        self.remove_lease(addr);
        let client = Arc::new(key);
        if let Some(old) = self.by_client.insert(Arc::clone(&client), addr) {
            if old != addr {
                self.leases.remove(&old);
            }
        }
        self.leases.insert(
            addr,
            Lease {
                client,
                state,
                expires,
            },
        );
    }

    fn remove_lease(&mut self, addr: u128) -> Option<Lease> {
        let lease = self.leases.remove(&addr)?;
        if self.by_client.get(&*lease.client) == Some(&addr) {
            self.by_client.remove(&*lease.client);
        }
        Some(lease)
    }

    fn end_quarantines(&mut self, now: Duration) {
        if now >= self.next_quarantine_end {
            self.declined.retain(|_, until| *until > now);
            self.next_quarantine_end = self
                .declined
                .values()
                .copied()
                .min()
                .unwrap_or(Duration::MAX);
        }
    }

    fn lease_end(&self, now: Duration) -> Duration {
        now.saturating_add(Duration::from_secs(u64::from(self.valid_secs)))
    }

    fn on_link(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & PREFIX_MASK == self.prefix
    }

    /// In the pool and neither an anycast address nor a DNS server.
    fn is_pool_address(&self, addr: u128) -> bool {
        let host = addr & !PREFIX_MASK;
        (self.pool_start..=self.pool_end).contains(&addr)
            && host != 0
            && !(RESERVED_ANYCAST_FIRST..=RESERVED_ANYCAST_LAST).contains(&host)
            && self.reserved.binary_search(&addr).is_err()
    }

    /// A pool address nobody holds, has held or declined.
    fn is_unused(&self, addr: u128) -> bool {
        self.is_pool_address(addr)
            && !self.leases.contains_key(&addr)
            && !self.declined.contains_key(&addr)
    }

    /// Whether some pool address is neither leased nor quarantined.
    fn has_unused_address(&self) -> bool {
        ((self.leases.len() + self.declined.len()) as u128) < self.pool_size
    }

    /// The number of pool addresses [`Dhcp6Server::is_pool_address`] admits.
    fn count_pool(&self) -> u128 {
        let (start, end) = (self.pool_start, self.pool_end);
        if start > end {
            return 0;
        }
        let overlap = |first: u128, last: u128| {
            let (first, last) = (first.max(start), last.min(end));
            if first > last {
                0
            } else {
                last - first + 1
            }
        };
        let anycast = overlap(
            self.prefix | RESERVED_ANYCAST_FIRST,
            self.prefix | RESERVED_ANYCAST_LAST,
        );
        let subnet_router = overlap(self.prefix, self.prefix);
        // `reserved` holds only addresses `is_pool_address` admitted, so none is counted twice.
        (end - start + 1) - anycast - subnet_router - self.reserved.len() as u128
    }

    /// T1 and T2: 0.5 and 0.8 of the preferred lifetime (RFC 8415 §21.4).
    fn renewal_times(&self) -> (u32, u32) {
        let base = if self.preferred_secs > 0 {
            self.preferred_secs
        } else {
            self.valid_secs
        };
        (base / 2, (u64::from(base) * 4 / 5) as u32)
    }

    /// An IA_NA holding `addr` with the configured lifetimes, and each other address of
    /// `listed` with lifetimes 0.
    fn ia_na_lease(&self, id: u32, addr: u128, listed: &[Ipv6Addr]) -> DhcpOption {
        let (t1, t2) = self.renewal_times();
        let mut addresses = vec![ia_address(
            Ipv6Addr::from(addr),
            self.preferred_secs,
            self.valid_secs,
        )];
        for (i, other) in listed.iter().enumerate() {
            if u128::from(*other) != addr && !listed[..i].contains(other) {
                addresses.push(ia_address(*other, 0, 0));
            }
        }
        DhcpOption::IANA(IANA {
            id,
            t1,
            t2,
            opts: in_order(addresses),
        })
    }

    /// Encode a reply with the identifiers and, when `with_config`, options 23 and 24 (as many
    /// search domains as fit in [`MAX_REPLY_LEN`]).
    fn encode(
        &self,
        kind: MessageType,
        req: &Request,
        mut opts: Vec<DhcpOption>,
        with_config: bool,
    ) -> Result<Vec<u8>, Dhcp6Drop> {
        opts.push(DhcpOption::ServerId(self.duid.to_vec()));
        if let Some(id) = req.client_id {
            opts.push(DhcpOption::ClientId(id.to_vec()));
        }
        if with_config && !self.dns_servers.is_empty() {
            opts.push(DhcpOption::DomainNameServers(self.dns_servers.clone()));
        }
        let mut options = in_order(opts);
        let without_search = encode_message(kind, req.xid, &options)?;
        if !with_config || self.search_wire.is_empty() {
            return Ok(without_search);
        }
        let mut room = MAX_REPLY_LEN.saturating_sub(without_search.len() + OPTION_HEADER_LEN);
        let mut list = Vec::new();
        for name in &self.search_wire {
            if name.len() > room {
                break;
            }
            room -= name.len();
            list.extend_from_slice(name);
        }
        if list.is_empty() {
            return Ok(without_search);
        }
        options.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::DomainSearchList,
            list,
        )));
        encode_message(kind, req.xid, &options)
    }
}

/// Check the message on the raw bytes and keep the fields the server uses (see the module
/// documentation for why `dhcproto` does not decode guest messages).
fn parse_request(payload: &[u8]) -> Result<Request<'_>, Dhcp6Drop> {
    let Some((header, mut opts)) = payload.split_first_chunk::<HEADER_LEN>() else {
        return Err(Dhcp6Drop::Malformed);
    };
    let kind = MessageType::from(header[0]);
    match kind {
        MessageType::Solicit
        | MessageType::Request
        | MessageType::Confirm
        | MessageType::Renew
        | MessageType::Rebind
        | MessageType::Release
        | MessageType::Decline
        | MessageType::InformationRequest => {}
        MessageType::RelayForw => return Err(Dhcp6Drop::Relayed),
        _ => return Err(Dhcp6Drop::UnsupportedMessageType),
    }
    let mut req = Request {
        kind,
        xid: [header[1], header[2], header[3]],
        client_id: None,
        server_id: None,
        rapid_commit: false,
        ias: [Ia::EMPTY; MAX_IAS],
        ia_count: 0,
    };
    while let Some((code, body)) = split_option(&mut opts)? {
        let ia_kind = match code {
            OPTION_CLIENT_ID => {
                set_once(&mut req.client_id, body)?;
                continue;
            }
            OPTION_SERVER_ID => {
                set_once(&mut req.server_id, body)?;
                continue;
            }
            OPTION_RAPID_COMMIT => {
                if !body.is_empty() || req.rapid_commit {
                    return Err(Dhcp6Drop::Malformed);
                }
                req.rapid_commit = true;
                continue;
            }
            OPTION_IA_NA => IaKind::NonTemporary,
            OPTION_IA_TA => IaKind::Temporary,
            OPTION_IA_PD => IaKind::PrefixDelegation,
            _ => continue,
        };
        let ia = parse_ia(ia_kind, body)?;
        if req.ias().iter().any(|o| o.kind == ia.kind && o.id == ia.id) {
            return Err(Dhcp6Drop::Malformed);
        }
        if req.ia_count == MAX_IAS {
            return Err(Dhcp6Drop::TooManyIas);
        }
        req.ias[req.ia_count] = ia;
        req.ia_count += 1;
    }
    Ok(req)
}

/// An IA option's IAID and, for IA_NA and IA_TA, its first IA Addresses (unspecified ones,
/// which some clients send as "any", are skipped). IA_PD contents are not read.
fn parse_ia(kind: IaKind, body: &[u8]) -> Result<Ia, Dhcp6Drop> {
    let fixed = match kind {
        IaKind::Temporary => IA_TA_FIXED_LEN,
        IaKind::NonTemporary | IaKind::PrefixDelegation => IA_NA_FIXED_LEN,
    };
    let (Some(iaid), Some(mut sub)) = (body.first_chunk::<4>(), body.get(fixed..)) else {
        return Err(Dhcp6Drop::Malformed);
    };
    let mut ia = Ia {
        kind,
        id: u32::from_be_bytes(*iaid),
        ..Ia::EMPTY
    };
    if kind == IaKind::PrefixDelegation {
        return Ok(ia);
    }
    while let Some((code, opt)) = split_option(&mut sub)? {
        if code != OPTION_IA_ADDR {
            continue;
        }
        if opt.len() < IA_ADDR_FIXED_LEN {
            return Err(Dhcp6Drop::Malformed);
        }
        let Some(octets) = opt.first_chunk::<16>() else {
            return Err(Dhcp6Drop::Malformed);
        };
        let addr = Ipv6Addr::from(*octets);
        if !addr.is_unspecified() && ia.address_count < MAX_ADDRESSES_PER_IA {
            ia.addresses[ia.address_count] = addr;
            ia.address_count += 1;
        }
    }
    Ok(ia)
}

/// Split the next option off `bytes`: its code and body. None at the end; Malformed when the
/// header or the body runs past the end.
fn split_option<'a>(bytes: &mut &'a [u8]) -> Result<Option<(u16, &'a [u8])>, Dhcp6Drop> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((header, rest)) = bytes.split_first_chunk::<OPTION_HEADER_LEN>() else {
        return Err(Dhcp6Drop::Malformed);
    };
    let code = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if rest.len() < len {
        return Err(Dhcp6Drop::Malformed);
    }
    let (body, rest) = rest.split_at(len);
    *bytes = rest;
    Ok(Some((code, body)))
}

fn set_once<'a>(slot: &mut Option<&'a [u8]>, body: &'a [u8]) -> Result<(), Dhcp6Drop> {
    if slot.replace(body).is_some() {
        return Err(Dhcp6Drop::Malformed);
    }
    Ok(())
}

fn encode_message(
    kind: MessageType,
    xid: [u8; 3],
    opts: &DhcpOptions,
) -> Result<Vec<u8>, Dhcp6Drop> {
    let mut out = Vec::with_capacity(MAX_REPLY_LEN);
    let mut e = Encoder::new(&mut out);
    e.write_u8(kind.into())
        .and_then(|()| e.write(xid))
        .and_then(|()| opts.encode(&mut e))
        .map_err(|_| Dhcp6Drop::EncodeFailed)?;
    Ok(out)
}

/// `DhcpOptions` keeps options sorted by code and puts a new option before those with the same
/// code; inserting in reverse keeps `list`'s order among equal codes.
fn in_order(list: Vec<DhcpOption>) -> DhcpOptions {
    let mut opts = DhcpOptions::new();
    for opt in list.into_iter().rev() {
        opts.insert(opt);
    }
    opts
}

fn status(status: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: msg.to_string(),
    })
}

fn ia_address(addr: Ipv6Addr, preferred_life: u32, valid_life: u32) -> DhcpOption {
    DhcpOption::IAAddr(IAAddr {
        addr,
        preferred_life,
        valid_life,
        opts: DhcpOptions::new(),
    })
}

fn ia_na_status(id: u32, code: Status, msg: &str) -> DhcpOption {
    DhcpOption::IANA(IANA {
        id,
        t1: 0,
        t2: 0,
        opts: in_order(vec![status(code, msg)]),
    })
}

fn ia_ta_status(id: u32, code: Status, msg: &str) -> DhcpOption {
    DhcpOption::IATA(IATA {
        id,
        opts: in_order(vec![status(code, msg)]),
    })
}

fn ia_pd_status(id: u32, code: Status, msg: &str) -> DhcpOption {
    DhcpOption::IAPD(IAPD {
        id,
        t1: 0,
        t2: 0,
        opts: in_order(vec![status(code, msg)]),
    })
}

/// A DNS name in wire format without compression (RFC 8415 §10): length-prefixed labels and
/// the root label. `name` has passed [`super::is_plain_domain`].
fn name_to_wire(name: &str) -> Vec<u8> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        wire.push(label.len() as u8);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    wire
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v6::Message;
    use dhcproto::{Decodable, Decoder};
    use proptest::prelude::*;

    const SERVER_MAC: Mac = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];
    const MAC_A: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const MAC_B: Mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
    const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd];
    const HOUR: Duration = Duration::from_secs(3600);

    const SOLICIT: u8 = 1;
    const REQUEST: u8 = 3;
    const CONFIRM: u8 = 4;
    const RENEW: u8 = 5;
    const REBIND: u8 = 6;
    const RELEASE: u8 = 8;
    const DECLINE: u8 = 9;
    const INFORMATION_REQUEST: u8 = 11;

    /// What `dhclient -6 -S` sends: Information-request, xid 0x5a3c91, a DUID-LLT client id,
    /// an Option Request for 23 and 24, Elapsed Time 0.
    const DHCLIENT_INFORMATION_REQUEST: [u8; 36] = [
        0x0b, 0x5a, 0x3c, 0x91, // Information-request, xid
        0x00, 0x01, 0x00, 0x0e, // Client Identifier, 14 bytes
        0x00, 0x01, 0x00, 0x01, // DUID-LLT, Ethernet
        0x2d, 0x8c, 0x1f, 0x40, // time
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // MAC
        0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18, // ORO: 23, 24
        0x00, 0x08, 0x00, 0x02, 0x00, 0x00, // Elapsed Time 0
    ];

    /// The whole reply to it with [`config`].
    const INFORMATION_REPLY: [u8; 82] = [
        0x07, 0x5a, 0x3c, 0x91, // Reply, same xid
        0x00, 0x01, 0x00, 0x0e, // Client Identifier, echoed
        0x00, 0x01, 0x00, 0x01, 0x2d, 0x8c, 0x1f, 0x40, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00,
        0x02, 0x00, 0x0a, // Server Identifier: DUID-LL of the server MAC
        0x00, 0x03, 0x00, 0x01, 0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xdd, //
        0x00, 0x17, 0x00, 0x10, // DNS Recursive Name Server: fd00:1234::1
        0xfd, 0x00, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x00, 0x18, 0x00, 0x0e, // Domain Search List: example.test, uncompressed
        7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 4, b't', b'e', b's', b't', 0, //
        0x00, 0x20, 0x00, 0x04, 0x00, 0x00, 0x0e, 0x10, // Information Refresh Time 3600
    ];

    /// A systemd-networkd style Solicit: Rapid Commit, a DUID-EN client id, an IA_NA without
    /// addresses, a Client FQDN (39, not read), ORO 23, 24, 39, 82, Elapsed Time.
    const NETWORKD_RAPID_SOLICIT: [u8; 71] = [
        0x01, 0x0a, 0x0b, 0x0c, // Solicit, xid
        0x00, 0x0e, 0x00, 0x00, // Rapid Commit
        0x00, 0x01, 0x00, 0x0e, // Client Identifier: DUID-EN, enterprise 43793, 8 bytes
        0x00, 0x02, 0x00, 0x00, 0xab, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, //
        0x00, 0x03, 0x00, 0x0c, // IA_NA, IAID 0xcafe0001, T1 0, T2 0
        0xca, 0xfe, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, //
        0x00, 0x27, 0x00, 0x07, 0x01, 5, b'g', b'u', b'e', b's', b't', // Client FQDN
        0x00, 0x06, 0x00, 0x08, 0x00, 0x17, 0x00, 0x18, 0x00, 0x27, 0x00, 0x52, // ORO
        0x00, 0x08, 0x00, 0x02, 0x00, 0x00, // Elapsed Time 0
    ];

    fn addr(host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0, 0, 0, host)
    }

    fn t(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn config() -> Dhcp6Config {
        Dhcp6Config {
            server_mac: SERVER_MAC,
            prefix: addr(0),
            pool_start: addr(0x100),
            pool_end: addr(0x1ff),
            dns_servers: vec![addr(1)],
            search_domains: vec!["example.test".into()],
            preferred_lifetime: t(1800),
            valid_lifetime: HOUR,
        }
    }

    fn server() -> Dhcp6Server {
        Dhcp6Server::new(config())
    }

    /// A server whose pool is `::100` to `::(0x100 + size - 1)`.
    fn small_server(size: u16) -> Dhcp6Server {
        Dhcp6Server::new(Dhcp6Config {
            pool_end: addr(0x100 + size - 1),
            ..config()
        })
    }

    fn opt(code: u16, body: &[u8]) -> Vec<u8> {
        let mut o = code.to_be_bytes().to_vec();
        o.extend((body.len() as u16).to_be_bytes());
        o.extend(body);
        o
    }

    /// DUID-LLT of `mac`, with `variant` as the time (a guest that lost its DUID makes a new one).
    fn duid(mac: Mac, variant: u8) -> Vec<u8> {
        let mut d = vec![0, 1, 0, 1, 0x2d, 0x8c, 0x1f, variant];
        d.extend(mac);
        d
    }

    fn client_id(mac: Mac) -> Vec<u8> {
        opt(1, &duid(mac, 0))
    }

    fn server_id() -> Vec<u8> {
        opt(2, &SERVER_DUID)
    }

    fn ia_addr_opt(a: Ipv6Addr) -> Vec<u8> {
        let mut body = a.octets().to_vec();
        body.extend([0; 8]);
        opt(5, &body)
    }

    fn ia_na(iaid: u32, addrs: &[Ipv6Addr]) -> Vec<u8> {
        let mut body = iaid.to_be_bytes().to_vec();
        body.extend([0; 8]);
        for a in addrs {
            body.extend(ia_addr_opt(*a));
        }
        opt(3, &body)
    }

    fn message(kind: u8, opts: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![kind, 0x12, 0x34, 0x56];
        for o in opts {
            m.extend(o);
        }
        m
    }

    fn solicit(mac: Mac) -> Vec<u8> {
        message(SOLICIT, &[client_id(mac), ia_na(1, &[])])
    }

    fn request(mac: Mac, a: Ipv6Addr) -> Vec<u8> {
        message(REQUEST, &[client_id(mac), server_id(), ia_na(1, &[a])])
    }

    fn with_ia(kind: u8, mac: Mac, a: Ipv6Addr) -> Vec<u8> {
        let mut opts = vec![client_id(mac), ia_na(1, &[a])];
        if matches!(kind, REQUEST | RENEW | RELEASE | DECLINE) {
            opts.push(server_id());
        }
        message(kind, &opts)
    }

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).unwrap()
    }

    fn handle_ok(s: &mut Dhcp6Server, now: Duration, mac: Mac, payload: &[u8]) -> Message {
        let reply = s.handle(now, mac, payload).unwrap().unwrap();
        assert!(reply.len() <= MAX_REPLY_LEN);
        decode(&reply)
    }

    fn ia_nas(m: &Message) -> Vec<IANA> {
        m.opts()
            .iter()
            .filter_map(|o| match o {
                DhcpOption::IANA(ia) => Some(ia.clone()),
                _ => None,
            })
            .collect()
    }

    fn status_of(opts: &DhcpOptions) -> Option<Status> {
        match opts.get(OptionCode::StatusCode) {
            Some(DhcpOption::StatusCode(s)) => Some(s.status),
            _ => None,
        }
    }

    fn addresses(ia: &IANA) -> Vec<(Ipv6Addr, u32, u32)> {
        ia.opts
            .iter()
            .filter_map(|o| match o {
                DhcpOption::IAAddr(a) => Some((a.addr, a.preferred_life, a.valid_life)),
                _ => None,
            })
            .collect()
    }

    /// The address the first IA_NA of a reply leases.
    fn leased(m: &Message) -> Option<Ipv6Addr> {
        let ia = ia_nas(m).into_iter().next()?;
        addresses(&ia)
            .into_iter()
            .find(|(_, _, valid)| *valid > 0)
            .map(|(a, _, _)| a)
    }

    /// Solicit, Advertise, Request, Reply; returns the address.
    fn sarr(s: &mut Dhcp6Server, now: Duration, mac: Mac) -> Ipv6Addr {
        let adv = handle_ok(s, now, mac, &solicit(mac));
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        let offered = leased(&adv).unwrap();
        let reply = handle_ok(s, now, mac, &request(mac, offered));
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(leased(&reply), Some(offered));
        offered
    }

    fn check_invariants(s: &Dhcp6Server, now: Duration) {
        assert_eq!(s.leases.len(), s.by_client.len());
        for (a, lease) in &s.leases {
            assert_eq!(s.by_client.get(&*lease.client), Some(a));
            assert!(s.is_pool_address(*a), "{}", Ipv6Addr::from(*a));
            assert!(!s.declined.contains_key(a));
        }
        assert!(s.leases.len() <= s.max_leases);
        assert!(s.declined.len() <= s.max_leases);
        assert!(s.declined.keys().all(|a| s.is_pool_address(*a)));
        let declined_min = s.declined.values().copied().min();
        assert!(declined_min.is_none_or(|m| m >= s.next_quarantine_end));
        let mut per_mac: HashMap<Mac, usize> = HashMap::new();
        for lease in s.leases.values().filter(|l| l.is_live(now)) {
            *per_mac.entry(lease.client.mac).or_default() += 1;
        }
        assert!(per_mac.values().all(|n| *n <= MAX_LEASES_PER_MAC));
        assert!(s.pool_size <= s.pool_end.saturating_sub(s.pool_start) + 1);
    }

    #[test]
    fn dhclient_information_request_gets_the_exact_reply() {
        let mut s = server();
        let reply = s
            .handle(t(0), MAC_A, &DHCLIENT_INFORMATION_REQUEST)
            .unwrap()
            .unwrap();
        assert_eq!(reply, INFORMATION_REPLY);
        // dhcproto reads it back as the same options.
        let m = decode(&reply);
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(m.xid(), [0x5a, 0x3c, 0x91]);
        assert_eq!(
            m.opts().get(OptionCode::DomainNameServers),
            Some(&DhcpOption::DomainNameServers(vec![addr(1)]))
        );
        match m.opts().get(OptionCode::DomainSearchList) {
            Some(DhcpOption::DomainSearchList(names)) => {
                assert_eq!(names.len(), 1);
                assert_eq!(names[0].to_ascii(), "example.test.");
            }
            other => panic!("{other:?}"),
        }
        // Stateless: no lease.
        assert!(s.leases(t(0)).is_empty());
    }

    #[test]
    fn information_request_identifier_rules() {
        let mut s = server();
        // Without a client id (allowed) and with our server id (allowed).
        let m = handle_ok(&mut s, t(0), MAC_A, &message(INFORMATION_REQUEST, &[]));
        assert_eq!(m.opts().get(OptionCode::ClientId), None);
        assert_eq!(
            m.opts().get(OptionCode::ServerId),
            Some(&DhcpOption::ServerId(SERVER_DUID.to_vec()))
        );
        let ours = message(INFORMATION_REQUEST, &[server_id()]);
        assert!(s.handle(t(0), MAC_A, &ours).unwrap().is_some());
        let foreign = message(INFORMATION_REQUEST, &[opt(2, &duid(MAC_B, 0))]);
        assert_eq!(s.handle(t(0), MAC_A, &foreign), Err(Dhcp6Drop::NotForUs));
        let with_ia = message(INFORMATION_REQUEST, &[client_id(MAC_A), ia_na(1, &[])]);
        assert_eq!(
            s.handle(t(0), MAC_A, &with_ia),
            Err(Dhcp6Drop::IaInInformationRequest)
        );
        let bad_id = message(INFORMATION_REQUEST, &[opt(1, &[0, 1])]);
        assert_eq!(
            s.handle(t(0), MAC_A, &bad_id),
            Err(Dhcp6Drop::InvalidClientId)
        );
    }

    #[test]
    fn solicit_advertise_request_reply() {
        let mut s = server();
        let adv = handle_ok(&mut s, t(10), MAC_A, &solicit(MAC_A));
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        assert_eq!(adv.xid(), [0x12, 0x34, 0x56]);
        assert_eq!(
            adv.opts().get(OptionCode::ClientId),
            Some(&DhcpOption::ClientId(duid(MAC_A, 0)))
        );
        assert_eq!(
            adv.opts().get(OptionCode::ServerId),
            Some(&DhcpOption::ServerId(SERVER_DUID.to_vec()))
        );
        assert_eq!(
            adv.opts().get(OptionCode::Preference),
            Some(&DhcpOption::Preference(255))
        );
        assert_eq!(status_of(adv.opts()), None);
        assert!(adv.opts().get(OptionCode::DomainNameServers).is_some());
        assert!(adv.opts().get(OptionCode::DomainSearchList).is_some());
        assert_eq!(adv.opts().get(OptionCode::RapidCommit), None);
        assert_eq!(adv.opts().get(OptionCode::InformationRefreshTime), None);
        let ias = ia_nas(&adv);
        assert_eq!(ias.len(), 1);
        assert_eq!((ias[0].id, ias[0].t1, ias[0].t2), (1, 900, 1440));
        assert_eq!(addresses(&ias[0]), vec![(addr(0x100), 1800, 3600)]);
        // An offer is not a lease.
        assert!(s.leases(t(10)).is_empty());
        assert_eq!(s.holder_of(addr(0x100)), None);

        let reply = handle_ok(&mut s, t(11), MAC_A, &request(MAC_A, addr(0x100)));
        assert_eq!(reply.msg_type(), MessageType::Reply);
        assert_eq!(reply.opts().get(OptionCode::Preference), None);
        assert_eq!(
            addresses(&ia_nas(&reply)[0]),
            vec![(addr(0x100), 1800, 3600)]
        );
        assert_eq!(s.leases(t(12)), vec![(addr(0x100), MAC_A)]);
        assert_eq!(s.holder_of(addr(0x100)), Some(MAC_A));
        // It runs for the valid lifetime.
        assert_eq!(s.leases(t(11) + HOUR - t(1)).len(), 1);
        assert!(s.leases(t(11) + HOUR).is_empty());
        // A second guest gets the next address.
        assert_eq!(sarr(&mut s, t(20), MAC_B), addr(0x101));
        // Soliciting again (e.g. after a guest restart) gives the same address.
        assert_eq!(sarr(&mut s, t(30), MAC_A), addr(0x100));
        check_invariants(&s, t(30));
    }

    #[test]
    fn networkd_rapid_commit_solicit_is_bound_at_once() {
        let mut s = server();
        let m = handle_ok(&mut s, t(0), MAC_A, &NETWORKD_RAPID_SOLICIT);
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(m.xid(), [0x0a, 0x0b, 0x0c]);
        assert_eq!(
            m.opts().get(OptionCode::RapidCommit),
            Some(&DhcpOption::RapidCommit)
        );
        assert_eq!(m.opts().get(OptionCode::Preference), None);
        let ias = ia_nas(&m);
        assert_eq!(ias[0].id, 0xcafe_0001);
        assert_eq!(addresses(&ias[0]), vec![(addr(0x100), 1800, 3600)]);
        assert_eq!(s.leases(t(1)), vec![(addr(0x100), MAC_A)]);
        // The Client FQDN option was not echoed.
        assert!(m
            .opts()
            .iter()
            .all(|o| OptionCode::from(o) != OptionCode::ClientFqdn));
        check_invariants(&s, t(1));
    }

    #[test]
    fn solicit_hint_is_used_when_free() {
        let mut s = server();
        let hinted = message(SOLICIT, &[client_id(MAC_A), ia_na(1, &[addr(0x150)])]);
        assert_eq!(
            leased(&handle_ok(&mut s, t(0), MAC_A, &hinted)),
            Some(addr(0x150))
        );
        // Taken by A's offer: B asking for it gets the lowest free address.
        let hinted = message(SOLICIT, &[client_id(MAC_B), ia_na(1, &[addr(0x150)])]);
        assert_eq!(
            leased(&handle_ok(&mut s, t(0), MAC_B, &hinted)),
            Some(addr(0x100))
        );
        // Outside the pool or the prefix: ignored.
        let mac_c = [2, 0, 0, 0, 0, 3];
        let hinted = message(
            SOLICIT,
            &[
                client_id(mac_c),
                ia_na(1, &[addr(0x300), "2001:db8::1".parse().unwrap()]),
            ],
        );
        assert_eq!(
            leased(&handle_ok(&mut s, t(0), mac_c, &hinted)),
            Some(addr(0x101))
        );
    }

    #[test]
    fn renew_and_rebind_extend_the_lease() {
        let mut s = server();
        let a = sarr(&mut s, t(0), MAC_A);
        let m = handle_ok(&mut s, t(900), MAC_A, &with_ia(RENEW, MAC_A, a));
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(addresses(&ia_nas(&m)[0]), vec![(a, 1800, 3600)]);
        assert!(m.opts().get(OptionCode::DomainNameServers).is_some());
        assert_eq!(s.leases(t(900) + HOUR - t(1)), vec![(a, MAC_A)]);
        // Rebind carries no server id.
        let m = handle_ok(&mut s, t(3000), MAC_A, &with_ia(REBIND, MAC_A, a));
        assert_eq!(leased(&m), Some(a));
        assert_eq!(s.leases(t(3000) + HOUR - t(1)), vec![(a, MAC_A)]);
        // Other listed addresses come back with lifetimes 0.
        let stale: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let renew = message(
            RENEW,
            &[
                client_id(MAC_A),
                server_id(),
                ia_na(1, &[stale, a, addr(0x1f0)]),
            ],
        );
        let m = handle_ok(&mut s, t(3100), MAC_A, &renew);
        assert_eq!(
            addresses(&ia_nas(&m)[0]),
            vec![(a, 1800, 3600), (stale, 0, 0), (addr(0x1f0), 0, 0)]
        );
        // The lease is renewed even after it expired, while nobody took the address.
        let later = t(100 * 3600);
        assert!(s.leases(later).is_empty());
        assert_eq!(s.holder_of(a), Some(MAC_A));
        assert_eq!(
            leased(&handle_ok(&mut s, later, MAC_A, &with_ia(RENEW, MAC_A, a))),
            Some(a)
        );
        check_invariants(&s, later);
    }

    #[test]
    fn renew_without_lease_restores_or_says_no_binding() {
        // After a restart of slipway the server has no lease but the same DUID.
        let mut s = server();
        let m = handle_ok(&mut s, t(0), MAC_A, &with_ia(RENEW, MAC_A, addr(0x123)));
        assert_eq!(leased(&m), Some(addr(0x123)));
        assert_eq!(s.leases(t(0)), vec![(addr(0x123), MAC_A)]);
        // Held by A: B's Rebind for it gets NoBinding.
        let m = handle_ok(&mut s, t(0), MAC_B, &with_ia(REBIND, MAC_B, addr(0x123)));
        let ia = &ia_nas(&m)[0];
        assert_eq!(status_of(&ia.opts), Some(Status::NoBinding));
        assert!(addresses(ia).is_empty());
        assert_eq!((ia.t1, ia.t2), (0, 0));
        // Off the link or outside the pool: NoBinding as well.
        for a in ["2001:db8::1".parse().unwrap(), addr(0x200), addr(0)] {
            let m = handle_ok(&mut s, t(0), MAC_B, &with_ia(RENEW, MAC_B, a));
            assert_eq!(
                status_of(&ia_nas(&m)[0].opts),
                Some(Status::NoBinding),
                "{a}"
            );
        }
        // A Renew without addresses for an IA the server does not know.
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_B,
            &message(RENEW, &[client_id(MAC_B), server_id(), ia_na(7, &[])]),
        );
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        assert_eq!(s.leases(t(0)).len(), 1);
        check_invariants(&s, t(0));
    }

    #[test]
    fn request_off_link_is_not_on_link() {
        let mut s = server();
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &request(MAC_A, "2001:db8::7".parse().unwrap()),
        );
        let ia = &ia_nas(&m)[0];
        assert_eq!(status_of(&ia.opts), Some(Status::NotOnLink));
        assert!(addresses(ia).is_empty());
        assert!(s.leases(t(0)).is_empty());
        // A Request without addresses is served like a Solicit with Rapid Commit.
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &message(REQUEST, &[client_id(MAC_A), server_id(), ia_na(1, &[])]),
        );
        assert_eq!(leased(&m), Some(addr(0x100)));
    }

    #[test]
    fn release_then_reuse() {
        let mut s = small_server(1);
        let a = sarr(&mut s, t(0), MAC_A);
        assert_eq!(a, addr(0x100));
        // The pool is full for B.
        let adv = handle_ok(&mut s, t(1), MAC_B, &solicit(MAC_B));
        assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
        // A releases: Reply with Success, only identifiers and status.
        let m = handle_ok(&mut s, t(2), MAC_A, &with_ia(RELEASE, MAC_A, a));
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(status_of(m.opts()), Some(Status::Success));
        assert!(ia_nas(&m).is_empty());
        assert_eq!(m.opts().get(OptionCode::DomainNameServers), None);
        assert!(s.leases(t(2)).is_empty());
        // B gets the address now.
        assert_eq!(sarr(&mut s, t(3), MAC_B), a);
        assert_eq!(s.holder_of(a), Some(MAC_B));
        // A's release of an IA it has no lease for gets NoBinding in the IA.
        let m = handle_ok(&mut s, t(4), MAC_A, &with_ia(RELEASE, MAC_A, a));
        assert_eq!(status_of(m.opts()), Some(Status::Success));
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        assert_eq!(s.leases(t(4)), vec![(a, MAC_B)]);
        check_invariants(&s, t(4));
    }

    #[test]
    fn release_keeps_the_address_for_its_client() {
        let mut s = server();
        let a = sarr(&mut s, t(0), MAC_A);
        handle_ok(&mut s, t(1), MAC_A, &with_ia(RELEASE, MAC_A, a));
        sarr(&mut s, t(2), MAC_B);
        assert_eq!(sarr(&mut s, t(3), MAC_A), a);
    }

    #[test]
    fn decline_quarantines_the_address() {
        let mut s = server();
        let a = sarr(&mut s, t(0), MAC_A);
        // Only the holder's decline counts.
        let m = handle_ok(&mut s, t(1), MAC_B, &with_ia(DECLINE, MAC_B, a));
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        assert_eq!(s.holder_of(a), Some(MAC_A));
        let m = handle_ok(&mut s, t(1), MAC_A, &with_ia(DECLINE, MAC_A, a));
        assert_eq!(status_of(m.opts()), Some(Status::Success));
        assert!(ia_nas(&m).is_empty());
        assert_eq!(s.holder_of(a), None);
        assert!(s.leases(t(1)).is_empty());
        // A gets another address; nobody gets the declined one, not even by Renew.
        assert_eq!(sarr(&mut s, t(2), MAC_A), addr(0x101));
        let m = handle_ok(&mut s, t(3), MAC_B, &with_ia(RENEW, MAC_B, a));
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        // After the quarantine it is free again.
        assert_eq!(sarr(&mut s, t(1) + DECLINE_HOLD, MAC_B), a);
        check_invariants(&s, t(1) + DECLINE_HOLD);
    }

    #[test]
    fn decline_table_is_bounded() {
        let mut s = small_server(2);
        let a = sarr(&mut s, t(0), MAC_A);
        handle_ok(&mut s, t(0), MAC_A, &with_ia(DECLINE, MAC_A, a));
        let b = sarr(&mut s, t(0), MAC_A);
        handle_ok(&mut s, t(0), MAC_A, &with_ia(DECLINE, MAC_A, b));
        // Both addresses quarantined: nothing left, and no more can be declined.
        let adv = handle_ok(&mut s, t(1), MAC_A, &solicit(MAC_A));
        assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
        assert_eq!(s.declined.len(), 2);
        check_invariants(&s, t(1));
    }

    #[test]
    fn wrong_or_missing_server_id_is_dropped() {
        let mut s = server();
        let a = sarr(&mut s, t(0), MAC_A);
        let foreign = opt(2, &duid(MAC_B, 0));
        for kind in [REQUEST, RENEW, RELEASE, DECLINE] {
            let m = message(kind, &[client_id(MAC_A), foreign.clone(), ia_na(1, &[a])]);
            assert_eq!(
                s.handle(t(1), MAC_A, &m),
                Err(Dhcp6Drop::NotForUs),
                "{kind}"
            );
            let m = message(kind, &[client_id(MAC_A), ia_na(1, &[a])]);
            assert_eq!(
                s.handle(t(1), MAC_A, &m),
                Err(Dhcp6Drop::MissingServerId),
                "{kind}"
            );
        }
        for kind in [SOLICIT, CONFIRM, REBIND] {
            for id in [server_id(), foreign.clone()] {
                let m = message(kind, &[client_id(MAC_A), id, ia_na(1, &[a])]);
                assert_eq!(
                    s.handle(t(1), MAC_A, &m),
                    Err(Dhcp6Drop::UnexpectedServerId),
                    "{kind}"
                );
            }
        }
        // Nothing changed.
        assert_eq!(s.leases(t(1)), vec![(a, MAC_A)]);
    }

    #[test]
    fn missing_client_id_is_dropped() {
        let mut s = server();
        for kind in [SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE] {
            let m = message(kind, &[server_id(), ia_na(1, &[addr(0x100)])]);
            let m = if matches!(kind, SOLICIT | CONFIRM | REBIND) {
                message(kind, &[ia_na(1, &[addr(0x100)])])
            } else {
                m
            };
            assert_eq!(
                s.handle(t(0), MAC_A, &m),
                Err(Dhcp6Drop::MissingClientId),
                "{kind}"
            );
        }
        for bad in [vec![], vec![0, 1], vec![7; 131]] {
            let m = message(SOLICIT, &[opt(1, &bad), ia_na(1, &[])]);
            assert_eq!(
                s.handle(t(0), MAC_A, &m),
                Err(Dhcp6Drop::InvalidClientId),
                "{}",
                bad.len()
            );
        }
        // 3 and 130 bytes are fine.
        for good in [
            vec![0, 4, 1],
            vec![0, 2].into_iter().chain([9; 128]).collect(),
        ] {
            let m = message(SOLICIT, &[opt(1, &good), ia_na(1, &[])]);
            assert!(s.handle(t(0), MAC_A, &m).unwrap().is_some());
        }
        assert!(s.leases(t(0)).is_empty());
    }

    #[test]
    fn pool_exhaustion() {
        let mut s = small_server(2);
        assert_eq!(sarr(&mut s, t(0), MAC_A), addr(0x100));
        assert_eq!(sarr(&mut s, t(0), MAC_B), addr(0x101));
        let mac_c = [2, 0, 0, 0, 0, 3];
        // Advertise: the IA with NoAddrsAvail, a top-level NoAddrsAvail, no configuration.
        let adv = handle_ok(&mut s, t(1), mac_c, &solicit(mac_c));
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
        let ia = &ia_nas(&adv)[0];
        assert_eq!(status_of(&ia.opts), Some(Status::NoAddrsAvail));
        assert!(addresses(ia).is_empty());
        assert_eq!(adv.opts().get(OptionCode::Preference), None);
        assert_eq!(adv.opts().get(OptionCode::DomainNameServers), None);
        // Rapid Commit is not honoured then.
        let rapid = message(SOLICIT, &[client_id(mac_c), ia_na(1, &[]), opt(14, &[])]);
        let m = handle_ok(&mut s, t(1), mac_c, &rapid);
        assert_eq!(m.msg_type(), MessageType::Advertise);
        assert_eq!(m.opts().get(OptionCode::RapidCommit), None);
        // Request: a Reply with the IA's status and the configuration.
        let m = handle_ok(
            &mut s,
            t(1),
            mac_c,
            &message(REQUEST, &[client_id(mac_c), server_id(), ia_na(1, &[])]),
        );
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoAddrsAvail));
        assert!(m.opts().get(OptionCode::DomainNameServers).is_some());
        // Existing clients still renew.
        let m = handle_ok(&mut s, t(2), MAC_A, &with_ia(RENEW, MAC_A, addr(0x100)));
        assert_eq!(leased(&m), Some(addr(0x100)));
        // Once B's lease expired (A renewed meanwhile), C gets B's address.
        handle_ok(&mut s, t(1000), MAC_A, &with_ia(RENEW, MAC_A, addr(0x100)));
        let later = t(0) + HOUR;
        assert_eq!(s.leases(later), vec![(addr(0x100), MAC_A)]);
        assert_eq!(sarr(&mut s, later, mac_c), addr(0x101));
        assert_eq!(s.holder_of(addr(0x101)), Some(mac_c));
        check_invariants(&s, later);
    }

    #[test]
    fn unrequested_offers_are_reused_before_expired_leases() {
        let mut s = small_server(2);
        assert_eq!(sarr(&mut s, t(0), MAC_A), addr(0x100));
        // B only solicits, much later than A's Reply.
        let adv = handle_ok(&mut s, t(3000), MAC_B, &solicit(MAC_B));
        assert_eq!(leased(&adv), Some(addr(0x101)));
        let mac_c = [2, 0, 0, 0, 0, 3];
        assert_eq!(sarr(&mut s, t(2 * 3600), mac_c), addr(0x101));
        assert_eq!(s.holder_of(addr(0x100)), Some(MAC_A));
    }

    #[test]
    fn empty_pool_gives_nothing_but_configuration() {
        let mut s = Dhcp6Server::new(Dhcp6Config {
            pool_start: addr(0x200),
            pool_end: addr(0x1ff),
            ..config()
        });
        let adv = handle_ok(&mut s, t(0), MAC_A, &solicit(MAC_A));
        assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
        let m = handle_ok(&mut s, t(0), MAC_A, &with_ia(RENEW, MAC_A, addr(0x200)));
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        assert!(s
            .handle(t(0), MAC_A, &DHCLIENT_INFORMATION_REQUEST)
            .unwrap()
            .is_some());
        // A pool outside the prefix is empty too.
        let s = Dhcp6Server::new(Dhcp6Config {
            pool_start: "fd00:1235::1".parse().unwrap(),
            pool_end: "fd00:1235::ff".parse().unwrap(),
            ..config()
        });
        assert_eq!(s.max_leases, 0);
    }

    #[test]
    fn reserved_addresses_are_never_leased() {
        // A whole-/64 pool that starts at the Subnet-Router anycast address, with the DNS
        // server inside it.
        let mut s = Dhcp6Server::new(Dhcp6Config {
            pool_start: addr(0),
            pool_end: Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff),
            dns_servers: vec![addr(1), addr(1), Ipv6Addr::UNSPECIFIED],
            ..config()
        });
        assert_eq!(s.dns_servers, vec![addr(1)]);
        assert_eq!(s.pool_size, (1u128 << 64) - 1 - 128 - 1);
        assert_eq!(s.max_leases, MAX_LEASES);
        assert_eq!(sarr(&mut s, t(0), MAC_A), addr(2));
        let anycast = Ipv6Addr::new(0xfd00, 0x1234, 0, 0, 0xfdff, 0xffff, 0xffff, 0xff90);
        for a in [addr(0), addr(1), anycast] {
            let m = handle_ok(&mut s, t(0), MAC_B, &with_ia(RENEW, MAC_B, a));
            assert_eq!(
                status_of(&ia_nas(&m)[0].opts),
                Some(Status::NoBinding),
                "{a}"
            );
        }
        // The pool is clipped to the prefix.
        let s = Dhcp6Server::new(Dhcp6Config {
            pool_start: addr(0x1f0),
            pool_end: "fd00:1234:0:1::5".parse().unwrap(),
            dns_servers: vec![],
            ..config()
        });
        assert_eq!(s.pool_end, u128::from(addr(0)) | !PREFIX_MASK);
        assert_eq!(s.pool_size, (1u128 << 64) - 0x1f0 - 128);
    }

    #[test]
    fn confirm_on_link_and_not_on_link() {
        let mut s = server();
        let confirm = |addrs: &[Ipv6Addr]| message(CONFIRM, &[client_id(MAC_A), ia_na(1, addrs)]);
        // Any address inside the prefix is on-link, leased or not, in the pool or not.
        let m = handle_ok(&mut s, t(0), MAC_A, &confirm(&[addr(0x100), addr(0x9999)]));
        assert_eq!(m.msg_type(), MessageType::Reply);
        assert_eq!(status_of(m.opts()), Some(Status::Success));
        assert!(ia_nas(&m).is_empty());
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &confirm(&[addr(0x100), "fd00:1235::100".parse().unwrap()]),
        );
        assert_eq!(status_of(m.opts()), Some(Status::NotOnLink));
        // IA_TA addresses count too.
        let mut ta = 9u32.to_be_bytes().to_vec();
        ta.extend(ia_addr_opt("2001:db8::1".parse().unwrap()));
        let m = message(CONFIRM, &[client_id(MAC_A), opt(4, &ta)]);
        assert_eq!(
            status_of(handle_ok(&mut s, t(0), MAC_A, &m).opts()),
            Some(Status::NotOnLink)
        );
        // No addresses: no reply (RFC 8415 §18.3.3).
        assert_eq!(s.handle(t(0), MAC_A, &confirm(&[])), Ok(None));
        assert!(s.leases(t(0)).is_empty());
    }

    #[test]
    fn ia_ta_and_ia_pd_get_status_codes() {
        let mut s = server();
        let ta = opt(4, &7u32.to_be_bytes());
        let mut pd_body = 8u32.to_be_bytes().to_vec();
        pd_body.extend([0; 8]);
        // An IA Prefix hint inside, not read.
        let mut prefix = vec![0; 9];
        prefix.push(56);
        prefix.extend([0; 15]);
        pd_body.extend(opt(26, &prefix));
        let pd = opt(25, &pd_body);
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &message(
                SOLICIT,
                &[client_id(MAC_A), ia_na(1, &[]), ta.clone(), pd.clone()],
            ),
        );
        assert_eq!(m.msg_type(), MessageType::Advertise);
        assert_eq!(leased(&m), Some(addr(0x100)));
        match m.opts().get(OptionCode::IATA) {
            Some(DhcpOption::IATA(ia)) => {
                assert_eq!(ia.id, 7);
                assert_eq!(status_of(&ia.opts), Some(Status::NoAddrsAvail));
            }
            other => panic!("{other:?}"),
        }
        match m.opts().get(OptionCode::IAPD) {
            Some(DhcpOption::IAPD(ia)) => {
                assert_eq!((ia.id, ia.t1, ia.t2), (8, 0, 0));
                assert_eq!(status_of(&ia.opts), Some(Status::NoPrefixAvail));
                assert!(ia.opts.get(OptionCode::IAPrefix).is_none());
            }
            other => panic!("{other:?}"),
        }
        // Only an IA_PD: nothing to offer.
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &message(SOLICIT, &[client_id(MAC_A), pd.clone()]),
        );
        assert_eq!(status_of(m.opts()), Some(Status::NoAddrsAvail));
        // Renew and Release: NoBinding.
        for kind in [RENEW, RELEASE] {
            let m = handle_ok(
                &mut s,
                t(0),
                MAC_A,
                &message(
                    kind,
                    &[client_id(MAC_A), server_id(), ta.clone(), pd.clone()],
                ),
            );
            for code in [OptionCode::IATA, OptionCode::IAPD] {
                let opts = match m.opts().get(code) {
                    Some(DhcpOption::IATA(ia)) => ia.opts.clone(),
                    Some(DhcpOption::IAPD(ia)) => ia.opts.clone(),
                    other => panic!("{other:?}"),
                };
                assert_eq!(status_of(&opts), Some(Status::NoBinding), "{kind}");
            }
        }
    }

    #[test]
    fn several_ia_nas_get_one_address_each() {
        let mut s = server();
        let m = handle_ok(
            &mut s,
            t(0),
            MAC_A,
            &message(
                SOLICIT,
                &[client_id(MAC_A), ia_na(1, &[]), ia_na(2, &[]), opt(14, &[])],
            ),
        );
        let ias = ia_nas(&m);
        assert_eq!(ias.iter().map(|ia| ia.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(addresses(&ias[0])[0].0, addr(0x100));
        assert_eq!(addresses(&ias[1])[0].0, addr(0x101));
        assert_eq!(s.leases(t(0)).len(), 2);
        check_invariants(&s, t(0));
    }

    #[test]
    fn one_mac_holds_at_most_its_cap_of_leases() {
        // A guest that boots with a fresh DUID every time.
        let mut s = server();
        let b = sarr(&mut s, t(0), MAC_B);
        for boot in 0..MAX_LEASES_PER_MAC as u8 {
            let m = message(
                REQUEST,
                &[opt(1, &duid(MAC_A, boot)), server_id(), ia_na(1, &[])],
            );
            handle_ok(&mut s, t(u64::from(boot)), MAC_A, &m);
        }
        let of_a = |s: &Dhcp6Server, now| {
            s.leases(now)
                .into_iter()
                .filter(|(_, m)| *m == MAC_A)
                .count()
        };
        assert_eq!(of_a(&s, t(10)), MAX_LEASES_PER_MAC);
        // The next boot takes over the address of the lease that expires first.
        let m = message(
            REQUEST,
            &[opt(1, &duid(MAC_A, 100)), server_id(), ia_na(1, &[])],
        );
        let m = handle_ok(&mut s, t(20), MAC_A, &m);
        assert_eq!(leased(&m), Some(addr(0x101)));
        assert_eq!(of_a(&s, t(20)), MAX_LEASES_PER_MAC);
        // The first boot's DUID lost it; B's lease is untouched.
        let first = message(
            RENEW,
            &[opt(1, &duid(MAC_A, 0)), server_id(), ia_na(1, &[])],
        );
        let m = handle_ok(&mut s, t(21), MAC_A, &first);
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        assert_eq!(s.holder_of(b), Some(MAC_B));
        check_invariants(&s, t(21));
    }

    #[test]
    fn a_copied_duid_does_not_reach_another_guests_lease() {
        let mut s = server();
        let a = sarr(&mut s, t(0), MAC_A);
        // B sends with A's DUID and IAID: a separate identity.
        let release = with_ia(RELEASE, MAC_A, a);
        let m = handle_ok(&mut s, t(1), MAC_B, &release);
        assert_eq!(status_of(&ia_nas(&m)[0].opts), Some(Status::NoBinding));
        let decline = with_ia(DECLINE, MAC_A, a);
        handle_ok(&mut s, t(1), MAC_B, &decline);
        assert_eq!(s.leases(t(1)), vec![(a, MAC_A)]);
        // And its Solicit gets another address.
        let adv = handle_ok(&mut s, t(1), MAC_B, &solicit(MAC_A));
        assert_eq!(leased(&adv), Some(addr(0x101)));
        check_invariants(&s, t(1));
    }

    #[test]
    fn lifetimes_are_clamped() {
        let mut s = Dhcp6Server::new(Dhcp6Config {
            preferred_lifetime: Duration::MAX,
            valid_lifetime: Duration::MAX,
            ..config()
        });
        let m = handle_ok(&mut s, t(0), MAC_A, &NETWORKD_RAPID_SOLICIT);
        let ia = &ia_nas(&m)[0];
        assert_eq!(addresses(ia)[0].1, u32::MAX - 1);
        assert_eq!(addresses(ia)[0].2, u32::MAX - 1);
        assert_eq!((ia.t1, ia.t2), ((u32::MAX - 1) / 2, 3_435_973_835));
        let mut s = Dhcp6Server::new(Dhcp6Config {
            preferred_lifetime: t(7200),
            valid_lifetime: Duration::ZERO,
            ..config()
        });
        let m = handle_ok(&mut s, t(0), MAC_A, &NETWORKD_RAPID_SOLICIT);
        assert_eq!(addresses(&ia_nas(&m)[0])[0], (addr(0x100), 1, 1));
    }

    #[test]
    fn search_domains_are_validated() {
        let s = Dhcp6Server::new(Dhcp6Config {
            search_domains: vec![
                "lab.test.".into(),
                "bad name.test".into(),
                "$(reboot).test".into(),
                "LAB.test".into(),
                "".into(),
                format!("{}.test", "a".repeat(64)),
                "b.test".into(),
            ],
            ..config()
        });
        assert_eq!(s.search_domains(), ["lab.test", "b.test"]);
        let s = Dhcp6Server::new(Dhcp6Config {
            search_domains: (0..100).map(|i| format!("d{i}.test")).collect(),
            ..config()
        });
        assert_eq!(s.search_domains().len(), MAX_SEARCH_DOMAINS);
        let mut s = Dhcp6Server::new(Dhcp6Config {
            search_domains: vec![],
            dns_servers: vec![],
            ..config()
        });
        let m = handle_ok(&mut s, t(0), MAC_A, &DHCLIENT_INFORMATION_REQUEST);
        assert_eq!(m.opts().get(OptionCode::DomainSearchList), None);
        assert_eq!(m.opts().get(OptionCode::DomainNameServers), None);
    }

    #[test]
    fn long_search_list_is_trimmed_to_fit() {
        let domains: Vec<String> = (0..32)
            .map(|i| format!("{}{i:02}.example.test", "x".repeat(50)))
            .collect();
        let mut s = Dhcp6Server::new(Dhcp6Config {
            search_domains: domains.clone(),
            dns_servers: (1..=8).map(addr).collect(),
            ..config()
        });
        let mut no_search = Dhcp6Server::new(Dhcp6Config {
            search_domains: vec![],
            dns_servers: (1..=8).map(addr).collect(),
            ..config()
        });
        // The biggest reply: a client with a 130-byte DUID holds 4 IA_NAs and renews them,
        // listing 4 stale addresses in each (returned with lifetimes 0 besides the lease).
        let client = vec![0, 2].into_iter().chain([7; 128]).collect::<Vec<u8>>();
        let mut opts = vec![opt(1, &client), server_id()];
        opts.extend((1..=4).map(|iaid| ia_na(iaid, &[])));
        for server in [&mut s, &mut no_search] {
            let m = handle_ok(server, t(0), MAC_A, &message(REQUEST, &opts));
            assert!(ia_nas(&m).iter().all(|ia| addresses(ia).len() == 1));
        }
        let stale: Vec<Ipv6Addr> = (0..4)
            .map(|i| format!("2001:db8::{i}").parse().unwrap())
            .collect();
        let mut opts = vec![opt(1, &client), server_id()];
        opts.extend((1..=4).map(|iaid| ia_na(iaid, &stale)));
        let reply = s
            .handle(t(1), MAC_A, &message(RENEW, &opts))
            .unwrap()
            .unwrap();
        assert!(reply.len() <= MAX_REPLY_LEN, "{}", reply.len());
        // Without option 24 it is the largest reply there is (the module documents 908 bytes).
        let bare = no_search
            .handle(t(1), MAC_A, &message(RENEW, &opts))
            .unwrap()
            .unwrap();
        assert_eq!(bare.len(), 908);
        let m = decode(&reply);
        assert_eq!(ia_nas(&m).len(), 4);
        assert!(ia_nas(&m).iter().all(|ia| addresses(ia).len() == 5));
        let names = match m.opts().get(OptionCode::DomainSearchList) {
            Some(DhcpOption::DomainSearchList(names)) => names.len(),
            other => panic!("{other:?}"),
        };
        assert!(names > 0 && names < 32, "{names}");
        // An Information-request gets more of the list, still within the limit.
        let reply = s
            .handle(t(0), MAC_A, &DHCLIENT_INFORMATION_REQUEST)
            .unwrap()
            .unwrap();
        assert!(reply.len() <= MAX_REPLY_LEN);
        match decode(&reply).opts().get(OptionCode::DomainSearchList) {
            Some(DhcpOption::DomainSearchList(more)) => {
                assert!(more.len() > names);
                assert_eq!(more[0].to_ascii(), format!("{}.", domains[0]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_truncated_inputs_are_dropped() {
        let mut s = server();
        for bytes in [&[][..], &[1], &[1, 2, 3]] {
            assert_eq!(s.handle(t(0), MAC_A, bytes), Err(Dhcp6Drop::Malformed));
        }
        let good = solicit(MAC_A);
        for len in 5..good.len() {
            let r = s.handle(t(0), MAC_A, &good[..len]);
            if len == 4 + client_id(MAC_A).len() {
                // Cut between options: a valid Solicit without IA.
                let adv = decode(&r.unwrap().unwrap());
                assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
                continue;
            }
            assert!(
                matches!(r, Err(Dhcp6Drop::Malformed | Dhcp6Drop::MissingClientId)),
                "{len}: {r:?}"
            );
        }
        // The header alone: a Solicit without client id.
        assert_eq!(
            s.handle(t(0), MAC_A, &good[..4]),
            Err(Dhcp6Drop::MissingClientId)
        );
        // An option length past the end.
        let mut bad = good.clone();
        bad[7] = 0xff;
        assert_eq!(s.handle(t(0), MAC_A, &bad), Err(Dhcp6Drop::Malformed));
        // Relayed and server messages.
        let mut relayed = vec![12, 0];
        relayed.extend([0; 32]);
        assert_eq!(s.handle(t(0), MAC_A, &relayed), Err(Dhcp6Drop::Relayed));
        for kind in [0, 2, 7, 10, 13, 14, 20, 21, 99, 255] {
            let mut m = good.clone();
            m[0] = kind;
            assert_eq!(
                s.handle(t(0), MAC_A, &m),
                Err(Dhcp6Drop::UnsupportedMessageType),
                "{kind}"
            );
        }
        // Duplicate identifiers, IAIDs, Rapid Commits; a Rapid Commit with data; short IAs.
        let cases: [Vec<Vec<u8>>; 7] = [
            vec![client_id(MAC_A), client_id(MAC_B)],
            vec![client_id(MAC_A), ia_na(1, &[]), ia_na(1, &[])],
            vec![client_id(MAC_A), opt(14, &[]), opt(14, &[])],
            vec![client_id(MAC_A), opt(14, &[0, 1, 0, 0])],
            vec![client_id(MAC_A), opt(3, &[0; 11])],
            vec![client_id(MAC_A), opt(4, &[0; 3])],
            vec![
                client_id(MAC_A),
                opt(3, &[[0; 12].as_slice(), &opt(5, &[0; 23])].concat()),
            ],
        ];
        for opts in cases {
            assert_eq!(
                s.handle(t(0), MAC_A, &message(SOLICIT, &opts)),
                Err(Dhcp6Drop::Malformed),
                "{opts:?}"
            );
        }
        // Five IAs.
        let mut opts = vec![client_id(MAC_A)];
        opts.extend((1..=5).map(|i| ia_na(i, &[])));
        assert_eq!(
            s.handle(t(0), MAC_A, &message(SOLICIT, &opts)),
            Err(Dhcp6Drop::TooManyIas)
        );
        // The same IAID in IA_NA and IA_TA is fine.
        let opts = vec![client_id(MAC_A), ia_na(1, &[]), opt(4, &1u32.to_be_bytes())];
        assert!(s.handle(t(0), MAC_A, &message(SOLICIT, &opts)).is_ok());
        check_invariants(&s, t(0));
    }

    /// Inputs that panic (or overflow the stack of) `dhcproto` 0.15's v6 decoder are answered
    /// normally: the options involved are never decoded.
    #[test]
    fn inputs_dhcproto_breaks_on_are_handled() {
        let mut s = server();
        let base = [client_id(MAC_A), ia_na(1, &[])];
        let odd_options = [
            opt(13, &[]),           // Status Code without code: `len - 2` overflows
            opt(13, &[0]),          //
            opt(16, &[]),           // Vendor Class: `len - 4` overflows
            opt(17, &[0, 0]),       // Vendor-specific Information: `len - 4` overflows
            opt(13, &[0, 0, 0xff]), // not UTF-8: dhcproto drops every later option
            opt(11, &[1, 2, 3]),    // short Authentication: same
            opt(8, &[]),            // Elapsed Time of length 0: dhcproto reads 2 bytes anyway
            opt(7, &[1, 2, 3, 4]),  // Preference of length 4
            opt(9, &[12, 0]),       // a Relay Message in a client message
        ];
        for odd in odd_options {
            let m = message(SOLICIT, &[base[0].clone(), odd.clone(), base[1].clone()]);
            let adv = handle_ok(&mut s, t(0), MAC_A, &m);
            assert_eq!(leased(&adv), Some(addr(0x100)), "{odd:?}");
        }
        // 64 KB of nested IA_TAs inside an IA_NA (8 bytes per level).
        let mut nested: Vec<u8> = Vec::new();
        while nested.len() + 8 + 16 < 65_000 {
            let mut body = 9u32.to_be_bytes().to_vec();
            body.extend(&nested);
            nested = opt(4, &body);
        }
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend([0; 8]);
        body.extend(&nested);
        let m = message(SOLICIT, &[client_id(MAC_A), opt(3, &body)]);
        assert!(m.len() > 60_000);
        let adv = handle_ok(&mut s, t(0), MAC_A, &m);
        assert_eq!(leased(&adv), Some(addr(0x100)));
        // The same nesting at top level: one IA_TA (its contents are not IA Addresses).
        let m = message(SOLICIT, &[client_id(MAC_A), nested]);
        let adv = handle_ok(&mut s, t(0), MAC_A, &m);
        assert_eq!(status_of(adv.opts()), Some(Status::NoAddrsAvail));
    }

    #[test]
    fn drop_reasons_have_distinct_names() {
        let mut names: Vec<&str> = Dhcp6Drop::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Dhcp6Drop::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    /// A client message built from small choices, so that sequences reach every path.
    fn arbitrary_message() -> impl Strategy<Value = (Mac, Vec<u8>)> {
        (
            prop::sample::select(vec![
                SOLICIT,
                REQUEST,
                CONFIRM,
                RENEW,
                REBIND,
                RELEASE,
                DECLINE,
                INFORMATION_REQUEST,
            ]),
            0usize..3,
            0u8..3,
            prop::collection::vec((1u32..4, prop::collection::vec(0u16..6, 0..3)), 0..3),
            prop::bool::ANY,
        )
            .prop_map(|(kind, mac, boot, ias, rapid)| {
                let macs = [MAC_A, MAC_B, [2, 0, 0, 0, 0, 3]];
                let mut opts = vec![opt(1, &duid(macs[mac], boot))];
                if matches!(kind, REQUEST | RENEW | RELEASE | DECLINE) {
                    opts.push(server_id());
                }
                if rapid {
                    opts.push(opt(14, &[]));
                }
                let mut seen = Vec::new();
                for (iaid, hosts) in ias {
                    if kind != INFORMATION_REQUEST && !seen.contains(&iaid) {
                        seen.push(iaid);
                        let hints: Vec<Ipv6Addr> = hosts.iter().map(|h| addr(0x100 + h)).collect();
                        opts.push(ia_na(iaid, &hints));
                    }
                }
                (macs[mac], message(kind, &opts))
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut s = server();
            let _ = s.handle(t(0), MAC_A, &payload);
            check_invariants(&s, t(0));
        }

        #[test]
        fn arbitrary_options_never_panic(
            kind in 0u8..16,
            opts in prop::collection::vec(any::<u8>(), 0..600),
            with_ids in prop::bool::ANY,
        ) {
            let mut s = small_server(3);
            let mut p = vec![kind, 1, 2, 3];
            if with_ids {
                p.extend(client_id(MAC_A));
                if matches!(kind, REQUEST | RENEW | RELEASE | DECLINE) {
                    p.extend(server_id());
                }
            }
            p.extend(&opts);
            if let Ok(Some(reply)) = s.handle(t(0), MAC_A, &p) {
                prop_assert!(reply.len() <= MAX_REPLY_LEN);
                let m = decode(&reply);
                prop_assert!(matches!(m.msg_type(), MessageType::Advertise | MessageType::Reply));
                prop_assert_eq!(m.xid(), [1, 2, 3]);
                prop_assert_eq!(
                    m.opts().get(OptionCode::ServerId),
                    Some(&DhcpOption::ServerId(SERVER_DUID.to_vec()))
                );
            }
            check_invariants(&s, t(0));
        }

        #[test]
        fn message_sequences_keep_the_table_consistent(
            steps in prop::collection::vec((arbitrary_message(), 0u64..2000), 1..60),
        ) {
            let mut s = small_server(4);
            let mut now = t(0);
            for ((mac, payload), advance) in steps {
                now += t(advance);
                if let Ok(Some(reply)) = s.handle(now, mac, &payload) {
                    prop_assert!(reply.len() <= MAX_REPLY_LEN);
                    for ia in ia_nas(&decode(&reply)) {
                        for (a, _, valid) in addresses(&ia) {
                            if valid > 0 {
                                prop_assert!(a >= addr(0x100) && a <= addr(0x103));
                            }
                        }
                    }
                }
                check_invariants(&s, now);
                let leases = s.leases(now);
                let mut seen: Vec<Ipv6Addr> = leases.iter().map(|(a, _)| *a).collect();
                seen.dedup();
                prop_assert_eq!(seen.len(), leases.len());
                for (a, m) in leases {
                    prop_assert_eq!(s.holder_of(a), Some(m));
                }
            }
        }
    }
}
