//! The `slipway` command: parses the command line and runs the driver (see the library's docs).

use anyhow::{bail, Context, Result};
use clap::Parser;
use slipway::cli::{self, Cli, Command, ServeArgs};
use slipway::{dns_forwarder, event_loop, link, netns, pcap};
use slipway_core::services::dns::LocalZone;
use slipway_core::Network;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_signal_handlers(stop: Arc<AtomicBool>) {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    std::thread::spawn(move || loop {
        if STOP.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// Raise the open-file limit to its hard maximum: every guest connection is a host socket.
fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, b.len(), 0) };
    if n != 8 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(b)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn,slipway=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut cfg = args.network_config()?;
    if !args.has_links() {
        bail!(cli::CliError::NoLinks);
    }
    let upstreams = args.dns_upstreams()?;
    let forwards = args.forwards()?;
    let resolv_conf = PathBuf::from("/etc/resolv.conf");
    if let Ok(rc) = dns_forwarder::read_resolv_conf(&resolv_conf) {
        cfg.search_domains = rc.search;
    }
    raise_fd_limit();
    let zone = Arc::new(RwLock::new(LocalZone::new(&cfg)));
    let net = Network::new(cfg.clone(), random_seed());
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers(stop.clone());
    let mut dns_cfg = dns_forwarder::DnsForwarderConfig::new(zone);
    dns_cfg.upstreams = upstreams;
    dns_cfg.resolv_conf = resolv_conf;
    let pcap = match &args.pcap {
        Some(p) => Some(
            pcap::PcapWriter::create(p)
                .with_context(|| format!("cannot create the capture file {}", p.display()))?,
        ),
        None => None,
    };
    let mut driver = event_loop::Driver::new(
        net,
        |on_reply| dns_forwarder::DnsForwarder::spawn(dns_cfg, on_reply),
        pcap,
        stop,
    )
    .context("cannot start the event loop")?;

    // Publish before attaching guests: a port that cannot be bound stops start-up cleanly.
    for rule in forwards {
        driver.add_forward(rule)?;
    }
    for p in &args.qemu {
        driver.add_listener(Box::new(link::QemuListener::bind(p)?))?;
    }
    for p in &args.bess {
        driver.add_listener(Box::new(link::BessListener::bind(p)?))?;
    }
    for p in &args.vpnkit {
        let mtu = cfg.mtu;
        let alloc = Box::new(netns::tap_mac_random);
        driver.add_listener(Box::new(link::VpnkitListener::bind(p, mtu, alloc)?))?;
    }
    for p in &args.dgram {
        driver.add_link(Box::new(link::DgramLink::bind(p)?))?;
    }
    if args.stdio {
        driver.add_link(Box::new(link::StdioLink::new()?))?;
    }
    for target in &args.netns {
        let target: netns::NetnsTarget = target.parse()?;
        let mac = netns::tap_mac_random();
        let now = driver.now();
        let address = driver
            .network()
            .dhcp_mut()
            .assign(now, mac)
            .with_context(|| {
                format!(
                    "no free address in {} for the namespace {target}",
                    args.subnet
                )
            })?;
        let setup = netns::TapSetup {
            name: args.tap_name.clone(),
            mtu: cfg.mtu,
            mac,
            address: Some((address, cfg.prefix)),
            gateway: Some(cfg.gateway),
        };
        let fd = netns::open_tap(&target, &setup)?;
        let port = driver.add_link(Box::new(link::TapLink::new(fd)?))?;
        tracing::info!(
            "namespace {target}: {} is {address}/{} via {} (port {port})",
            args.tap_name,
            cfg.prefix,
            cfg.gateway
        );
    }
    driver.run()?;
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging(args.verbose);
            serve(args)
        }
    };
    if let Err(e) = result {
        eprintln!("slipway: {e:#}");
        std::process::exit(1);
    }
}
