//! The `slipway` command: parses the command line and runs the driver (see the library's docs).

use anyhow::{bail, Context, Result};
use clap::Parser;
use slipway::api::client::{self, expect_ok, table};
use slipway::cli::{
    self, Cli, ClientArgs, Command, DnsCommand, ForwardCommand, RunArgs, ServeArgs,
};
use slipway::{api, dns_forwarder, event_loop, link, netns, pcap};
use slipway_core::services::dns::LocalZone;
use slipway_core::Network;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);
/// `slipway run`'s command: signals go to it, and slipway stops when it exits.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

fn install_signal_handlers(stop: Arc<AtomicBool>) {
    let forwarding = CHILD.load(Ordering::Relaxed) > 0;
    // SAFETY: the handler only stores to an atomic or calls kill, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        if forwarding {
            for sig in [libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
                libc::signal(sig, on_signal as *const () as libc::sighandler_t);
            }
        }
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
    init_logging_quiet(verbose, file, false)
}

/// `quiet`: only warnings unless -v (`run`, whose terminal belongs to the command).
fn init_logging_quiet(verbose: u8, file: Option<&std::path::Path>, quiet: bool) -> Result<()> {
    let level = match verbose {
        0 if quiet => "warn",
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
        None => {
            use std::io::IsTerminal;
            fmt.with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init()
        }
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

/// A drop-in front-end: the tool's arguments (without the program name) in, slipway running.
type DropInMode = fn(&[String]) -> Result<()>;

/// Stops the network at once, from any thread.
type Stopper = Arc<dyn Fn() + Send + Sync>;

/// What a drop-in or `slipway run` adds to `serve`.
#[derive(Default)]
struct Extras {
    /// Namespaces already attached: each TAP's fd and a description for the log.
    taps: Vec<(OwnedFd, String)>,
    /// slirp4netns's JSON API socket, bound.
    slirp_api: Option<(UnixListener, api::slirp4netns::SlirpApi)>,
    /// Runs once every socket is bound and before any thread starts (the sandbox).
    before_threads: Option<Box<dyn FnOnce() -> Result<()>>>,
    /// Runs when the network is about to run (slirp4netns's --ready-fd, `run`'s go-ahead).
    on_ready: Option<Box<dyn FnOnce() -> Result<()>>>,
    /// Each is given a function that stops the network, to call from a thread of its own
    /// (--exit-fd, the command's exit).
    stop_when: Vec<Box<dyn FnOnce(Stopper) + Send>>,
    /// Files to remove at exit.
    remove_at_exit: Vec<PathBuf>,
    /// Socket files to remove at exit (if they are still the ones slipway made).
    socket_files: Vec<slipway::unix_socket::SocketFile>,
}

fn serve(args: ServeArgs) -> Result<()> {
    serve_with(args, Extras::default())
}

fn serve_with(args: ServeArgs, mut extras: Extras) -> Result<()> {
    let mut cfg = args.network_config()?;
    let (out4, out6) = args.outbound()?;
    if !args.has_links() && extras.taps.is_empty() {
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
        Some(p) => {
            let (listener, file) = api::bind(p)?;
            extras.socket_files.push(file);
            Some(listener)
        }
        None => None,
    };
    let net = Network::new(cfg.clone(), random_seed());
    if let Some(hook) = extras.before_threads.take() {
        hook()?;
    }
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

    for watch in extras.stop_when.drain(..) {
        watch(driver.stopper());
    }
    if out4.is_some() || out6.is_some() {
        driver.set_outbound(out4, out6);
    }
    for (port, path) in args.gateway_unix_targets()? {
        tracing::info!(
            "guest connections to {}:{port} go to {}",
            cfg.gateway,
            path.display()
        );
        driver.set_unix_target(port, path);
    }
    driver.set_unpublish_while_away(args.unpublish_while_away);
    driver.set_busy_poll(std::time::Duration::from_micros(u64::from(
        args.busy_poll_us(),
    )));
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
    let slirp_api = extras.slirp_api.take();
    if api_listener.is_some() || guests.is_some() || slirp_api.is_some() {
        let state = api::ApiState {
            control: driver.control(),
            zone: zone.clone(),
            network: api::NetworkInfo::of(&cfg),
            gvproxy_zones: Arc::default(),
            api_path: args.api.clone(),
            connect_framing: if args.connect_be32 {
                slipway::control::LinkFraming::Be32
            } else {
                slipway::control::LinkFraming::Le16
            },
            tunnels: Arc::default(),
            guest_unix_dir: match &args.guest_api_unix_dir {
                Some(dir) if cfg.guest_api => Some(Arc::new(
                    slipway::unix_socket::SocketDir::open(dir).with_context(|| {
                        format!(
                            "--guest-api-unix-dir {}: cannot open the directory; create it first",
                            dir.display()
                        )
                    })?,
                )),
                _ => None,
            },
        };
        api::spawn(api_listener, guests, slirp_api, state)
            .context("cannot start the API server")?;
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
    let mut tap_mac = args.tap_mac()?;
    for target in &args.netns {
        let target: netns::NetnsTarget = target.parse()?;
        let mac = tap_mac.take().unwrap_or_else(netns::tap_mac_random);
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
            ipv6: tap_ipv6(&cfg, mac),
            exclusive: true,
            configure: true,
        };
        // As slirp4netns does: a process's namespace may belong to a user namespace that a
        // normal user can join (its owner's); root needs none.
        let userns = match &target {
            netns::NetnsTarget::Pid(pid) => Some(PathBuf::from(format!("/proc/{pid}/ns/user"))),
            netns::NetnsTarget::Path(_) => None,
        };
        let fd = netns::open_tap_joining(&target, userns.as_deref(), &setup)?;
        let port = driver.add_link(Box::new(link::TapLink::new(fd)?))?;
        let v6 = setup
            .ipv6
            .map(|(a, _)| format!(" and {a}/64"))
            .unwrap_or_default();
        tracing::info!(
            "namespace {target}: {} is {address}/{}{v6} via {} (port {port})",
            args.tap_name,
            cfg.prefix,
            cfg.gateway
        );
    }
    for (fd, what) in extras.taps.drain(..) {
        let port = driver.add_link(Box::new(link::TapLink::new(fd)?))?;
        tracing::info!("{what} (port {port})");
    }
    if let Some(ready) = extras.on_ready.take() {
        ready()?;
    }
    if let Some(fd) = args.ready_fd {
        write_ready(fd)?;
    }
    let result = driver.run();
    extras.socket_files.clear();
    for p in &extras.remove_at_exit {
        let _ = std::fs::remove_file(p);
    }
    result?;
    Ok(())
}

/// slirp4netns's command line (`slirp4netns …` through a symlink, or `slipway slirp4netns …`).
fn slirp4netns_mode(args: &[String]) -> Result<()> {
    let mode = slipway::compat::slirp4netns::parse(args)?;
    if let Some(text) = mode.print {
        print!("{text}");
        return Ok(());
    }
    init_logging(mode.serve.verbose, None)?;
    let cfg = mode.serve.network_config()?;
    mode.serve.outbound()?;
    let Some(target) = mode.target.clone() else {
        bail!("slirp4netns mode: no namespace given");
    };
    let guest = cfg.slirp_guest();
    let mac = mode.mac.unwrap_or_else(netns::tap_mac_random);
    let setup = netns::TapSetup {
        name: mode.tap.clone(),
        mtu: cfg.mtu,
        mac,
        address: mode.configure.then_some((guest, cfg.prefix)),
        gateway: mode.configure.then_some(cfg.gateway),
        ipv6: tap_ipv6(&cfg, mac).filter(|_| mode.configure),
        exclusive: false,
        configure: mode.configure,
    };
    let fd = netns::open_tap_joining(&target, mode.userns.as_deref(), &setup)?;
    let mut extras = Extras::default();
    let what = if mode.configure {
        format!(
            "namespace {target}: {} is {guest}/{} via {}, DNS {}",
            mode.tap, cfg.prefix, cfg.gateway, cfg.dns_server
        )
    } else {
        format!("namespace {target}: attached to {}", mode.tap)
    };
    extras.taps.push((fd, what));
    if let Some(path) = &mode.api_socket {
        let (listener, file) = api::bind(path)?;
        let info = api::slirp4netns::SlirpApi {
            default_guest: guest,
        };
        extras.slirp_api = Some((listener, info));
        extras.socket_files.push(file);
    }
    if mode.sandbox || mode.seccomp {
        let (sandbox, seccomp) = (mode.sandbox, mode.seccomp);
        extras.before_threads = Some(Box::new(move || {
            if sandbox {
                slipway::sandbox::enter().context("--enable-sandbox")?;
            }
            if seccomp {
                slipway::sandbox::install_seccomp().context("--enable-seccomp")?;
            }
            Ok(())
        }));
    }
    if let Some(fd) = mode.ready_fd {
        extras.on_ready = Some(Box::new(move || write_ready(fd)));
    }
    if let Some(fd) = mode.exit_fd {
        extras.stop_when.push(Box::new(move |stop| {
            std::thread::spawn(move || {
                wait_readable(fd);
                tracing::info!("--exit-fd {fd} is readable or closed: stopping");
                stop();
            });
        }));
    }
    serve_with(mode.serve, extras)
}

/// `slipway run`: the command in its own namespaces, served until it exits; returns its exit
/// code.
fn run_command(mut args: RunArgs) -> Result<i32> {
    let cfg = args.serve.network_config()?;
    args.serve.forwards()?;
    // The namespace is the network's first guest, with a lease no one else can take.
    let mac = netns::tap_mac_random();
    let address = cfg.pool_start;
    args.serve
        .static_lease
        .push(format!("{}={address}", api::format_mac(&mac)));
    let setup = netns::TapSetup {
        name: args.serve.tap_name.clone(),
        mtu: cfg.mtu,
        mac,
        address: Some((address, cfg.prefix)),
        gateway: Some(cfg.gateway),
        ipv6: tap_ipv6(&cfg, mac),
        exclusive: true,
        configure: true,
    };
    setup.validate()?;
    let search = dns_forwarder::read_resolv_conf(std::path::Path::new("/etc/resolv.conf"))
        .map(|rc| rc.search)
        .unwrap_or_default();
    let resolv =
        std::env::temp_dir().join(format!("slipway-run-{}.resolv.conf", std::process::id()));
    let have_resolv = std::path::Path::new("/etc/resolv.conf").exists();
    if have_resolv {
        std::fs::write(
            &resolv,
            slipway::run::resolv_conf_text(cfg.dns_server, &search),
        )
        .with_context(|| format!("cannot write {}", resolv.display()))?;
    }
    let spec = slipway::run::Spec {
        command: &args.command,
        setup: &setup,
        resolv_conf: have_resolv.then_some(resolv.as_path()),
    };
    // No thread has started yet: the child may do anything before it execs.
    let child = match slipway::run::spawn(&spec) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&resolv);
            bail!("{e}");
        }
    };
    CHILD.store(child.pid, Ordering::Relaxed);
    let status = Arc::new(AtomicI32::new(-1));
    let mut extras = Extras::default();
    let pid = child.pid;
    let tap = child.tap.try_clone().context("duplicating the TAP fd")?;
    extras.taps.push((
        tap,
        format!(
            "command {}: {} is {address}/{} via {}",
            args.command[0], args.serve.tap_name, cfg.prefix, cfg.gateway
        ),
    ));
    extras.remove_at_exit.push(resolv);
    extras.on_ready = Some(Box::new(move || {
        child.go().context("cannot start the command")
    }));
    let st = status.clone();
    extras.stop_when.push(Box::new(move |stop| {
        std::thread::spawn(move || {
            let mut raw = 0;
            // SAFETY: waiting for our own child.
            while unsafe { libc::waitpid(pid, &mut raw, 0) } < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
            st.store(slipway::run::exit_code(raw), Ordering::Relaxed);
            stop();
        });
    }));
    serve_with(args.serve, extras)?;
    let code = status.load(Ordering::Relaxed);
    Ok(if code < 0 { 1 } else { code })
}

