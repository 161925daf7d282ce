//! DHCPv4 server: gives each guest an address, the gateway as router and DNS server, the MTU and
//! the DNS search list (RFC 2131, options from RFC 2132, domain search RFC 3397).
//!
//! # Theory of operation
//!
//! The server is sans-IO. [`Dhcp4Server::handle`] takes the UDP payload a guest sent to port 67,
//! the Ethernet source address of its frame and the current monotonic time, and returns the reply
//! payload with the IPv4 and MAC destination chosen per RFC 2131 §4.1; the caller wraps it in
//! Ethernet/IPv4/UDP from gateway:67 to destination:68. Every message that gets no reply for a
//! reason worth counting comes back as a [`Dhcp4Drop`].
//!
//! Parsing: the fixed 240-byte header (op, htype, hlen, magic cookie) is checked on the raw bytes
//! (`dhcproto` 0.15 panics in `chaddr()` when hlen > 16), the options area is walked once to reject
//! lengths that `dhcproto` only checks with `debug_assert!` (options 80, 81, 94, 151–155: a panic
//! in debug and fuzz builds), and only then is the message decoded with `dhcproto`. Relayed
//! messages (giaddr set) are dropped: a virtual network has no relay agents. Replies are built
//! from the request's decoded header, not with `Message::new`, which draws a random xid.
//!
//! Client identity is `chaddr`, the client hardware address. It must equal the frame's source
//! MAC; otherwise a guest could release, decline or take over another guest's lease by writing a
//! foreign `chaddr` (keeping guests from sending with a foreign source MAC is the switch's job).
//! The client identifier option (61) is ignored.
//!
//! State is one *binding* per address: (MAC, state, expiry). A binding is *offered* (held
//! [`OFFER_HOLD`] after an OFFER), *bound* (after an ACK, until the lease expires) or *assigned*
//! (by [`Dhcp4Server::assign`] for a TAP slipway configures itself; it never expires). Expired
//! bindings are kept: the address stays tied to its MAC, so a guest that comes back gets the same
//! address, until no never-used pool address is left and another MAC needs one. Then the
//! longest-expired binding is reused, unrequested offers before expired leases.
//!
//! - DISCOVER → OFFER of: the MAC's static lease; else its binding; else the requested address
//!   (option 50) if never used and in the pool; else the lowest never-used pool address; else a
//!   reused expired binding; else [`Dhcp4Drop::PoolExhausted`].
//! - REQUEST naming another server (option 54) is dropped ([`Dhcp4Drop::NotForUs`]): the client
//!   chose another offer. Otherwise (selecting us, init-reboot, renewing, rebinding) the address
//!   (option 50, else ciaddr) is ACKed when this MAC may hold it, and NAKed when it lies outside
//!   the subnet or pool, belongs to another MAC's live binding or static lease, was declined, or
//!   the MAC has a live binding or a static lease for another address. An init-reboot for an
//!   address we have no record of is ACKed when free, so guests keep their address across a
//!   restart of slipway.
//! - RELEASE ends the lease (the binding expires now but stays tied to the MAC).
//! - DECLINE (of the client's own binding only) removes the binding and quarantines the address
//!   for [`DECLINE_HOLD`]. A static lease is not quarantined and is offered to its MAC again: the
//!   configuration wins.
//! - INFORM → ACK with the options, no yiaddr and no lease times.
//!
//! Offers and ACKs always carry options 1, 3, 6, 26, 28, 51, 54, 58, 59, and 15 and 119 when a
//! search list is set; the parameter request list is not used as a filter. NAKs carry 53, 54
//! and a message (56). Replies are padded to the 300-byte BOOTP minimum and kept within the
//! client's maximum message size (option 57, at least 576, at most the MTU): when they would not
//! fit, trailing search domains are left out of option 119, then option 15.
//!
//! # Limits
//!
//! - Bindings: at most min(pool size, [`MAX_BINDINGS`] = 65 536) dynamic ones plus one per static
//!   lease; each is about 40 bytes, plus a MAC index entry. A full table reuses expired bindings
//!   and otherwise answers [`Dhcp4Drop::PoolExhausted`] (and NAKs requests for new addresses).
//! - Declined addresses: at most min(pool size, [`MAX_BINDINGS`]), each quarantined 600 s.
//! - Offers are held 60 s ([`OFFER_HOLD`]).
//! - Search list: at most [`MAX_SEARCH_DOMAINS`] = 32 names of letters, digits, `-` and `_`,
//!   labels of 1–63 bytes, names of at most 253 bytes; other names are skipped.
//! - Work per message: O(bindings + static leases) in the worst case (finding a free address,
//!   the longest-expired binding, or ending quarantines); decoding is linear in the input.
//! - Lease time: 1 s to 2³² − 2 s (0xFFFF_FFFF would mean "infinite" to clients).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, DhcpOptions, Message, MessageType, Opcode, OptionCode, MAGIC};
use dhcproto::{Decodable, Decoder, Encodable, Name};

use crate::config::{prefix_mask_v4, Mac, NetworkConfig};

/// Most dynamic bindings the server keeps (on top of static leases).
pub const MAX_BINDINGS: usize = 65_536;
/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// How long a declined address is kept out of use.
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);
/// Most names in the search list (option 119).
pub const MAX_SEARCH_DOMAINS: usize = 32;

/// The fixed BOOTP header before the magic cookie.
const HEADER_LEN: usize = 236;
/// Where the options start (after the magic cookie).
const OPTIONS_OFFSET: usize = HEADER_LEN + 4;
/// BOOTP relays and old clients drop shorter messages (RFC 1542 §2.1).
const MIN_REPLY_LEN: usize = 300;
/// The IP datagram every client must accept (RFC 2131 §2), unless it sends option 57.
const MIN_MAX_MESSAGE: usize = 576;
/// IPv4 and UDP headers around the DHCP payload.
const IP_UDP_HEADERS: usize = 28;
const BROADCAST_MAC: Mac = [0xff; 6];

/// A reply for the caller to send from gateway:67 to `dst_ip`:68, in a frame to `dst_mac`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp4Reply {
    /// The DHCP message (UDP payload).
    pub payload: Vec<u8>,
    pub dst_ip: Ipv4Addr,
    pub dst_mac: Mac,
}

/// Why a message got no reply. Each is a counted drop reason ([`Dhcp4Drop::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dhcp4Drop {
    #[error("malformed DHCP message")]
    Malformed,
    #[error("not a BOOTREQUEST")]
    NotBootRequest,
    #[error("hardware type is not Ethernet")]
    UnsupportedHardware,
    #[error("relayed DHCP message (giaddr set)")]
    Relayed,
    #[error("client hardware address differs from the frame's source MAC")]
    ChaddrMismatch,
    #[error("no DHCP message type")]
    MissingMessageType,
    #[error("DHCP message type not handled by a server")]
    UnsupportedMessageType,
    #[error("no requested address")]
    MissingRequestedAddress,
    #[error("DHCP address pool exhausted; widen the pool or shorten the lease time")]
    PoolExhausted,
    #[error("message for another DHCP server")]
    NotForUs,
    #[error("no lease of this client for that address")]
    UnknownLease,
    #[error("client address outside the guest subnet")]
    WrongSubnet,
    #[error("too many declined addresses")]
    DeclineTableFull,
    #[error("could not encode the DHCP reply")]
    EncodeFailed,
}

impl Dhcp4Drop {
    /// Every drop reason, for registering counters.
    pub const ALL: [Dhcp4Drop; 14] = [
        Dhcp4Drop::Malformed,
        Dhcp4Drop::NotBootRequest,
        Dhcp4Drop::UnsupportedHardware,
        Dhcp4Drop::Relayed,
        Dhcp4Drop::ChaddrMismatch,
        Dhcp4Drop::MissingMessageType,
        Dhcp4Drop::UnsupportedMessageType,
        Dhcp4Drop::MissingRequestedAddress,
        Dhcp4Drop::PoolExhausted,
        Dhcp4Drop::NotForUs,
        Dhcp4Drop::UnknownLease,
        Dhcp4Drop::WrongSubnet,
        Dhcp4Drop::DeclineTableFull,
        Dhcp4Drop::EncodeFailed,
    ];

    /// A stable snake_case name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Dhcp4Drop::Malformed => "malformed",
            Dhcp4Drop::NotBootRequest => "not_boot_request",
            Dhcp4Drop::UnsupportedHardware => "unsupported_hardware",
            Dhcp4Drop::Relayed => "relayed",
            Dhcp4Drop::ChaddrMismatch => "chaddr_mismatch",
            Dhcp4Drop::MissingMessageType => "missing_message_type",
            Dhcp4Drop::UnsupportedMessageType => "unsupported_message_type",
            Dhcp4Drop::MissingRequestedAddress => "missing_requested_address",
            Dhcp4Drop::PoolExhausted => "pool_exhausted",
            Dhcp4Drop::NotForUs => "not_for_us",
            Dhcp4Drop::UnknownLease => "unknown_lease",
            Dhcp4Drop::WrongSubnet => "wrong_subnet",
            Dhcp4Drop::DeclineTableFull => "decline_table_full",
            Dhcp4Drop::EncodeFailed => "encode_failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindingState {
    /// Offered, not yet requested.
    Offered,
    /// ACKed (or released: then `expires` is the release time).
    Bound,
    /// Given without DHCP by [`Dhcp4Server::assign`]; never expires.
    Assigned,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    mac: Mac,
    state: BindingState,
    expires: Duration,
}

