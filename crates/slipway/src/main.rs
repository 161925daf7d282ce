//! The `slipway` command: parses the command line and runs the driver (see the library's docs).

use anyhow::{bail, Context, Result};
use clap::Parser;
use slipway::api::client::{self, expect_ok, table};
use slipway::cli::{self, Cli, ClientArgs, Command, DnsCommand, ForwardCommand, ServeArgs};
use slipway::{api, dns_forwarder, event_loop, link, netns, pcap};
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

fn init_logging(verbose: u8, file: Option<&std::path::Path>) -> Result<()> {
    let level = match verbose {
        0 => "warn,slipway=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLIPWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            fmt.with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .init();
        }
        None => fmt.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// gvproxy's command line (`gvproxy …` through a symlink, or `slipway gvproxy …`).
fn gvproxy_mode(args: &[String]) -> Result<()> {
    let mode = slipway::compat::gvproxy::parse(args)?;
    if let Some(text) = mode.print {
        print!("{text}");
        return Ok(());
    }
    init_logging(mode.serve.verbose, mode.log_file.as_deref())?;
    if let Some(p) = &mode.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", p.display()))?;
    }
    let result = serve(mode.serve);
    if let Some(p) = &mode.pid_file {
        let _ = std::fs::remove_file(p);
    }
    result
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
    // The API socket is claimed first: a second slipway on the same path stops here.
    let api_listener = match &args.api {
        Some(p) => Some(api::bind(p)?),
        None => None,
    };
    let net = Network::new(cfg.clone(), random_seed());
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_handlers(stop.clone());
    let mut dns_cfg = dns_forwarder::DnsForwarderConfig::new(zone.clone());
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

    for (port, path) in args.gateway_unix_targets()? {
        tracing::info!(
            "guest connections to {}:{port} go to {}",
            cfg.gateway,
            path.display()
        );
        driver.set_unix_target(port, path);
    }
    driver.set_unpublish_while_away(args.unpublish_while_away);
    // Publish before attaching guests: a port that cannot be bound stops start-up cleanly.
    for rule in forwards {
        driver.add_forward(rule)?;
    }
    let guests = cfg.guest_api.then(|| {
        let (handler, connections) = api::guest_channel(cfg.gateway);
        driver.set_guest_api(handler);
        tracing::info!(
            "guests may publish ports through http://{}:{}/services/forwarder/",
            cfg.gateway,
            slipway_core::network::GUEST_API_PORT
        );
        connections
    });
    if api_listener.is_some() || guests.is_some() {
        let state = api::ApiState {
            control: driver.control(),
            zone: zone.clone(),
            network: api::NetworkInfo::of(&cfg),
            gvproxy_zones: Arc::default(),
        };
        api::spawn(api_listener, guests, state).context("cannot start the API server")?;
        if let Some(p) = &args.api {
            tracing::info!("API on {}", p.display());
        }
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
    let result = driver.run();
    if let Some(p) = &args.api {
        let _ = std::fs::remove_file(p);
    }
    result?;
    Ok(())
}

/// A client command against a running slipway's API; prints a table or the JSON.
fn client_command(
    c: &ClientArgs,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    columns: &[&str],
) -> Result<()> {
    let Some(socket) = &c.api else {
        bail!("which slipway? give its API socket with --api PATH (or SLIPWAY_API), as passed to `slipway serve --api`");
    };
    let answer = expect_ok(client::request(socket, method, path, body.as_ref())?)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if !columns.is_empty() {
        print!("{}", table(&answer, columns));
    }
    Ok(())
}

const FORWARD_COLUMNS: &[&str] = &["id", "proto", "host", "guest_ip", "guest_port"];

fn run_client(cmd: Command) -> Result<()> {
    match cmd {
        Command::Forward { command, client } => match command {
            ForwardCommand::Add { spec } => client_command(
                &client,
                "POST",
                "/v1/forwards",
                Some(serde_json::json!({ "spec": spec })),
                FORWARD_COLUMNS,
            ),
            ForwardCommand::Ls => {
                client_command(&client, "GET", "/v1/forwards", None, FORWARD_COLUMNS)
            }
            ForwardCommand::Rm { id } => {
                client_command(&client, "DELETE", &format!("/v1/forwards/{id}"), None, &[])
            }
        },
        Command::Leases(client) => {
            client_command(&client, "GET", "/v1/leases", None, &["ip", "mac"])
        }
        Command::Flows(client) => client_command(
            &client,
            "GET",
            "/v1/flows",
            None,
            &[
                "proto",
                "guest",
                "remote",
                "state",
                "bytes_from_guest",
                "bytes_to_guest",
                "age_ms",
            ],
        ),
        Command::Counters(client) => {
            let Some(socket) = &client.api else {
                bail!("which slipway? give its API socket with --api PATH (or SLIPWAY_API)");
            };
            let v = expect_ok(client::request(socket, "GET", "/v1/counters", None)?)?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(obj) = v.as_object() {
                for (k, n) in obj {
                    match n.as_object() {
                        Some(drops) => {
                            for (reason, n) in drops {
                                println!("dropped {reason:<28} {n}");
                            }
                        }
                        None => println!("{k:<36} {n}"),
                    }
                }
            }
            Ok(())
        }
        Command::Dns { command, client } => match command {
            DnsCommand::Add { record } => {
                let Some((name, ip)) = record.split_once('=') else {
                    bail!("dns add {record}: expected NAME=IP, e.g. db.internal=192.168.127.77");
                };
                client_command(
                    &client,
                    "POST",
                    "/v1/dns/records",
                    Some(serde_json::json!({ "name": name.trim(), "ip": ip.trim() })),
                    &["name", "ip"],
                )
            }
            DnsCommand::Ls => {
                client_command(&client, "GET", "/v1/dns/records", None, &["name", "ip"])
            }
            DnsCommand::Rm { name } => client_command(
                &client,
                "DELETE",
                &format!("/v1/dns/records/{name}"),
                None,
                &[],
            ),
        },
        Command::Serve(_) => unreachable!("serve is not a client command"),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("slipway");
    let drop_in = if program == "gvproxy" {
        Some(&argv[1..])
    } else if argv.get(1).map(String::as_str) == Some("gvproxy") {
        Some(&argv[2..])
    } else {
        None
    };
    if let Some(args) = drop_in {
        if let Err(e) = gvproxy_mode(args) {
            eprintln!("gvproxy (slipway): {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => init_logging(args.verbose, None).and_then(|()| serve(args)),
        other => run_client(other),
    };
    if let Err(e) = result {
        eprintln!("slipway: {e:#}");
        std::process::exit(1);
    }
}
