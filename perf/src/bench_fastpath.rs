//! `herd-bench fastpath`: Herd's classify-and-forward rate on one lcore
//! against `dpdk-testpmd --forward-mode=5tswap` on the same core and the
//! same traffic, run alternately (A/B/A/B) so machine noise hits both; then
//! the idle CPU of an lcore and the latency of the first packet after idle.
//!
//! Traffic: a pcap of TCP SYNs from many clients to the VIP, replayed
//! forever by `net_pcap` (`infinite_rx=1`). Both programs read it from
//! port 0 and send what they forward to a `net_null` port: testpmd swaps
//! and forwards every packet, Herd classifies each and forwards the half
//! its buckets own (the other half is dropped, as on a real two-node farm).

use crate::median;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// A/B rounds (each runs Herd then testpmd).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The CPU both programs run on.
    #[arg(long, default_value_t = 1)]
    pub cpu: u32,
    /// Distinct flows in the traffic.
    #[arg(long, default_value_t = 8192)]
    pub flows: u32,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10)]
    pub idle_seconds: u64,
    /// `polling.max_sleep_us` of the idle node (its lcore's af_packet
    /// port and TAP wake it: this bounds only the sleeps of an lcore that
    /// time alone wakes).
    #[arg(long, default_value_t = 1500)]
    pub max_sleep_us: u32,
    /// IPv6 traffic (to 2001:2::100) instead of IPv4.
    #[arg(long)]
    pub ipv6: bool,
    /// Where configs, the pcap and logs go.
    #[arg(long, default_value = "perf/out")]
    pub out: PathBuf,
}

pub(crate) const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

pub fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let out = std::fs::canonicalize(&o.out)?;
    let pcap = out.join("flows.pcap");
    let vip: IpAddr = if o.ipv6 { VIP6.into() } else { VIP.into() };
    let frames = crate::pcap::syn_flows(
        o.flows,
        vip,
        config::vip_mac(vip, config::Delivery::Vmac),
        80,
    );
    crate::pcap::write(&pcap, &frames)?;
    println!(
        "traffic: {} TCP SYN flows to {vip} port 80, {}-byte frames, replayed by net_pcap",
        o.flows,
        frames[0].len() + 4
    );

    let mut herd = Vec::new();
    let mut testpmd = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=o.rounds {
        let h = herd_rate(o.cpu, o.seconds, &out, &pcap, "0-2047", vip)?;
        let t = testpmd_rate(o, &out, &pcap)?;
        println!(
            "round {round}: herd {h:.3} Mpps   testpmd 5tswap {t:.3} Mpps   ratio {:.3}",
            h / t
        );
        herd.push(h);
        testpmd.push(t);
        ratios.push(h / t);
    }
    // The ratio is taken within each round (the two runs side by side,
    // under the same machine noise), then the median over rounds.
    let ratio = median(&mut ratios);
    let (h, t) = (median(&mut herd), median(&mut testpmd));
    let idle = idle_and_latency(o, &out)?;
    println!(
        "median: herd {h:.3} Mpps, testpmd {t:.3} Mpps, ratio {ratio:.3} (median of the rounds' ratios; goal >= 0.9)\nidle lcore CPU {:.2} % (goal < 3 %), {:.1} idle waits/s, first packet after idle RTT {:.0} us, busy RTT {:.0} us",
        idle.cpu_pct,
        idle.waits_per_s,
        idle.first_pkt_us,
        idle.busy_rtt_us
    );
    println!(
        "RESULT fastpath ratio={ratio:.3} herd_mpps={h:.3} testpmd_mpps={t:.3} idle_cpu_pct={:.2} idle_waits_per_s={:.1} first_pkt_us={:.0} busy_rtt_us={:.0}",
        idle.cpu_pct,
        idle.waits_per_s,
        idle.first_pkt_us,
        idle.busy_rtt_us
    );
    Ok(())
}

