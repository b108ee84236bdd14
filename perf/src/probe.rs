//! The lab's load generator: many connections from many client addresses,
//! recording which node answered each.
//!
//! Run inside the client namespace, where a local route makes every address
//! of 198.19.0.0/16 (and 2001:2:1::/64) usable as a source, so one process
//! stands for thousands of clients.

use anyhow::{bail, Result};
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HTTP GET, the body is the node name.
    Http,
    /// One line on the echo port.
    Echo,
    /// One datagram on the UDP echo port.
    Udp,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub source: IpAddr,
    pub sport: u16,
    pub node: Option<String>,
    pub error: Option<String>,
    pub micros: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub ok: usize,
    pub failed: usize,
    pub by_node: BTreeMap<String, usize>,
    pub results: Vec<Outcome>,
}

/// The `i`-th client address: 198.19.0.1 + i, or 2001:2:1::1 + i.
pub fn source_address(v6: bool, i: u32) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 0, 1)) + u128::from(i),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + i))
    }
}

pub struct Plan {
    pub kind: Kind,
    pub target: SocketAddr,
    pub sources: u32,
    pub conns: u32,
    pub parallel: usize,
    pub timeout: Duration,
}

/// Runs `plan.conns` probes, connection `c` from source `c % sources`.
pub fn run(plan: &Plan) -> Result<Report> {
    if plan.sources == 0 || plan.parallel == 0 {
        bail!("sources and parallel must be > 0");
    }
    let v6 = plan.target.is_ipv6();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(plan.conns as usize));
    std::thread::scope(|s| {
        for _ in 0..plan.parallel.min(plan.conns.max(1) as usize) {
            s.spawn(|| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= plan.conns as usize {
                    break;
                }
                let source = source_address(v6, c as u32 % plan.sources);
                let outcome = probe_one(plan, source);
                results
                    .lock()
                    .expect("no panics while held")
                    .push((c, outcome));
            });
        }
    });
    let mut results = results.into_inner().expect("threads done");
    results.sort_by_key(|(c, _)| *c);
    let results: Vec<Outcome> = results.into_iter().map(|(_, o)| o).collect();
    let mut by_node = BTreeMap::new();
    for o in &results {
        if let Some(n) = &o.node {
            *by_node.entry(n.clone()).or_insert(0) += 1;
        }
    }
    let ok = results.iter().filter(|o| o.node.is_some()).count();
    Ok(Report {
        ok,
        failed: results.len() - ok,
        by_node,
        results,
    })
}

fn probe_one(plan: &Plan, source: IpAddr) -> Outcome {
    let start = Instant::now();
    let mut sport = 0;
    let result = (|| -> std::io::Result<String> {
        match plan.kind {
            Kind::Http | Kind::Echo => {
                let (mut stream, port) = connect_from(source, plan.target, plan.timeout)?;
                sport = port;
                stream.set_read_timeout(Some(plan.timeout))?;
                stream.set_write_timeout(Some(plan.timeout))?;
                if plan.kind == Kind::Http {
                    stream.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
                    let mut reply = String::new();
                    stream.read_to_string(&mut reply)?;
                    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
                    if !reply.starts_with("HTTP/1.0 200") || body.is_empty() {
                        return Err(std::io::Error::other(format!("bad reply {reply:?}")));
                    }
                    Ok(body.to_string())
                } else {
                    stream.write_all(b"probe\n")?;
                    let mut line = String::new();
                    BufReader::new(&stream).read_line(&mut line)?;
                    parse_echo(&line, "probe")
                }
            }
            Kind::Udp => {
                let sock = UdpSocket::bind(SocketAddr::new(source, 0))?;
                sport = sock.local_addr()?.port();
                sock.set_read_timeout(Some(plan.timeout))?;
                sock.send_to(b"probe", plan.target)?;
                let mut buf = [0u8; 1500];
                let (n, _) = sock.recv_from(&mut buf)?;
                parse_echo(&String::from_utf8_lossy(&buf[..n]), "probe")
            }
        }
    })();
    let micros = start.elapsed().as_micros() as u64;
    match result {
        Ok(node) => Outcome {
            source,
            sport,
            node: Some(node),
            error: None,
            micros,
        },
        Err(e) => Outcome {
            source,
            sport,
            node: None,
            error: Some(e.to_string()),
            micros,
        },
    }
}

/// The node named by an echo of `sent` ("s2 <sent>").
pub fn parse_echo(line: &str, sent: &str) -> std::io::Result<String> {
    match line.trim_end().split_once(' ') {
        Some((node, rest)) if rest == sent => Ok(node.to_string()),
        _ => Err(std::io::Error::other(format!("bad echo {line:?}"))),
    }
}

