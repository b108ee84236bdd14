//! One probe of each checker kind: the IO behind a checker result.

use config::{Checker, HttpUrl, Link, Probe, ProcessMatch};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::Command;

/// The link of the fastpath's NIC, read through DPDK by the caller
/// (`None`: not known).
pub type NicLink = Arc<dyn Fn() -> Option<bool> + Send + Sync>;

/// What a probe found: ok, and a short detail for the logs and status.
pub type Outcome = (bool, String);

/// Largest HTTP body a checker reads (a health page, not a download).
const MAX_BODY: usize = 64 * 1024;

/// Runs one probe of `c` within its timeout. `env` is given to custom
/// commands (`HERD_NODE`…).
pub async fn probe(c: &Checker, nic: &NicLink, env: &[(&str, String)]) -> Outcome {
    let timeout = Duration::from_millis(u64::from(c.timeout_ms));
    match tokio::time::timeout(timeout, run(c, nic, env, timeout)).await {
        Ok(outcome) => outcome,
        Err(_) => (false, format!("timed out after {} ms", c.timeout_ms)),
    }
}

async fn run(c: &Checker, nic: &NicLink, env: &[(&str, String)], timeout: Duration) -> Outcome {
    match &c.probe {
        Probe::Tcp { address } => match TcpStream::connect(address).await {
            Ok(_) => (true, format!("connected to {address}")),
            Err(e) => (false, format!("connect {address}: {e}")),
        },
        Probe::Http { url, status, body } => http(url, *status, body.as_deref()).await,
        Probe::Ping { host } => {
            let secs = timeout.as_secs().max(1).to_string();
            command_ok(
                Command::new("ping").args(["-n", "-q", "-c", "1", "-W", &secs, &host.to_string()]),
                &format!("ping {host}"),
            )
            .await
        }
        Probe::Interface(Link::Nic) => match nic() {
            Some(true) => (true, "nic link up".into()),
            Some(false) => (false, "nic link down".into()),
            None => (false, "nic link unknown".into()),
        },
        Probe::Interface(Link::Kernel(name)) => kernel_link(name),
        Probe::Process { matching, min, max } => {
            let (matching, min, max) = (matching.clone(), *min, *max);
            tokio::task::spawn_blocking(move || processes(&matching, min, max))
                .await
                .unwrap_or_else(|e| (false, format!("process scan failed: {e}")))
        }
        Probe::Custom { command: cmd } => {
            let mut command = Command::new("sh");
            command.args(["-c", cmd]);
            for (k, v) in env {
                command.env(k, v);
            }
            command_ok(&mut command, cmd).await
        }
    }
}

async fn command_ok(cmd: &mut Command, what: &str) -> Outcome {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // A probe that times out is dropped: its process goes with it.
        .kill_on_drop(true);
    match cmd.status().await {
        Ok(s) if s.success() => (true, format!("{what}: exit 0")),
        Ok(s) => (false, format!("{what}: {s}")),
        Err(e) => (false, format!("{what}: {e}")),
    }
}

async fn http(url: &HttpUrl, want: u16, body: Option<&str>) -> Outcome {
    let raw = url.text.as_str();
    let stream = match TcpStream::connect((url.host.as_str(), url.port)).await {
        Ok(s) => s,
        Err(e) => return (false, format!("connect {}: {e}", url.authority)),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(e) => return (false, format!("{raw}: {e}")),
    };
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(url.path.as_str())
        .header(hyper::header::HOST, url.authority.as_str())
        .header(hyper::header::USER_AGENT, "herd-checker")
        .body(Empty::<Bytes>::new());
    let req = match req {
        Ok(r) => r,
        Err(e) => return (false, format!("{raw}: {e}")),
    };
    let outcome = match sender.send_request(req).await {
        Err(e) => (false, format!("{raw}: {e}")),
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status != want {
                (false, format!("{raw}: status {status}, want {want}"))
            } else if let Some(needle) = body {
                let limited = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
                match limited.collect().await {
                    Ok(b) => {
                        let body = b.to_bytes();
                        if String::from_utf8_lossy(&body).contains(needle) {
                            (true, format!("{raw}: {status}, body matches"))
                        } else {
                            (false, format!("{raw}: body lacks {needle:?}"))
                        }
                    }
                    Err(e) => (false, format!("{raw}: body: {e}")),
                }
            } else {
                (true, format!("{raw}: {status}"))
            }
        }
    };
    conn.abort();
    outcome
}

/// A kernel interface is up when it is administratively up and has a
/// carrier.
fn kernel_link(name: &str) -> Outcome {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    // `carrier` cannot be read while the interface is down (EINVAL).
    match std::fs::read_to_string(dir.join("carrier")) {
        Ok(s) if s.trim() == "1" => (true, format!("{name} carrier up")),
        Ok(_) => (false, format!("{name} no carrier")),
        Err(_) if !dir.exists() => (false, format!("{name}: no such interface")),
        Err(_) => (false, format!("{name} down")),
    }
}

