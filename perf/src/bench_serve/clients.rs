//! The clients, in the client namespace (on CPU 0 in the `equal` layout):
//! the share check's single curls, then each for `--seconds` keep-alive
//! `wrk -c50`, new connections `ab -c20`, one connection `wrk -c1
//! --latency`, and repeated bulk `curl` downloads and uploads, each with
//! the CPU it cost.

use super::cpu::{Cpu, Procs};
use super::figures::{Figures, Run};
use super::options::Options;
use super::parsers::{check_ab, check_wrk, parse_ab, parse_curl, parse_wrk, snmp_field};
use super::state::BULK_BYTES;
use crate::lab::{self, in_ns_output, node_ns, CLIENT_NS, VIP4};
use crate::median;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Single curls of the share check.
const CHECK_CURLS: u32 = 30;

/// Every client run of one setup, in order; with `steered`, the setup's
/// receive work must reach CPU 1 by RPS (checked during the keep-alive
/// run, in the `equal` layout).
pub(super) fn run_all(
    o: &Options,
    procs: &Procs,
    pin: bool,
    steered: bool,
    dir: &Path,
) -> Result<Figures> {
    let (keepalive, rps_cpu1) = keep_alive(o, procs, pin)?;
    // RPS must have moved the kernel node's (and a generic-mode af_xdp
    // node's) receive work to CPU 1 (on the emulated NIC its NAPI thread
    // there does it all: no IPI to count).
    if pin && steered && rps_cpu1 == 0 {
        bail!("RPS did not take effect: CPU 1 received no RPS interrupt during the keep-alive run");
    }
    let newconn = new_connections(o, procs, pin)?;
    let (c1, c1_p50_us) = one_connection(o, procs, pin)?;
    let bulk = transfer(o, procs, pin, Transfer::Download, dir)?;
    let upload = transfer(o, procs, pin, Transfer::Upload, dir)?;
    Ok(Figures {
        keepalive,
        newconn,
        c1,
        c1_p50_us,
        bulk,
        upload,
    })
}

/// Keep-alive `wrk -t1 -c50`; also the RPS interrupts CPU 1 received.
fn keep_alive(o: &Options, procs: &Procs, pin: bool) -> Result<(Run, u64)> {
    let (secs, url) = (o.seconds, vip_url());
    let (out, cpu) = timed_client(
        procs,
        pin,
        &["wrk", "-t1", "-c50", &format!("-d{secs}s"), &url],
        o.seconds + 15,
    )?;
    let w = parse_wrk(&out).context("keep-alive wrk")?;
    check_wrk(&w, "keep-alive wrk")?;
    let run = Run {
        value: w.rps,
        units: w.requests as f64,
        cpu: cpu.0,
    };
    Ok((run, cpu.1))
}

/// New connections: `ab -c 20` (HTTP/1.0, one connection per request).
fn new_connections(o: &Options, procs: &Procs, pin: bool) -> Result<Run> {
    let (secs, url) = (o.seconds.to_string(), vip_url());
    // -n after -t: `-t` resets the request limit to 50000; -t bounds the run.
    let (out, cpu) = timed_client(
        procs,
        pin,
        &["ab", "-q", "-c", "20", "-t", &secs, "-n", "10000000", &url],
        o.seconds + 30,
    )?;
    let a = parse_ab(&out).context("ab")?;
    check_ab(&a)?;
    Ok(Run {
        value: a.rps,
        units: a.complete as f64,
        cpu: cpu.0,
    })
}

/// One connection, `wrk -t1 -c1 --latency`: its req/s and median latency
/// (µs).
fn one_connection(o: &Options, procs: &Procs, pin: bool) -> Result<(Run, f64)> {
    let (secs, url) = (o.seconds, vip_url());
    let (out, cpu) = timed_client(
        procs,
        pin,
        &[
            "wrk",
            "-t1",
            "-c1",
            &format!("-d{secs}s"),
            "--latency",
            &url,
        ],
        o.seconds + 15,
    )?;
    let w = parse_wrk(&out).context("one-connection wrk")?;
    check_wrk(&w, "one-connection wrk")?;
    let run = Run {
        value: w.rps,
        units: w.requests as f64,
        cpu: cpu.0,
    };
    let p50_us = w.p50_us.context("wrk printed no latency distribution")?;
    Ok((run, p50_us))
}

/// The VIP's `/`.
fn vip_url() -> String {
    format!("http://{VIP4}/")
}

/// A bulk transfer's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transfer {
    /// `GET /bulk`: nginx sends the file (`sendfile`).
    Download,
    /// `PUT /upload/bulk` of the same file: nginx receives it (DAV, into
    /// its node's directory on tmpfs).
    Upload,
}

