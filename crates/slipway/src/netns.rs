//! Attaching a network namespace as a guest through a TAP device that slipway creates itself.
//!
//! # Theory of operation
//!
//! A container's network namespace has no NIC of its own. slipway gives it one the way pasta and
//! slirp4netns do: it creates a TAP device *inside* that namespace, configures it over rtnetlink,
//! and keeps the TAP's file descriptor. Every frame the namespace's kernel sends out of the TAP
//! is then readable on that fd, and every frame slipway writes to it arrives as if received on
//! the wire; to the core the namespace is one more guest on the switch.
//!
//! [`open_tap`] does this in order:
//! 1. validate the [`TapSetup`] and open the namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`)
//!    in the calling thread, so that a wrong path is reported before anything else happens;
//! 2. spawn a short-lived thread that `setns(CLONE_NEWNET)`s into the namespace. Only that thread
//!    changes namespace; it exits when done, so the caller's namespace never changes;
//! 3. on that thread, open `/dev/net/tun` and `TUNSETIFF` with `IFF_TAP | IFF_NO_PI |
//!    IFF_VNET_HDR | IFF_TUN_EXCL` (a TUN/TAP device belongs to the namespace of the thread that
//!    opened `/dev/net/tun`; `IFF_TUN_EXCL` refuses to attach to an existing device of the same
//!    name; the vnet header carries checksum offload, see `link::tap`);
//! 4. open an `AF_NETLINK`/`NETLINK_ROUTE` socket there too (a netlink socket talks to the
//!    namespace it was created in) and send, each with `NLM_F_ACK` and its acknowledgement checked:
//!    `RTM_NEWLINK` for `lo` (up), `RTM_NEWLINK` for the TAP (MTU, MAC, up), `RTM_NEWADDR`
//!    (address/prefix, broadcast) and `RTM_NEWROUTE` (default route via the gateway);
//! 5. hand the TAP fd (non-blocking, close-on-exec) back to the caller. The device is not
//!    persistent: it disappears when the last copy of the fd is closed, including when a later step
//!    fails, so a failed `open_tap` leaves nothing behind.
//!
//! IPv6 is left alone: the kernel gives the TAP a link-local address and runs DAD and router
//! solicitation on it, which the core answers (or ignores) like any other guest's.
//!
//! Netlink messages are built as bytes with explicit native-endian writes (netlink uses host byte
//! order; addresses are in network order) and acknowledgements are parsed through length-checked
//! slices, so a malformed answer is an error, never a panic.
//!
//! # User namespaces
//!
//! Unprivileged use (rootless containers) needs to join the user namespace that owns the network
//! namespace first. `setns(CLONE_NEWUSER)` is refused for a multi-threaded process, so
//! [`open_tap_with_userns`] runs a helper: slipway's own executable again (`/proc/self/exe
//! __tap-helper …`, a fresh single-threaded process), which joins the user namespace, then the
//! network namespace, creates and configures the TAP exactly as above, and passes the fd back
//! over a seqpacket socket pair with `SCM_RIGHTS` (or the error's text), then exits.
//! [`open_tap_joining`] tries without the helper first: root needs no user namespace.
//!
//! # Limits
//!
//! - TAP name: 1 to 15 bytes (`IFNAMSIZ - 1`) of `A-Z a-z 0-9 - _ .`, not `.` or `..`.
//! - MTU: 68 to 65521 (the kernel's limits for a TAP: IPv4 minimum, 65535 minus the Ethernet header).
//! - IPv4 only for the address and default route; prefix 1 to 32.
//! - Netlink: one request in flight; receive buffer 8 KiB (`NETLINK_CAP_ACK` keeps acks small);
//!   at most 16 datagrams read per request while waiting for its ack; 5 s receive timeout.
//! - Kernel error text (extended ack) is cut to 200 characters.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::Duration;

/// The longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_TAP_NAME_LEN: usize = 15;
/// The smallest MTU accepted for the TAP (the IPv4 minimum).
pub const MIN_TAP_MTU: u16 = 68;
/// The largest MTU the kernel accepts for a TAP (65535 minus the 14-byte Ethernet header).
pub const MAX_TAP_MTU: u16 = 65521;
/// Where `ip netns` keeps named network namespaces.
pub const NAMED_NETNS_DIR: &str = "/run/netns";

const TUN_DEVICE: &str = "/dev/net/tun";
/// `sizeof(struct ifreq)` on 64-bit Linux; the kernel reads less on 32-bit, which is harmless.
const IFREQ_LEN: usize = 40;
/// Offset of `ifr_flags` (a C `short`) inside `struct ifreq`, right after the name.
const IFREQ_FLAGS_OFFSET: usize = 16;

const NETLINK_RECV_BUFFER: usize = 8192;
const NETLINK_MAX_DATAGRAMS_PER_REQUEST: usize = 16;
const NETLINK_ACK_TIMEOUT: Duration = Duration::from_secs(5);
const KERNEL_MESSAGE_MAX_CHARS: usize = 200;

// Kernel ABI numbers from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>,
// <linux/if_addr.h>. They are part of the stable user-space ABI.
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an ack: the echoed request was cut to its header (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an ack: extended-ack attributes follow the echoed request (`NETLINK_EXT_ACK`).
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// ifaddrmsg flag: no duplicate address detection.
const IFA_F_NODAD: u8 = 0x02;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// Which network namespace to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// The namespace of a running process: `/proc/PID/ns/net`.
    Pid(u32),
    /// A namespace file such as `/run/netns/NAME` (made by `ip netns add`) or `/proc/PID/ns/net`.
    Path(PathBuf),
}

impl NetnsTarget {
    /// The namespace file that is opened for this target.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsTarget::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            NetnsTarget::Path(path) => path.clone(),
        }
    }
}

impl FromStr for NetnsTarget {
    type Err = NetnsError;

    /// All digits: a PID. Contains a `/`: a path. Otherwise the name of a namespace in
    /// `/run/netns` (as `ip netns` names them).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetnsError::BadTarget(s.to_string());
        if s.is_empty() || s.contains('\0') {
            return Err(bad());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(pid) if pid > 0 => Ok(NetnsTarget::Pid(pid)),
                _ => Err(bad()),
            };
        }
        if s.contains('/') {
            return Ok(NetnsTarget::Path(PathBuf::from(s)));
        }
        if s == "." || s == ".." {
            return Err(bad());
        }
        Ok(NetnsTarget::Path(Path::new(NAMED_NETNS_DIR).join(s)))
    }
}

impl fmt::Display for NetnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsTarget::Pid(pid) => write!(f, "PID {pid}"),
            NetnsTarget::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How the TAP device inside the namespace is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSetup {
    /// The interface name inside the namespace (default `tap0`).
    pub name: String,
    /// The TAP's MTU; should match the network's MTU.
    pub mtu: u16,
    /// The guest's MAC: the TAP interface's own address inside the namespace.
    pub mac: [u8; 6],
    /// Address and prefix length to configure; `None` leaves the TAP unconfigured (the guest
    /// side runs a DHCP client).
    pub address: Option<(Ipv4Addr, u8)>,
    /// Add a default route via this address (needs `address`, and must lie inside its subnet).
    pub gateway: Option<Ipv4Addr>,
    /// An IPv6 address (a /64, its SLAAC address) to configure at once, without duplicate
    /// address detection, and the router's link-local address for a default route. `None`
    /// leaves IPv6 to the kernel's autoconfiguration from router advertisements.
    pub ipv6: Option<(Ipv6Addr, Ipv6Addr)>,
    /// Refuse a device of the same name that already exists (`IFF_TUN_EXCL`). slirp4netns
    /// attaches to an existing one (rootlesskit creates `tap0` before starting it).
    pub exclusive: bool,
    /// Bring `lo` and the TAP up and set MTU, MAC, address and route. Without it nothing is
    /// configured (slirp4netns without `--configure`: the namespace's owner does it).
    pub configure: bool,
}

impl TapSetup {
    /// The default name of the TAP device.
    pub const DEFAULT_NAME: &'static str = "tap0";
    /// The default MTU.
    pub const DEFAULT_MTU: u16 = 1500;

