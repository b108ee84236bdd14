//! The real client during a flood, in the lab's client namespace (each
//! thread enters it itself: `setns` changes the calling thread only):
//! short HTTP connections one after the other, and one keep-alive
//! connection with one request after the other, each request every
//! `interval` at most and failed if not answered within `timeout`.

use crate::lab;
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Requests answered and not, and the answered ones' latencies (µs).
#[derive(Clone, Debug)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub latency_us: Histogram<u64>,
    /// The first few errors, to say why requests failed.
    pub errors: Vec<String>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            failed: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            errors: Vec::new(),
        }
    }
}

impl Tally {
    fn record(&mut self, r: std::io::Result<()>, took: Duration, timeout: Duration) {
        match r {
            Ok(()) if took <= timeout => {
                self.ok += 1;
                let _ = self.latency_us.record(took.as_micros().max(1) as u64);
            }
            Ok(()) => self.fail(format!("answered after {} ms", took.as_millis())),
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.errors.len() < 3 && !self.errors.contains(&why) {
            self.errors.push(why);
        }
    }

    /// A quantile of the answered requests' latency in ms (`None`: none
    /// answered).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.ok > 0).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }
}

fn enter_client_namespace() -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/var/run/netns/{}", lab::CLIENT_NS))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Waits for the next request's time (`next` moves on by `interval`; a
/// client that fell behind starts again from now).
fn pace(next: &mut Instant, interval: Duration) {
    *next += interval;
    let now = Instant::now();
    match next.checked_duration_since(now) {
        Some(wait) => std::thread::sleep(wait),
        None => *next = now,
    }
}

/// Short connections: connect, `GET /` (HTTP/1.0), read to the close.
pub fn short(
    target: SocketAddr,
    stop: &AtomicBool,
    interval: Duration,
    timeout: Duration,
) -> Tally {
    let mut t = Tally::default();
    if let Err(e) = enter_client_namespace() {
        t.fail(format!("entering the client namespace: {e}"));
        return t;
    }
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let r = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&target, timeout)?;
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            s.set_read_timeout(Some(left))?;
            s.set_write_timeout(Some(left))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)?;
            if !reply.starts_with(b"HTTP/1.0 200") {
                return Err(std::io::Error::other("not a 200 answer"));
            }
            Ok(())
        })();
        t.record(r, start.elapsed(), timeout);
        pace(&mut next, interval);
    }
    t
}

/// One HTTP/1.1 answer on a kept connection: its status line, headers and
/// `Content-Length` body.
fn read_answer(r: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("closed by the server"));
    }
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("answered {:?}", line.trim())));
    }
    let mut length = 0usize;
    let mut kept = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed in the headers"));
        }
        let l = line.trim();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("keep-alive") {
                kept = true;
            }
        }
    }
    if !kept {
        return Err(std::io::Error::other(
            "the server did not keep the connection",
        ));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)
}

/// One keep-alive connection, a request after the other; a failed request
/// drops the connection and the next one opens another.
pub fn keep_alive(
    target: SocketAddr,
    stop: &AtomicBool,
    interval: Duration,
    timeout: Duration,
) -> Tally {
    let mut t = Tally::default();
    if let Err(e) = enter_client_namespace() {
        t.fail(format!("entering the client namespace: {e}"));
        return t;
    }
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let r = (|| -> std::io::Result<()> {
            if conn.is_none() {
                let s = TcpStream::connect_timeout(&target, timeout)?;
                s.set_nodelay(true)?;
                let reader = BufReader::new(s.try_clone()?);
                conn = Some((s, reader));
            }
            let (s, reader) = conn.as_mut().expect("just connected");
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            s.set_read_timeout(Some(left))?;
            s.set_write_timeout(Some(left))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: keep-alive\r\n\r\n")?;
            read_answer(reader)
        })();
        if r.is_err() {
            conn = None;
        }
        t.record(r, start.elapsed(), timeout);
        pace(&mut next, interval);
    }
    t
}
