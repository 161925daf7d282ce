//! DNS message handling for the gateway's resolver: the local zone and the small message edits the
//! forwarder needs.
//!
//! # Theory of operation
//!
//! The gateway is every guest's DNS server. Each query a guest sends (over UDP or TCP) first goes
//! to [`LocalZone::answer`]:
//!
//! - a name slipway owns (`host.docker.internal`, `gateway.slipway.internal`, names added by the
//!   configuration or the API) gets a complete authoritative answer built here: its A and/or AAAA
//!   record with TTL 0 (so a changed record is seen at once), or NODATA (NOERROR, no answers, AA
//!   set) when the name exists but has no record of the asked type;
//! - any other name at or under the reserved suffix `slipway.internal` gets NXDOMAIN (or NODATA
//!   when it is an empty non-terminal, i.e. an ancestor of a local name), so it never leaks to an
//!   upstream resolver;
//! - everything else returns `None`: the driver forwards the query, unchanged except for its id, to
//!   the host's upstream resolvers. [`message_id`], [`set_message_id`], [`is_reply_to`],
//!   [`is_truncated`], [`response_code`] and [`max_udp_response_len`] are what the forwarder needs
//!   to do that without parsing DNS itself, and [`servfail`], [`formerr`] and [`notimp`] build the
//!   error replies it sends to guests.
//!
//! Matching is case-insensitive (names are stored lower-case without the trailing dot) while the
//! answer echoes the question exactly as asked, so resolvers that randomise the case of query
//! names (DNS 0x20) accept it. Only queries (QR = 0, OPCODE QUERY, exactly one question) are
//! answered; anything else is an error the caller turns into FORMERR or NOTIMP, or drops. All
//! parsing and building goes through `hickory-proto`; a message that does not parse is an error,
//! never a panic. A query carrying EDNS gets an OPT record back (the DO bit copied, RFC 3225);
//! an EDNS version other than 0 gets BADVERS (RFC 6891).
//!
//! Each name holds at most one IPv4 and one IPv6 address: adding an address of a family the name
//! already has replaces it (a container that restarted with a new address simply re-adds its
//! name). Configured records replace built-in names of the same name entirely.
//!
//! Patterns, for gvproxy's zones ([`LocalZone::add_pattern`]): within a zone (a suffix; the empty
//! zone holds every name), a regular expression matched against the asked name written out with
//! its trailing dot, as gvproxy matches it, or no expression for the zone's default address.
//! Exact names win over patterns; patterns are tried in the order they were added. Expressions
//! come from API clients: the `regex` crate matches in linear time, and a compiled expression is
//! limited to [`MAX_PATTERN_SIZE`] bytes.
//!
//! # Limits
//!
//! - At most [`MAX_NAMES`] (4096) names in a zone, built-in names included.
//! - Names per RFC 1035: at most [`MAX_NAME_LEN`] (253) characters written out (255 octets on
//!   the wire), labels of 1 to [`MAX_LABEL_LEN`] (63) characters from `a-z`, `0-9`, `-` and `_`.
//! - One IPv4 and one IPv6 address per name; local answers carry TTL 0 and no SOA, so negative
//!   answers are not cached either.
//! - A local answer is at most one question, two address records and an OPT record (< 200
//!   bytes), so it always fits the 512-byte UDP minimum and never needs truncation.
//! - At most [`MAX_PATTERNS`] patterns; an expression at most [`MAX_PATTERN_LEN`] characters.
//! - No PTR (reverse) records for local names yet; reverse queries are forwarded.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::config::NetworkConfig;

/// The most names a [`LocalZone`] holds.
pub const MAX_NAMES: usize = 4096;
/// The most patterns a [`LocalZone`] holds.
pub const MAX_PATTERNS: usize = 256;
/// The longest regular expression accepted, in characters.
pub const MAX_PATTERN_LEN: usize = 1024;
/// The most memory one compiled expression may take.
pub const MAX_PATTERN_SIZE: usize = 256 * 1024;
/// The longest name, written out without the trailing dot (RFC 1035: 255 octets on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// The longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// The suffix slipway owns: unknown names at or under it are answered NXDOMAIN, never forwarded.
pub const RESERVED_SUFFIX: &str = "slipway.internal";
/// The UDP payload size slipway advertises in the OPT record of its own answers.
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;
/// The UDP payload every DNS client accepts (RFC 1035) when it advertises no EDNS size.
pub const MIN_UDP_PAYLOAD: usize = 512;