impl Binding {
    /// True while no other MAC may take the address.
    fn is_live(&self, now: Duration) -> bool {
        self.state == BindingState::Assigned || self.expires > now
    }

    /// True for a lease a guest holds (shown by [`Dhcp4Server::leases`]).
    fn is_lease(&self, now: Duration) -> bool {
        match self.state {
            BindingState::Offered => false,
            BindingState::Bound => self.expires > now,
            BindingState::Assigned => true,
        }
    }
}

/// The DHCPv4 server of one virtual network.
#[derive(Debug)]
pub struct Dhcp4Server {
    server_id: Ipv4Addr,
    dns_server: Ipv4Addr,
    subnet: u32,
    mask: u32,
    host_alias: Option<u32>,
    /// Inclusive; empty when start > end.
    pool_start: u32,
    pool_end: u32,
    mtu: u16,
    lease_secs: u32,
    static_by_mac: HashMap<Mac, u32>,
    static_by_ip: HashMap<u32, Mac>,
    bindings: BTreeMap<u32, Binding>,
    by_mac: HashMap<Mac, u32>,
    /// Quarantined pool address → end of quarantine.
    declined: BTreeMap<u32, Duration>,
    /// The earliest end of a quarantine (nothing to clean up before).
    next_quarantine_end: Duration,
    /// Pool addresses that are neither reserved nor static leases.
    dynamic_pool_size: u64,
    search_domains: Vec<String>,
    search_names: Vec<Name>,
}

/// A decoded request and its client.
struct Request {
    msg: Message,
    mac: Mac,
    kind: MessageType,
}

impl Request {
    fn requested_ip(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        }
    }

    fn server_id(&self) -> Option<Ipv4Addr> {
        match self.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        }
    }

    /// The largest DHCP payload the client accepts and the link carries.
    fn max_reply_len(&self, mtu: u16) -> usize {
        let client = match self.msg.opts().get(OptionCode::MaxMessageSize) {
            Some(DhcpOption::MaxMessageSize(n)) => usize::from(*n),
            _ => MIN_MAX_MESSAGE,
        };
        let link = usize::from(mtu).max(MIN_MAX_MESSAGE);
        client.clamp(MIN_MAX_MESSAGE, link) - IP_UDP_HEADERS
    }
}

impl Dhcp4Server {
    pub fn new(cfg: &NetworkConfig) -> Self {
        let mask = prefix_mask_v4(cfg.prefix);
        let subnet = u32::from(cfg.subnet) & mask;
        let broadcast = subnet | !mask;
        let pool_start = u32::from(cfg.pool_start).max(subnet.saturating_add(1));
        let pool_end = u32::from(cfg.pool_end).min(broadcast.saturating_sub(1));
        let lease_secs = cfg.lease_time.as_secs().clamp(1, u64::from(u32::MAX - 1)) as u32;
        let mut server = Self {
            server_id: cfg.gateway,
            dns_server: cfg.dns_server,
            subnet,
            mask,
            host_alias: cfg.host_loopback_alias.map(u32::from),
            pool_start,
            pool_end,
            mtu: cfg.mtu,
            lease_secs,
            static_by_mac: HashMap::new(),
            static_by_ip: HashMap::new(),
            bindings: BTreeMap::new(),
            by_mac: HashMap::new(),
            declined: BTreeMap::new(),
            next_quarantine_end: Duration::MAX,
            dynamic_pool_size: 0,
            search_domains: Vec::new(),
            search_names: Vec::new(),
        };
        // Static leases that cannot be handed out (outside the subnet, or the gateway's own
        // address) are ignored; for a MAC or an address listed twice the first entry wins.
        for (mac, ip) in &cfg.static_leases {
            let ip = u32::from(*ip);
            if !server.is_host_address(ip) || server.is_reserved(ip) {
                continue;
            }
            if server.static_by_mac.contains_key(mac) || server.static_by_ip.contains_key(&ip) {
                continue;
            }
            server.static_by_mac.insert(*mac, ip);
            server.static_by_ip.insert(ip, *mac);
        }
        server.dynamic_pool_size = server.count_dynamic_pool();
        server.set_search_domains(cfg.search_domains.clone());
        server
    }

    /// Handle one DHCP message: the UDP payload of a datagram a guest sent to port 67.
    /// `src_mac` is the Ethernet source address of the frame; `now` a monotonic time.
    pub fn handle(
        &mut self,
        now: Duration,
        src_mac: Mac,
        payload: &[u8],
    ) -> Result<Option<Dhcp4Reply>, Dhcp4Drop> {
        let req = parse_request(payload)?;
        if req.mac != src_mac {
            return Err(Dhcp4Drop::ChaddrMismatch);
        }
        self.end_quarantines(now);
        match req.kind {
            MessageType::Discover => self.discover(now, &req).map(Some),
            MessageType::Request => self.request(now, &req).map(Some),
            MessageType::Release => self.release_message(now, &req).map(|()| None),
            MessageType::Decline => self.decline(now, &req).map(|()| None),
            MessageType::Inform => self.inform(&req).map(Some),
            _ => Err(Dhcp4Drop::UnsupportedMessageType),
        }
    }

    /// Give `mac` an address without a DHCP exchange (used when slipway configures a namespace's
    /// TAP itself): the same address DHCP would give it (its existing/static lease, else the
    /// lowest free pool address). None when the pool is exhausted. The lease never expires until
    /// [`Dhcp4Server::release`] or a DHCP RELEASE ends it.
    pub fn assign(&mut self, now: Duration, mac: Mac) -> Option<Ipv4Addr> {
        self.end_quarantines(now);
        let ip = self.choose(now, &mac, None)?;
        self.set_binding(ip, mac, BindingState::Assigned, self.lease_end(now));
        Some(Ipv4Addr::from(ip))
    }

    /// End `mac`'s lease (e.g. the guest left the network). The address stays tied to `mac`, so
    /// it gets it back when it returns, unless the pool ran out and another MAC needed it.
    /// Returns the address that was released.
    pub fn release(&mut self, now: Duration, mac: &Mac) -> Option<Ipv4Addr> {
        let ip = *self.by_mac.get(mac)?;
        let binding = self.bindings.get_mut(&ip)?;
        if binding.state == BindingState::Assigned {
            binding.state = BindingState::Bound;
        }
        binding.expires = binding.expires.min(now);
        Some(Ipv4Addr::from(ip))
    }

