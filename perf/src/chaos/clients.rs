//! The chaos run's clients, in the lab's client namespace: long-lived
//! connections on the line echo, new HTTP connections, and a capture of
//! every SYN-ACK and RST the VIP sends, which tells which node answered.
//!
//! The threads enter the client namespace themselves (`setns` changes the
//! calling thread only), so the whole run is one process with one clock.

use super::judge::{Conn, Observation};
use crate::lab;
use crate::probe::source_address;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What every client thread shares.
pub struct Recorder {
    pub start: Instant,
    pub stop: AtomicBool,
    observations: Mutex<Vec<Observation>>,
    /// Nodes that answered a client address and port (SYN-ACK or RST),
    /// from the capture: to name the node of a connection that broke
    /// before it said who it was.
    responders: Mutex<HashMap<(Ipv4Addr, u16), u32>>,
    pub held_opened: AtomicU64,
    pub held_lines: AtomicU64,
    pub new_ok: AtomicU64,
    pub new_failed: AtomicU64,
    pub frames_seen: AtomicU64,
}

impl Recorder {
    pub fn new(start: Instant) -> Arc<Recorder> {
        Arc::new(Recorder {
            start,
            stop: AtomicBool::new(false),
            observations: Mutex::new(Vec::new()),
            responders: Mutex::new(HashMap::new()),
            held_opened: AtomicU64::new(0),
            held_lines: AtomicU64::new(0),
            new_ok: AtomicU64::new(0),
            new_failed: AtomicU64::new(0),
            frames_seen: AtomicU64::new(0),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn observe(&self, o: Observation) {
        if let Observation::Broken {
            conn,
            node,
            client,
            error,
            ..
        } = &o
        {
            eprintln!(
                "[{:>7.1} s] {conn:?} connection {client} on {} broke: {error}",
                self.now_ms() as f64 / 1000.0,
                node.map_or("no node".to_string(), |n| format!("s{n}"))
            );
        }
        self.observations
            .lock()
            .expect("no panic holding it")
            .push(o);
    }

    pub fn take_observations(&self) -> Vec<Observation> {
        std::mem::take(&mut *self.observations.lock().expect("no panic holding it"))
    }

    fn responder(&self, source: IpAddr, sport: u16) -> Option<u32> {
        let IpAddr::V4(ip) = source else { return None };
        self.responders
            .lock()
            .expect("no panic holding it")
            .get(&(ip, sport))
            .copied()
    }

    fn broken(&self, conn: Conn, node: Option<u32>, source: IpAddr, sport: u16, error: String) {
        // The capture may see the answer a moment after the client's
        // error: give it that moment.
        let node = node.or_else(|| {
            std::thread::sleep(Duration::from_millis(50));
            self.responder(source, sport)
        });
        self.observe(Observation::Broken {
            at_ms: self.now_ms(),
            conn,
            node,
            client: format!("{source}:{sport}"),
            error,
        });
    }
}

/// Enters the lab's client network namespace (this thread only).
fn enter_client_namespace() -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/var/run/netns/{}", lab::CLIENT_NS))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// A TCP socket bound to `source` with the port it will use known before
/// it connects (the capture names the node of a failed connect by it).
fn bound(source: IpAddr) -> std::io::Result<(Socket, u16)> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    let port = sock
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .unwrap_or(0);
    Ok((sock, port))
}

fn node_of(name: &str) -> Option<u32> {
    name.strip_prefix('s')?.parse().ok()
}

/// Long-lived connection number `index`: open one, send a line every
/// `interval` and check the echo for a random lifetime (2–10 s), close it
/// cleanly, open the next; a broken one is recorded and replaced.
pub fn hold(rec: Arc<Recorder>, index: u32, seed: u64, interval: Duration, timeout: Duration) {
    if let Err(e) = enter_client_namespace() {
        eprintln!("chaos: holder {index}: {e}");
        return;
    }
    let mut rng = fastrand::Rng::with_seed(seed ^ u64::from(index) << 32);
    let target = SocketAddr::new(lab::VIP4.parse().expect("a constant"), 7000);
    let mut round = 0u32;
    while !rec.stop.load(Ordering::Relaxed) {
        // 64 addresses per holder, in turn (client-ip affinity: a new
        // address may land on another node).
        let source = source_address(false, 4000 + index * 64 + round % 64);
        round += 1;
        let lifetime = Duration::from_millis(rng.u64(2000..=10_000));
        let mut node: Option<u32> = None;
        let mut sport = 0;
        let result = (|| -> std::io::Result<()> {
            let (sock, port) = bound(source)?;
            sport = port;
            sock.connect_timeout(&SockAddr::from(target), timeout)?;
            let stream: TcpStream = sock.into();
            rec.held_opened.fetch_add(1, Ordering::Relaxed);
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let opened = Instant::now();
            let mut n = 0u64;
            while opened.elapsed() < lifetime && !rec.stop.load(Ordering::Relaxed) {
                let sent = format!("{source}-{sport}-{n}");
                writer.write_all(format!("{sent}\n").as_bytes())?;
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("closed by the server"));
                }
                let who = node_of(&crate::probe::parse_echo(&line, &sent)?);
                if who.is_none() {
                    return Err(std::io::Error::other(format!("bad echo {line:?}")));
                }
                if node.is_some() && node != who {
                    return Err(std::io::Error::other(format!(
                        "answered by s{} after s{}",
                        who.unwrap_or(0),
                        node.unwrap_or(0)
                    )));
                }
                node = who;
                n += 1;
                rec.held_lines.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(interval);
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            Ok(())
        })();
        if let Err(e) = result {
            if !rec.stop.load(Ordering::Relaxed) {
                rec.broken(Conn::Held, node, source, sport, e.to_string());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// New connections: an HTTP GET on a fresh connection every `every`,
/// from 2048 client addresses in turn.
pub fn open_new(rec: Arc<Recorder>, index: u32, every: Duration, timeout: Duration) {
    if let Err(e) = enter_client_namespace() {
        eprintln!("chaos: opener {index}: {e}");
        return;
    }
    let target = SocketAddr::new(lab::VIP4.parse().expect("a constant"), 80);
    let mut i = 0u32;
    let mut next = Instant::now();
    while !rec.stop.load(Ordering::Relaxed) {
        let source = source_address(false, 8000 + (index * 7919 + i * 4) % 2048);
        i += 1;
        let mut sport = 0;
        let mut node = None;
        let result = (|| -> std::io::Result<()> {
            let (sock, port) = bound(source)?;
            sport = port;
            sock.connect_timeout(&SockAddr::from(target), timeout)?;
            let mut stream: TcpStream = sock.into();
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").trim();
            node = node_of(body);
            if !reply.starts_with("HTTP/1.0 200") || node.is_none() {
                return Err(std::io::Error::other(format!("bad reply {reply:?}")));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                rec.new_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                rec.new_failed.fetch_add(1, Ordering::Relaxed);
                if !rec.stop.load(Ordering::Relaxed) {
                    rec.broken(Conn::New, node, source, sport, e.to_string());
                }
            }
        }
        next += every;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => next = Instant::now(),
        }
    }
}

/// The node a lab NIC's MAC belongs to (`02:00:00:00:00:NN`).
fn node_of_mac(mac: [u8; 6]) -> Option<u32> {
    (mac[..5] == [2, 0, 0, 0, 0] && mac[5] > 0).then_some(u32::from(mac[5]))
}

/// Watches every frame of the client namespace for the VIP's SYN-ACKs and
/// RSTs: a connection attempt (client address, port, initial sequence)
/// answered by two nodes is a violation; the answering node of each
/// address and port is kept for [`Recorder::broken`].
pub fn capture(rec: Arc<Recorder>) {
    if let Err(e) = capture_frames(&rec) {
        eprintln!("chaos: capture: {e}");
        rec.observe(Observation::Leftover {
            what: format!("the capture failed ({e}): double answers went unchecked"),
        });
    }
}

fn capture_frames(rec: &Recorder) -> std::io::Result<()> {
    enter_client_namespace()?;
    const ETH_P_ALL: u16 = 0x0003;
    let sock = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = sock.set_recv_buffer_size(8 << 20);
    let vip: Ipv4Addr = lab::VIP4.parse().expect("a constant");
    // (client, port, the client's initial sequence) → the nodes that
    // answered it with a SYN-ACK.
    // Two generations, the older dropped every 30 s: a handshake is
    // answered within seconds.
    let mut answers: HashMap<(Ipv4Addr, u16, u32), HashSet<u32>> = HashMap::new();
    let mut older: HashMap<(Ipv4Addr, u16, u32), HashSet<u32>> = HashMap::new();
    let mut reported: HashSet<(Ipv4Addr, u16, u32)> = HashSet::new();
    let mut buf = vec![0u8; 65536];
    let mut last_trim = Instant::now();
    while !rec.stop.load(Ordering::Relaxed) {
        let n = match (&sock).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        rec.frames_seen.fetch_add(1, Ordering::Relaxed);
        let frame = &buf[..n];
        let Ok(eth) = fastpath::wire::Ethernet::parse(frame) else {
            continue;
        };
        if eth.ethertype != fastpath::wire::ETHERTYPE_IPV4 {
            continue;
        }
        let l3 = &frame[eth.l3_offset..];
        let Ok(ip) = fastpath::wire::Ipv4::parse(l3) else {
            continue;
        };
        if ip.protocol != 6 || Ipv4Addr::from(ip.src) != vip || ip.is_later_fragment {
            continue;
        }
        let tcp = &l3[ip.header_len..ip.total_len];
        if tcp.len() < 20 {
            continue;
        }
        let flags = tcp[13];
        let (syn, ack, rst) = (flags & 0x02 != 0, flags & 0x10 != 0, flags & 0x04 != 0);
        if !(rst || syn && ack) {
            continue;
        }
        let Some(node) = node_of_mac(eth.src) else {
            continue;
        };
        let client = Ipv4Addr::from(ip.dst);
        let cport = u16::from_be_bytes([tcp[2], tcp[3]]);
        rec.responders
            .lock()
            .expect("no panic holding it")
            .insert((client, cport), node);
        if syn && ack {
            let isn = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]).wrapping_sub(1);
            let key = (client, cport, isn);
            let nodes = answers
                .entry(key)
                .or_insert_with(|| older.remove(&key).unwrap_or_default());
            nodes.insert(node);
            if nodes.len() > 1 && reported.insert(key) {
                let mut nodes: Vec<u32> = nodes.iter().copied().collect();
                nodes.sort();
                rec.observe(Observation::DoubleAnswer {
                    at_ms: rec.now_ms(),
                    client: format!("{client}:{cport}"),
                    nodes,
                });
            }
        }
        if last_trim.elapsed() > Duration::from_secs(30) {
            older = std::mem::take(&mut answers);
            last_trim = Instant::now();
        }
    }
    Ok(())
}