/// Names answered with the host-loopback alias.
const HOST_NAMES: [&str; 3] = [
    "host.slipway.internal",
    "host.containers.internal",
    "host.docker.internal",
];
/// Names answered with the gateway address.
const GATEWAY_NAMES: [&str; 3] = [
    "gateway.slipway.internal",
    "gateway.containers.internal",
    "gateway.docker.internal",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("not a well-formed DNS message")]
    Malformed,
    #[error("the message is a response, not a query")]
    NotAQuery,
    #[error("a query must carry exactly one question, this one has {0}")]
    QuestionCount(u16),
    #[error("DNS opcode {0} is not supported, only QUERY")]
    NotImplemented(u8),
    #[error("DNS name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("the local DNS zone already holds {MAX_NAMES} names; remove some first")]
    ZoneFull,
    #[error("the local DNS zone already holds {MAX_PATTERNS} patterns")]
    PatternsFull,
    #[error("regular expression: {0}")]
    InvalidPattern(String),
}

/// The addresses of one local name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Addresses {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl Addresses {
    fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

/// A zone-wide rule: names under `zone` that `regex` matches (every one when None).
#[derive(Debug, Clone)]
struct Pattern {
    zone: String,
    regex: Option<regex::Regex>,
    addrs: Addresses,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.zone == other.zone
            && self.addrs == other.addrs
            && self.regex.as_ref().map(regex::Regex::as_str)
                == other.regex.as_ref().map(regex::Regex::as_str)
    }
}
impl Eq for Pattern {}

/// Names slipway answers authoritatively. Names are stored lower-case without trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalZone {
    names: BTreeMap<String, Addresses>,
    patterns: Vec<Pattern>,
}

impl LocalZone {
    /// Built-in names: host.slipway.internal, host.containers.internal, host.docker.internal → the
    /// host-loopback alias (absent when the alias is disabled); gateway.slipway.internal,
    /// gateway.containers.internal, gateway.docker.internal → the gateway; each with an A record
    /// and, when IPv6 is on, an AAAA record of the IPv6 alias or gateway; plus cfg.dns_records
    /// (which override built-ins of the same name). Invalid configured records are skipped: the
    /// configuration layer checks them with [`validate_name`] first.
    pub fn new(cfg: &NetworkConfig) -> Self {
        let mut zone = Self::default();
        if let Some(alias) = cfg.host_loopback_alias {
            for name in HOST_NAMES {
                let _ = zone.add(name, IpAddr::V4(alias));
            }
        }
        for name in GATEWAY_NAMES {
            let _ = zone.add(name, IpAddr::V4(cfg.gateway));
        }
        if let Some(v6) = &cfg.ipv6 {
            if let Some(alias) = v6
                .host_loopback_alias
                .filter(|_| cfg.host_loopback_alias.is_some())
            {
                for name in HOST_NAMES {
                    let _ = zone.add(name, IpAddr::V6(alias));
                }
            }
            for name in GATEWAY_NAMES {
                let _ = zone.add(name, IpAddr::V6(v6.gateway));
            }
        }
        for (name, _) in &cfg.dns_records {
            if let Ok(name) = validate_name(name) {
                zone.names.remove(&name);
            }
        }
        for (name, ip) in &cfg.dns_records {
            let _ = zone.add(name, *ip);
        }
        zone
    }

    /// Makes `name` resolve to `ip`, replacing the name's previous address of the same family.
    pub fn add(&mut self, name: &str, ip: IpAddr) -> Result<(), DnsError> {
        let name = validate_name(name)?;
        if !self.names.contains_key(&name) && self.names.len() >= MAX_NAMES {
            return Err(DnsError::ZoneFull);
        }
        let entry = self.names.entry(name).or_default();
        match ip {
            IpAddr::V4(v4) => entry.v4 = Some(v4),
            IpAddr::V6(v6) => entry.v6 = Some(v6),
        }
        Ok(())
    }

    /// Names under `zone` (a suffix such as `apps.example`; empty: every name) that `regex`
    /// matches, written out with their trailing dot, resolve to `ip`; with no `regex`, every
    /// name under the zone does (gvproxy's zone `DefaultIP`). A pattern with the same zone and
    /// expression gets `ip` for its family, as [`Self::add`] does for names.
    pub fn add_pattern(
        &mut self,
        zone: &str,
        regex: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), DnsError> {
        let zone = if zone.trim_end_matches('.').is_empty() {
            String::new()
        } else {
            validate_name(zone)?
        };
        let compiled = match regex {
            Some(r) => {
                if r.chars().count() > MAX_PATTERN_LEN {
                    return Err(DnsError::InvalidPattern(format!(
                        "longer than {MAX_PATTERN_LEN} characters"
                    )));
                }
                Some(
                    regex::RegexBuilder::new(r)
                        .case_insensitive(true)
                        .size_limit(MAX_PATTERN_SIZE)
                        .build()
                        .map_err(|e| DnsError::InvalidPattern(e.to_string()))?,
                )
            }
            None => None,
        };
        let same =
            |p: &Pattern| p.zone == zone && p.regex.as_ref().map(regex::Regex::as_str) == regex;
        let entry = match self.patterns.iter_mut().find(|p| same(p)) {
            Some(p) => p,
            None => {
                if self.patterns.len() >= MAX_PATTERNS {
                    return Err(DnsError::PatternsFull);
                }
                self.patterns.push(Pattern {
                    zone,
                    regex: compiled,
                    addrs: Addresses::default(),
                });
                self.patterns.last_mut().expect("just pushed")
            }
        };
        match ip {
            IpAddr::V4(v4) => entry.addrs.v4 = Some(v4),
            IpAddr::V6(v6) => entry.addrs.v6 = Some(v6),
        }
        Ok(())
    }

