//! The latency and connection-rate peers of `bench/run.sh`: an echo server and two clients,
//! compiled so that the figures measure the network stacks rather than an interpreter.
//!
//! ```text
//! slipway-benchtool serve ADDR PORT      single-threaded echo server (epoll), runs until killed
//! slipway-benchtool rr ADDR PORT N       N sequential 1-byte ping-pongs on one connection
//!                                        (TCP_NODELAY) after 200 warm-up ones; prints JSON
//!                                        {p50_us, p99_us, mean_us, n}
//! slipway-benchtool cr ADDR PORT SECONDS connect, send 1 byte, read 1 byte, close, for SECONDS;
//!                                        prints JSON {conn_per_s, count, errors}
//! ```
//!
//! Addresses are numeric (IPv4 or IPv6); nothing here resolves a name. The server echoes what it
//! reads; a connection whose peer does not read its echo stops being read (at most 64 KiB is held
//! per connection), so memory stays bounded whatever the client does.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", addr, port] => target(addr, port).and_then(serve),
        ["rr", addr, port, n] => target(addr, port).and_then(|t| rr(t, number(n)?)),
        ["cr", addr, port, secs] => target(addr, port).and_then(|t| cr(t, number(secs)?)),
        _ => {
            eprintln!(
                "usage: slipway-benchtool serve ADDR PORT | rr ADDR PORT N | cr ADDR PORT SECONDS"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slipway-benchtool: {e}");
            ExitCode::FAILURE
        }
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn number<T: std::str::FromStr>(s: &str) -> io::Result<T> {
    s.parse()
        .map_err(|_| invalid(format!("{s:?} is not a number")))
}

fn target(addr: &str, port: &str) -> io::Result<SocketAddr> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| invalid(format!("{addr:?} is not a numeric IP address")))?;
    Ok(SocketAddr::new(ip, number(port)?))
}

struct Conn {
    stream: TcpStream,
    /// Echo not yet written back; reading pauses while it is non-empty.
    pending: Vec<u8>,
}

fn serve(addr: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; BUF];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[i] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of fds, or a connection reset before accept: try again later.
                        Err(_) => break,
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !echo(conn, &mut buf) {
                let mut c = conns[i].take().expect("connection present");
                let _ = poll.registry().deregister(&mut c.stream);
                free.push(i);
            }
        }
    }
}

/// Drains the connection and echoes it back; false when it is finished (EOF or an error).
fn echo(conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let n = match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        conn.pending.extend_from_slice(&buf[..n]);
    }
}

fn connect(target: SocketAddr) -> io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn ping(s: &mut std::net::TcpStream) -> io::Result<()> {
    s.write_all(b"x")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b[0] != b'x' {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad echo"));
    }
    Ok(())
}

fn rr(target: SocketAddr, n: usize) -> io::Result<()> {
    if n == 0 {
        return Err(invalid("N must be at least 1".into()));
    }
    let mut s = connect(target)?;
    for _ in 0..200 {
        ping(&mut s)?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        ping(&mut s)?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    drop(s);
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let p50 = samples[n / 2];
    let p99 = samples[(n * 99 / 100).min(n - 1)];
    let mean = samples.iter().sum::<u64>() as f64 / n as f64;
    println!(
        "{{\"p50_us\": {:.3}, \"p99_us\": {:.3}, \"mean_us\": {:.3}, \"n\": {n}}}",
        us(p50),
        us(p99),
        mean / 1000.0
    );
    Ok(())
}

fn cr(target: SocketAddr, seconds: f64) -> io::Result<()> {
    if !(seconds > 0.0 && seconds < 3600.0) {
        return Err(invalid(format!("{seconds} s is not a duration")));
    }
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(seconds);
    let (mut count, mut errors) = (0u64, 0u64);
    while Instant::now() < deadline {
        match connect(target).and_then(|mut s| ping(&mut s)) {
            Ok(()) => count += 1,
            Err(_) => {
                errors += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "{{\"conn_per_s\": {:.1}, \"count\": {count}, \"errors\": {errors}}}",
        count as f64 / elapsed
    );
    Ok(())
}