/// Repeated bulk transfers for `--seconds` (at least 3): the median
/// Gbit/s, and the CPU of them all per MB (10^6 bytes).
fn transfer(o: &Options, procs: &Procs, pin: bool, way: Transfer, dir: &Path) -> Result<Run> {
    let (url, what) = match way {
        Transfer::Download => (format!("http://{VIP4}/bulk"), "download"),
        Transfer::Upload => (format!("http://{VIP4}/upload/bulk"), "upload"),
    };
    let file = dir.join("bulk").display().to_string();
    let write_out = match way {
        Transfer::Download => "%{speed_download} %{size_download} %{http_code}",
        Transfer::Upload => "%{speed_upload} %{size_upload} %{http_code}",
    };
    let mut args = vec!["curl", "-s", "-S", "-m", "30", "-w", write_out];
    match way {
        Transfer::Download => args.extend(["-o", "/dev/null"]),
        // No `Expect: 100-continue` round trip before the body.
        Transfer::Upload => args.extend(["-o", "/dev/null", "-H", "Expect:", "-T", &file]),
    }
    args.push(&url);
    let start = Instant::now();
    let before = procs.sample()?;
    let mut speeds = Vec::new();
    let mut bytes = 0.0;
    while speeds.len() < 3 || (start.elapsed().as_secs() < o.seconds && speeds.len() < 50) {
        let (status, out, err) = client_status(pin, &args, 40)?;
        let status = status.with_context(|| format!("curl {what} did not finish within 40 s"))?;
        // curl prints its -w line on its own timeout too (exit 28).
        let (speed, size, code) = parse_curl(&out)
            .with_context(|| format!("curl {what} failed ({status}): {}", err.trim()))?;
        if status.code() == Some(28) {
            bail!("bulk {what} stalled: {size} of {BULK_BYTES} bytes in 30 s ({speed:.0} bytes/s)");
        }
        if !status.success() {
            bail!("curl {what} failed ({status}): {}", err.trim());
        }
        // A PUT creates the file (201), then replaces it (204).
        let ok = match way {
            Transfer::Download => code == 200,
            Transfer::Upload => code == 201 || code == 204,
        };
        if !ok || size != BULK_BYTES {
            bail!("bulk {what}: HTTP {code}, {size} bytes (expected {BULK_BYTES})");
        }
        speeds.push(speed * 8.0 / 1e9);
        bytes += size as f64;
    }
    let after = procs.sample()?;
    Ok(Run {
        value: median(&mut speeds),
        units: bytes / 1e6,
        cpu: after.since(&before)?,
    })
}

/// `CHECK_CURLS` single requests to the VIP: each must get one answer, and
/// every node must have accepted exactly the connections it answered.
pub(super) fn check_shares(nodes: u32, pin: bool) -> Result<()> {
    let opens = |n| -> Result<u64> {
        snmp_field(
            &in_ns_output(&node_ns(n), &["cat", "/proc/net/snmp"])?,
            "Tcp",
            "PassiveOpens",
        )
    };
    let before = (1..=nodes).map(opens).collect::<Result<Vec<u64>>>()?;
    let mut answers = vec![0u64; nodes as usize];
    let url = vip_url();
    for _ in 0..CHECK_CURLS {
        let body = client(pin, &["curl", "-s", "-S", "-m", "2", &url], 5)?;
        let n = lab::parse_node(body.trim())
            .ok()
            .filter(|n| *n <= nodes)
            .with_context(|| format!("the VIP answered {body:?}, not a node's name"))?;
        answers[n as usize - 1] += 1;
    }
    let after = (1..=nodes).map(opens).collect::<Result<Vec<u64>>>()?;
    let accepted: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    if accepted != answers {
        bail!(
            "share check: nodes accepted {accepted:?} connections but answered {answers:?} of {CHECK_CURLS} requests"
        );
    }
    if nodes > 1 && answers.contains(&0) {
        bail!("share check: a node answered none of {CHECK_CURLS} requests: {answers:?}");
    }
    Ok(())
}

/// Sums of TCP RetransSegs and OutRsts over the nodes' namespaces.
pub(super) fn tcp_counters(nodes: u32) -> Result<(u64, u64)> {
    let mut sums = (0, 0);
    for n in 1..=nodes {
        let snmp = in_ns_output(&node_ns(n), &["cat", "/proc/net/snmp"])?;
        sums.0 += snmp_field(&snmp, "Tcp", "RetransSegs")?;
        sums.1 += snmp_field(&snmp, "Tcp", "OutRsts")?;
    }
    Ok(sums)
}

/// Runs a client command in the client namespace (on CPU 0 if `pin`),
/// killed after `timeout_s`; returns its stdout, failing with its stderr.
pub(super) fn client(pin: bool, args: &[&str], timeout_s: u64) -> Result<String> {
    let (status, out, err) = client_status(pin, args, timeout_s)?;
    match status {
        None => bail!("`{}` did not finish within {timeout_s} s", args.join(" ")),
        Some(s) if !s.success() => bail!(
            "`{}` failed ({s}): {}",
            args.join(" "),
            format!("{} {}", err.trim(), out.trim()).trim()
        ),
        Some(_) => Ok(out),
    }
}

/// Runs a client command as `client` does; returns its exit status (none
/// if it was killed at the timeout), stdout and stderr.
fn client_status(
    pin: bool,
    args: &[&str],
    timeout_s: u64,
) -> Result<(Option<std::process::ExitStatus>, String, String)> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", CLIENT_NS]);
    if pin {
        cmd.args(["taskset", "-c", "0"]);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args[0]))?;
    let output = crate::child::Output::read(&mut child)?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = output.join();
    Ok((status, out, err))
}

/// A client run with the CPU it cost; also the RPS interrupts CPU 1
/// received meanwhile.
fn timed_client(
    procs: &Procs,
    pin: bool,
    args: &[&str],
    timeout_s: u64,
) -> Result<(String, (Cpu, u64))> {
    let before = procs.sample()?;
    let out = client(pin, args, timeout_s)?;
    let after = procs.sample()?;
    Ok((
        out,
        (after.since(&before)?, after.rps_cpu1 - before.rps_cpu1),
    ))
}