    /// Every pattern: (zone, expression or None for the zone's default, address).
    pub fn patterns(&self) -> Vec<(String, Option<String>, IpAddr)> {
        let mut out = Vec::new();
        for p in &self.patterns {
            let re = p.regex.as_ref().map(|r| r.as_str().to_string());
            if let Some(v4) = p.addrs.v4 {
                out.push((p.zone.clone(), re.clone(), IpAddr::V4(v4)));
            }
            if let Some(v6) = p.addrs.v6 {
                out.push((p.zone.clone(), re.clone(), IpAddr::V6(v6)));
            }
        }
        out
    }

    /// The first pattern that covers `key` (a lower-case name without its trailing dot).
    fn pattern_for(&self, key: &str) -> Option<Addresses> {
        if self.patterns.is_empty() {
            return None;
        }
        let fqdn = format!("{key}.");
        self.patterns
            .iter()
            .find(|p| {
                let in_zone = p.zone.is_empty()
                    || key == p.zone
                    || (key.len() > p.zone.len()
                        && key.ends_with(&p.zone)
                        && key.as_bytes()[key.len() - p.zone.len() - 1] == b'.');
                in_zone && p.regex.as_ref().is_none_or(|r| r.is_match(&fqdn))
            })
            .map(|p| p.addrs)
    }

    /// Removes `name` and all its addresses; false when it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        match validate_name(name) {
            Ok(name) => self.names.remove(&name).is_some(),
            Err(_) => false,
        }
    }

    /// Every (name, address) pair, sorted by name, IPv4 before IPv6.
    pub fn records(&self) -> Vec<(String, IpAddr)> {
        let mut out = Vec::with_capacity(self.names.len());
        for (name, addrs) in &self.names {
            if let Some(v4) = addrs.v4 {
                out.push((name.clone(), IpAddr::V4(v4)));
            }
            if let Some(v6) = addrs.v6 {
                out.push((name.clone(), IpAddr::V6(v6)));
            }
        }
        out
    }

    /// If `query` asks about a local name, the complete authoritative response: A (and AAAA) records
    /// with TTL 0; NODATA (NOERROR, no answers, AA set) for other types of an existing name; NXDOMAIN
    /// for unknown names under the reserved local suffixes (slipway.internal). None → forward it.
    pub fn answer(&self, query: &[u8]) -> Result<Option<Vec<u8>>, DnsError> {
        let (header, question) = read_query_head(query)?;
        let labels: Vec<Vec<u8>> = question
            .name()
            .iter()
            .map(|label| label.to_ascii_lowercase())
            .collect();
        let key = name_key(&labels);
        let found = key
            .as_ref()
            .and_then(|k| self.names.get(k).copied().or_else(|| self.pattern_for(k)));
        let reserved = is_reserved(&labels);
        let (rcode, addrs) = match found {
            Some(addrs) => (ResponseCode::NoError, addrs),
            None if reserved => {
                let ancestor = key.as_ref().is_some_and(|k| self.is_ancestor(k));
                let rcode = if ancestor {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                };
                (rcode, Addresses::default())
            }
            None => return Ok(None),
        };
        // The whole message is needed for its EDNS record.
        let request = Message::from_vec(query).map_err(|_| DnsError::Malformed)?;
        let mut response = Message::new(header.id, MessageType::Response, OpCode::Query);
        response.metadata = Metadata::response_from_request(&header.metadata);
        response.metadata.authoritative = true;
        response.metadata.recursion_available = true;
        response.metadata.response_code = rcode;
        response.add_query(question.clone());
        if let Some(edns) = &request.edns {
            response.set_edns(reply_edns(edns));
            if edns.version() != 0 {
                response.metadata.response_code = ResponseCode::BADVERS;
                response.metadata.authoritative = false;
                return encode(&response).map(Some);
            }
        }
        if !addrs.is_empty() && matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
            let qtype = question.query_type();
            let name = question.name().clone();
            if let Some(v4) = addrs.v4 {
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    response.add_answer(Record::from_rdata(name.clone(), 0, RData::A(A(v4))));
                }
            }
            if let Some(v6) = addrs.v6 {
                if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                    response.add_answer(Record::from_rdata(name, 0, RData::AAAA(AAAA(v6))));
                }
            }
        }
        encode(&response).map(Some)
    }

    /// True when some local name lies strictly below `key`.
    fn is_ancestor(&self, key: &str) -> bool {
        self.names.keys().any(|name| {
            name.len() > key.len() + 1
                && name.ends_with(key)
                && name.as_bytes()[name.len() - key.len() - 1] == b'.'
        })
    }
}