    /// The address bound to `mac` by an ACK or [`Dhcp4Server::assign`], also after the lease
    /// expired as long as no other MAC took it over; None for an offer not yet requested.
    pub fn lease_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        let ip = self.by_mac.get(mac)?;
        let binding = self.bindings.get(ip)?;
        (binding.state != BindingState::Offered).then(|| Ipv4Addr::from(*ip))
    }

    /// The MAC holding `ip` (bound or assigned, also after expiry until another MAC takes it).
    pub fn holder_of(&self, ip: Ipv4Addr) -> Option<Mac> {
        let binding = self.bindings.get(&u32::from(ip))?;
        (binding.state != BindingState::Offered).then_some(binding.mac)
    }

    /// Active leases (ip, mac), sorted by IP (for the API and `slipway leases`).
    pub fn leases(&self, now: Duration) -> Vec<(Ipv4Addr, Mac)> {
        self.bindings
            .iter()
            .filter(|(_, b)| b.is_lease(now))
            .map(|(ip, b)| (Ipv4Addr::from(*ip), b.mac))
            .collect()
    }

    /// Replace the search list (host resolv.conf changed). Names that are not plain DNS names
    /// (letters, digits, `-`, `_`) are skipped, as are duplicates and names beyond
    /// [`MAX_SEARCH_DOMAINS`]. A trailing dot is removed.
    pub fn set_search_domains(&mut self, domains: Vec<String>) {
        self.search_domains.clear();
        self.search_names.clear();
        for domain in super::plain_search_domains(&domains, MAX_SEARCH_DOMAINS) {
            let Ok(mut name) = Name::from_ascii(domain) else {
                continue;
            };
            name.set_fqdn(true);
            self.search_domains.push(domain.to_string());
            self.search_names.push(name);
        }
    }

    /// The search list handed to guests.
    pub fn search_domains(&self) -> &[String] {
        &self.search_domains
    }

    fn discover(&mut self, now: Duration, req: &Request) -> Result<Dhcp4Reply, Dhcp4Drop> {
        let requested = req.requested_ip().map(u32::from);
        let ip = self
            .choose(now, &req.mac, requested)
            .ok_or(Dhcp4Drop::PoolExhausted)?;
        let live = self
            .bindings
            .get(&ip)
            .is_some_and(|b| b.mac == req.mac && b.is_live(now));
        if !live {
            let hold = now.saturating_add(OFFER_HOLD);
            self.set_binding(ip, req.mac, BindingState::Offered, hold);
        }
        self.reply(req, MessageType::Offer, Ipv4Addr::from(ip))
    }

    fn request(&mut self, now: Duration, req: &Request) -> Result<Dhcp4Reply, Dhcp4Drop> {
        if req.server_id().is_some_and(|id| id != self.server_id) {
            return Err(Dhcp4Drop::NotForUs);
        }
        let ciaddr = req.msg.ciaddr();
        let ip = req
            .requested_ip()
            .or((!ciaddr.is_unspecified()).then_some(ciaddr))
            .ok_or(Dhcp4Drop::MissingRequestedAddress)?;
        let ip_u32 = u32::from(ip);
        if !self.may_hold(now, &req.mac, ip_u32) {
            return self.reply(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        }
        let state = match self.bindings.get(&ip_u32) {
            Some(b) if b.mac == req.mac && b.state == BindingState::Assigned => b.state,
            _ => BindingState::Bound,
        };
        self.set_binding(ip_u32, req.mac, state, self.lease_end(now));
        self.reply(req, MessageType::Ack, ip)
    }

    fn release_message(&mut self, now: Duration, req: &Request) -> Result<(), Dhcp4Drop> {
        if req.server_id().is_some_and(|id| id != self.server_id) {
            return Err(Dhcp4Drop::NotForUs);
        }
        let ip = u32::from(req.msg.ciaddr());
        match self.bindings.get(&ip) {
            Some(b) if b.mac == req.mac => {
                self.release(now, &req.mac);
                Ok(())
            }
            _ => Err(Dhcp4Drop::UnknownLease),
        }
    }

    fn decline(&mut self, now: Duration, req: &Request) -> Result<(), Dhcp4Drop> {
        if req.server_id().is_some_and(|id| id != self.server_id) {
            return Err(Dhcp4Drop::NotForUs);
        }
        let ip = u32::from(
            req.requested_ip()
                .ok_or(Dhcp4Drop::MissingRequestedAddress)?,
        );
        if self.bindings.get(&ip).is_none_or(|b| b.mac != req.mac) {
            return Err(Dhcp4Drop::UnknownLease);
        }
        // A static lease is not quarantined: the configuration wins.
        let quarantine = !self.static_by_ip.contains_key(&ip);
        if quarantine && self.declined.len() >= MAX_BINDINGS {
            return Err(Dhcp4Drop::DeclineTableFull);
        }
        self.bindings.remove(&ip);
        self.by_mac.remove(&req.mac);
        if quarantine {
            let until = now.saturating_add(DECLINE_HOLD);
            self.declined.insert(ip, until);
            self.next_quarantine_end = self.next_quarantine_end.min(until);
        }
        Ok(())
    }

    fn inform(&self, req: &Request) -> Result<Dhcp4Reply, Dhcp4Drop> {
        let ciaddr = req.msg.ciaddr();
        if !ciaddr.is_unspecified() && !self.in_subnet(u32::from(ciaddr)) {
            return Err(Dhcp4Drop::WrongSubnet);
        }
        self.reply(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED)
    }

    /// The address to give `mac`: static lease, its binding, the requested address if never
    /// used, the lowest never-used address, else the longest-expired binding of another MAC.
    fn choose(&self, now: Duration, mac: &Mac, requested: Option<u32>) -> Option<u32> {
        if let Some(&ip) = self.static_by_mac.get(mac) {
            return Some(ip);
        }
        if let Some(&ip) = self.by_mac.get(mac) {
            return Some(ip);
        }
        if self.bindings.len() < MAX_BINDINGS && self.has_unused_address() {
            if let Some(ip) = requested.filter(|ip| self.is_unused(*ip)) {
                return Some(ip);
            }
            // An unused address exists, so this stops after at most (bindings + quarantined +
            // statics + 2) busy addresses.
            if let Some(ip) = (self.pool_start..=self.pool_end).find(|ip| self.is_unused(*ip)) {
                return Some(ip);
            }
        }
        self.bindings
            .iter()
            .filter(|(ip, b)| {
                !b.is_live(now) && !self.static_by_ip.contains_key(ip) && self.in_pool(**ip)
            })
            .min_by_key(|(_, b)| (b.state != BindingState::Offered, b.expires))
            .map(|(ip, _)| *ip)
    }

    /// Whether `mac` may be ACKed for `ip`.
    fn may_hold(&self, now: Duration, mac: &Mac, ip: u32) -> bool {
        if let Some(&fixed) = self.static_by_mac.get(mac) {
            return ip == fixed;
        }
        if self.static_by_ip.contains_key(&ip)
            || !self.in_pool(ip)
            || self.declined.contains_key(&ip)
        {
            return false;
        }
        if let Some(&current) = self.by_mac.get(mac) {
            let live = self.bindings.get(&current).is_some_and(|b| b.is_live(now));
            if current != ip && live {
                return false;
            }
        }
        match self.bindings.get(&ip) {
            Some(b) if b.mac != *mac => !b.is_live(now),
            Some(_) => true,
            // A new record: only when the table has room or the MAC gives up its old one.
            None => self.by_mac.contains_key(mac) || self.bindings.len() < MAX_BINDINGS,
        }
    }

    /// Record that `ip` belongs to `mac`, dropping `mac`'s binding elsewhere and the index entry
    /// of a MAC whose expired binding is taken over.
    fn set_binding(&mut self, ip: u32, mac: Mac, state: BindingState, expires: Duration) {
        if let Some(old) = self.by_mac.insert(mac, ip) {
            if old != ip {
                self.bindings.remove(&old);
            }
        }
        let binding = Binding {
            mac,
            state,
            expires,
        };
        if let Some(previous) = self.bindings.insert(ip, binding) {
            if previous.mac != mac {
                self.by_mac.remove(&previous.mac);
            }
        }
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

    /// Whether some dynamic pool address is neither bound nor quarantined.
    fn has_unused_address(&self) -> bool {
        let static_bindings = self
            .static_by_ip
            .keys()
            .filter(|ip| self.bindings.contains_key(ip))
            .count();
        let used = self.bindings.len() - static_bindings + self.declined.len();
        (used as u64) < self.dynamic_pool_size
    }

    /// The number of pool addresses that are neither reserved nor static leases.
    fn count_dynamic_pool(&self) -> u64 {
        if self.pool_start > self.pool_end {
            return 0;
        }
        let mut size = u64::from(self.pool_end - self.pool_start) + 1;
        let mut reserved = [
            Some(u32::from(self.server_id)),
            Some(u32::from(self.dns_server)),
            self.host_alias,
        ];
        reserved.sort_unstable();
        let mut last = None;
        for ip in reserved.into_iter().flatten() {
            if last != Some(ip) && (self.pool_start..=self.pool_end).contains(&ip) {
                size -= 1;
            }
            last = Some(ip);
        }
        let statics = self.static_by_ip.keys().filter(|ip| self.in_pool(**ip));
        size - statics.count() as u64
    }

    fn lease_end(&self, now: Duration) -> Duration {
        now.saturating_add(Duration::from_secs(u64::from(self.lease_secs)))
    }

    fn in_subnet(&self, ip: u32) -> bool {
        ip & self.mask == self.subnet
    }

    /// In the subnet and neither its network nor its broadcast address.
    fn is_host_address(&self, ip: u32) -> bool {
        self.in_subnet(ip) && ip != self.subnet && ip != self.subnet | !self.mask
    }

    /// Addresses slipway answers for itself.
    fn is_reserved(&self, ip: u32) -> bool {
        ip == u32::from(self.server_id)
            || ip == u32::from(self.dns_server)
            || Some(ip) == self.host_alias
    }

    fn in_pool(&self, ip: u32) -> bool {
        (self.pool_start..=self.pool_end).contains(&ip)
            && self.is_host_address(ip)
            && !self.is_reserved(ip)
    }

    /// A pool address nobody holds, has held, declined or has as static lease.
    fn is_unused(&self, ip: u32) -> bool {
        self.in_pool(ip)
            && !self.bindings.contains_key(&ip)
            && !self.static_by_ip.contains_key(&ip)
            && !self.declined.contains_key(&ip)
    }

    fn reply(
        &self,
        req: &Request,
        kind: MessageType,
        yiaddr: Ipv4Addr,
    ) -> Result<Dhcp4Reply, Dhcp4Drop> {
        let ciaddr = if kind == MessageType::Ack {
            req.msg.ciaddr()
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        // Built from the request (xid, flags, htype, hlen, chaddr, giaddr, magic stay):
        // `Message::new` would draw a random xid, a system call in the core.
        let mut msg = req.msg.clone();
        msg.set_opcode(Opcode::BootReply)
            .set_hops(0)
            .set_secs(0)
            .set_ciaddr(ciaddr)
            .set_yiaddr(yiaddr)
            .set_siaddr(Ipv4Addr::UNSPECIFIED)
            .set_chaddr(&req.mac)
            .set_opts(DhcpOptions::new());
        msg.clear_sname();
        msg.clear_fname();
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.server_id));
        let mut payload = if kind == MessageType::Nak {
            opts.insert(DhcpOption::Message(
                "requested address not available".to_string(),
            ));
            msg.to_vec().map_err(|_| Dhcp4Drop::EncodeFailed)?
        } else {
            let netmask = Ipv4Addr::from(self.mask);
            opts.insert(DhcpOption::SubnetMask(netmask));
            opts.insert(DhcpOption::Router(vec![self.server_id]));
            opts.insert(DhcpOption::DomainNameServer(vec![self.dns_server]));
            opts.insert(DhcpOption::InterfaceMtu(self.mtu));
            opts.insert(DhcpOption::BroadcastAddr(Ipv4Addr::from(
                self.subnet | !self.mask,
            )));
            if req.kind != MessageType::Inform {
                let lease = self.lease_secs;
                let t1 = lease / 2;
                let t2 = (u64::from(lease) * 7 / 8) as u32;
                opts.insert(DhcpOption::AddressLeaseTime(lease));
                opts.insert(DhcpOption::Renewal(t1));
                opts.insert(DhcpOption::Rebinding(t2));
            }
            self.encode_fitting(&mut msg, req.max_reply_len(self.mtu))?
        };
        if payload.len() < MIN_REPLY_LEN {
            payload.resize(MIN_REPLY_LEN, 0);
        }
        let (dst_ip, dst_mac) = destination(kind, req, yiaddr);
        Ok(Dhcp4Reply {
            payload,
            dst_ip,
            dst_mac,
        })
    }

    /// Encode with the search list, leaving out trailing names of option 119 (then option 15)
    /// until the message fits in `limit` bytes.
    fn encode_fitting(&self, msg: &mut Message, limit: usize) -> Result<Vec<u8>, Dhcp4Drop> {
        if let Some(first) = self.search_domains.first() {
            msg.opts_mut().insert(DhcpOption::DomainName(first.clone()));
        }
        for count in (1..=self.search_names.len()).rev() {
            let names = self.search_names[..count].to_vec();
            msg.opts_mut().insert(DhcpOption::DomainSearch(names));
            let bytes = msg.to_vec().map_err(|_| Dhcp4Drop::EncodeFailed)?;
            if bytes.len() <= limit {
                return Ok(bytes);
            }
        }
        msg.opts_mut().remove(OptionCode::DomainSearch);
        let bytes = msg.to_vec().map_err(|_| Dhcp4Drop::EncodeFailed)?;
        if bytes.len() <= limit {
            return Ok(bytes);
        }
        msg.opts_mut().remove(OptionCode::DomainName);
        msg.to_vec().map_err(|_| Dhcp4Drop::EncodeFailed)
    }
}