/// slirp4netns's ready signal: `1` written to FD, then FD closed.
fn write_ready(fd: RawFd) -> Result<()> {
    // SAFETY: the fd was handed to us for this purpose; we write one byte and close it.
    let n = unsafe { libc::write(fd, b"1".as_ptr() as *const libc::c_void, 1) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd we were given; nothing else uses it.
    unsafe { libc::close(fd) };
    if n != 1 {
        bail!("--ready-fd {fd}: cannot write to it: {err}");
    }
    Ok(())
}

/// Block until `fd` is readable, hung up or invalid.
fn wait_readable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one pollfd on the stack, infinite timeout.
        let rc = unsafe { libc::poll(&mut p, 1, -1) };
        if rc > 0 || (rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
        {
            return;
        }
    }
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
        Command::Serve(_) | Command::Run(_) => unreachable!("not a client command"),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(netns::HELPER_ARG) {
        std::process::exit(netns::helper::main(&argv[2..]));
    }
    use slipway::compat::cni::plugin as cni;
    if argv.get(1).map(String::as_str) == Some(cni::SUPERVISE_ARG) {
        let _ = init_logging(0, None);
        std::process::exit(cni::supervise(&argv[2..]));
    }
    let program = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("slipway");
    // A runtime runs a CNI plugin by its network's type ("slipway") with no arguments and
    // CNI_COMMAND set; `slipway-cni` and `slipway cni` are the explicit forms.
    let cni_by_env = argv.len() == 1 && std::env::var_os("CNI_COMMAND").is_some();
    if cni_by_env || program == "slipway-cni" || argv.get(1).map(String::as_str) == Some("cni") {
        use std::io::{Read, Write};
        let mut stdin = Vec::new();
        let _ = std::io::stdin()
            .take(slipway::api::MAX_BODY as u64)
            .read_to_end(&mut stdin);
        let (out, code) = cni::main(&stdin, |k| std::env::var(k).ok());
        let _ = std::io::stdout().write_all(out.as_bytes());
        std::process::exit(code);
    }
    // Drop-ins: invoked under the tool's name (a symlink) or as `slipway NAME ...`.
    let drop_in = |name: &str| -> Option<&[String]> {
        if program == name {
            Some(&argv[1..])
        } else if argv.get(1).map(String::as_str) == Some(name) {
            Some(&argv[2..])
        } else {
            None
        }
    };
    let modes: [(&str, DropInMode); 2] =
        [("slirp4netns", slirp4netns_mode), ("gvproxy", gvproxy_mode)];
    for (name, mode) in modes {
        if let Some(args) = drop_in(name) {
            if let Err(e) = mode(args) {
                eprintln!("{name} (slipway): {e:#}");
                std::process::exit(1);
            }
            return;
        }
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => init_logging(args.verbose, None).and_then(|()| serve(args)),
        Command::Run(args) => {
            let code =
                init_logging_quiet(args.serve.verbose, None, true).and_then(|()| run_command(args));
            match code {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(e),
            }
        }
        other => run_client(other),
    };
    if let Err(e) = result {
        eprintln!("slipway: {e:#}");
        std::process::exit(1);
    }
}

/// The IPv6 setup of a TAP slipway configures itself: the SLAAC address the guest would take
/// from the router advertisements (so it works at once) and the gateway's link-local address.
fn tap_ipv6(
    cfg: &slipway_core::NetworkConfig,
    mac: [u8; 6],
) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)> {
    let v6 = cfg.ipv6.as_ref()?;
    Some((
        slipway_wire::ipv6::eui64_address(v6.prefix, mac),
        cfg.gateway_link_local(),
    ))
}