/// Checks a DNS name for the local zone and returns it lower-case without the trailing dot.
pub fn validate_name(name: &str) -> Result<String, DnsError> {
    let invalid = |reason| DnsError::InvalidName {
        name: name.chars().take(MAX_NAME_LEN + 2).collect(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(invalid("names are at most 253 characters long"));
    }
    let lower = trimmed.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(invalid(
                "each dot-separated label must be 1 to 63 characters long",
            ));
        }
        if !label.bytes().all(is_name_byte) {
            return Err(invalid("use only letters, digits, '-' and '_'"));
        }
    }
    Ok(lower)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// The zone key of a query name's lower-cased labels, or None when a label holds bytes no local
/// name can contain (such a name is never in the zone).
fn name_key(labels: &[Vec<u8>]) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut key = String::new();
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || !label.iter().copied().all(is_name_byte) {
            return None;
        }
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|&b| char::from(b)));
    }
    Some(key)
}

/// True for names at or under [`RESERVED_SUFFIX`].
fn is_reserved(labels: &[Vec<u8>]) -> bool {
    let suffix: Vec<&[u8]> = RESERVED_SUFFIX.split('.').map(str::as_bytes).collect();
    labels.len() >= suffix.len()
        && labels[labels.len() - suffix.len()..]
            .iter()
            .zip(&suffix)
            .all(|(a, b)| a.as_slice() == *b)
}

/// The header and the single question of a query, or why it is not one slipway answers.
fn read_query_head(query: &[u8]) -> Result<(Header, Query), DnsError> {
    let mut decoder = BinDecoder::new(query);
    let header = Header::read(&mut decoder).map_err(|_| DnsError::Malformed)?;
    if header.message_type == MessageType::Response {
        return Err(DnsError::NotAQuery);
    }
    if header.counts.queries != 1 {
        return Err(DnsError::QuestionCount(header.counts.queries));
    }
    if header.op_code != OpCode::Query {
        return Err(DnsError::NotImplemented(u8::from(header.op_code)));
    }
    let question = Query::read(&mut decoder).map_err(|_| DnsError::Malformed)?;
    Ok((header, question))
}

/// The header of any message and its question when it has exactly one that parses.
fn read_head(msg: &[u8]) -> Option<(Header, Option<Query>)> {
    let mut decoder = BinDecoder::new(msg);
    let header = Header::read(&mut decoder).ok()?;
    let question = if header.counts.queries == 1 {
        Query::read(&mut decoder).ok()
    } else {
        None
    };
    Some((header, question))
}

/// The OPT record of slipway's reply to a query that carried `request`.
fn reply_edns(request: &Edns) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(ADVERTISED_UDP_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    edns
}

fn encode(message: &Message) -> Result<Vec<u8>, DnsError> {
    message.to_vec().map_err(|_| DnsError::Malformed)
}

/// An error reply with `rcode` to `query`: same id, opcode, RD and CD, and its question when it
/// has exactly one that parses. `need_question`: give up (None) when the question is missing.
fn error_response(query: &[u8], rcode: ResponseCode, need_question: bool) -> Option<Vec<u8>> {
    let (header, question) = read_head(query)?;
    if header.message_type == MessageType::Response {
        return None;
    }
    if need_question && question.is_none() {
        return None;
    }
    let mut response = Message::new(header.id, MessageType::Response, header.op_code);
    response.metadata = Metadata::response_from_request(&header.metadata);
    response.metadata.recursion_available = true;
    response.metadata.response_code = rcode;
    if let Some(question) = question {
        response.add_query(question);
    }
    if let Some(edns) = Message::from_vec(query).ok().and_then(|m| m.edns) {
        response.set_edns(reply_edns(&edns));
    }
    response.to_vec().ok()
}

