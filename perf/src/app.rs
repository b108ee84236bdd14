//! The lab's application: answers with the node's name.
//!
//! - HTTP on TCP 80: `GET` returns the node name as the body (a request
//!   with `Connection: keep-alive` keeps the connection for the next);
//!   `GET /download/<bytes>/<ms>` sends `<bytes>` bytes spread evenly over
//!   `<ms>` milliseconds (a download in progress), the node's name in the
//!   `X-Node` header; `PUT` or `POST /upload` with a `Content-Length`
//!   body answers `<name> <bytes> <sha256 hex>` of what arrived (an
//!   upload checked end to end).
//! - Line echo on TCP 7000: each line comes back as `<name> <line>`
//!   (long-lived connections).
//! - Datagram echo on UDP 9000: each datagram comes back as `<name> <data>`.
//!
//! It binds the dual-stack wildcard address, so it serves the VIP
//! (on loopback) and the node's own address alike.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub struct Ports {
    pub http: u16,
    pub echo: u16,
    pub udp: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: 80,
            echo: 7000,
            udp: 9000,
        }
    }
}

/// One dual-stack listener on [::], or IPv4 only where IPv6 is off.
fn listen(port: u16) -> Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0u16; 8], port)))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([0u8; 4], port))))
        .with_context(|| format!("bind tcp {port}"))
}

/// Serves forever (until killed).
pub fn serve(name: &str, ports: Ports) -> Result<()> {
    let name: Arc<str> = Arc::from(name);
    let mut handles = Vec::new();
    let l = listen(ports.http)?;
    let n = Arc::clone(&name);
    handles.push(thread::spawn(move || accept_loop(l, n, http)));
    let l = listen(ports.echo)?;
    let n = Arc::clone(&name);
    handles.push(thread::spawn(move || accept_loop(l, n, echo)));
    let s = UdpSocket::bind(SocketAddr::from(([0u16; 8], ports.udp)))
        .or_else(|_| UdpSocket::bind(SocketAddr::from(([0u8; 4], ports.udp))))
        .context("bind udp")?;
    let n = Arc::clone(&name);
    handles.push(thread::spawn(move || udp_echo(s, n)));
    eprintln!(
        "app {name}: serving http {}, echo {}, udp {}",
        ports.http, ports.echo, ports.udp
    );
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn accept_loop(
    l: TcpListener,
    name: Arc<str>,
    handler: fn(TcpStream, &str) -> std::io::Result<()>,
) {
    for stream in l.incoming().flatten() {
        let name = Arc::clone(&name);
        thread::spawn(move || {
            let _ = handler(stream, &name);
        });
    }
}

fn http(mut s: TcpStream, name: &str) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    loop {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16384 {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.is_empty() {
            return Ok(());
        }
        let head_end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(got.len(), |i| i + 4);
        let request = String::from_utf8_lossy(&got[..head_end]).into_owned();
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        if let Some((bytes, ms)) = download_request(path) {
            return download(s, name, bytes, ms);
        }
        if path == "/upload" {
            let length = content_length(&request).unwrap_or(0);
            return upload(s, name, &got[head_end..], length);
        }
        let body = format!("{name}\n");
        if !keep_alive(&request) {
            write!(s, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            return s.flush();
        }
        // A client that asks for it keeps the connection for its next
        // request (`herd-bench flood`'s keep-alive stream).
        // One write: `write!` would send the head in pieces, and the
        // piece after the first would wait for the client's delayed ACK
        // (Nagle), 40 ms a request on a kept connection.
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}", body.len());
        s.write_all(answer.as_bytes())?;
        got.drain(..head_end);
    }
}

/// The request head asks to keep the connection (`Connection: keep-alive`).
fn keep_alive(head: &str) -> bool {
    head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("connection")
                && v.trim().eq_ignore_ascii_case("keep-alive")
        })
    })
}

/// `/download/<bytes>/<ms>`, at most 1 GiB over at most 10 minutes.
fn download_request(path: &str) -> Option<(u64, u64)> {
    let rest = path.strip_prefix("/download/")?;
    let (bytes, ms) = rest.split_once('/')?;
    let (bytes, ms) = (bytes.parse().ok()?, ms.parse().ok()?);
    (bytes <= 1 << 30 && ms <= 600_000).then_some((bytes, ms))
}

/// Sends `bytes` in 64 KiB writes paced over `ms` milliseconds.
fn download(mut s: TcpStream, name: &str, bytes: u64, ms: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    write!(s, "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nX-Node: {name}\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n")?;
    let chunk = vec![b'h'; CHUNK as usize];
    let start = std::time::Instant::now();
    let mut sent = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        s.write_all(&chunk[..n as usize])?;
        sent += n;
        let due = Duration::from_millis(ms * sent / bytes.max(1));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
    s.flush()
}

/// The `Content-Length` of a request head, if it has one.
fn content_length(head: &str) -> Option<u64> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Reads an upload's `length` bytes (`first` already read) and answers
/// with their count and SHA-256.
fn upload(mut s: TcpStream, name: &str, first: &[u8], length: u64) -> std::io::Result<()> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(first);
    let mut got = first.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    while got < length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n as u64;
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let body = format!("{name} {got} {digest}\n");
    write!(s, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    s.flush()
}

fn echo(s: TcpStream, name: &str) -> std::io::Result<()> {
    // Long-lived: no read timeout; the client closes.
    let mut w = s.try_clone()?;
    for line in BufReader::new(s).lines() {
        let line = line?;
        writeln!(w, "{name} {line}")?;
    }
    Ok(())
}

fn udp_echo(s: UdpSocket, name: Arc<str>) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        let mut out = Vec::with_capacity(name.len() + 1 + n);
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&buf[..n]);
        let _ = s.send_to(&out, from);
    }
}

#[cfg(test)]
mod tests {
    use super::{content_length, download_request, keep_alive};

    #[test]
    fn keep_alive_only_when_asked() {
        assert!(keep_alive(
            "GET / HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n"
        ));
        assert!(!keep_alive("GET / HTTP/1.0\r\nHost: vip\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn an_upload_has_its_length_from_the_head() {
        let head = "PUT /upload HTTP/1.1\r\nHost: x\r\ncontent-length: 1234\r\n\r\n";
        assert_eq!(content_length(head), Some(1234));
        assert_eq!(content_length("GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn download_paths_are_parsed_and_bounded() {
        assert_eq!(download_request("/download/1000/50"), Some((1000, 50)));
        assert_eq!(download_request("/"), None);
        assert_eq!(download_request("/download/10"), None);
        assert_eq!(download_request("/download/x/10"), None);
        assert_eq!(download_request("/download/2000000000/10"), None);
        assert_eq!(download_request("/download/10/6000000"), None);
    }
}