/// A TCP connection from `source` (any port) to `target`.
pub fn connect_from(
    source: IpAddr,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<(TcpStream, u16)> {
    let domain = if target.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    sock.connect_timeout(&SockAddr::from(target), timeout)?;
    let stream: TcpStream = sock.into();
    let port = stream.local_addr()?.port();
    Ok((stream, port))
}

/// What one flow saw during an outage probe.
#[derive(Clone, Debug, Serialize)]
pub struct FlowOutage {
    pub source: IpAddr,
    /// Longest time between two replies (or from the first probe to the
    /// first reply), in milliseconds.
    pub max_gap_ms: f64,
    pub replies: u64,
    /// The nodes that answered, in order of first answer.
    pub nodes: Vec<String>,
}

/// UDP probes on `flows` flows (one client address each) every `interval`
/// for `duration`: how long each flow went without an answer.
pub fn outage(
    target: SocketAddr,
    flows: u32,
    interval: Duration,
    duration: Duration,
) -> Result<Vec<FlowOutage>> {
    let v6 = target.is_ipv6();
    let mut socks = Vec::new();
    for i in 0..flows {
        let s = UdpSocket::bind(SocketAddr::new(source_address(v6, 1000 + i), 0))?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let start = Instant::now();
    let mut last: Vec<Option<Instant>> = vec![None; socks.len()];
    let mut gap = vec![Duration::ZERO; socks.len()];
    let mut replies = vec![0u64; socks.len()];
    let mut nodes: Vec<Vec<String>> = vec![Vec::new(); socks.len()];
    let mut next_send = start;
    let mut buf = [0u8; 1500];
    while start.elapsed() < duration {
        if Instant::now() >= next_send {
            for s in &socks {
                let _ = s.send_to(b"p", target);
            }
            next_send += interval;
        }
        for (i, s) in socks.iter().enumerate() {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                let now = Instant::now();
                let since = last[i].unwrap_or(start);
                gap[i] = gap[i].max(now - since);
                last[i] = Some(now);
                replies[i] += 1;
                if let Ok(node) = parse_echo(&String::from_utf8_lossy(&buf[..n]), "p") {
                    if nodes[i].last() != Some(&node) {
                        nodes[i].push(node);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let end = Instant::now();
    Ok((0..socks.len())
        .map(|i| {
            let tail = end - last[i].unwrap_or(start);
            FlowOutage {
                source: source_address(v6, 1000 + i as u32),
                max_gap_ms: gap[i].max(tail).as_secs_f64() * 1000.0,
                replies: replies[i],
                nodes: nodes[i].clone(),
            }
        })
        .collect())
}

/// What one long-lived connection saw.
#[derive(Clone, Debug, Serialize)]
pub struct HeldConnection {
    pub source: IpAddr,
    pub sport: u16,
    /// The nodes that answered, in order (one: a connection lives on one
    /// server).
    pub nodes: Vec<String>,
    pub lines: u64,
    /// Why it broke (reset, timeout, bad echo); `None`: it lived until
    /// the end and closed cleanly.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HoldReport {
    pub conns: usize,
    pub broken: usize,
    /// Connections per node that answered them first.
    pub by_node: BTreeMap<String, usize>,
    pub results: Vec<HeldConnection>,
}

pub struct HoldPlan {
    pub target: SocketAddr,
    pub conns: u32,
    /// Connection `c` comes from client address `first_source + c % sources`.
    pub first_source: u32,
    pub sources: u32,
    /// One line per connection every `interval`.
    pub interval: Duration,
    /// A line not echoed within this is a broken connection.
    pub timeout: Duration,
    /// The run ends when this file exists, or after `max_duration`.
    pub stop_file: std::path::PathBuf,
    pub max_duration: Duration,
}

/// Long-lived connections on the line echo: each sends a line every
/// `interval` and checks the echo until the run ends, then closes cleanly.
/// A thread per connection keeps it simple (a few hundred connections).
pub fn hold(plan: &HoldPlan) -> Result<HoldReport> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let v6 = plan.target.is_ipv6();
    let mut threads = Vec::new();
    for c in 0..plan.conns {
        let source = source_address(v6, plan.first_source + c % plan.sources.max(1));
        let (target, interval, timeout) = (plan.target, plan.interval, plan.timeout);
        let stop = std::sync::Arc::clone(&stop);
        // Connect here, one after the other: the run starts with every
        // connection established.
        let conn = connect_from(source, target, timeout);
        threads.push(std::thread::spawn(move || {
            hold_one(source, conn, interval, timeout, &stop)
        }));
    }
    eprintln!("hold: {} connections open", plan.conns);
    let start = Instant::now();
    while !plan.stop_file.exists() && start.elapsed() < plan.max_duration {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let results: Vec<HeldConnection> = threads
        .into_iter()
        .map(|t| t.join().expect("a connection thread does not panic"))
        .collect();
    let mut by_node = BTreeMap::new();
    for r in &results {
        if let Some(n) = r.nodes.first() {
            *by_node.entry(n.clone()).or_insert(0) += 1;
        }
    }
    Ok(HoldReport {
        conns: results.len(),
        broken: results.iter().filter(|r| r.error.is_some()).count(),
        by_node,
        results,
    })
}

fn hold_one(
    source: IpAddr,
    conn: std::io::Result<(TcpStream, u16)>,
    interval: Duration,
    timeout: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> HeldConnection {
    let mut held = HeldConnection {
        source,
        sport: 0,
        nodes: Vec::new(),
        lines: 0,
        error: None,
    };
    let (stream, sport) = match conn {
        Ok(c) => c,
        Err(e) => {
            held.error = Some(format!("connect: {e}"));
            return held;
        }
    };
    held.sport = sport;
    let result = (|| -> std::io::Result<()> {
        stream.set_read_timeout(Some(timeout))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let sent = format!("{source}-{sport}-{}", held.lines);
            writer.write_all(format!("{sent}\n").as_bytes())?;
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed by the server"));
            }
            let node = parse_echo(&line, &sent)?;
            if held.nodes.last() != Some(&node) {
                held.nodes.push(node);
            }
            held.lines += 1;
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // A clean close: the server sees EOF and closes too.
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)?;
        Ok(())
    })();
    if let Err(e) = result {
        held.error = Some(e.to_string());
    }
    held
}