/// `reply` cut down to its header and question with the TC bit set (RFC 1035 §4.2.1, RFC 7766):
/// what a UDP client gets when the full answer does not fit, so that it retries over TCP. None
/// when `reply` is not a response with one parseable question.
pub fn truncated_response(reply: &[u8]) -> Option<Vec<u8>> {
    let (header, question) = read_head(reply)?;
    if header.message_type != MessageType::Response {
        return None;
    }
    let mut response = Message::new(header.id, MessageType::Response, header.op_code);
    response.metadata = header.metadata;
    response.metadata.truncation = true;
    response.add_query(question?);
    response.to_vec().ok()
}

/// A SERVFAIL response to `query` (same id and question), or None if the query can't be parsed.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    error_response(query, ResponseCode::ServFail, true)
}

/// A FORMERR response to `query`: header-only when its question does not parse; None when not
/// even the header does, or when the message is itself a response (never answer those).
pub fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    error_response(query, ResponseCode::FormErr, false)
}

/// A NOTIMP response to `query` (for opcodes other than QUERY); header-only like [`formerr`].
pub fn notimp(query: &[u8]) -> Option<Vec<u8>> {
    error_response(query, ResponseCode::NotImp, false)
}

/// The id of any DNS message, or None when it is shorter than a header.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    read_head(msg).map(|(header, _)| header.id)
}

/// Rewrites the id of a DNS message in place; false when it is shorter than a header.
pub fn set_message_id(msg: &mut [u8], id: u16) -> bool {
    if read_head(msg).is_none() {
        return false;
    }
    // The id is the first header field (RFC 1035 4.1.1), big-endian.
    msg[..2].copy_from_slice(&id.to_be_bytes());
    true
}

/// True when the message's TC (truncated) flag is set.
pub fn is_truncated(msg: &[u8]) -> bool {
    read_head(msg).is_some_and(|(header, _)| header.truncation)
}

/// The response code in the header (the low 4 bits; the EDNS extension is not looked at).
pub fn response_code(msg: &[u8]) -> Option<ResponseCode> {
    read_head(msg).map(|(header, _)| header.response_code)
}

/// True when `reply` is a response with the same id as `query` and the same single question
/// (name compared case-insensitively, type and class exactly).
pub fn is_reply_to(query: &[u8], reply: &[u8]) -> bool {
    let (Some((qh, Some(qq))), Some((rh, Some(rq)))) = (read_head(query), read_head(reply)) else {
        return false;
    };
    rh.message_type == MessageType::Response
        && qh.id == rh.id
        && qq.name().eq_ignore_root(rq.name())
        && qq.query_type() == rq.query_type()
        && qq.query_class() == rq.query_class()
}

/// The largest UDP response the sender of `query` accepts: its EDNS payload size, or 512 bytes
/// without EDNS (or when the query does not parse).
pub fn max_udp_response_len(query: &[u8]) -> usize {
    Message::from_vec(query)
        .map(|m| usize::from(m.max_payload()))
        .unwrap_or(MIN_UDP_PAYLOAD)
}