    /// A TAP named `tap0` with MTU 1500 and `mac`, left unconfigured (for DHCP).
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            name: Self::DEFAULT_NAME.to_string(),
            mtu: Self::DEFAULT_MTU,
            mac,
            address: None,
            gateway: None,
            ipv6: None,
            exclusive: true,
            configure: true,
        }
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), NetnsError> {
        validate_tap_name(&self.name)?;
        if let Some((address, gateway)) = self.ipv6 {
            if address.is_multicast() || address.is_loopback() || address.is_unspecified() {
                return Err(NetnsError::BadSetup(format!(
                    "TAP IPv6 address {address}: must be a unicast address"
                )));
            }
            if gateway.segments()[0] & 0xffc0 != 0xfe80 {
                return Err(NetnsError::BadSetup(format!(
                    "IPv6 gateway {gateway}: must be the router's link-local (fe80::/10) address"
                )));
            }
        }
        if !(MIN_TAP_MTU..=MAX_TAP_MTU).contains(&self.mtu) {
            return Err(NetnsError::BadSetup(format!(
                "TAP MTU {}: must be between {MIN_TAP_MTU} and {MAX_TAP_MTU}",
                self.mtu
            )));
        }
        if self.mac[0] & 1 != 0 {
            return Err(NetnsError::BadSetup(format!(
                "TAP MAC {}: must be a unicast address (lowest bit of the first byte clear)",
                format_mac(&self.mac)
            )));
        }
        if self.mac == [0; 6] {
            return Err(NetnsError::BadSetup(
                "TAP MAC 00:00:00:00:00:00: choose a real address (e.g. a random locally administered one)"
                    .to_string(),
            ));
        }
        let Some((address, prefix)) = self.address else {
            if let Some(gateway) = self.gateway {
                return Err(NetnsError::BadSetup(format!(
                    "gateway {gateway} without an address: give the TAP an address in the gateway's subnet, or leave the gateway unset and let DHCP configure both"
                )));
            }
            return Ok(());
        };
        if !(1..=32).contains(&prefix) {
            return Err(NetnsError::BadSetup(format!(
                "TAP address {address}/{prefix}: the prefix length must be between 1 and 32"
            )));
        }
        if address.is_unspecified()
            || address.is_broadcast()
            || address.is_multicast()
            || address.is_loopback()
        {
            return Err(NetnsError::BadSetup(format!(
                "TAP address {address}: must be a unicast address outside 127.0.0.0/8"
            )));
        }
        let mask = prefix_mask(prefix);
        let host_bits = u32::from(address) & !mask;
        if prefix <= 30 && (host_bits == 0 || host_bits == !mask) {
            return Err(NetnsError::BadSetup(format!(
                "TAP address {address}/{prefix} is the subnet's network or broadcast address: choose a host address"
            )));
        }
        if let Some(gateway) = self.gateway {
            if gateway == address {
                return Err(NetnsError::BadSetup(format!(
                    "gateway {gateway} is the TAP's own address: use the router's address"
                )));
            }
            if u32::from(gateway) & mask != u32::from(address) & mask {
                return Err(NetnsError::BadSetup(format!(
                    "gateway {gateway} is outside {address}/{prefix}: choose a gateway inside the TAP's subnet"
                )));
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong attaching a namespace; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("'{0}' is not a network namespace: give a PID (e.g. 1234), a name from /run/netns, or a path such as /run/netns/NAME or /proc/PID/ns/net")]
    BadTarget(String),
    #[error("TAP name '{name}': {reason}")]
    BadTapName { name: String, reason: &'static str },
    #[error("{0}")]
    BadSetup(String),
    #[error("no network namespace at {}: {hint}", path.display())]
    NoNamespace { path: PathBuf, hint: String },
    #[error("{} is not a network namespace: give /run/netns/NAME, /proc/PID/ns/net or a PID (a leftover file under /run/netns is stale: recreate it with `ip netns add`)", path.display())]
    NotANamespace { path: PathBuf },
    #[error("permission denied entering the network namespace at {}: this needs CAP_SYS_ADMIN over that namespace; run slipway as root, or as the user owning the namespace's user namespace (slirp4netns mode joins it: give --userns-path)", path.display())]
    NamespacePermission { path: PathBuf },
    #[error("/dev/net/tun is missing or the tun driver is not loaded: load it (`modprobe tun`), or pass the device into the container (e.g. `--device /dev/net/tun`)")]
    TunMissing,
    #[error("permission denied opening /dev/net/tun: it must be readable and writable by this user (mode 0666, as udev makes it on most distributions: `chmod 0666 /dev/net/tun` as root), or run slipway as root")]
    TunDeviceAccess,
    #[error("permission denied {action}: this needs CAP_NET_ADMIN in the target namespace; run slipway as root")]
    TunPermission { action: &'static str },
    #[error("an interface named '{name}' already exists in the network namespace at {}: choose another TAP name, or delete it (`ip link del {name}` inside the namespace)", path.display())]
    NameTaken { name: String, path: PathBuf },
    #[error("joining the user namespace at {}: {reason}", path.display())]
    Userns { path: PathBuf, reason: String },
    /// The helper process reported this (its message is already for a person).
    #[error("{0}")]
    Helper(String),
    #[error("{step} failed: {reason}")]
    Netlink {
        step: String,
        reason: String,
        /// The errno the kernel answered (0 when the answer itself was unusable).
        errno: i32,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the namespace setup thread panicked: this is a bug in slipway, please report it")]
    ThreadPanicked,
}

/// Opens a TAP device named `setup.name` inside the target namespace (`IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`),
/// brings `lo` and the TAP up, sets MTU, MAC, address and default route via rtnetlink, and
/// returns the TAP fd (non-blocking, close-on-exec). The namespace is entered on a short-lived
/// thread, so the calling thread's namespace never changes. On error nothing is left behind.
pub fn open_tap(target: &NetnsTarget, setup: &TapSetup) -> Result<OwnedFd, NetnsError> {
    open_tap_with_userns(target, None, setup)
}

/// [`open_tap`], first joining the user namespace at `userns` (e.g. `/proc/PID/ns/user`)
/// through the helper process (see the module's docs).
pub fn open_tap_with_userns(
    target: &NetnsTarget,
    userns: Option<&Path>,
    setup: &TapSetup,
) -> Result<OwnedFd, NetnsError> {
    if let Some(userns) = userns {
        setup.validate()?;
        return helper::open_tap(userns, &target.path(), setup);
    }
    setup.validate()?;
    let namespace = open_namespace_file(target)?;
    let path = target.path();
    let setup = setup.clone();
    let worker = thread::Builder::new()
        .name("slipway-netns".to_string())
        .spawn(move || configure_in_namespace(namespace, &path, &setup))
        .map_err(|source| NetnsError::Io {
            context: "starting the namespace setup thread".to_string(),
            source,
        })?;
    worker.join().map_err(|_| NetnsError::ThreadPanicked)?
}

/// [`open_tap`] directly when that is allowed (root), else through `userns` (slirp4netns's
/// behaviour: it joins the target's user namespace).
pub fn open_tap_joining(
    target: &NetnsTarget,
    userns: Option<&Path>,
    setup: &TapSetup,
) -> Result<OwnedFd, NetnsError> {
    match open_tap(target, setup) {
        Err(e @ (NetnsError::NamespacePermission { .. } | NetnsError::TunPermission { .. })) => {
            match userns {
                Some(userns) => {
                    tracing::debug!("{e}; joining the user namespace {} first", userns.display());
                    open_tap_with_userns(target, Some(userns), setup)
                }
                None => Err(e),
            }
        }
        other => other,
    }
}

/// A random locally administered unicast MAC address (from `getrandom`, else `/dev/urandom`).
pub fn tap_mac_random() -> [u8; 6] {
    let mut mac = [0u8; 6];
    fill_random(&mut mac);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

fn fill_random(buf: &mut [u8; 6]) {
    loop {
        // SAFETY: `buf` is a valid, writable buffer of exactly `buf.len()` bytes for the call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == buf.len() as isize {
            return;
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break;
    }
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_ok()
    {
        return;
    }
    // Neither source works (a very restricted sandbox): fall back to std's per-process random
    // hash keys mixed with the time. A MAC only needs to be unlikely to collide, not secret.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    buf.copy_from_slice(&hasher.finish().to_ne_bytes()[..6]);
}

pub fn validate_tap_name(name: &str) -> Result<(), NetnsError> {
    let bad = |reason| {
        Err(NetnsError::BadTapName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > MAX_TAP_NAME_LEN {
        return bad("must be at most 15 bytes long");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return bad("may contain only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

fn prefix_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

/// Opens the namespace file in the calling thread, turning the common failures into advice.
fn open_namespace_file(target: &NetnsTarget) -> Result<OwnedFd, NetnsError> {
    let path = target.path();
    // O_NONBLOCK: a FIFO given by mistake must not hang the open; setns() then rejects it.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path);
    match opened {
        Ok(file) => Ok(OwnedFd::from(file)),
        Err(err) => match errno_of(&err) {
            libc::ENOENT | libc::ENOTDIR => Err(NetnsError::NoNamespace {
                hint: missing_namespace_hint(target),
                path,
            }),
            libc::EACCES | libc::EPERM => Err(NetnsError::NamespacePermission { path }),
            _ => Err(NetnsError::Io {
                context: format!("opening the network namespace at {}", path.display()),
                source: err,
            }),
        },
    }
}

fn missing_namespace_hint(target: &NetnsTarget) -> String {
    match target {
        NetnsTarget::Pid(pid) => format!(
            "no process with PID {pid} (it may have exited); check the PID, or give a path such as /run/netns/NAME"
        ),
        NetnsTarget::Path(path) => {
            let named = path.parent() == Some(Path::new(NAMED_NETNS_DIR));
            match path.file_name().and_then(|n| n.to_str()) {
                Some(name) if named => {
                    format!("create it with `ip netns add {name}`, or give a PID")
                }
                _ => "check the path, or give a PID or a path such as /run/netns/NAME".to_string(),
            }
        }
    }
}

/// The executable the helper is started from: this one.
const HELPER_EXE: &str = "/proc/self/exe";
/// The helper's first argument.
pub const HELPER_ARG: &str = "__tap-helper";

/// The user-namespace helper: the parent's side ([`helper::open_tap`]) and the helper's own
/// ([`helper::main`]).
pub mod helper {
    use super::*;
    use std::os::fd::{FromRawFd, RawFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// The fd the helper finds its end of the socket pair on.
    const HELPER_FD: RawFd = 3;
    const MAX_MESSAGE: usize = 1024;

    /// The helper's arguments (after [`HELPER_ARG`]).
    pub fn encode(userns: &Path, netns: &Path, s: &TapSetup) -> Vec<String> {
        let dash = || "-".to_string();
        vec![
            userns.display().to_string(),
            netns.display().to_string(),
            s.name.clone(),
            s.mtu.to_string(),
            format_mac(&s.mac),
            s.address
                .map(|(a, p)| format!("{a}/{p}"))
                .unwrap_or_else(dash),
            s.gateway.map(|g| g.to_string()).unwrap_or_else(dash),
            s.ipv6.map(|(a, g)| format!("{a},{g}")).unwrap_or_else(dash),
            u8::from(s.exclusive).to_string(),
            u8::from(s.configure).to_string(),
        ]
    }

    pub fn decode(args: &[String]) -> Result<(PathBuf, PathBuf, TapSetup), String> {
        let [userns, netns, name, mtu, mac, address, gateway, ipv6, exclusive, configure] = args
        else {
            return Err(format!("expected 10 arguments, got {}", args.len()));
        };
        let bad = |what: &str, v: &str| format!("bad {what}: {v}");
        let mut m = [0u8; 6];
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6 {
            return Err(bad("MAC", mac));
        }
        for (b, p) in m.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| bad("MAC", mac))?;
        }
        let address = match address.as_str() {
            "-" => None,
            a => {
                let (ip, prefix) = a.split_once('/').ok_or_else(|| bad("address", a))?;
                Some((
                    ip.parse().map_err(|_| bad("address", a))?,
                    prefix.parse().map_err(|_| bad("address", a))?,
                ))
            }
        };
        let gateway = match gateway.as_str() {
            "-" => None,
            g => Some(g.parse().map_err(|_| bad("gateway", g))?),
        };
        let ipv6 = match ipv6.as_str() {
            "-" => None,
            v => {
                let (a, g) = v.split_once(',').ok_or_else(|| bad("IPv6 setup", v))?;
                Some((
                    a.parse().map_err(|_| bad("IPv6 address", a))?,
                    g.parse().map_err(|_| bad("IPv6 gateway", g))?,
                ))
            }
        };
        Ok((
            PathBuf::from(userns),
            PathBuf::from(netns),
            TapSetup {
                name: name.clone(),
                mtu: mtu.parse().map_err(|_| bad("MTU", mtu))?,
                mac: m,
                address,
                gateway,
                ipv6,
                exclusive: exclusive == "1",
                configure: configure == "1",
            },
        ))
    }

    /// Run the helper and take the TAP fd it sends.
    pub fn open_tap(userns: &Path, netns: &Path, setup: &TapSetup) -> Result<OwnedFd, NetnsError> {
        open_tap_with_exe(Path::new(HELPER_EXE), userns, netns, setup)
    }

    pub fn open_tap_with_exe(
        exe: &Path,
        userns: &Path,
        netns: &Path,
        setup: &TapSetup,
    ) -> Result<OwnedFd, NetnsError> {
        let io = |context: &str| {
            let context = context.to_string();
            move |source| NetnsError::Io { context, source }
        };
        let (ours, theirs) = seqpacket_pair().map_err(io("creating the helper's socket pair"))?;
        let their_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg(HELPER_ARG)
            .args(encode(userns, netns, setup))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only dup2/fcntl between fork and exec, both async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if their_fd == HELPER_FD {
                    let flags = libc::fcntl(HELPER_FD, libc::F_GETFD);
                    libc::fcntl(HELPER_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(their_fd, HELPER_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(io("starting the user-namespace helper"))?;
        drop(theirs);
        let answer = receive(&ours);
        let status = child.wait();
        match answer {
            Ok((_, Some(fd))) => Ok(fd),
            Ok((text, None)) if !text.is_empty() => Err(NetnsError::Helper(text)),
            Ok(_) | Err(_) => Err(NetnsError::Helper(format!(
                "the user-namespace helper ({} {HELPER_ARG}) exited ({}) without an answer",
                exe.display(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string())
            ))),
        }
    }

    pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two fds into the array on success.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds are new and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// One message: its text and the fd it carried, if any.
    pub fn receive(sock: &OwnedFd) -> io::Result<(String, Option<OwnedFd>)> {
        let mut buf = [0u8; MAX_MESSAGE];
        // Room for one cmsghdr with one int, aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg describes valid buffers.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fd = None;
        // SAFETY: the CMSG macros walk the control buffer the kernel filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
                    fd = Some(OwnedFd::from_raw_fd(raw));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
        Ok((text, fd))
    }

    pub fn send(sock: RawFd, text: &str, fd: Option<RawFd>) -> io::Result<()> {
        let bytes = if text.is_empty() { " " } else { text };
        let bytes = &bytes.as_bytes()[..bytes.len().min(MAX_MESSAGE)];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut control = [0u64; 8];
        // SAFETY: a zeroed msghdr is valid; pointers outlive the call; CMSG macros stay in the
        // control buffer, which is large enough for one int.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if let Some(fd) = fd {
                let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
                msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = space as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
            }
            if libc::sendmsg(sock, &msg, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The helper process: `slipway __tap-helper ARGS…` with its socket on fd 3. Returns the
    /// exit code.
    pub fn main(args: &[String]) -> i32 {
        let result = decode(args)
            .map_err(|e| format!("user-namespace helper: {e}"))
            .and_then(|(userns, netns, setup)| {
                run(&userns, &netns, &setup).map_err(|e| e.to_string())
            });
        let sent = match &result {
            Ok(fd) => send(HELPER_FD, "", Some(fd.as_raw_fd())),
            Err(text) => send(HELPER_FD, text, None),
        };
        match (result, sent) {
            (Ok(_), Ok(())) => 0,
            (Err(text), _) => {
                eprintln!("{text}");
                1
            }
            (Ok(_), Err(e)) => {
                eprintln!("user-namespace helper: cannot pass the TAP back: {e}");
                1
            }
        }
    }

    fn run(userns: &Path, netns: &Path, setup: &TapSetup) -> Result<OwnedFd, NetnsError> {
        let file = File::open(userns).map_err(|e| NetnsError::Userns {
            path: userns.to_path_buf(),
            reason: format!("cannot open it: {e}"),
        })?;
        // SAFETY: setns on an fd we just opened; this process is single-threaded.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWUSER) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // EINVAL: already in that user namespace, which is fine (as slirp4netns treats it).
            if errno_of(&err) != libc::EINVAL {
                return Err(NetnsError::Userns {
                    path: userns.to_path_buf(),
                    reason: format!(
                        "{err}; only its owner (or root) may join it, and only from a single-threaded process"
                    ),
                });
            }
        }
        let target = NetnsTarget::Path(netns.to_path_buf());
        let namespace = open_namespace_file(&target)?;
        configure_in_namespace(namespace, netns, setup)
    }
}

/// Runs on the short-lived thread: enter the namespace, create and configure the TAP.
fn configure_in_namespace(
    namespace: OwnedFd,
    path: &Path,
    setup: &TapSetup,
) -> Result<OwnedFd, NetnsError> {
    enter_namespace(&namespace, path)?;
    drop(namespace);
    create_and_configure(setup, path)
}

/// Create and configure the TAP in the calling thread's own network namespace (`slipway run`'s
/// child, which made the namespace itself). `setup` must be valid ([`TapSetup::validate`]).
pub fn open_tap_here(setup: &TapSetup) -> Result<OwnedFd, NetnsError> {
    setup.validate()?;
    create_and_configure(setup, Path::new("/proc/self/ns/net"))
}

fn create_and_configure(setup: &TapSetup, path: &Path) -> Result<OwnedFd, NetnsError> {
    let tap = create_tap(&setup.name, setup.exclusive, path)?;
    if !setup.configure {
        tracing::debug!(tap = %setup.name, namespace = %path.display(), "TAP device opened, left unconfigured");
        return Ok(tap);
    }
    let tap_index = interface_index(&setup.name)?;
    let lo_index = interface_index("lo")?;
    let mut rtnl = RouteSocket::open()?;
    rtnl.request("bringing up lo", NetlinkStep::Link, |seq| {
        link_message(seq, lo_index, None, None)
    })?;
    let step = format!(
        "setting MTU {}, MAC {} and up on {}",
        setup.mtu,
        format_mac(&setup.mac),
        setup.name
    );
    rtnl.request(&step, NetlinkStep::Link, |seq| {
        link_message(seq, tap_index, Some(setup.mtu), Some(setup.mac))
    })?;
    if let Some((address, prefix)) = setup.address {
        let step = format!("adding address {address}/{prefix} to {}", setup.name);
        rtnl.request(&step, NetlinkStep::Address, |seq| {
            address_message(seq, tap_index, address, prefix)
        })?;
    }
    if let Some(gateway) = setup.gateway {
        let step = format!("adding a default route via {gateway} on {}", setup.name);
        rtnl.request(&step, NetlinkStep::Route, |seq| {
            default_route_message(seq, tap_index, gateway)
        })?;
    }
    if let Some((address, gateway)) = setup.ipv6 {
        let step = format!("adding address {address}/64 to {}", setup.name);
        rtnl.request(&step, NetlinkStep::Address, |seq| {
            address6_message(seq, tap_index, address)
        })?;
        let step = format!(
            "adding a default IPv6 route via {gateway} on {}",
            setup.name
        );
        rtnl.request(&step, NetlinkStep::Route, |seq| {
            default_route6_message(seq, tap_index, gateway)
        })?;
    }
    tracing::debug!(
        tap = %setup.name,
        index = tap_index,
        namespace = %path.display(),
        "TAP device created and configured"
    );
    Ok(tap)
}

fn enter_namespace(namespace: &OwnedFd, path: &Path) -> Result<(), NetnsError> {
    // SAFETY: `namespace` is an open fd owned by the caller for the duration of the call; setns
    // only changes the calling thread's network namespace.
    let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    let path = path.to_path_buf();
    match errno_of(&err) {
        libc::EPERM | libc::EACCES => Err(NetnsError::NamespacePermission { path }),
        libc::EINVAL => Err(NetnsError::NotANamespace { path }),
        _ => Err(NetnsError::Io {
            context: format!("entering the network namespace at {}", path.display()),
            source: err,
        }),
    }
}

/// `struct ifreq` for `TUNSETIFF`: the NUL-padded name, then the flags as a native `short`.
fn tap_ifreq(name: &str, exclusive: bool) -> [u8; IFREQ_LEN] {
    let mut ifreq = [0u8; IFREQ_LEN];
    let name = name.as_bytes();
    let len = name.len().min(MAX_TAP_NAME_LEN);
    ifreq[..len].copy_from_slice(&name[..len]);
    let excl = if exclusive { libc::IFF_TUN_EXCL } else { 0 };
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | excl) as u16;
    ifreq[IFREQ_FLAGS_OFFSET..IFREQ_FLAGS_OFFSET + 2].copy_from_slice(&flags.to_ne_bytes());
    ifreq
}

/// Creates the TAP in the current thread's network namespace.
fn create_tap(name: &str, exclusive: bool, namespace: &Path) -> Result<OwnedFd, NetnsError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_DEVICE)
        .map_err(|err| match errno_of(&err) {
            libc::ENOENT | libc::ENODEV | libc::ENXIO => NetnsError::TunMissing,
            libc::EACCES | libc::EPERM => NetnsError::TunDeviceAccess,
            _ => NetnsError::Io {
                context: format!("opening {TUN_DEVICE}"),
                source: err,
            },
        })?;
    let fd = OwnedFd::from(file);
    let mut ifreq = tap_ifreq(name, exclusive);
    // SAFETY: `fd` is an open /dev/net/tun fd; TUNSETIFF reads and writes at most
    // sizeof(struct ifreq) bytes, and `ifreq` is a writable buffer at least that large.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) };
    if rc == 0 {
        return Ok(fd);
    }
    let err = io::Error::last_os_error();
    Err(match errno_of(&err) {
        libc::EBUSY | libc::EEXIST => NetnsError::NameTaken {
            name: name.to_string(),
            path: namespace.to_path_buf(),
        },
        libc::EPERM | libc::EACCES => NetnsError::TunPermission {
            action: "creating a TAP device",
        },
        _ => NetnsError::Io {
            context: format!("creating TAP device {name}"),
            source: err,
        },
    })
}

fn interface_index(name: &str) -> Result<u32, NetnsError> {
    let c_name = CString::new(name).map_err(|_| NetnsError::BadTapName {
        name: name.to_string(),
        reason: "must not contain NUL",
    })?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(NetnsError::Io {
            context: format!("looking up the index of interface {name}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(index)
}

/// A netlink message under construction: header, family header, attributes; native endian.
struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, written by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills it in
        Self { buf }
    }

    fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.push(value);
        self
    }

    fn u16(&mut self, value: u16) -> &mut Self {
        self.buf.extend_from_slice(&value.to_ne_bytes());
        self
    }

    fn u32(&mut self, value: u32) -> &mut Self {
        self.buf.extend_from_slice(&value.to_ne_bytes());
        self
    }

    /// One `rtattr`/`nlattr`: length, type, payload, padded to 4 bytes.
    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.u16(len).u16(kind);
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// `RTM_NEWLINK` on an existing interface: set it up, optionally with MTU and MAC.
fn link_message(seq: u32, index: u32, mtu: Option<u16>, mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut m = MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    // struct ifinfomsg: family, pad, type, index, flags, change.
    m.u8(AF_UNSPEC)
        .u8(0)
        .u16(0)
        .u32(index)
        .u32(IFF_UP)
        .u32(IFF_UP);
    if let Some(mtu) = mtu {
        m.attr(IFLA_MTU, &u32::from(mtu).to_ne_bytes());
    }
    if let Some(mac) = mac {
        m.attr(IFLA_ADDRESS, &mac);
    }
    m.finish()
}

/// `RTM_NEWADDR`: `address/prefix` on `index`, with the subnet broadcast for prefixes up to /30.
fn address_message(seq: u32, index: u32, address: Ipv4Addr, prefix: u8) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = MessageBuilder::new(RTM_NEWADDR, flags, seq);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    m.u8(AF_INET)
        .u8(prefix)
        .u8(0)
        .u8(RT_SCOPE_UNIVERSE)
        .u32(index);
    m.attr(IFA_LOCAL, &address.octets());
    m.attr(IFA_ADDRESS, &address.octets());
    if prefix <= 30 {
        let broadcast = Ipv4Addr::from(u32::from(address) | !prefix_mask(prefix));
        m.attr(IFA_BROADCAST, &broadcast.octets());
    }
    m.finish()
}

/// `RTM_NEWROUTE`: `default via gateway dev index` in the main table.
fn default_route_message(seq: u32, index: u32, gateway: Ipv4Addr) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = MessageBuilder::new(RTM_NEWROUTE, flags, seq);
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    m.u8(AF_INET)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(RT_TABLE_MAIN)
        .u8(RTPROT_STATIC)
        .u8(RT_SCOPE_UNIVERSE)
        .u8(RTN_UNICAST)
        .u32(0);
    m.attr(RTA_GATEWAY, &gateway.octets());
    m.attr(RTA_OIF, &index.to_ne_bytes());
    m.finish()
}

/// `RTM_NEWADDR`: IPv6 `address/64` on `index`, usable at once (`IFA_F_NODAD`): slipway is
/// the only other node on the link and owns none of the guest's addresses.
fn address6_message(seq: u32, index: u32, address: Ipv6Addr) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = MessageBuilder::new(RTM_NEWADDR, flags, seq);
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    m.u8(AF_INET6)
        .u8(64)
        .u8(IFA_F_NODAD)
        .u8(RT_SCOPE_UNIVERSE)
        .u32(index);
    m.attr(IFA_LOCAL, &address.octets());
    m.attr(IFA_ADDRESS, &address.octets());
    m.finish()
}

/// `RTM_NEWROUTE`: `default via gateway dev index` for IPv6, in the main table.
fn default_route6_message(seq: u32, index: u32, gateway: Ipv6Addr) -> Vec<u8> {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    let mut m = MessageBuilder::new(RTM_NEWROUTE, flags, seq);
    m.u8(AF_INET6)
        .u8(0)
        .u8(0)
        .u8(0)
        .u8(RT_TABLE_MAIN)
        .u8(RTPROT_STATIC)
        .u8(RT_SCOPE_UNIVERSE)
        .u8(RTN_UNICAST)
        .u32(0);
    m.attr(RTA_GATEWAY, &gateway.octets());
    m.attr(RTA_OIF, &index.to_ne_bytes());
    m.finish()
}

/// The kernel's answer to one request.
#[derive(Debug, PartialEq, Eq)]
enum Ack {
    Done,
    Failed {
        errno: i32,
        kernel_message: Option<String>,
    },
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Looks for the ack of request `seq` in one received datagram. `Ok(None)`: not in here.
fn parse_ack(datagram: &[u8], seq: u32) -> Result<Option<Ack>, &'static str> {
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HDR_LEN {
            return Err("netlink message shorter than its header");
        }
        let len = read_u32(rest, 0).ok_or("truncated header")? as usize;
        if len < NLMSG_HDR_LEN || len > rest.len() {
            return Err("netlink message length out of range");
        }
        let kind = read_u16(rest, 4).ok_or("truncated header")?;
        let flags = read_u16(rest, 6).ok_or("truncated header")?;
        let message_seq = read_u32(rest, 8).ok_or("truncated header")?;
        if kind == NLMSG_ERROR && message_seq == seq {
            return parse_error_payload(&rest[NLMSG_HDR_LEN..len], flags).map(Some);
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    Ok(None)
}

/// `struct nlmsgerr` (error, echoed request) followed by extended-ack attributes.
fn parse_error_payload(payload: &[u8], flags: u16) -> Result<Ack, &'static str> {
    let error = read_u32(payload, 0).ok_or("acknowledgement too short")? as i32;
    if error == 0 {
        return Ok(Ack::Done);
    }
    if !(-4095..0).contains(&error) {
        return Err("acknowledgement carries an impossible error code");
    }
    let mut kernel_message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let echoed_len = if flags & NLM_F_CAPPED != 0 {
            Some(NLMSG_HDR_LEN)
        } else {
            read_u32(payload, 4).map(|len| align4(len as usize))
        };
        if let Some(attrs) = echoed_len.and_then(|len| payload.get(4usize.checked_add(len)?..)) {
            kernel_message = find_error_message(attrs);
        }
    }
    Ok(Ack::Failed {
        errno: -error,
        kernel_message,
    })
}

fn find_error_message(mut attrs: &[u8]) -> Option<String> {
    while attrs.len() >= 4 {
        let len = usize::from(read_u16(attrs, 0)?);
        let kind = read_u16(attrs, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &attrs[4..len];
            let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
            let text: String = String::from_utf8_lossy(text)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(KERNEL_MESSAGE_MAX_CHARS)
                .collect();
            return (!text.is_empty()).then_some(text);
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetlinkStep {
    Link,
    Address,
    Route,
}

fn netlink_hint(step: NetlinkStep, errno: i32) -> Option<&'static str> {
    match (step, errno) {
        (_, libc::EPERM | libc::EACCES) => {
            Some("this needs CAP_NET_ADMIN in the target namespace; run slipway as root")
        }
        (NetlinkStep::Route, libc::EEXIST) => Some(
            "the namespace already has a default route: delete it (`ip route del default` inside the namespace) or leave the gateway unset",
        ),
        (NetlinkStep::Route, libc::ENETUNREACH) => {
            Some("the gateway must be reachable inside the TAP's subnet")
        }
        (NetlinkStep::Address, libc::EEXIST) => Some(
            "that address is already configured in the namespace: choose another or leave it unset",
        ),
        (NetlinkStep::Link, libc::EINVAL) => {
            Some("the kernel rejected the MTU or MAC address: check both")
        }
        (NetlinkStep::Link, libc::EADDRNOTAVAIL) => Some("the MAC must be a unicast address"),
        _ => None,
    }
}

fn netlink_failure(
    step: &str,
    kind: NetlinkStep,
    errno: i32,
    kernel_message: Option<String>,
) -> NetnsError {
    let os_text = io::Error::from_raw_os_error(errno).to_string();
    let suffix = format!(" (os error {errno})");
    let mut reason = os_text
        .strip_suffix(&suffix)
        .unwrap_or(&os_text)
        .to_string();
    if let Some(message) = kernel_message {
        reason.push_str(&format!(" (kernel: {message})"));
    }
    if let Some(hint) = netlink_hint(kind, errno) {
        reason.push_str("; ");
        reason.push_str(hint);
    }
    NetnsError::Netlink {
        step: step.to_string(),
        reason,
        errno,
    }
}

/// An rtnetlink socket in the namespace of the thread that opened it; one request at a time.
struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    fn open() -> Result<Self, NetnsError> {
        let io_error = |context: &str| {
            let context = context.to_string();
            move |source| NetnsError::Io { context, source }
        };
        let socket = socket2::Socket::new(
            socket2::Domain::from(libc::AF_NETLINK),
            socket2::Type::RAW,
            Some(socket2::Protocol::from(libc::NETLINK_ROUTE)),
        )
        .map_err(io_error("opening an rtnetlink socket"))?;
        socket
            .set_read_timeout(Some(NETLINK_ACK_TIMEOUT))
            .map_err(io_error("setting the rtnetlink receive timeout"))?;
        let fd = OwnedFd::from(socket);
        // Both are optional comforts (small acks, kernel error text); kernels before 4.3 and
        // 4.12 lack them and the requests work all the same.
        for option in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: `fd` is an open socket; the option value points at a live c_int whose size
            // is passed alongside.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    option,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; NETLINK_RECV_BUFFER],
        })
    }

    /// Sends the message built for the next sequence number and waits for its ack.
    fn request(
        &mut self,
        step: &str,
        kind: NetlinkStep,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), NetnsError> {
        self.seq = self.seq.wrapping_add(1);
        let message = build(self.seq);
        let unusable = |reason: &str| NetnsError::Netlink {
            step: step.to_string(),
            reason: reason.to_string(),
            errno: 0,
        };
        // SAFETY: `message` is a live, initialised buffer of `message.len()` bytes; with no
        // destination address the kernel (port 0) receives it.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            let err = io::Error::last_os_error();
            return Err(netlink_failure(step, kind, errno_of(&err), None));
        }
        if sent as usize != message.len() {
            return Err(unusable("the kernel took only part of the request"));
        }
        let mut datagrams = 0;
        while datagrams < NETLINK_MAX_DATAGRAMS_PER_REQUEST {
            // SAFETY: an all-zero sockaddr_nl is a valid value of this plain C struct.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` is writable for `buf.len()` bytes; `from`/`from_len` describe a
            // writable sockaddr_nl. MSG_TRUNC only changes the returned length.
            let received = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if received < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(unusable(
                            "the kernel did not answer within 5 s; try again, and report it if it persists",
                        ));
                    }
                    _ => return Err(netlink_failure(step, kind, errno_of(&err), None)),
                }
            }
            datagrams += 1;
            let received = received as usize;
            if received > self.buf.len() {
                return Err(unusable(
                    "the kernel's answer did not fit the receive buffer",
                ));
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            match parse_ack(&self.buf[..received], self.seq) {
                Ok(Some(Ack::Done)) => return Ok(()),
                Ok(Some(Ack::Failed {
                    errno,
                    kernel_message,
                })) => return Err(netlink_failure(step, kind, errno, kernel_message)),
                Ok(None) => continue,
                Err(reason) => return Err(unusable(reason)),
            }
        }
        Err(unusable("no acknowledgement from the kernel"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{GuestLink, TapLink};
    use slipway_core::offload::{PartialCsum, RxChecksum};

    fn setup_with(address: Option<(Ipv4Addr, u8)>, gateway: Option<Ipv4Addr>) -> TapSetup {
        TapSetup {
            address,
            gateway,
            ..TapSetup::new([0x02, 0, 0, 0, 0, 1])
        }
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn target_parses_pids_paths_and_names() {
        assert_eq!(
            "1234".parse::<NetnsTarget>().unwrap(),
            NetnsTarget::Pid(1234)
        );
        assert_eq!(
            "/run/netns/x".parse::<NetnsTarget>().unwrap(),
            NetnsTarget::Path("/run/netns/x".into())
        );
        assert_eq!(
            "/proc/42/ns/net".parse::<NetnsTarget>().unwrap(),
            NetnsTarget::Path("/proc/42/ns/net".into())
        );
        assert_eq!(
            "ctr-1".parse::<NetnsTarget>().unwrap(),
            NetnsTarget::Path("/run/netns/ctr-1".into())
        );
        assert_eq!(
            "12a".parse::<NetnsTarget>().unwrap(),
            NetnsTarget::Path("/run/netns/12a".into())
        );
        assert_eq!(
            NetnsTarget::Pid(42).path(),
            PathBuf::from("/proc/42/ns/net")
        );
        assert_eq!(NetnsTarget::Pid(42).to_string(), "PID 42");
    }

    #[test]
    fn target_rejects_nonsense_and_says_what_is_accepted() {
        for bad in ["", "0", "99999999999", ".", "..", "a\0b"] {
            let err = bad.parse::<NetnsTarget>().unwrap_err();
            assert!(matches!(err, NetnsError::BadTarget(_)), "{bad:?}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains("PID") && text.contains("/run/netns/NAME"),
                "{text}"
            );
            assert!(text.contains("/proc/PID/ns/net"), "{text}");
        }
    }

    #[test]
    fn tap_names_are_validated() {
        for good in ["tap0", "slipway-0", "a_b.c", "abcdefghijklmno"] {
            validate_tap_name(good).unwrap();
        }
        for bad in [
            "",
            "abcdefghijklmnop",
            "tap 0",
            "tap/0",
            "tap:0",
            ".",
            "..",
            "tap%d",
            "täp",
        ] {
            let err = validate_tap_name(bad).unwrap_err();
            assert!(matches!(err, NetnsError::BadTapName { .. }), "{bad:?}");
        }
        let mut setup = setup_with(None, None);
        setup.name = "abcdefghijklmnop".into();
        assert!(setup
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at most 15"));
    }

    #[test]
    fn setup_validation_covers_mtu_mac_address_and_gateway() {
        let ok = |s: &TapSetup| s.validate().unwrap();
        let bad = |s: &TapSetup| {
            let err = s.validate().unwrap_err();
            assert!(matches!(err, NetnsError::BadSetup(_)), "{s:?}: {err:?}");
            err.to_string()
        };
        ok(&setup_with(None, None));
        ok(&setup_with(
            Some((v4("192.168.127.2"), 24)),
            Some(v4("192.168.127.1")),
        ));
        ok(&setup_with(
            Some((v4("10.0.0.0"), 31)),
            Some(v4("10.0.0.1")),
        ));
        ok(&setup_with(Some((v4("10.0.0.7"), 32)), None));

        let mut s = setup_with(None, None);
        for (mtu, good) in [(67, false), (68, true), (65521, true), (65522, false)] {
            s.mtu = mtu;
            assert_eq!(s.validate().is_ok(), good, "mtu {mtu}");
        }
        s.mtu = 1500;
        s.mac = [0x03, 0, 0, 0, 0, 1];
        assert!(bad(&s).contains("unicast"));
        s.mac = [0; 6];
        bad(&s);

        assert!(bad(&setup_with(None, Some(v4("192.168.127.1")))).contains("without an address"));
        bad(&setup_with(Some((v4("192.168.127.2"), 0)), None));
        bad(&setup_with(Some((v4("192.168.127.2"), 33)), None));
        bad(&setup_with(Some((v4("192.168.127.0"), 24)), None));
        bad(&setup_with(Some((v4("192.168.127.255"), 24)), None));
        bad(&setup_with(Some((v4("127.0.0.2"), 8)), None));
        bad(&setup_with(Some((v4("224.0.0.1"), 24)), None));
        let text = bad(&setup_with(
            Some((v4("192.168.127.2"), 24)),
            Some(v4("192.168.128.1")),
        ));
        assert!(text.contains("outside"), "{text}");
        bad(&setup_with(
            Some((v4("192.168.127.2"), 24)),
            Some(v4("192.168.127.2")),
        ));
        bad(&setup_with(
            Some((v4("10.0.0.7"), 32)),
            Some(v4("10.0.0.8")),
        ));
    }

    #[test]
    fn random_macs_are_local_unicast_and_differ() {
        let a = tap_mac_random();
        let b = tap_mac_random();
        for mac in [a, b] {
            assert_eq!(mac[0] & 0x01, 0, "unicast");
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
            TapSetup::new(mac).validate().unwrap();
        }
        assert_ne!(a, b);
    }

    #[test]
    fn ifreq_holds_name_and_tap_flags() {
        let ifreq = tap_ifreq("tap0", true);
        let mut expected = [0u8; IFREQ_LEN];
        expected[..4].copy_from_slice(b"tap0");
        // IFF_TAP 0x0002 | IFF_NO_PI 0x1000 | IFF_VNET_HDR 0x4000 | IFF_TUN_EXCL 0x8000 = 0xd002
        expected[16..18].copy_from_slice(&0xd002u16.to_ne_bytes());
        assert_eq!(ifreq, expected);
        // Attaching to an existing device: no IFF_TUN_EXCL.
        expected[16..18].copy_from_slice(&0x5002u16.to_ne_bytes());
        assert_eq!(tap_ifreq("tap0", false), expected);
        let long = tap_ifreq("abcdefghijklmno", true);
        assert_eq!(&long[..15], b"abcdefghijklmno");
        assert_eq!(long[15], 0, "name stays NUL-terminated");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn link_message_bytes() {
        let expected: Vec<u8> = vec![
            52, 0, 0, 0, // nlmsg_len
            16, 0, // RTM_NEWLINK
            5, 0, // NLM_F_REQUEST | NLM_F_ACK
            7, 0, 0, 0, // seq
            0, 0, 0, 0, // pid
            0, 0, 0, 0, // family, pad, type
            3, 0, 0, 0, // ifindex
            1, 0, 0, 0, // flags IFF_UP
            1, 0, 0, 0, // change IFF_UP
            8, 0, 4, 0, 0x78, 0x05, 0, 0, // IFLA_MTU 1400
            10, 0, 1, 0, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0, // IFLA_ADDRESS + pad
        ];
        let mac = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        assert_eq!(link_message(7, 3, Some(1400), Some(mac)), expected);

        let lo: Vec<u8> = vec![
            32, 0, 0, 0, 16, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0, // header
            0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, // ifinfomsg, index 1, up
        ];
        assert_eq!(link_message(1, 1, None, None), lo);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn address_message_bytes() {
        let expected: Vec<u8> = vec![
            48, 0, 0, 0, // len
            20, 0, // RTM_NEWADDR
            0x05, 0x06, // REQUEST | ACK | EXCL | CREATE
            2, 0, 0, 0, 0, 0, 0, 0, // seq 2, pid
            2, 24, 0, 0, // AF_INET, /24, flags, scope universe
            3, 0, 0, 0, // ifindex
            8, 0, 2, 0, 192, 168, 127, 2, // IFA_LOCAL
            8, 0, 1, 0, 192, 168, 127, 2, // IFA_ADDRESS
            8, 0, 4, 0, 192, 168, 127, 255, // IFA_BROADCAST
        ];
        assert_eq!(address_message(2, 3, v4("192.168.127.2"), 24), expected);
        // A /31 has no broadcast address.
        let point_to_point = address_message(2, 3, v4("10.0.0.0"), 31);
        assert_eq!(point_to_point.len(), 40);
        assert_eq!(point_to_point[0], 40);
        assert_eq!(point_to_point[17], 31);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn default_route_message_bytes() {
        let expected: Vec<u8> = vec![
            44, 0, 0, 0, // len
            24, 0, // RTM_NEWROUTE
            0x05, 0x06, // REQUEST | ACK | EXCL | CREATE
            9, 0, 0, 0, 0, 0, 0, 0, // seq 9, pid
            2, 0, 0, 0, // AF_INET, dst_len 0, src_len 0, tos
            254, 4, 0, 1, // main table, proto static, scope universe, unicast
            0, 0, 0, 0, // rtm_flags
            8, 0, 5, 0, 192, 168, 127, 1, // RTA_GATEWAY
            8, 0, 4, 0, 3, 0, 0, 0, // RTA_OIF
        ];
        assert_eq!(default_route_message(9, 3, v4("192.168.127.1")), expected);
    }

    /// An ack datagram: header (type NLMSG_ERROR), error, then `rest`.
    fn ack(seq: u32, flags: u16, error: i32, rest: &[u8]) -> Vec<u8> {
        let len = (16 + 4 + rest.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&4242u32.to_ne_bytes());
        m.extend_from_slice(&error.to_ne_bytes());
        m.extend_from_slice(rest);
        m
    }

    fn echoed_header(len: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        h.extend_from_slice(&0x605u16.to_ne_bytes());
        h.extend_from_slice(&3u32.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn ack_success_and_failure_without_text() {
        assert_eq!(
            parse_ack(&ack(3, 0x100, 0, &echoed_header(44)), 3),
            Ok(Some(Ack::Done))
        );
        assert_eq!(
            parse_ack(&ack(3, 0x100, -libc::EEXIST, &echoed_header(44)), 3),
            Ok(Some(Ack::Failed {
                errno: libc::EEXIST,
                kernel_message: None
            }))
        );
        // The ack of another request is not ours.
        assert_eq!(
            parse_ack(&ack(2, 0x100, 0, &echoed_header(44)), 3),
            Ok(None)
        );
    }

    #[test]
    fn ack_with_extended_message_capped_and_uncapped() {
        let mut text_attr = vec![31, 0, 1, 0];
        text_attr.extend_from_slice(b"Nexthop has invalid gateway\0");
        text_attr.push(0); // pad to 32
        let mut capped = echoed_header(44);
        capped.extend_from_slice(&text_attr);
        let expected = Ok(Some(Ack::Failed {
            errno: libc::ENETUNREACH,
            kernel_message: Some("Nexthop has invalid gateway".to_string()),
        }));
        assert_eq!(
            parse_ack(&ack(3, 0x300, -libc::ENETUNREACH, &capped), 3),
            expected
        );

        // Without NETLINK_CAP_ACK the whole 22-byte request is echoed (padded to 24).
        let mut uncapped = echoed_header(22);
        uncapped.extend_from_slice(&[0xee; 8]);
        uncapped.extend_from_slice(&text_attr);
        assert_eq!(
            parse_ack(&ack(3, 0x200, -libc::ENETUNREACH, &uncapped), 3),
            expected
        );
    }

    #[test]
    fn ack_found_after_other_messages() {
        let mut datagram = Vec::new();
        let mut other = ack(1, 0, 0, &[]);
        other.extend_from_slice(&[0; 3]); // 23 bytes -> next message at 24
        other[0] = 23;
        datagram.extend_from_slice(&other);
        datagram.push(0);
        datagram.extend_from_slice(&ack(5, 0x100, -libc::EPERM, &echoed_header(32)));
        assert_eq!(
            parse_ack(&datagram, 5),
            Ok(Some(Ack::Failed {
                errno: libc::EPERM,
                kernel_message: None
            }))
        );
    }

    #[test]
    fn malformed_acks_are_errors_not_panics() {
        let good = ack(3, 0x300, -libc::EINVAL, &echoed_header(44));
        for cut in 1..good.len() {
            let _ = parse_ack(&good[..cut], 3);
        }
        assert!(parse_ack(&good[..10], 3).is_err());
        let mut too_long = good.clone();
        too_long[0] = 200;
        assert!(parse_ack(&too_long, 3).is_err());
        let mut too_short = good.clone();
        too_short[0] = 8;
        assert!(parse_ack(&too_short, 3).is_err());
        assert!(parse_ack(&ack(3, 0, 5, &[]), 3).is_err(), "positive error");
        assert!(parse_ack(&ack(3, 0, -100_000, &[]), 3).is_err());
        // A lying attribute length or echoed length yields no text, not a panic.
        let mut bad_attr = echoed_header(44);
        bad_attr.extend_from_slice(&[200, 0, 1, 0, b'x', 0, 0, 0]);
        assert_eq!(
            parse_ack(&ack(3, 0x300, -libc::EINVAL, &bad_attr), 3),
            Ok(Some(Ack::Failed {
                errno: libc::EINVAL,
                kernel_message: None
            }))
        );
        let huge_echo = echoed_header(u32::MAX);
        assert!(parse_ack(&ack(3, 0x200, -libc::EINVAL, &huge_echo), 3).is_ok());
    }

    #[test]
    fn kernel_text_is_bounded_and_cleaned() {
        let mut attr = vec![0, 0, 1, 0];
        attr.extend_from_slice(b"bad\nthing");
        attr.extend(std::iter::repeat_n(b'z', 300));
        attr.push(0);
        let len = attr.len() as u16;
        attr[..2].copy_from_slice(&len.to_ne_bytes());
        let text = find_error_message(&attr).unwrap();
        assert!(text.starts_with("bad?thing"));
        assert_eq!(text.chars().count(), KERNEL_MESSAGE_MAX_CHARS);
    }

    #[test]
    fn netlink_errors_read_well() {
        let err = netlink_failure(
            "adding a default route via 192.168.127.1 on tap0",
            NetlinkStep::Route,
            libc::EEXIST,
            Some("route exists".into()),
        );
        let text = err.to_string();
        assert!(
            text.starts_with("adding a default route via 192.168.127.1 on tap0 failed: File exists (kernel: route exists); "),
            "{text}"
        );
        assert!(text.contains("(kernel: route exists)"), "{text}");
        assert!(text.contains("ip route del default"), "{text}");
    }

    #[test]
    fn missing_namespaces_give_advice() {
        let err = open_tap(
            &"/run/netns/slipway-surely-missing".parse().unwrap(),
            &TapSetup::new(tap_mac_random()),
        )
        .unwrap_err();
        assert!(matches!(err, NetnsError::NoNamespace { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no network namespace at /run/netns/slipway-surely-missing: create it with `ip netns add slipway-surely-missing`, or give a PID"
        );

        let err = open_tap(
            &NetnsTarget::Pid(4_000_000_000),
            &TapSetup::new([2, 0, 0, 0, 0, 1]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no process with PID 4000000000"),
            "{err}"
        );

        let err = open_tap(
            &NetnsTarget::Path("/nonexistent-dir/ns".into()),
            &TapSetup::new([2, 0, 0, 0, 0, 1]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("check the path"), "{err}");
    }

    #[test]
    fn bad_setup_is_refused_before_touching_the_system() {
        let mut setup = TapSetup::new([2, 0, 0, 0, 0, 1]);
        setup.name = "bad name".into();
        // The target does not exist either; the name is reported first.
        let err = open_tap(&NetnsTarget::Path("/nonexistent/ns".into()), &setup).unwrap_err();
        assert!(matches!(err, NetnsError::BadTapName { .. }), "{err:?}");
    }

    #[test]
    fn helper_arguments_round_trip() {
        let setup = TapSetup {
            name: "tap7".into(),
            mtu: 65520,
            mac: [2, 1, 2, 3, 4, 5],
            address: Some((v4("10.0.2.100"), 24)),
            gateway: Some(v4("10.0.2.2")),
            ipv6: Some(("fd00::1:2".parse().unwrap(), "fe80::2".parse().unwrap())),
            exclusive: false,
            configure: true,
        };
        let args = helper::encode(
            Path::new("/proc/9/ns/user"),
            Path::new("/proc/9/ns/net"),
            &setup,
        );
        let (userns, netns, back) = helper::decode(&args).unwrap();
        assert_eq!(
            (userns, netns),
            ("/proc/9/ns/user".into(), "/proc/9/ns/net".into())
        );
        assert_eq!(back, setup);
        let bare = TapSetup::new([2, 0, 0, 0, 0, 1]);
        let args = helper::encode(Path::new("/u"), Path::new("/n"), &bare);
        assert_eq!(helper::decode(&args).unwrap().2, bare);
        assert!(helper::decode(&args[1..]).is_err());
    }

    #[test]
    fn a_missing_user_namespace_is_reported_by_the_helper() {
        if !Path::new(HELPER_EXE).exists() {
            return;
        }
        // The test binary is not slipway: the helper must be the real executable. Only the
        // parent's side is exercised here (the e2e tests run the helper for real).
        let err = helper::open_tap_with_exe(
            Path::new("/bin/false"),
            Path::new("/nonexistent/user"),
            Path::new("/nonexistent/net"),
            &TapSetup::new([2, 0, 0, 0, 0, 1]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("helper"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_network_namespace_is_refused() {
        // Another kind of namespace file: setns(CLONE_NEWNET) rejects it before any privilege
        // check, so this runs unprivileged too, and nothing changes.
        let err = open_tap(
            &NetnsTarget::Path("/proc/self/ns/uts".into()),
            &TapSetup::new([2, 0, 0, 0, 0, 1]),
        )
        .unwrap_err();
        assert!(matches!(err, NetnsError::NotANamespace { .. }), "{err:?}");

        // A FIFO must not hang the open.
        let fifo = std::env::temp_dir().join(format!("slipway-netns-fifo-{}", std::process::id()));
        let c_fifo = CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c_fifo` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        let err = open_tap(
            &NetnsTarget::Path(fifo.clone()),
            &TapSetup::new([2, 0, 0, 0, 0, 1]),
        );
        let _ = std::fs::remove_file(&fifo);
        assert!(
            matches!(err, Err(NetnsError::NotANamespace { .. })),
            "{err:?}"
        );
    }

    /// Tests from here on need root: they create network namespaces with `ip netns add`.
    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A namespace made by the test, deleted on drop (also when the test fails).
    struct TestNamespace {
        name: String,
    }

    impl TestNamespace {
        fn create(tag: &str) -> Self {
            let name = format!("slipway-test-{}-{tag}", std::process::id());
            let status = std::process::Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("running `ip netns add` (install iproute2)");
            assert!(status.success(), "ip netns add {name} failed");
            Self { name }
        }

        fn target(&self) -> NetnsTarget {
            NetnsTarget::Path(Path::new(NAMED_NETNS_DIR).join(&self.name))
        }

        fn ip(&self, args: &[&str]) -> String {
            let out = std::process::Command::new("ip")
                .args(["-n", &self.name])
                .args(args)
                .output()
                .expect("running ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        }
    }

    impl Drop for TestNamespace {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    /// The flags between `<` and `>` in `ip -o link` output.
    fn link_flags(line: &str) -> Vec<String> {
        let start = line.find('<').expect("flags") + 1;
        let end = line.find('>').expect("flags");
        line[start..end].split(',').map(str::to_string).collect()
    }

    fn thread_netns() -> PathBuf {
        std::fs::read_link("/proc/thread-self/ns/net").unwrap()
    }

    /// Waits for one frame on the TAP link for which `pick` returns true; returns it with what
    /// the vnet header said of its checksum.
    fn wait_for_frame(
        link: &mut TapLink,
        mut pick: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<u8>, RxChecksum) {
        use std::time::Instant;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        while Instant::now() < deadline {
            let mut poll = libc::pollfd {
                fd: link.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `poll` is one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut poll, 1, 200) };
            let mut found = None;
            link.read_frames(64, &mut |f, csum| {
                seen += 1;
                if found.is_none() && pick(f) {
                    found = Some((f.to_vec(), csum));
                }
            })
            .expect("reading the TAP");
            if let Some(found) = found {
                return found;
            }
        }
        panic!("the expected frame did not arrive within 5 s ({seen} other frames seen)");
    }

    /// Sends one UDP datagram from inside the namespace (on a thread of its own).
    fn send_udp_inside(namespace: &TestNamespace, to: std::net::SocketAddrV4) {
        let target = namespace.target();
        thread::spawn(move || {
            let ns = open_namespace_file(&target).unwrap();
            enter_namespace(&ns, &target.path()).unwrap();
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.send_to(b"slipway", to).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn tap_is_configured_and_carries_the_namespaces_frames() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let namespace = TestNamespace::create("tap");
        let mac = [0x02, 0x53, 0x4c, 0x00, 0x00, 0x02];
        let setup = TapSetup {
            name: "tap0".into(),
            mtu: 1400,
            mac,
            address: Some((v4("192.168.127.2"), 24)),
            gateway: Some(v4("192.168.127.1")),
            ipv6: Some((
                "fd00:5119::53:4cff:fe00:2".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            )),
            exclusive: true,
            configure: true,
        };
        let netns_before = thread_netns();
        let fd = open_tap(&namespace.target(), &setup).unwrap();
        assert_eq!(thread_netns(), netns_before, "caller's namespace changed");

        // SAFETY: fcntl on an fd we own, with commands that only read flags.
        let (status_flags, fd_flags) = unsafe {
            (
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(fd.as_raw_fd(), libc::F_GETFD),
            )
        };
        assert_ne!(status_flags & libc::O_NONBLOCK, 0, "non-blocking");
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");

        let tap = namespace.ip(&["-o", "link", "show", "dev", "tap0"]);
        assert!(link_flags(&tap).contains(&"UP".to_string()), "{tap}");
        assert!(tap.contains(" mtu 1400 "), "{tap}");
        assert!(tap.contains("link/ether 02:53:4c:00:00:02 "), "{tap}");
        let lo = namespace.ip(&["-o", "link", "show", "dev", "lo"]);
        assert!(link_flags(&lo).contains(&"UP".to_string()), "{lo}");
        let addr = namespace.ip(&["-o", "-4", "addr", "show", "dev", "tap0"]);
        assert!(
            addr.contains("inet 192.168.127.2/24 brd 192.168.127.255 "),
            "{addr}"
        );
        let route = namespace.ip(&["route", "show", "default"]);
        assert!(
            route.contains("default via 192.168.127.1 dev tap0"),
            "{route}"
        );
        let addr6 = namespace.ip(&["-o", "-6", "addr", "show", "dev", "tap0", "scope", "global"]);
        assert!(
            addr6.contains("inet6 fd00:5119::53:4cff:fe00:2/64 ") && !addr6.contains("tentative"),
            "{addr6}"
        );
        let route6 = namespace.ip(&["-6", "route", "show", "default"]);
        assert!(route6.contains("default via fe80::1 dev tap0"), "{route6}");

        // Traffic from the namespace to its gateway comes out of our fd: first an ARP request.
        // The device has a vnet header and takes checksum offload.
        let mut link = TapLink::new(fd).unwrap();
        assert!(link.offloads_checksum(), "TUN_F_CSUM accepted");
        let gateway = std::net::SocketAddrV4::new(v4("192.168.127.1"), 9);
        send_udp_inside(&namespace, gateway);
        let (request, _) = wait_for_frame(&mut link, |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1]
        });
        assert_eq!(request[..6], [0xff; 6], "broadcast");
        assert_eq!(request[6..12], mac, "from the TAP's MAC");
        assert_eq!(request[22..28], mac, "sender MAC");
        assert_eq!(request[28..32], [192, 168, 127, 2], "sender IP");
        assert_eq!(request[38..42], [192, 168, 127, 1], "target IP");

        // Answer it by writing a frame into the fd; the kernel then sends the queued datagram.
        let gateway_mac = [0x02, 0x53, 0x4c, 0x00, 0x00, 0x01];
        let mut reply = Vec::new();
        reply.extend_from_slice(&mac);
        reply.extend_from_slice(&gateway_mac);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&gateway_mac);
        reply.extend_from_slice(&[192, 168, 127, 1]);
        reply.extend_from_slice(&mac);
        reply.extend_from_slice(&[192, 168, 127, 2]);
        link.send_frames(&[&reply]).unwrap();
        let (mut datagram, csum) = wait_for_frame(&mut link, |f| {
            f.len() >= 14 + 20 + 8 && f[12..14] == [0x08, 0x00] && f[14 + 9] == 17
        });
        assert_eq!(datagram[..6], gateway_mac, "sent to the resolved gateway");
        let ihl = usize::from(datagram[14] & 0x0f) * 4;
        assert_eq!(datagram[14 + 16..14 + 20], [192, 168, 127, 1]);
        let udp = &datagram[14 + ihl..];
        assert_eq!(udp[2..4], [0, 9], "destination port");
        assert_eq!(&udp[8..15], b"slipway");
        // The kernel left the UDP checksum to us; finished, it is right.
        let RxChecksum::Partial(p) = csum else {
            panic!("the namespace's kernel summed its datagram itself: {csum:?}");
        };
        assert_eq!((usize::from(p.start), p.offset), (14 + ihl, 6));
        assert!(p.complete(&mut datagram));
        let ip = slipway_wire::Ipv4Packet::new_checked(&datagram[14..]).unwrap();
        let u = slipway_wire::UdpDatagram::new_checked(ip.payload()).unwrap();
        assert!(
            u.verify_v4(ip.src(), ip.dst()),
            "completed checksum verifies"
        );

        // The other way: a datagram whose checksum we leave partial is accepted. Its field holds
        // only the pseudo-header sum, so a kernel that did not honour NEEDS_CSUM would drop it.
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let target = namespace.target();
        let receiver = thread::spawn(move || {
            let ns = open_namespace_file(&target).unwrap();
            enter_namespace(&ns, &target.path()).unwrap();
            let socket = std::net::UdpSocket::bind("192.168.127.2:7777").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            bound_tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            socket.recv(&mut buf).map(|n| buf[..n].to_vec())
        });
        bound_rx.recv().unwrap();
        let payload = b"left partial";
        let mut frame = vec![0u8; 42 + payload.len()];
        slipway_core::frames::write_udp_v4_in_place(
            &mut frame,
            mac,
            gateway_mac,
            (v4("192.168.127.1"), 9),
            (v4("192.168.127.2"), 7777),
            payload.len(),
            Some(payload),
        );
        let acc = slipway_wire::checksum::pseudo_v4(
            v4("192.168.127.1"),
            v4("192.168.127.2"),
            17,
            (8 + payload.len()) as u16,
        );
        frame[40..42].copy_from_slice(&slipway_wire::checksum::partial_field(acc).to_be_bytes());
        let partial = PartialCsum {
            start: 34,
            offset: 6,
        };
        link.send_frames_with(&[&frame], &[Some(partial)]).unwrap();
        let got = receiver.join().unwrap().expect("the datagram arrived");
        assert_eq!(got, payload);

        // The device lives as long as the fd.
        drop(link);
        let links = namespace.ip(&["-o", "link", "show"]);
        assert!(!links.contains("tap0"), "{links}");
    }

    #[test]
    fn tap_by_pid_and_failures_leave_nothing_behind() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let namespace = TestNamespace::create("pid");
        // A process living in the namespace, stopped by its PID at the end.
        struct Sleeper(std::process::Child);
        impl Drop for Sleeper {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let sleeper = Sleeper(
            std::process::Command::new("ip")
                .args(["netns", "exec", &namespace.name, "sleep", "30"])
                .spawn()
                .unwrap(),
        );
        let pid = sleeper.0.id();
        let want = std::fs::metadata(namespace.target().path()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            use std::os::unix::fs::MetadataExt;
            let now = std::fs::metadata(format!("/proc/{pid}/ns/net"));
            if now.is_ok_and(|m| m.ino() == want.ino() && m.dev() == want.dev()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleeper never entered"
            );
            thread::sleep(Duration::from_millis(10));
        }

        let target: NetnsTarget = pid.to_string().parse().unwrap();
        let mut setup = TapSetup::new(tap_mac_random());
        setup.name = "slip-a".into();
        setup.address = Some((v4("192.168.127.2"), 24));
        setup.gateway = Some(v4("192.168.127.1"));
        let first = open_tap(&target, &setup).unwrap();
        assert!(namespace
            .ip(&["-o", "link", "show", "dev", "slip-a"])
            .contains("slip-a"));

        // A request the kernel refuses with an explanation: the live ack carries its text.
        let inside = target.clone();
        let refused = thread::spawn(move || {
            let ns = open_namespace_file(&inside).unwrap();
            enter_namespace(&ns, &inside.path()).unwrap();
            let index = interface_index("slip-a").unwrap();
            let mut rtnl = RouteSocket::open().unwrap();
            rtnl.request("setting MTU 65535 on slip-a", NetlinkStep::Link, |seq| {
                link_message(seq, index, Some(65535), None)
            })
        })
        .join()
        .unwrap()
        .unwrap_err();
        match &refused {
            NetnsError::Netlink { errno, reason, .. } => {
                assert_eq!(*errno, libc::EINVAL);
                assert!(reason.contains("(kernel: "), "{reason}");
            }
            other => panic!("expected a netlink error, got {other:?}"),
        }

        // The same name again, and the name of an existing non-TAP interface.
        for name in ["slip-a", "lo"] {
            setup.name = name.into();
            let err = open_tap(&target, &setup).unwrap_err();
            assert!(
                matches!(err, NetnsError::NameTaken { .. }),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains("choose another TAP name"), "{err}");
        }

        // A second default route is refused by the kernel; the half-made TAP disappears.
        setup.name = "slip-b".into();
        setup.address = Some((v4("192.168.127.3"), 24));
        let err = open_tap(&target, &setup).unwrap_err();
        match &err {
            NetnsError::Netlink { errno, .. } => assert_eq!(*errno, libc::EEXIST),
            other => panic!("expected a netlink error, got {other:?}"),
        }
        assert!(
            err.to_string().contains("already has a default route"),
            "{err}"
        );
        let links = namespace.ip(&["-o", "link", "show"]);
        assert!(!links.contains("slip-b"), "{links}");
        assert!(links.contains("slip-a"), "{links}");
        drop(first);
    }
}
