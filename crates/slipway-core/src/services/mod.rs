//! Services the gateway offers to guests: DHCPv4, DHCPv6 and DNS message handling.

pub mod dhcp4;
pub mod dhcp6;
pub mod dns;

/// The usable entries of a DNS search list, as both DHCP servers hand it out: trimmed, without
/// a trailing dot, plain DNS names only (letters, digits, `-`, `_`), no duplicates (ignoring
/// case), at most `max`.
pub(crate) fn plain_search_domains(domains: &[String], max: usize) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for domain in domains {
        if out.len() == max {
            break;
        }
        let domain = domain.trim();
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if is_plain_domain(domain) && !out.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            out.push(domain);
        }
    }
    out
}

/// A DNS name of letters, digits, `-` and `_`: labels of 1–63 bytes, at most 253 bytes.
fn is_plain_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