#[cfg(test)]
mod tests {
    fn a_query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    fn first_a(reply: &[u8]) -> Option<Ipv4Addr> {
        let m = Message::from_vec(reply).unwrap();
        m.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    #[test]
    fn patterns_answer_names_of_their_zone_after_exact_names() {
        let mut z = LocalZone::default();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        z.add("api.crc.testing", ip("192.168.127.3")).unwrap();
        z.add_pattern("apps-crc.testing.", Some(".*"), ip("192.168.127.2"))
            .unwrap();
        z.add_pattern("corp.example", Some("^db[0-9]+\\."), ip("10.9.9.9"))
            .unwrap();
        z.add_pattern("corp.example", None, ip("10.9.9.1")).unwrap();
        let ans = |n: &str| z.answer(&a_query(n)).unwrap().and_then(|r| first_a(&r));
        assert_eq!(
            ans("console.apps-crc.testing"),
            Some("192.168.127.2".parse().unwrap())
        );
        assert_eq!(
            ans("Console.APPS-crc.testing"),
            Some("192.168.127.2".parse().unwrap())
        );
        assert_eq!(
            ans("apps-crc.testing"),
            Some("192.168.127.2".parse().unwrap())
        );
        assert_eq!(
            ans("api.crc.testing"),
            Some("192.168.127.3".parse().unwrap())
        );
        assert_eq!(ans("db12.corp.example"), Some("10.9.9.9".parse().unwrap()));
        assert_eq!(
            ans("www.corp.example"),
            Some("10.9.9.1".parse().unwrap()),
            "the zone's default"
        );
        assert!(
            z.answer(&a_query("xapps-crc.testing")).unwrap().is_none(),
            "not in the zone"
        );
        assert!(
            z.answer(&a_query("elsewhere.test")).unwrap().is_none(),
            "forwarded"
        );
        assert_eq!(z.patterns().len(), 3);
    }

    #[test]
    fn bad_or_too_many_patterns_are_refused() {
        let mut z = LocalZone::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(matches!(
            z.add_pattern("x.test", Some("("), ip),
            Err(DnsError::InvalidPattern(_))
        ));
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(matches!(
            z.add_pattern("x.test", Some(&long), ip),
            Err(DnsError::InvalidPattern(_))
        ));
        // An expression whose compiled form is huge is refused, not built.
        assert!(matches!(
            z.add_pattern("x.test", Some("\\w{1000}\\w{1000}"), ip),
            Err(DnsError::InvalidPattern(_))
        ));
        for i in 0..MAX_PATTERNS {
            z.add_pattern("x.test", Some(&format!("^n{i}\\.")), ip)
                .unwrap();
        }
        assert!(matches!(
            z.add_pattern("x.test", Some("^more"), ip),
            Err(DnsError::PatternsFull)
        ));
        // The same expression again only updates its address.
        z.add_pattern("x.test", Some("^n0\\."), "10.0.0.2".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn truncated_response_keeps_id_question_and_sets_tc() {
        let zone = LocalZone::new(&NetworkConfig::default());
        let q = query_bytes("host.slipway.internal", RecordType::A, None);
        let full = zone.answer(&q).unwrap().unwrap();
        let cut = truncated_response(&full).unwrap();
        assert!(is_truncated(&cut));
        assert!(is_reply_to(&q, &cut));
        assert!(cut.len() < full.len());
        let m = Message::from_vec(&cut).unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(truncated_response(&q), None, "a query is not a response");
        assert_eq!(truncated_response(&[1, 2, 3]), None);
    }
    use super::*;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn zone() -> LocalZone {
        LocalZone::new(&NetworkConfig::default())
    }

    fn query_bytes(name: &str, qtype: RecordType, edns: Option<Edns>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some(edns) = edns {
            m.set_edns(edns);
        }
        m.to_vec().unwrap()
    }

    fn ask(zone: &LocalZone, name: &str, qtype: RecordType) -> Option<Message> {
        let q = query_bytes(name, qtype, None);
        zone.answer(&q)
            .unwrap()
            .map(|r| Message::from_vec(&r).unwrap())
    }

    fn addrs(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    #[test]
    fn builtin_names_answer_a_with_ttl_zero() {
        let z = zone();
        let r = ask(&z, "host.docker.internal.", RecordType::A).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert!(r.metadata.authoritative);
        assert!(r.metadata.recursion_desired);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.queries.len(), 1);
        assert_eq!(
            addrs(&r),
            vec!["192.168.127.254".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.answers[0].ttl, 0);
        let r = ask(&z, "gateway.containers.internal.", RecordType::A).unwrap();
        assert_eq!(addrs(&r), vec!["192.168.127.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn aaaa_answer_and_nodata() {
        let mut z = zone();
        z.add("dual.test", "10.0.0.5".parse().unwrap()).unwrap();
        z.add("dual.test", "fd00::5".parse().unwrap()).unwrap();
        let r = ask(&z, "dual.test.", RecordType::AAAA).unwrap();
        assert_eq!(addrs(&r), vec!["fd00::5".parse::<IpAddr>().unwrap()]);
        let r = ask(&z, "dual.test.", RecordType::ANY).unwrap();
        assert_eq!(addrs(&r).len(), 2);
        // host.* has the IPv6 alias.
        let r = ask(&z, "host.slipway.internal.", RecordType::AAAA).unwrap();
        assert_eq!(addrs(&r), vec!["fd00:5119::fe".parse::<IpAddr>().unwrap()]);
        // Without IPv6, host.* has no IPv6 address: NODATA, authoritative, NOERROR.
        let v4_only = LocalZone::new(&NetworkConfig {
            ipv6: None,
            ..NetworkConfig::default()
        });
        let r = ask(&v4_only, "host.slipway.internal.", RecordType::AAAA).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert!(r.answers.is_empty());
        let r = ask(&z, "dual.test.", RecordType::MX).unwrap();
        assert!(r.answers.is_empty());
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }

    #[test]
    fn unknown_names_under_reserved_suffix_are_nxdomain() {
        let z = zone();
        let r = ask(&z, "nope.slipway.internal.", RecordType::A).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.metadata.authoritative);
        let r = ask(&z, "a.b.SLIPWAY.internal.", RecordType::A).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        // The apex is an empty non-terminal: NODATA, not NXDOMAIN.
        let r = ask(&z, "slipway.internal.", RecordType::A).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        // Other names are forwarded, including siblings of built-ins outside the reserved suffix.
        assert!(ask(&z, "forwarded.test.", RecordType::A).is_none());
        assert!(ask(&z, "other.docker.internal.", RecordType::A).is_none());
        assert!(ask(&z, "xslipway.internal.", RecordType::A).is_none());
    }

    #[test]
    fn matching_ignores_case_and_echoes_the_question() {
        let z = zone();
        let r = ask(&z, "HoSt.DoCkEr.InTeRnAl.", RecordType::A).unwrap();
        assert_eq!(addrs(&r).len(), 1);
        assert!(r.queries[0]
            .name()
            .eq_case(&Name::from_str("HoSt.DoCkEr.InTeRnAl.").unwrap()));
        assert!(r.answers[0]
            .name
            .eq_case(&Name::from_str("HoSt.DoCkEr.InTeRnAl.").unwrap()));
    }

    #[test]
    fn configured_records_override_builtins() {
        let cfg = NetworkConfig {
            dns_records: vec![
                ("host.docker.internal".into(), "fd00::1".parse().unwrap()),
                ("db.internal".into(), "10.1.2.3".parse().unwrap()),
            ],
            ..NetworkConfig::default()
        };
        let z = LocalZone::new(&cfg);
        let r = ask(&z, "host.docker.internal.", RecordType::A).unwrap();
        assert!(r.answers.is_empty(), "the built-in IPv4 address is gone");
        let r = ask(&z, "host.docker.internal.", RecordType::AAAA).unwrap();
        assert_eq!(addrs(&r), vec!["fd00::1".parse::<IpAddr>().unwrap()]);
        let r = ask(&z, "db.internal.", RecordType::A).unwrap();
        assert_eq!(addrs(&r), vec!["10.1.2.3".parse::<IpAddr>().unwrap()]);
        // Untouched built-ins stay.
        assert!(
            ask(&z, "host.slipway.internal.", RecordType::A).is_some_and(|r| r.answers.len() == 1)
        );
    }

    #[test]
    fn no_host_loopback_removes_host_names() {
        let cfg = NetworkConfig {
            host_loopback_alias: None,
            ..NetworkConfig::default()
        };
        let z = LocalZone::new(&cfg);
        assert!(z.records().iter().all(|(n, _)| !n.starts_with("host.")));
        let r = ask(&z, "host.slipway.internal.", RecordType::A).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(ask(&z, "host.docker.internal.", RecordType::A).is_none());
        assert!(ask(&z, "gateway.docker.internal.", RecordType::A).is_some());
    }

    #[test]
    fn add_remove_records_and_validation() {
        let mut z = LocalZone::default();
        z.add("B.example.", "10.0.0.2".parse().unwrap()).unwrap();
        z.add("a.example", "10.0.0.1".parse().unwrap()).unwrap();
        z.add("a.example", "10.0.0.9".parse().unwrap()).unwrap();
        assert_eq!(
            z.records(),
            vec![
                ("a.example".to_string(), "10.0.0.9".parse().unwrap()),
                ("b.example".to_string(), "10.0.0.2".parse().unwrap()),
            ]
        );
        assert!(z.remove("A.EXAMPLE."));
        assert!(!z.remove("a.example"));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "a/b",
            "ü.example",
            &"a".repeat(64),
            &"a.".repeat(130),
        ] {
            assert!(
                matches!(z.add(bad, ip), Err(DnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        z.add(&format!("{}.x", "a".repeat(63)), ip).unwrap();
        z.add("_srv.example", ip).unwrap();
    }

    #[test]
    fn zone_is_bounded() {
        let mut z = LocalZone::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..MAX_NAMES {
            z.add(&format!("n{i}.test"), ip).unwrap();
        }
        assert_eq!(z.add("one-more.test", ip), Err(DnsError::ZoneFull));
        // Replacing an address of an existing name still works.
        z.add("n0.test", "fd00::1".parse().unwrap()).unwrap();
    }

    #[test]
    fn garbage_and_non_queries_are_errors() {
        let z = zone();
        assert_eq!(z.answer(&[]), Err(DnsError::Malformed));
        assert_eq!(z.answer(&[1, 2, 3]), Err(DnsError::Malformed));
        // A header that promises a question which is not there.
        let mut q = query_bytes("host.docker.internal.", RecordType::A, None);
        assert_eq!(z.answer(&q[..14]), Err(DnsError::Malformed));
        // A compression pointer that points at itself.
        let mut looped = q[..12].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(z.answer(&looped), Err(DnsError::Malformed));
        // A response.
        q[2] |= 0x80;
        assert_eq!(z.answer(&q), Err(DnsError::NotAQuery));
        q[2] &= !0x80;
        // Two questions.
        let mut m = Message::from_vec(&q).unwrap();
        m.add_query(m.queries[0].clone());
        assert_eq!(
            z.answer(&m.to_vec().unwrap()),
            Err(DnsError::QuestionCount(2))
        );
        // Opcode STATUS.
        q[2] = (q[2] & 0x87) | (2 << 3);
        assert_eq!(z.answer(&q), Err(DnsError::NotImplemented(2)));
    }

    #[test]
    fn garbage_never_panics() {
        let z = zone();
        let base = query_bytes("host.docker.internal.", RecordType::A, Some(Edns::new()));
        for i in 0..base.len() {
            for v in [0u8, 0x3f, 0x40, 0xc0, 0xff] {
                let mut m = base.clone();
                m[i] = v;
                let _ = z.answer(&m);
                let _ = servfail(&m);
                let _ = formerr(&m);
                let _ = is_reply_to(&base, &m);
                let _ = max_udp_response_len(&m);
            }
            let _ = z.answer(&base[..i]);
            let _ = servfail(&base[..i]);
        }
    }

    #[test]
    fn edns_is_echoed_and_bad_versions_refused() {
        let z = zone();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        edns.set_dnssec_ok(true);
        let q = query_bytes("host.docker.internal.", RecordType::A, Some(edns.clone()));
        assert_eq!(max_udp_response_len(&q), 4096);
        let r = Message::from_vec(&z.answer(&q).unwrap().unwrap()).unwrap();
        let opt = r.edns.expect("OPT in the reply");
        assert!(opt.flags().dnssec_ok);
        assert_eq!(opt.max_payload(), ADVERTISED_UDP_PAYLOAD);
        edns.set_version(1);
        let q = query_bytes("host.docker.internal.", RecordType::A, Some(edns));
        let r = Message::from_vec(&z.answer(&q).unwrap().unwrap()).unwrap();
        // BADVERS and BADSIG share the value 16; hickory decodes it as BADSIG.
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert!(r.answers.is_empty());
        assert_eq!(
            max_udp_response_len(&query_bytes("a.test.", RecordType::A, None)),
            512
        );
    }

    #[test]
    fn error_replies_keep_id_and_question() {
        let q = query_bytes("forwarded.test.", RecordType::AAAA, None);
        let r = Message::from_vec(&servfail(&q).unwrap()).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.queries.len(), 1);
        assert_eq!(r.queries[0].query_type(), RecordType::AAAA);
        assert!(is_reply_to(&q, &servfail(&q).unwrap()));
        // FORMERR falls back to the header alone; SERVFAIL needs the question.
        let r = Message::from_vec(&formerr(&q[..12]).unwrap()).unwrap();
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert!(r.queries.is_empty());
        assert!(servfail(&q[..12]).is_none());
        assert!(formerr(&q[..11]).is_none());
        let r = Message::from_vec(&notimp(&q).unwrap()).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        // Never answer a response.
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(servfail(&resp).is_none());
        assert!(formerr(&resp).is_none());
    }

    #[test]
    fn header_edits() {
        let mut q = query_bytes("forwarded.test.", RecordType::A, None);
        assert_eq!(message_id(&q), Some(0x1234));
        assert!(set_message_id(&mut q, 0xbeef));
        assert_eq!(message_id(&q), Some(0xbeef));
        assert!(!set_message_id(&mut [0u8; 5], 1));
        assert_eq!(message_id(&[0u8; 11]), None);
        assert!(!is_truncated(&q));
        let mut m = Message::from_vec(&q).unwrap();
        m.metadata.message_type = MessageType::Response;
        m.metadata.truncation = true;
        m.metadata.response_code = ResponseCode::Refused;
        let r = m.to_vec().unwrap();
        assert!(is_truncated(&r));
        assert_eq!(response_code(&r), Some(ResponseCode::Refused));
        assert!(is_reply_to(&q, &r));
        // Different id, different question, or not a response: not a reply.
        let mut other = r.clone();
        set_message_id(&mut other, 1);
        assert!(!is_reply_to(&q, &other));
        let other = query_bytes("another.test.", RecordType::A, None);
        let mut other_resp = other.clone();
        other_resp[2] |= 0x80;
        set_message_id(&mut other_resp, 0xbeef);
        assert!(!is_reply_to(&q, &other_resp));
        assert!(!is_reply_to(&q, &q));
        // Case differences (DNS 0x20) still match.
        let mut upper = query_bytes("FORWARDED.Test.", RecordType::A, None);
        upper[2] |= 0x80;
        set_message_id(&mut upper, 0xbeef);
        assert!(is_reply_to(&q, &upper));
    }
}