/// The idle waits of a node's lcores so far (`herd status` on `sock`).
fn idle_waits(sock: &Path) -> Result<u64> {
    let out = Command::new(herd_bin())
        .args(["status", "--json", "--socket"])
        .arg(sock)
        .output()?;
    if !out.status.success() {
        bail!(
            "herd status: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let report: herd_control::status::Report = serde_json::from_slice(&out.stdout)?;
    Ok(report
        .node
        .lcores
        .iter()
        .map(|l| l.counters.idle_sleeps)
        .sum())
}

fn herd_bin() -> PathBuf {
    crate::lab::sibling_binary("herd")
}

/// Kills a child on drop, so no benchmark process outlives a failure.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(sock: &Path) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"status\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

fn wait_status(sock: &Path, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(sock).is_err() {
        if let Some(code) = child.try_wait()? {
            bail!("{what} exited ({code}) while starting");
        }
        if Instant::now() > deadline {
            bail!("{what} did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs `herd run --config cfg` (in namespace `netns` if given), logging
/// to `<name>.log` in `out`, and waits until its control socket answers.
fn start_herd(
    out: &Path,
    name: &str,
    cfg: &Path,
    sock: &Path,
    netns: Option<&str>,
) -> Result<Guard> {
    let log = std::fs::File::create(out.join(format!("{name}.log")))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(herd_bin());
            c
        }
        None => Command::new(herd_bin()),
    };
    let mut child = cmd
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting herd ({name})"))?;
    wait_status(sock, &mut child, name)?;
    Ok(Guard(child))
}

/// A static two-node farm; this node (1) owns `id_owned` of 4096 buckets,
/// node 2 the rest.
fn farm_toml(id_owned: &str, vip: IpAddr) -> String {
    let owned = config::BucketRanges::parse(id_owned).map(|r| r.iter().collect::<Vec<u32>>());
    let others = owned.map_or_else(
        |_| String::new(),
        |o| fastpath::node::ranges_string((0..4096).filter(|b| o.binary_search(b).is_err())),
    );
    format!(
        r#"[node]
id = 1
[farm]
name = "bench"
vips = ["{vip}"]
[[farm.nodes]]
id = 1
name = "b1"
buckets = "{id_owned}"
[[farm.nodes]]
id = 2
name = "b2"
buckets = "{others}"
[[rules]]
protocol = "tcp"
port = 80
affinity = "client-ip-port"
"#
    )
}

/// Herd's rate (Mpps) on CPU `cpu` over `seconds`, reading `pcap` forever
/// and owning the buckets `owned` (ranges, as in the config).
pub(crate) fn herd_rate(
    cpu: u32,
    seconds: u64,
    out: &Path,
    pcap: &Path,
    owned: &str,
    vip: IpAddr,
) -> Result<f64> {
    let sock = out.join("bench-herd.sock");
    let cfg = out.join("bench-herd.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{farm}
[port]
driver = "vdev"
vdev = "net_pcap0,rx_pcap={pcap},infinite_rx=1"
[tap]
configure_kernel = false
vdev = "net_null0,no-rx=1"
[dpdk]
cpus = "{cpu}"
memory_mb = 1024
mbufs = 32767
file_prefix = "herd-bench"
[control]
socket = "{sock}"
"#,
            farm = farm_toml(owned, vip),
            pcap = pcap.display(),
            sock = sock.display()
        ),
    )?;
    let guard = start_herd(out, "bench-herd", &cfg, &sock, None)?;
    std::thread::sleep(Duration::from_secs(1));
    let rx = |v: &serde_json::Value| v["totals"]["rx_packets"].as_u64().unwrap_or(0);
    let t0 = Instant::now();
    let a = rx(&status(&sock)?);
    std::thread::sleep(Duration::from_secs(seconds));
    let b = rx(&status(&sock)?);
    let dt = t0.elapsed().as_secs_f64();
    drop(guard);
    if b <= a {
        bail!(
            "herd received nothing from net_pcap (see {})",
            out.join("bench-herd.log").display()
        );
    }
    Ok((b - a) as f64 / dt / 1e6)
}

fn testpmd_rate(o: &Options, out: &Path, pcap: &Path) -> Result<f64> {
    let cpu = o.cpu;
    let log_path = out.join("bench-testpmd.log");
    // Line-buffered, so every statistics period arrives as it is printed.
    let mut child = Command::new("stdbuf")
        .args([
            "-oL".to_string(),
            "dpdk-testpmd".into(),
            format!("--lcores=0@({cpu}),1@({cpu})"),
            "--no-huge".into(),
            "-m1024".into(),
            "--file-prefix=herd-bench-tp".into(),
            "--no-pci".into(),
            "--no-telemetry".into(),
            format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
            "--vdev=net_null0,no-rx=1".into(),
            "--".into(),
            "--forward-mode=5tswap".into(),
            "--nb-cores=1".into(),
            "--total-num-mbufs=32767".into(),
            "--stats-period=1".into(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dpdk-testpmd (Debian package dpdk-dev)")?;
    let stdout = child.stdout.take().context("testpmd stdout")?;
    let guard = Guard(child);
    // testpmd's periodic display shares the core with the forwarding lcore
    // and is printed irregularly, so each cumulative port-0 RX-packets line
    // is timestamped as it arrives and the rate taken between two of them.
    let reader = std::thread::spawn(move || {
        let mut log = std::fs::File::create(&log_path).ok();
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        let mut port = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(l) = log.as_mut() {
                let _ = writeln!(l, "{line}");
            }
            if let Some(rest) = line.split("statistics for port").nth(1) {
                port = rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u32>().ok());
            }
            if let (Some(0), Some(v)) = (port, line.trim().strip_prefix("RX-packets:")) {
                if let Some(n) = v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    samples.push((Instant::now(), n));
                }
            }
        }
        samples
    });
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(o.seconds + 2));
    drop(guard);
    let samples = reader
        .join()
        .map_err(|_| anyhow::anyhow!("testpmd reader panicked"))?;
    // Skip the start-up second.
    let steady: Vec<&(Instant, u64)> = samples
        .iter()
        .filter(|(t, _)| t.duration_since(start) >= Duration::from_secs(1))
        .collect();
    let (Some(first), Some(last)) = (steady.first(), steady.last()) else {
        bail!(
            "testpmd printed no statistics (see {})",
            out.join("bench-testpmd.log").display()
        );
    };
    let dt = last.0.duration_since(first.0).as_secs_f64();
    if dt < 1.0 || last.1 <= first.1 {
        bail!(
            "testpmd printed too few statistics (see {})",
            out.join("bench-testpmd.log").display()
        );
    }
    Ok((last.1 - first.1) as f64 / dt / 1e6)
}

struct Idle {
    cpu_pct: f64,
    /// How often the idle lcore began a wait (its `idle_sleeps`).
    waits_per_s: f64,
    first_pkt_us: f64,
    busy_rtt_us: f64,
}

fn sh(args: &[&str]) -> Result<()> {
    crate::lab::sh(args)
}

fn ping_rtts(ns: &str, target: &str, count: u32, interval: &str) -> Result<Vec<f64>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            target,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if rtts.is_empty() {
        bail!("no ping replies from {target}");
    }
    Ok(rtts)
}

/// A node on a veth in its own namespace, with a peer namespace to ping
/// it from: the idle CPU of its lcore and its RTT after idle and busy.
fn idle_and_latency(o: &Options, out: &Path) -> Result<Idle> {
    let (ns, peer) = ("herd-bench-node", "herd-bench-peer");
    let cleanup = || {
        for n in [ns, peer] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    };
    cleanup();
    let result = (|| -> Result<Idle> {
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "netns", "add", peer])?;
        sh(&[
            "ip", "-n", peer, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ])?;
        for n in [ns, peer] {
            sh(&[
                "ip", "netns", "exec", n, "ethtool", "-K", "eth0", "tx", "off",
            ])?;
            sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
            sh(&["ip", "-n", n, "link", "set", "eth0", "up"])?;
        }
        sh(&[
            "ip",
            "-n",
            peer,
            "addr",
            "add",
            "198.18.1.2/24",
            "dev",
            "eth0",
        ])?;
        let sock = out.join("bench-idle.sock");
        let cfg = out.join("bench-idle.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"{farm}
[port]
driver = "af_packet"
interface = "eth0"
[tap]
addresses = ["198.18.1.11/24"]
[polling]
max_sleep_us = {max_sleep}
[dpdk]
cpus = "{cpu}"
file_prefix = "herd-bench-idle"
[control]
socket = "{sock}"
"#,
                farm = farm_toml("0-2047", Ipv4Addr::new(198, 18, 1, 100).into()),
                cpu = o.cpu,
                max_sleep = o.max_sleep_us,
                sock = sock.display()
            ),
        )?;
        let guard = start_herd(out, "bench-idle", &cfg, &sock, Some(ns))?;
        let pid = guard.0.id();
        std::thread::sleep(Duration::from_secs(1));
        let hz = crate::procstat::clock_ticks_per_second()?;
        let t0 = Instant::now();
        let a = crate::procstat::worker_ticks(pid)?;
        let waits_a = idle_waits(&sock)?;
        std::thread::sleep(Duration::from_secs(o.idle_seconds));
        let b = crate::procstat::worker_ticks(pid)?;
        let waits_b = idle_waits(&sock)?;
        let seconds = t0.elapsed().as_secs_f64();
        let cpu_pct = (b - a) as f64 / hz / seconds * 100.0;
        let waits_per_s = waits_b.saturating_sub(waits_a) as f64 / seconds;
        // Pings 300 ms apart find the lcore asleep; 2 ms apart, polling.
        let mut idle = ping_rtts(peer, "198.18.1.11", 10, "0.3")?;
        let mut busy = ping_rtts(peer, "198.18.1.11", 100, "0.002")?;
        drop(guard);
        Ok(Idle {
            cpu_pct,
            waits_per_s,
            first_pkt_us: median(&mut idle),
            busy_rtt_us: median(&mut busy),
        })
    })();
    cleanup();
    result
}