/// Where a reply goes (RFC 2131 §4.1, no relay agents): NAK → broadcast; ciaddr set (renewing,
/// rebinding, INFORM) → unicast to ciaddr; broadcast flag → broadcast; else unicast to yiaddr.
fn destination(kind: MessageType, req: &Request, yiaddr: Ipv4Addr) -> (Ipv4Addr, Mac) {
    let ciaddr = req.msg.ciaddr();
    if kind == MessageType::Nak {
        (Ipv4Addr::BROADCAST, BROADCAST_MAC)
    } else if !ciaddr.is_unspecified() {
        (ciaddr, req.mac)
    } else if req.msg.flags().broadcast() || yiaddr.is_unspecified() {
        (Ipv4Addr::BROADCAST, BROADCAST_MAC)
    } else {
        (yiaddr, req.mac)
    }
}

/// Check the fixed header on the raw bytes, then decode with `dhcproto`.
fn parse_request(payload: &[u8]) -> Result<Request, Dhcp4Drop> {
    let Some(header) = payload.get(..OPTIONS_OFFSET) else {
        return Err(Dhcp4Drop::Malformed);
    };
    if header[0] != u8::from(Opcode::BootRequest) {
        return Err(Dhcp4Drop::NotBootRequest);
    }
    // htype 1 (Ethernet), hlen 6. `dhcproto` would also panic on hlen > 16.
    if header[1] != 1 || header[2] != 6 {
        return Err(Dhcp4Drop::UnsupportedHardware);
    }
    if header[HEADER_LEN..OPTIONS_OFFSET] != MAGIC {
        return Err(Dhcp4Drop::Malformed);
    }
    check_option_lengths(&payload[OPTIONS_OFFSET..])?;
    let msg = Message::decode(&mut Decoder::new(payload)).map_err(|_| Dhcp4Drop::Malformed)?;
    if !msg.giaddr().is_unspecified() {
        return Err(Dhcp4Drop::Relayed);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&header[28..34]);
    let kind = msg.opts().msg_type().ok_or(Dhcp4Drop::MissingMessageType)?;
    Ok(Request { msg, mac, kind })
}

/// Reject option lengths that `dhcproto` 0.15 checks only with `debug_assert!` or by
/// subtracting. Options are grouped as `dhcproto` groups them: adjacent options with the same
/// code are one option (RFC 3396).
fn check_option_lengths(mut opts: &[u8]) -> Result<(), Dhcp4Drop> {
    let mut run: Option<(u8, usize)> = None;
    while let Some(&code) = opts.first() {
        if code == 0 || code == 255 {
            check_option_length(run.take())?;
            if code == 255 {
                break;
            }
            opts = &opts[1..];
            continue;
        }
        let Some(&len) = opts.get(1) else { break };
        let Some(rest) = opts.get(2 + usize::from(len)..) else {
            break;
        };
        match &mut run {
            Some((c, total)) if *c == code => *total += usize::from(len),
            _ => {
                check_option_length(run.take())?;
                run = Some((code, usize::from(len)));
            }
        }
        opts = rest;
    }
    check_option_length(run)
}