/// Counts the processes `matching` (by name, or by a regex on the
/// command line) and checks the count against `min`/`max`.
fn processes(matching: &ProcessMatch, min: u32, max: Option<u32>) -> Outcome {
    let pattern = match matching {
        ProcessMatch::Pattern(p) => match regex::Regex::new(p) {
            Ok(r) => Some(r),
            Err(e) => return (false, format!("bad pattern: {e}")),
        },
        ProcessMatch::Name(_) => None,
    };
    let wanted_name = match matching {
        ProcessMatch::Name(n) => Some(n.as_str()),
        ProcessMatch::Pattern(_) => None,
    };
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (false, "cannot read /proc".into());
    };
    let mut count = 0u32;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let path = entry.path();
        let matched = if let Some(re) = &pattern {
            std::fs::read(path.join("cmdline")).is_ok_and(|raw| {
                let line: String = String::from_utf8_lossy(&raw)
                    .trim_end_matches('\0')
                    .replace('\0', " ");
                !line.is_empty() && re.is_match(&line)
            })
        } else {
            std::fs::read_to_string(path.join("comm"))
                .is_ok_and(|comm| Some(comm.trim_end()) == wanted_name)
        };
        count += u32::from(matched);
    }
    let what = match matching {
        ProcessMatch::Name(w) | ProcessMatch::Pattern(w) => w,
    };
    let detail = format!("{count} processes {what:?}");
    match max {
        _ if count < min => (false, format!("{detail}, fewer than {min}")),
        Some(max) if count > max => (false, format!("{detail}, more than {max}")),
        _ => (true, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(probe: Probe) -> Checker {
        Checker {
            name: "t".into(),
            action: Default::default(),
            interval_ms: 1000,
            timeout_ms: 2000,
            failures_before_down: 3,
            successes_before_up: 1,
            probe,
        }
    }

    fn custom(command: &str) -> Probe {
        Probe::Custom {
            command: command.into(),
        }
    }

    fn http(url: String, body: Option<&str>) -> Probe {
        Probe::Http {
            url: HttpUrl::parse(&url).unwrap(),
            status: 200,
            body: body.map(str::to_string),
        }
    }

    fn processes(matching: ProcessMatch, min: u32, max: Option<u32>) -> Probe {
        Probe::Process { matching, min, max }
    }

    fn no_nic() -> NicLink {
        Arc::new(|| None)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn custom_follows_the_exit_code() {
        let rt = rt();
        let mut c = checker(custom("test \"$HERD_NODE\" = s1"));
        let env = [("HERD_NODE", "s1".to_string())];
        assert!(
            rt.block_on(probe(&c, &no_nic(), &env)).0,
            "the node's environment"
        );
        c.probe = custom("exit 0");
        assert!(rt.block_on(probe(&c, &no_nic(), &[])).0);
        c.probe = custom("exit 4");
        let (ok, detail) = rt.block_on(probe(&c, &no_nic(), &[]));
        assert!(!ok);
        assert!(detail.contains('4'), "{detail}");
        c.probe = custom("sleep 5");
        c.timeout_ms = 100;
        let (ok, detail) = rt.block_on(probe(&c, &no_nic(), &[]));
        assert!(!ok && detail.contains("timed out"), "{detail}");
    }

    #[test]
    fn tcp_and_http_against_a_local_server() {
        let rt = rt();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = [0u8; 1024];
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        let req = String::from_utf8_lossy(&buf[..n]).to_string();
                        let resp = if req.starts_with("GET /ok ") {
                            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nserved s1"
                        } else {
                            "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"
                        };
                        let _ = s.write_all(resp.as_bytes()).await;
                    });
                }
            });
            let mut tcp = checker(Probe::Tcp { address: addr });
            assert!(probe(&tcp, &no_nic(), &[]).await.0);
            let ok_url = format!("http://{addr}/ok");
            let mut get = checker(http(ok_url.clone(), None));
            assert!(probe(&get, &no_nic(), &[]).await.0);
            get.probe = http(ok_url.clone(), Some("s1"));
            assert!(probe(&get, &no_nic(), &[]).await.0);
            get.probe = http(ok_url, Some("s2"));
            let (ok, detail) = probe(&get, &no_nic(), &[]).await;
            assert!(!ok && detail.contains("lacks"), "{detail}");
            get.probe = http(format!("http://{addr}/sick"), None);
            let (ok, detail) = probe(&get, &no_nic(), &[]).await;
            assert!(!ok && detail.contains("503"), "{detail}");
            // A closed port.
            let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let closed = free.local_addr().unwrap();
            drop(free);
            tcp.probe = Probe::Tcp { address: closed };
            assert!(!probe(&tcp, &no_nic(), &[]).await.0);
        });
    }

    #[test]
    fn process_counts_against_min_and_max() {
        let rt = rt();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pattern = || ProcessMatch::Pattern("^sleep 30$".to_string());
        let mut c = checker(processes(pattern(), 1, None));
        let (ok, detail) = rt.block_on(probe(&c, &no_nic(), &[]));
        assert!(ok, "{detail}");
        c.probe = processes(pattern(), 0, Some(0));
        assert!(!rt.block_on(probe(&c, &no_nic(), &[])).0, "more than max");
        c.probe = processes(ProcessMatch::Name("sleep".into()), 1, None);
        assert!(rt.block_on(probe(&c, &no_nic(), &[])).0);
        child.kill().unwrap();
        child.wait().unwrap();
        c.probe = processes(ProcessMatch::Name("no-such-proc".into()), 1, None);
        let (ok, detail) = rt.block_on(probe(&c, &no_nic(), &[]));
        assert!(!ok && detail.contains("fewer than 1"), "{detail}");
    }

    #[test]
    fn interface_nic_and_kernel() {
        let rt = rt();
        let mut c = checker(Probe::Interface(Link::Nic));
        let up: NicLink = Arc::new(|| Some(true));
        let down: NicLink = Arc::new(|| Some(false));
        assert!(rt.block_on(probe(&c, &up, &[])).0);
        assert!(!rt.block_on(probe(&c, &down, &[])).0);
        assert!(!rt.block_on(probe(&c, &no_nic(), &[])).0);
        c.probe = Probe::Interface(Link::Kernel("herd-none0".into()));
        let (ok, detail) = rt.block_on(probe(&c, &no_nic(), &[]));
        assert!(!ok && detail.contains("no such interface"), "{detail}");
    }
}