fn check_option_length(run: Option<(u8, usize)>) -> Result<(), Dhcp4Drop> {
    let Some((code, len)) = run else {
        return Ok(());
    };
    let ok = match code {
        80 => len == 0,
        81 => len >= 3,
        94 => len == 3,
        151 => len >= 1,
        152..=155 => len == 4,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(Dhcp4Drop::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Flags, HType};
    use proptest::prelude::*;

    const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 127, 1);
    const MAC_A: Mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const MAC_B: Mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
    const MAC_C: Mac = [0x52, 0x54, 0x00, 0x00, 0x00, 0x03];
    const GVPROXY_MAC: Mac = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];
    const HOUR: Duration = Duration::from_secs(3600);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 127, last)
    }

    fn t(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn server() -> Dhcp4Server {
        Dhcp4Server::new(&NetworkConfig::default())
    }

    /// A server whose pool holds only `.2` to `.last`.
    fn small_server(last: u8) -> Dhcp4Server {
        let cfg = NetworkConfig {
            pool_end: ip(last),
            ..NetworkConfig::default()
        };
        Dhcp4Server::new(&cfg)
    }

    fn base(kind: MessageType, mac: Mac, xid: u32, ciaddr: Ipv4Addr) -> Message {
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, ciaddr, u, u, u, &mac);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m
    }

    /// What busybox udhcpc sends: client id, max size 576, vendor class, the usual request list.
    fn busybox_discover(mac: Mac, xid: u32) -> Message {
        let mut m = base(MessageType::Discover, mac, xid, Ipv4Addr::UNSPECIFIED);
        let mut client_id = vec![1];
        client_id.extend_from_slice(&mac);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(576));
        opts.insert(DhcpOption::ClassIdentifier(b"udhcp 1.36.1".to_vec()));
        opts.insert(DhcpOption::ParameterRequestList(
            [1u8, 3, 6, 12, 15, 28, 42, 119]
                .into_iter()
                .map(OptionCode::from)
                .collect(),
        ));
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().unwrap()
    }

    fn discover(mac: Mac) -> Vec<u8> {
        bytes(&busybox_discover(mac, 0x1234_5678))
    }

    fn request_selecting(mac: Mac, addr: Ipv4Addr, server_id: Ipv4Addr) -> Vec<u8> {
        let mut m = base(
            MessageType::Request,
            mac,
            0x1234_5679,
            Ipv4Addr::UNSPECIFIED,
        );
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
        bytes(&m)
    }

    fn request_init_reboot(mac: Mac, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = base(MessageType::Request, mac, 7, Ipv4Addr::UNSPECIFIED);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        bytes(&m)
    }

    fn request_renew(mac: Mac, ciaddr: Ipv4Addr) -> Vec<u8> {
        bytes(&base(MessageType::Request, mac, 8, ciaddr))
    }

    fn release(mac: Mac, ciaddr: Ipv4Addr) -> Vec<u8> {
        let mut m = base(MessageType::Release, mac, 9, ciaddr);
        m.opts_mut().insert(DhcpOption::ServerIdentifier(GW));
        bytes(&m)
    }

    fn decline(mac: Mac, addr: Ipv4Addr) -> Vec<u8> {
        let mut m = base(MessageType::Decline, mac, 10, Ipv4Addr::UNSPECIFIED);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(GW));
        bytes(&m)
    }

    fn decode(reply: &Dhcp4Reply) -> Message {
        Message::decode(&mut Decoder::new(&reply.payload)).unwrap()
    }

    fn kind(m: &Message) -> MessageType {
        m.opts().msg_type().unwrap()
    }

    fn handle_ok(s: &mut Dhcp4Server, now: Duration, mac: Mac, payload: &[u8]) -> Message {
        let reply = s.handle(now, mac, payload).unwrap().unwrap();
        decode(&reply)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; returns the address.
    fn dora(s: &mut Dhcp4Server, now: Duration, mac: Mac) -> Ipv4Addr {
        let offer = handle_ok(s, now, mac, &discover(mac));
        assert_eq!(kind(&offer), MessageType::Offer);
        let server_id = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(id)) => *id,
            other => panic!("{other:?}"),
        };
        let ack = handle_ok(
            s,
            now,
            mac,
            &request_selecting(mac, offer.yiaddr(), server_id),
        );
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(ack.yiaddr(), offer.yiaddr());
        ack.yiaddr()
    }

    /// The raw value of option `code` in a reply, walking the bytes ourselves.
    fn raw_option(payload: &[u8], code: u8) -> Option<Vec<u8>> {
        let mut opts = &payload[OPTIONS_OFFSET..];
        let mut found: Option<Vec<u8>> = None;
        while let Some(&c) = opts.first() {
            match c {
                0 => opts = &opts[1..],
                255 => break,
                _ => {
                    let len = usize::from(opts[1]);
                    if c == code {
                        found.get_or_insert_with(Vec::new).extend(&opts[2..2 + len]);
                    }
                    opts = &opts[2 + len..];
                }
            }
        }
        found
    }

    fn check_invariants(s: &Dhcp4Server) {
        assert_eq!(s.bindings.len(), s.by_mac.len());
        for (ip, b) in &s.bindings {
            assert_eq!(s.by_mac.get(&b.mac), Some(ip));
            assert!(s.in_pool(*ip) || s.static_by_mac.get(&b.mac) == Some(ip));
            assert!(!s.declined.contains_key(ip));
            if let Some(owner) = s.static_by_ip.get(ip) {
                assert_eq!(*owner, b.mac);
            }
        }
        assert!(s.bindings.len() <= MAX_BINDINGS + s.static_by_mac.len());
        for ip in s.declined.keys() {
            assert!(s.in_pool(*ip) && !s.static_by_ip.contains_key(ip));
        }
        let declined_min = s.declined.values().copied().min();
        assert!(declined_min.is_none_or(|m| m >= s.next_quarantine_end));
        let pool = (s.pool_start..=s.pool_end)
            .filter(|ip| s.in_pool(*ip) && !s.static_by_ip.contains_key(ip))
            .count() as u64;
        assert_eq!(pool, s.dynamic_pool_size);
    }

    #[test]
    fn busybox_discover_gets_offer_with_options() {
        let mut s = server();
        let payload = discover(MAC_A);
        let reply = s.handle(t(0), MAC_A, &payload).unwrap().unwrap();
        // No broadcast flag, no ciaddr: unicast to the offered address and chaddr.
        assert_eq!(reply.dst_ip, ip(2));
        assert_eq!(reply.dst_mac, MAC_A);
        assert!(reply.payload.len() >= MIN_REPLY_LEN);
        assert!(reply.payload.len() <= 576 - 28);
        let p = &reply.payload;
        assert_eq!(p[0], 2, "BOOTREPLY");
        assert_eq!(&p[1..3], &[1, 6]);
        assert_eq!(&p[4..8], &0x1234_5678u32.to_be_bytes());
        assert_eq!(&p[16..20], &[192, 168, 127, 2], "yiaddr");
        assert_eq!(&p[28..34], &MAC_A);
        assert_eq!(&p[236..240], &MAGIC);
        assert_eq!(raw_option(p, 53), Some(vec![2]));
        assert_eq!(raw_option(p, 54), Some(vec![192, 168, 127, 1]));
        assert_eq!(raw_option(p, 1), Some(vec![255, 255, 255, 0]));
        assert_eq!(raw_option(p, 3), Some(vec![192, 168, 127, 1]));
        assert_eq!(raw_option(p, 6), Some(vec![192, 168, 127, 1]));
        assert_eq!(raw_option(p, 26), Some(1500u16.to_be_bytes().to_vec()));
        assert_eq!(raw_option(p, 28), Some(vec![192, 168, 127, 255]));
        assert_eq!(raw_option(p, 51), Some(3600u32.to_be_bytes().to_vec()));
        assert_eq!(raw_option(p, 58), Some(1800u32.to_be_bytes().to_vec()));
        assert_eq!(raw_option(p, 59), Some(3150u32.to_be_bytes().to_vec()));
        assert_eq!(raw_option(p, 15), None, "no search list configured");
        assert_eq!(raw_option(p, 119), None);
        // An offer is not a lease yet.
        assert!(s.leases(t(0)).is_empty());
        assert_eq!(s.lease_of(&MAC_A), None);
    }

    #[test]
    fn full_dora_binds_the_lease() {
        let mut s = server();
        assert_eq!(dora(&mut s, t(5), MAC_A), ip(2));
        assert_eq!(s.leases(t(6)), vec![(ip(2), MAC_A)]);
        assert_eq!(s.lease_of(&MAC_A), Some(ip(2)));
        // The lease runs out after lease_time.
        assert!(s.leases(t(5) + HOUR).is_empty());
        check_invariants(&s);
    }

    #[test]
    fn ack_options_and_broadcast_destination_in_selecting() {
        let mut s = server();
        let mut m = busybox_discover(MAC_A, 1);
        m.set_flags(Flags::default().set_broadcast());
        let reply = s.handle(t(0), MAC_A, &bytes(&m)).unwrap().unwrap();
        assert_eq!(reply.dst_ip, Ipv4Addr::BROADCAST);
        assert_eq!(reply.dst_mac, BROADCAST_MAC);
        // The reply keeps the client's flags.
        assert!(decode(&reply).flags().broadcast());

        let mut m = base(MessageType::Request, MAC_A, 2, Ipv4Addr::UNSPECIFIED);
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(2)));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(GW));
        let reply = s.handle(t(1), MAC_A, &bytes(&m)).unwrap().unwrap();
        assert_eq!(
            (reply.dst_ip, reply.dst_mac),
            (Ipv4Addr::BROADCAST, BROADCAST_MAC)
        );
        let ack = decode(&reply);
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(ack.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(raw_option(&reply.payload, 51), Some(vec![0, 0, 0x0e, 0x10]));
    }

    #[test]
    fn renew_is_unicast_to_ciaddr() {
        let mut s = server();
        let addr = dora(&mut s, t(0), MAC_A);
        let reply = s
            .handle(t(1800), MAC_A, &request_renew(MAC_A, addr))
            .unwrap()
            .unwrap();
        assert_eq!((reply.dst_ip, reply.dst_mac), (addr, MAC_A));
        let ack = decode(&reply);
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(ack.ciaddr(), addr);
        assert_eq!(ack.yiaddr(), addr);
        // The lease now runs from the renewal.
        assert_eq!(s.leases(t(1800) + HOUR - t(1)), vec![(addr, MAC_A)]);
        // Rebinding (broadcast flag set, ciaddr set) is still unicast to ciaddr.
        let mut m = base(MessageType::Request, MAC_A, 3, addr);
        m.set_flags(Flags::default().set_broadcast());
        let reply = s.handle(t(3000), MAC_A, &bytes(&m)).unwrap().unwrap();
        assert_eq!((reply.dst_ip, reply.dst_mac), (addr, MAC_A));
    }

    #[test]
    fn foreign_or_taken_address_is_naked_and_broadcast() {
        let mut s = server();
        let reply = s
            .handle(
                t(0),
                MAC_A,
                &request_init_reboot(MAC_A, Ipv4Addr::new(10, 0, 2, 15)),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (reply.dst_ip, reply.dst_mac),
            (Ipv4Addr::BROADCAST, BROADCAST_MAC)
        );
        let nak = decode(&reply);
        assert_eq!(kind(&nak), MessageType::Nak);
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(raw_option(&reply.payload, 54), Some(vec![192, 168, 127, 1]));
        assert_eq!(raw_option(&reply.payload, 51), None);
        assert!(s.leases(t(0)).is_empty());

        // An address B holds is refused to A, and renewing it from A is refused too.
        let b_addr = dora(&mut s, t(0), MAC_B);
        let nak = handle_ok(&mut s, t(1), MAC_A, &request_init_reboot(MAC_A, b_addr));
        assert_eq!(kind(&nak), MessageType::Nak);
        let nak = handle_ok(&mut s, t(1), MAC_A, &request_renew(MAC_A, b_addr));
        assert_eq!(kind(&nak), MessageType::Nak);
        // The gateway's and the host alias's addresses are never handed out.
        for addr in [GW, ip(254), ip(0), ip(255)] {
            let nak = handle_ok(&mut s, t(1), MAC_A, &request_init_reboot(MAC_A, addr));
            assert_eq!(kind(&nak), MessageType::Nak, "{addr}");
        }
        // A client whose live lease is another address is sent back to DISCOVER.
        let a_addr = dora(&mut s, t(2), MAC_A);
        let nak = handle_ok(&mut s, t(3), MAC_A, &request_init_reboot(MAC_A, ip(77)));
        assert_eq!(kind(&nak), MessageType::Nak);
        assert_eq!(s.lease_of(&MAC_A), Some(a_addr));
        check_invariants(&s);
    }

    #[test]
    fn request_for_another_server_is_ignored() {
        let mut s = server();
        let offer = handle_ok(&mut s, t(0), MAC_A, &discover(MAC_A));
        let other = Ipv4Addr::new(192, 168, 127, 250);
        assert_eq!(
            s.handle(
                t(1),
                MAC_A,
                &request_selecting(MAC_A, offer.yiaddr(), other)
            ),
            Err(Dhcp4Drop::NotForUs)
        );
        assert!(s.leases(t(1)).is_empty());
    }

    #[test]
    fn init_reboot_after_restart_keeps_the_address() {
        let mut s = server();
        let ack = handle_ok(&mut s, t(0), MAC_A, &request_init_reboot(MAC_A, ip(42)));
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(ack.yiaddr(), ip(42));
        assert_eq!(s.leases(t(0)), vec![(ip(42), MAC_A)]);
    }

    #[test]
    fn two_macs_get_different_addresses() {
        let mut s = server();
        let a = dora(&mut s, t(0), MAC_A);
        let b = dora(&mut s, t(0), MAC_B);
        assert_ne!(a, b);
        assert_eq!((a, b), (ip(2), ip(3)));
        // Two outstanding offers do not collide either.
        let c = handle_ok(&mut s, t(0), MAC_C, &discover(MAC_C)).yiaddr();
        assert_eq!(c, ip(4));
        assert_eq!(s.leases(t(1)), vec![(a, MAC_A), (b, MAC_B)]);
        check_invariants(&s);
    }

    #[test]
    fn same_mac_gets_same_address_on_reconnect_and_after_expiry() {
        let mut s = server();
        let a = dora(&mut s, t(0), MAC_A);
        dora(&mut s, t(0), MAC_B);
        // Reconnect without RELEASE while the lease is live.
        assert_eq!(dora(&mut s, t(100), MAC_A), a);
        // After the lease expired (others came meanwhile) the address is still A's.
        dora(&mut s, t(200), MAC_C);
        let later = t(100) + HOUR * 5;
        assert!(s.leases(later).is_empty());
        assert_eq!(s.lease_of(&MAC_A), Some(a), "kept after expiry");
        assert_eq!(dora(&mut s, later, MAC_A), a);
        // After a RELEASE too.
        assert_eq!(s.handle(later, MAC_A, &release(MAC_A, a)), Ok(None));
        assert!(s.leases(later).iter().all(|(_, m)| *m != MAC_A));
        assert_eq!(dora(&mut s, later + t(10), MAC_A), a);
        check_invariants(&s);
    }

    #[test]
    fn expired_leases_are_reused_longest_expired_first() {
        let mut s = small_server(4); // .2, .3, .4
        assert_eq!(dora(&mut s, t(0), MAC_A), ip(2));
        assert_eq!(dora(&mut s, t(10), MAC_B), ip(3));
        assert_eq!(dora(&mut s, t(20), [2; 6]), ip(4));
        // Pool full while the leases are live.
        assert_eq!(
            s.handle(t(30), MAC_C, &discover(MAC_C)),
            Err(Dhcp4Drop::PoolExhausted)
        );
        assert_eq!(s.assign(t(30), MAC_C), None);
        // B renews; A's lease (expired first) goes to C.
        handle_ok(&mut s, t(1000), MAC_B, &request_renew(MAC_B, ip(3)));
        let now = t(20) + HOUR + t(1);
        let offer = handle_ok(&mut s, now, MAC_C, &discover(MAC_C));
        assert_eq!(offer.yiaddr(), ip(2));
        let ack = handle_ok(&mut s, now, MAC_C, &request_selecting(MAC_C, ip(2), GW));
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(s.lease_of(&MAC_A), None, "A's binding was taken over");
        // A returns: the longest-expired remaining binding is .4.
        assert_eq!(dora(&mut s, now, MAC_A), ip(4));
        check_invariants(&s);
    }

    #[test]
    fn unrequested_offers_are_reused_before_expired_leases() {
        let mut s = small_server(3); // .2, .3
        assert_eq!(dora(&mut s, t(0), MAC_A), ip(2));
        // B only discovers, much later than A's ACK.
        assert_eq!(
            handle_ok(&mut s, t(3000), MAC_B, &discover(MAC_B)).yiaddr(),
            ip(3)
        );
        let now = t(2 * 3600);
        assert_eq!(dora(&mut s, now, MAC_C), ip(3));
        assert_eq!(s.lease_of(&MAC_A), Some(ip(2)));
    }

    #[test]
    fn requested_address_is_offered_when_free() {
        let mut s = server();
        let mut m = busybox_discover(MAC_A, 1);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(100)));
        assert_eq!(handle_ok(&mut s, t(0), MAC_A, &bytes(&m)).yiaddr(), ip(100));
        // Taken by A's offer: B asking for it gets the lowest free address.
        let mut m = busybox_discover(MAC_B, 2);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(100)));
        assert_eq!(handle_ok(&mut s, t(0), MAC_B, &bytes(&m)).yiaddr(), ip(2));
        // Outside the pool (the host alias) is not offered.
        let mut m = busybox_discover(MAC_C, 3);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(254)));
        assert_eq!(handle_ok(&mut s, t(0), MAC_C, &bytes(&m)).yiaddr(), ip(3));
    }

    #[test]
    fn static_lease_is_honoured() {
        let cfg = NetworkConfig {
            static_leases: vec![(GVPROXY_MAC, ip(2))],
            ..NetworkConfig::default()
        };
        let mut s = Dhcp4Server::new(&cfg);
        // Another MAC first: .2 is reserved for the static lease.
        assert_eq!(dora(&mut s, t(0), MAC_A), ip(3));
        assert_eq!(dora(&mut s, t(0), GVPROXY_MAC), ip(2));
        // Nobody else may take it, even after it expired.
        let later = t(10 * 3600);
        let nak = handle_ok(&mut s, later, MAC_B, &request_init_reboot(MAC_B, ip(2)));
        assert_eq!(kind(&nak), MessageType::Nak);
        assert_eq!(dora(&mut s, later, MAC_B), ip(4));
        // The static MAC may not take another address.
        let nak = handle_ok(
            &mut s,
            later,
            GVPROXY_MAC,
            &request_init_reboot(GVPROXY_MAC, ip(50)),
        );
        assert_eq!(kind(&nak), MessageType::Nak);
        // assign() gives the static address too.
        assert_eq!(s.assign(later, GVPROXY_MAC), Some(ip(2)));
        // A declined static address is not quarantined: it is offered again.
        let declined = s.handle(later, GVPROXY_MAC, &decline(GVPROXY_MAC, ip(2)));
        assert_eq!(declined, Ok(None));
        assert_eq!(s.lease_of(&GVPROXY_MAC), None);
        check_invariants(&s);
        assert_eq!(dora(&mut s, later, GVPROXY_MAC), ip(2));
        check_invariants(&s);
    }

    #[test]
    fn static_lease_outside_the_pool_and_bad_entries() {
        let cfg = NetworkConfig {
            static_leases: vec![
                (MAC_A, ip(254)),                    // the host alias: ignored
                (MAC_B, Ipv4Addr::new(10, 0, 0, 9)), // outside the subnet: ignored
                (MAC_C, ip(1)),                      // the gateway: ignored
                (GVPROXY_MAC, ip(253)),
            ],
            ..NetworkConfig::default()
        };
        let mut s = Dhcp4Server::new(&cfg);
        assert_eq!(dora(&mut s, t(0), MAC_A), ip(2));
        assert_eq!(dora(&mut s, t(0), MAC_B), ip(3));
        assert_eq!(dora(&mut s, t(0), MAC_C), ip(4));
        assert_eq!(dora(&mut s, t(0), GVPROXY_MAC), ip(253));
    }

    #[test]
    fn decline_quarantines_the_address() {
        let mut s = server();
        assert_eq!(dora(&mut s, t(0), MAC_A), ip(2));
        // Only the holder may decline.
        assert_eq!(
            s.handle(t(1), MAC_B, &decline(MAC_B, ip(2))),
            Err(Dhcp4Drop::UnknownLease)
        );
        assert_eq!(s.handle(t(1), MAC_A, &decline(MAC_A, ip(2))), Ok(None));
        assert!(s.leases(t(1)).is_empty());
        assert_eq!(s.lease_of(&MAC_A), None);
        assert_eq!(dora(&mut s, t(2), MAC_A), ip(3));
        assert_eq!(dora(&mut s, t(2), MAC_B), ip(4));
        let nak = handle_ok(&mut s, t(3), MAC_C, &request_init_reboot(MAC_C, ip(2)));
        assert_eq!(kind(&nak), MessageType::Nak);
        // After the quarantine .2 is free again.
        let later = t(1) + DECLINE_HOLD;
        assert_eq!(dora(&mut s, later, MAC_C), ip(2));
        check_invariants(&s);
    }

    #[test]
    fn inform_gets_options_without_lease() {
        let mut s = server();
        let m = base(MessageType::Inform, MAC_A, 11, ip(77));
        let reply = s.handle(t(0), MAC_A, &bytes(&m)).unwrap().unwrap();
        assert_eq!((reply.dst_ip, reply.dst_mac), (ip(77), MAC_A));
        let ack = decode(&reply);
        assert_eq!(kind(&ack), MessageType::Ack);
        assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.ciaddr(), ip(77));
        for code in [51, 58, 59] {
            assert_eq!(raw_option(&reply.payload, code), None, "option {code}");
        }
        for code in [1, 3, 6, 26, 54] {
            assert!(raw_option(&reply.payload, code).is_some(), "option {code}");
        }
        assert!(s.leases(t(0)).is_empty());
        let m = base(MessageType::Inform, MAC_A, 12, Ipv4Addr::new(10, 1, 1, 1));
        assert_eq!(
            s.handle(t(0), MAC_A, &bytes(&m)),
            Err(Dhcp4Drop::WrongSubnet)
        );
    }

    #[test]
    fn pool_exhaustion() {
        let cfg = NetworkConfig::from_subnet("10.0.0.0/29".parse().unwrap()).unwrap();
        let mut s = Dhcp4Server::new(&cfg);
        let macs: Vec<Mac> = (1..=4).map(|i| [2, 0, 0, 0, 0, i]).collect();
        let addrs: Vec<Ipv4Addr> = macs.iter().map(|m| dora(&mut s, t(0), *m)).collect();
        assert_eq!(
            addrs,
            (2..=5)
                .map(|i| Ipv4Addr::new(10, 0, 0, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            s.handle(t(1), MAC_A, &discover(MAC_A)),
            Err(Dhcp4Drop::PoolExhausted)
        );
        assert_eq!(s.assign(t(1), MAC_A), None);
        let nak = handle_ok(
            &mut s,
            t(1),
            MAC_A,
            &request_init_reboot(MAC_A, Ipv4Addr::new(10, 0, 0, 6)),
        );
        assert_eq!(kind(&nak), MessageType::Nak, "the host alias");
        // Existing clients still renew.
        let ack = handle_ok(&mut s, t(2), macs[0], &request_renew(macs[0], addrs[0]));
        assert_eq!(kind(&ack), MessageType::Ack);
        check_invariants(&s);
    }

    #[test]
    fn empty_pool_gives_nothing() {
        let cfg = NetworkConfig {
            pool_start: ip(10),
            pool_end: ip(9),
            ..NetworkConfig::default()
        };
        let mut s = Dhcp4Server::new(&cfg);
        assert_eq!(
            s.handle(t(0), MAC_A, &discover(MAC_A)),
            Err(Dhcp4Drop::PoolExhausted)
        );
        assert_eq!(s.assign(t(0), MAC_A), None);
    }

    #[test]
    fn assign_matches_dhcp() {
        let mut s = server();
        assert_eq!(s.assign(t(0), MAC_A), Some(ip(2)));
        assert_eq!(s.assign(t(0), MAC_A), Some(ip(2)));
        // Assigned leases do not expire.
        assert_eq!(s.leases(t(100 * 3600)), vec![(ip(2), MAC_A)]);
        // DHCP for the same MAC later gives the same address and keeps it assigned.
        assert_eq!(dora(&mut s, t(10), MAC_A), ip(2));
        assert_eq!(s.leases(t(100 * 3600)), vec![(ip(2), MAC_A)]);
        assert_eq!(dora(&mut s, t(10), MAC_B), ip(3));
        assert_eq!(s.assign(t(20), MAC_B), Some(ip(3)));
        // release() ends it; the address stays tied to the MAC.
        assert_eq!(s.release(t(30), &MAC_A), Some(ip(2)));
        assert!(s.leases(t(31)).iter().all(|(_, m)| *m != MAC_A));
        assert_eq!(s.assign(t(40), MAC_A), Some(ip(2)));
        check_invariants(&s);
    }

    #[test]
    fn option_119_encoding_is_exact() {
        let cfg = NetworkConfig {
            search_domains: vec!["example.test".into(), "corp.test.".into()],
            ..NetworkConfig::default()
        };
        let mut s = Dhcp4Server::new(&cfg);
        let reply = s.handle(t(0), MAC_A, &discover(MAC_A)).unwrap().unwrap();
        let mut expected = vec![7];
        expected.extend(b"example");
        expected.push(4);
        expected.extend(b"test");
        expected.push(0);
        expected.push(4);
        expected.extend(b"corp");
        expected.extend([0xc0, 8]); // pointer to "test." at offset 8
        assert_eq!(raw_option(&reply.payload, 119), Some(expected));
        assert_eq!(
            raw_option(&reply.payload, 15),
            Some(b"example.test".to_vec())
        );
        // And as a whole option in the wire bytes.
        let needle = [&[119u8, 21][..], &[7], b"example"].concat();
        assert!(reply.payload.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn search_domains_are_validated_and_replaceable() {
        let mut s = server();
        s.set_search_domains(vec![
            "lab.test".into(),
            "bad name.test".into(),
            "$(reboot).test".into(),
            "LAB.test".into(),
            "".into(),
            format!("{}.test", "a".repeat(64)),
            "b.test".into(),
        ]);
        assert_eq!(s.search_domains(), ["lab.test", "b.test"]);
        let reply = s.handle(t(0), MAC_A, &discover(MAC_A)).unwrap().unwrap();
        assert_eq!(raw_option(&reply.payload, 15), Some(b"lab.test".to_vec()));
        s.set_search_domains(Vec::new());
        let reply = s.handle(t(0), MAC_A, &discover(MAC_A)).unwrap().unwrap();
        assert_eq!(raw_option(&reply.payload, 15), None);
        assert_eq!(raw_option(&reply.payload, 119), None);
        let many: Vec<String> = (0..100).map(|i| format!("d{i}.test")).collect();
        s.set_search_domains(many);
        assert_eq!(s.search_domains().len(), MAX_SEARCH_DOMAINS);
    }

    #[test]
    fn long_search_list_is_trimmed_to_the_client_limit() {
        let cfg = NetworkConfig {
            search_domains: (0..20)
                .map(|i| format!("{}{i}.example.test", "x".repeat(40)))
                .collect(),
            ..NetworkConfig::default()
        };
        let mut s = Dhcp4Server::new(&cfg);
        let reply = s.handle(t(0), MAC_A, &discover(MAC_A)).unwrap().unwrap();
        assert!(reply.payload.len() <= 576 - 28);
        let search = raw_option(&reply.payload, 119).unwrap();
        let names = search.len();
        assert!(names > 0);
        // A client that accepts 1500 bytes gets more of the list.
        let mut m = busybox_discover(MAC_A, 5);
        m.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
        let reply = s.handle(t(0), MAC_A, &bytes(&m)).unwrap().unwrap();
        assert!(reply.payload.len() <= 1500 - 28);
        assert!(raw_option(&reply.payload, 119).unwrap().len() > names);
        // The options still decode, including the long (split) option 119.
        match decode(&reply).opts().get(OptionCode::DomainSearch) {
            Some(DhcpOption::DomainSearch(list)) => assert!(list.len() > 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_and_truncated_inputs_are_dropped() {
        let mut s = server();
        let good = discover(MAC_A);
        assert_eq!(s.handle(t(0), MAC_A, &[]), Err(Dhcp4Drop::Malformed));
        assert_eq!(s.handle(t(0), MAC_A, &[1]), Err(Dhcp4Drop::Malformed));
        for len in [1, 100, 235, 236, 239] {
            assert_eq!(
                s.handle(t(0), MAC_A, &good[..len]),
                Err(Dhcp4Drop::Malformed),
                "{len}"
            );
        }
        // Header and cookie but no options at all.
        assert_eq!(
            s.handle(t(0), MAC_A, &good[..240]),
            Err(Dhcp4Drop::MissingMessageType)
        );
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(s.handle(t(0), MAC_A, &bad), Err(Dhcp4Drop::NotBootRequest));
        let mut bad = good.clone();
        bad[1] = 6;
        assert_eq!(
            s.handle(t(0), MAC_A, &bad),
            Err(Dhcp4Drop::UnsupportedHardware)
        );
        let mut bad = good.clone();
        bad[2] = 200; // dhcproto's chaddr() would panic on this
        assert_eq!(
            s.handle(t(0), MAC_A, &bad),
            Err(Dhcp4Drop::UnsupportedHardware)
        );
        let mut bad = good.clone();
        bad[236] = 0;
        assert_eq!(s.handle(t(0), MAC_A, &bad), Err(Dhcp4Drop::Malformed));
        let mut bad = good.clone();
        bad[24..28].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(s.handle(t(0), MAC_A, &bad), Err(Dhcp4Drop::Relayed));
        assert_eq!(s.handle(t(0), MAC_B, &good), Err(Dhcp4Drop::ChaddrMismatch));
        // A client must not send server messages.
        let offer = bytes(&base(MessageType::Offer, MAC_A, 1, Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            s.handle(t(0), MAC_A, &offer),
            Err(Dhcp4Drop::UnsupportedMessageType)
        );
        let unknown = bytes(&base(
            MessageType::Unknown(99),
            MAC_A,
            1,
            Ipv4Addr::UNSPECIFIED,
        ));
        assert_eq!(
            s.handle(t(0), MAC_A, &unknown),
            Err(Dhcp4Drop::UnsupportedMessageType)
        );
        // A REQUEST that names no address.
        let empty = bytes(&base(MessageType::Request, MAC_A, 1, Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            s.handle(t(0), MAC_A, &empty),
            Err(Dhcp4Drop::MissingRequestedAddress)
        );
        // RELEASE of an address the client does not hold.
        assert_eq!(
            s.handle(t(0), MAC_A, &release(MAC_A, ip(9))),
            Err(Dhcp4Drop::UnknownLease)
        );
        assert!(s.leases(t(0)).is_empty());
        check_invariants(&s);
    }

    /// Options that `dhcproto` 0.15 checks with `debug_assert!` must be rejected before it sees
    /// them (these panicked in debug builds).
    #[test]
    fn option_lengths_dhcproto_asserts_on_are_rejected() {
        let mut s = server();
        let header = &discover(MAC_A)[..OPTIONS_OFFSET];
        let cases: [&[u8]; 7] = [
            &[80, 1, 0], // rapid commit with data
            &[94, 0],    // client network interface, short
            &[81, 1, 0], // client FQDN, short
            &[152, 0],   // bulk lease query base time, short
            &[155, 5, 0, 0, 0, 0, 0],
            &[151, 0],          // status code without code
            &[80, 0, 80, 1, 9], // concatenated (RFC 3396): one option of length 1
        ];
        for opts in cases {
            let mut p = header.to_vec();
            p.extend([53, 1, 1]);
            p.extend(opts);
            p.push(255);
            assert_eq!(
                s.handle(t(0), MAC_A, &p),
                Err(Dhcp4Drop::Malformed),
                "{opts:?}"
            );
        }
        // Well-formed versions are fine.
        let mut p = header.to_vec();
        p.extend([53, 1, 1, 80, 0, 94, 3, 1, 2, 0, 255]);
        assert!(s.handle(t(0), MAC_A, &p).unwrap().is_some());
    }

    #[test]
    fn malformed_option_values_do_not_break_the_server() {
        let mut s = server();
        let header = &discover(MAC_A)[..OPTIONS_OFFSET];
        // Option 50 with a wrong length, a bad domain search, a truncated last option.
        let mut p = header.to_vec();
        p.extend([53, 1, 1, 50, 3, 1, 2, 3, 119, 2, 0xc0, 0xff, 12, 200, b'x']);
        let r = s.handle(t(0), MAC_A, &p);
        assert!(matches!(r, Ok(Some(_)) | Err(_)));
        check_invariants(&s);
    }

    #[test]
    fn drop_reasons_have_distinct_names() {
        let mut names: Vec<&str> = Dhcp4Drop::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Dhcp4Drop::ALL.len());
    }

    #[test]
    fn reply_header_fields() {
        let mut s = server();
        let mut m = busybox_discover(MAC_A, 0xdead_beef);
        m.set_secs(7)
            .set_hops(0)
            .set_sname_str("boot")
            .set_fname_str("pxelinux.0");
        let offer = handle_ok(&mut s, t(0), MAC_A, &bytes(&m));
        assert_eq!(offer.opcode(), Opcode::BootReply);
        assert_eq!(offer.htype(), HType::Eth);
        assert_eq!(offer.chaddr(), &MAC_A);
        assert_eq!(offer.xid(), 0xdead_beef);
        assert_eq!(offer.secs(), 0);
        assert_eq!(offer.sname(), None);
        assert_eq!(offer.fname(), None);
        assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(offer.ciaddr(), Ipv4Addr::UNSPECIFIED);
        // None of the request's options are echoed.
        assert_eq!(offer.opts().get(OptionCode::ClassIdentifier), None);
        assert_eq!(offer.opts().get(OptionCode::ParameterRequestList), None);
    }

    fn arbitrary_message() -> impl Strategy<Value = Vec<u8>> {
        (
            0u8..10,
            0usize..4,
            prop::option::of(0u8..6),
            prop::bool::ANY,
            prop::bool::ANY,
            prop::option::of(0u8..8),
        )
            .prop_map(|(kind, mac, requested, broadcast, ciaddr, server)| {
                let macs = [MAC_A, MAC_B, MAC_C, GVPROXY_MAC];
                let ci = if ciaddr {
                    ip(2 + kind % 4)
                } else {
                    Ipv4Addr::UNSPECIFIED
                };
                let mut m = base(MessageType::from(kind), macs[mac], 1, ci);
                if broadcast {
                    m.set_flags(Flags::default().set_broadcast());
                }
                if let Some(r) = requested {
                    m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip(r)));
                }
                if let Some(sv) = server {
                    m.opts_mut()
                        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(
                            192, 168, 127, sv,
                        )));
                }
                m.to_vec().unwrap()
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(payload in prop::collection::vec(any::<u8>(), 0..700)) {
            let mut s = server();
            let _ = s.handle(t(0), MAC_A, &payload);
        }

        #[test]
        fn arbitrary_options_never_panic(
            opts in prop::collection::vec(any::<u8>(), 0..400),
            kind in 0u8..20,
        ) {
            let cfg = NetworkConfig {
                search_domains: vec!["example.test".into()],
                ..NetworkConfig::default()
            };
            let mut s = Dhcp4Server::new(&cfg);
            let mut p = discover(MAC_A)[..OPTIONS_OFFSET].to_vec();
            p.extend([53, 1, kind]);
            p.extend(&opts);
            if let Ok(Some(reply)) = s.handle(t(0), MAC_A, &p) {
                prop_assert!(reply.payload.len() >= MIN_REPLY_LEN);
                prop_assert!(reply.payload.len() <= 576 - 28 || raw_option(&p, 57).is_some());
            }
            // And without the leading message type, options in any order.
            let mut p = discover(MAC_A)[..OPTIONS_OFFSET].to_vec();
            p.extend(&opts);
            let _ = s.handle(t(0), MAC_A, &p);
            check_invariants(&s);
        }

        #[test]
        fn message_sequences_keep_the_table_consistent(
            steps in prop::collection::vec((arbitrary_message(), 0u64..4000), 1..60),
        ) {
            let cfg = NetworkConfig {
                pool_end: ip(4),
                static_leases: vec![(GVPROXY_MAC, ip(5))],
                ..NetworkConfig::default()
            };
            let mut s = Dhcp4Server::new(&cfg);
            let mut now = t(0);
            for (payload, advance) in steps {
                now += t(advance);
                let mac: Mac = payload[28..34].try_into().unwrap();
                if let Ok(Some(reply)) = s.handle(now, mac, &payload) {
                    let m = decode(&reply);
                    if kind(&m) != MessageType::Nak && !m.yiaddr().is_unspecified() {
                        prop_assert!(m.yiaddr() >= ip(2) && m.yiaddr() <= ip(5));
                    }
                }
                check_invariants(&s);
                // No address is leased to two MACs and each MAC has at most one lease.
                let leases = s.leases(now);
                let mut macs: Vec<Mac> = leases.iter().map(|(_, m)| *m).collect();
                macs.sort_unstable();
                macs.dedup();
                prop_assert_eq!(macs.len(), leases.len());
            }
        }
    }
}
