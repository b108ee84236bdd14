//! `herd-bench flood`: a packet generator floods the lab's farm at rising
//! rates while a real client makes requests to the VIP. Setups, each on
//! a lab of its own, in one run: Herd (membership ownership) with the
//! `af_packet` driver, with `af_xdp` (its XDP pre-filter in herd's default
//! mode on the lab's veth, generic), and an nftables jhash kernel farm on
//! the same namespaces and CPUs (`bench_serve`'s kernel farm node: the VIP
//! on `lo`, its multicast MAC joined, a `jhash ip saddr . tcp sport mod N`
//! drop rule at `netdev ingress`, with a counter here). Every node runs
//! the lab application (HTTP on 80, UDP echo on 9000).
//!
//! The generator is trafgen (netsniff-ng), one process, in the client
//! namespace, sending on the bridge `br0` (see [`crate::flood::trafgen`]
//! for the packets of each kind). A rate is trafgen's `-b Npps`; `max` is
//! its TX_RING as fast as it goes. The rate reported is what trafgen says
//! it sent over its own time, not the one asked.
//!
//! Meanwhile, from the client namespace: short HTTP/1.0 connections to
//! the VIP, one after the other, and one HTTP/1.1 keep-alive connection
//! with a request after the other, each at most every 10 ms and failed if
//! not answered within `--timeout-ms` (1000).
//!
//! Per step: the client's answered and failed requests and latency (p50,
//! p99); per node the deltas of its counters: Herd's (NIC port imissed,
//! rx_nombuf, ierrors; the fastpath's totals; the XDP pre-filter's;
//! heartbeats received and dropped by reason; view changes and failovers)
//! or the kernel node's (`eth0` received and dropped, the farm rule's
//! drops, UDP to no port, reassembly failures, listen drops); CPU: each
//! herd process's (utime + stime) and the whole machine's busy time (from
//! /proc/stat, the generator included; its own process time is shown
//! apart) per flood packet. Then per setup and kind the highest achieved
//! rate at which, and at every lower step, no request failed.

use crate::bench_serve::{farm_mac, farm_neigh, kernel_node, on_path, snmp_field};
use crate::flood::client::{self, Tally};
use crate::flood::plot;
use crate::flood::trafgen::{self, Kind, Rate, Sent, Targets};
use crate::lab::{self, in_ns_output, node_ip4, node_name, node_ns, CLIENT_NS, VIP4, VIP6};
use crate::procstat::{clock_ticks_per_second, process_ticks, reaped_children_ticks, MachineTicks};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Flood kinds, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "syn,udp,norule,frag,arp,ndp,hb-junk,hb-spoof,syn6"
    )]
    pub kinds: Vec<Kind>,
    /// Flood rates in packets per second, comma separated; `max`: as fast
    /// as the generator goes.
    #[arg(long, value_delimiter = ',', value_parser = Rate::parse, default_value = "10000,40000,80000,max")]
    pub rates: Vec<Rate>,
    /// Seconds each step floods.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Setups, comma separated: af_packet, af_xdp, nftables.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "af_packet,af_xdp,nftables"
    )]
    pub setups: Vec<Setup>,
    /// Nodes of the farm.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// A client request not answered within this is failed.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Draws failed requests and the client's p99 against the achieved
    /// rate into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Setup {
    #[value(name = "af_packet")]
    AfPacket,
    #[value(name = "af_xdp")]
    AfXdp,
    #[value(name = "nftables")]
    Nftables,
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::AfPacket => "af_packet",
            Setup::AfXdp => "af_xdp",
            Setup::Nftables => "nftables",
        }
    }
    fn herd(self) -> bool {
        self != Setup::Nftables
    }
}

const STATE_DIR: &str = "/run/herd-bench-flood";
/// The client's requests: at most one per this, on each of its two.
const CLIENT_INTERVAL: Duration = Duration::from_millis(10);
/// How long the farm has to settle (every node in the view, every bucket
/// owned) before a step.
const SETTLE: Duration = Duration::from_secs(20);

/// A node's counters at one instant, by name.
type Counters = BTreeMap<String, u64>;

/// One step's figures.
#[derive(Clone, Debug)]
struct Step {
    setup: Setup,
    kind: Kind,
    asked: Rate,
    sent: Sent,
    short: Tally,
    keep: Tally,
    /// Per node: counter deltas and herd's CPU seconds (Herd's nodes).
    nodes: Vec<(Counters, Option<f64>)>,
    machine_s: f64,
    softirq_s: f64,
    generator_s: f64,
    /// The farm had not settled before the step.
    unsettled: bool,
}

impl Step {
    fn failed(&self) -> u64 {
        self.short.failed + self.keep.failed
    }
}

/// Tears the lab down and removes the state dir, also on error.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lab::down();
        let _ = std::fs::remove_dir_all(STATE_DIR);
    }
}

pub fn run(o: &Options) -> Result<()> {
    if o.seconds == 0 || o.seconds > 600 {
        bail!("--seconds must be 1 to 600");
    }
    if !(1..=8).contains(&o.nodes) {
        bail!("--nodes must be 1 to 8");
    }
    if o.kinds.is_empty() || o.rates.is_empty() || o.setups.is_empty() {
        bail!("--kinds, --rates and --setups must each name one at least");
    }
    if !(10..=10_000).contains(&o.timeout_ms) {
        bail!("--timeout-ms must be 10 to 10000");
    }
    for tool in ["trafgen", "nft", "ethtool", "ip"] {
        if !on_path(tool) {
            bail!("`{tool}` is not installed (ci/install.sh installs it)");
        }
    }
    let kinds: Vec<Kind> = o
        .kinds
        .iter()
        .copied()
        .filter(|k| {
            let ok = *k != Kind::HbSpoof || o.nodes >= 2;
            if !ok {
                println!("note: hb-spoof left out: it needs two nodes");
            }
            ok
        })
        .collect();
    println!(
        "flood: {} node(s), setups {}, kinds {}, rates {} pps, {} s per step; client: short and keep-alive HTTP every {} ms, {} ms timeout",
        o.nodes,
        o.setups.iter().map(|s| s.name()).collect::<Vec<_>>().join(","),
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        o.rates.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(","),
        o.seconds,
        CLIENT_INTERVAL.as_millis(),
        o.timeout_ms
    );
    let _cleanup = Cleanup;
    let dir = PathBuf::from(STATE_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut steps: Vec<Step> = Vec::new();
    for &setup in &o.setups {
        println!("\n== {} ({} nodes) ==", setup.name(), o.nodes);
        bring_up(setup, o.nodes).with_context(|| format!("bringing up {}", setup.name()))?;
        let targets = targets(setup, o.nodes)?;
        for &kind in &kinds {
            let cfg = dir.join(format!("{}-{}.cfg", setup.name(), kind.name()));
            std::fs::write(&cfg, trafgen::config(kind, &targets)?)?;
            for &rate in &o.rates {
                let s = step(o, setup, kind, rate, &cfg)
                    .with_context(|| format!("{} {} at {rate}", setup.name(), kind.name()))?;
                print!("{}", report_step(&s, o.nodes));
                steps.push(s);
            }
        }
        lab::down()?;
    }
    println!("\n== highest rate held with no failed request ==");
    let mut results = Vec::new();
    for &setup in &o.setups {
        for &kind in &kinds {
            let mine: Vec<&Step> = steps
                .iter()
                .filter(|s| s.setup == setup && s.kind == kind)
                .collect();
            let pts: Vec<(f64, u64)> = mine.iter().map(|s| (s.sent.pps(), s.failed())).collect();
            let held = highest_held(&pts);
            let top = pts.iter().map(|p| p.0).fold(0.0, f64::max);
            println!(
                "  {:<9} {:<8} {:>9.0} pps held (of {:>9.0} pps reached)",
                setup.name(),
                kind.name(),
                held,
                top
            );
            results.push(format!(
                "RESULT flood setup={} kind={} nodes={} highest_ok_pps={:.0} max_achieved_pps={:.0}",
                setup.name(),
                kind.name(),
                o.nodes,
                held,
                top
            ));
        }
    }
    if let Some(path) = &o.plot {
        let points: Vec<plot::Point> = steps.iter().map(|s| plot_point(s, o.timeout_ms)).collect();
        plot::draw(path, &points, o.nodes, o.seconds)?;
        println!("\nplot: {}", path.display());
    }
    println!();
    for r in results {
        println!("{r}");
    }
    Ok(())
}

/// The highest achieved rate at which no request failed, nor at any
/// lower rate (0 if the lowest already failed); `(pps, failed)` in any
/// order.
fn highest_held(steps: &[(f64, u64)]) -> f64 {
    let mut v = steps.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut held = 0.0;
    for (pps, failed) in v {
        if failed > 0 {
            break;
        }
        held = pps;
    }
    held
}

fn plot_point(s: &Step, timeout_ms: u64) -> plot::Point {
    let p99 = |t: &Tally| t.quantile_ms(0.99).unwrap_or(timeout_ms as f64);
    plot::Point {
        setup: s.setup.name().into(),
        kind: s.kind.name().into(),
        pps: s.sent.pps(),
        failed: s.failed(),
        p99_ms: p99(&s.short).max(p99(&s.keep)),
    }
}

/// A fresh lab for `setup`.
fn bring_up(setup: Setup, nodes: u32) -> Result<()> {
    let driver = if setup == Setup::AfXdp {
        "af_xdp"
    } else {
        "af_packet"
    };
    let spec = lab::LabSpec {
        running: if setup.herd() { nodes } else { 0 },
        ..lab::LabSpec::membership(nodes, driver)
    };
    lab::up(&spec)?;
    if setup.herd() {
        return wait_settled(nodes, SETTLE);
    }
    // The nftables farm: bench_serve's kernel farm nodes (the kernel's
    // veth offloads), the jhash rule counted; the lab application keeps
    // serving on each.
    for n in 1..=nodes {
        kernel_node(n, nodes, true, true, "counter")?;
    }
    farm_neigh(&farm_mac())
}

/// Every node in every node's view and every bucket owned.
fn settled(nodes: u32) -> bool {
    let mut total = 0;
    for n in 1..=nodes {
        let Ok(v) = lab::node_status(n) else {
            return false;
        };
        if v.membership.map_or(0, |m| m.view.len()) != nodes as usize {
            return false;
        }
        total += v.node.owned_buckets;
    }
    total == 4096
}

fn wait_settled(nodes: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !settled(nodes) {
        if Instant::now() > deadline {
            bail!("the farm did not settle within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{s:?} is not a MAC"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a MAC"))
}

/// `ip -j link show DEV`'s address.
fn link_mac(ns: &str, dev: &str) -> Result<[u8; 6]> {
    let j: serde_json::Value =
        serde_json::from_str(&in_ns_output(ns, &["ip", "-j", "link", "show", dev])?)?;
    parse_mac(j[0]["address"].as_str().context("no address")?)
}

fn targets(setup: Setup, nodes: u32) -> Result<Targets> {
    let vip4 = VIP4.parse()?;
    let vip6 = VIP6.parse()?;
    let delivery = if setup.herd() {
        config::Delivery::Vmac
    } else {
        config::Delivery::Multicast
    };
    let mut t = Targets {
        src_mac: link_mac(CLIENT_NS, lab::BRIDGE)?,
        vip4,
        vip6,
        vip4_mac: config::vip_mac(IpAddr::V4(vip4), delivery),
        vip6_mac: config::vip_mac(IpAddr::V6(vip6), delivery),
        nodes: Vec::new(),
        heartbeat_port: lab::HEARTBEAT_PORT,
    };
    for n in 1..=nodes {
        t.nodes
            .push((node_ip4(n).parse()?, link_mac(&node_ns(n), "eth0")?));
    }
    Ok(t)
}

/// Node `n`'s counters now, and its herd's CPU ticks (Herd's nodes).
fn node_counters(setup: Setup, n: u32) -> Result<(Counters, Option<u64>)> {
    let mut c = Counters::new();
    if setup.herd() {
        let r = lab::node_status(n)?;
        let nic = r.node.nic_stats;
        c.insert("nic.imissed".into(), nic.imissed);
        c.insert("nic.rx_nombuf".into(), nic.rx_nombuf);
        c.insert("nic.ierrors".into(), nic.ierrors);
        for (name, v) in r.node.totals.named() {
            if !matches!(name, "polls" | "idle_sleeps") {
                c.insert(name.to_string(), v);
            }
        }
        if let Some(x) = r.node.xdp_prefilter {
            for (name, v) in x.named() {
                c.insert(format!("xdp.{name}"), v);
            }
        }
        if let Some(d) = r.node.ring_drops {
            c.insert("ring_drops".into(), d);
        }
        // The ingress guard (af_packet's socket filter, both drivers' tc
        // program for heartbeats): what it dropped or passed before the
        // fastpath.
        if let Some(g) = r.node.ingress_guard {
            for (name, v) in g.counts.named() {
                c.insert(format!("guard.{name}"), v);
            }
        }
        c.insert("tap.imissed".into(), r.node.tap_stats.imissed);
        if let Some(m) = r.membership {
            let h = m.counters;
            c.insert("hb.received".into(), h.received);
            c.insert("hb.dropped_malformed".into(), h.dropped_malformed);
            c.insert(
                "hb.dropped_unauthenticated".into(),
                h.dropped_unauthenticated,
            );
            c.insert("hb.dropped_version".into(), h.dropped_version);
            c.insert("hb.dropped_replayed".into(), h.dropped_replayed);
            c.insert("hb.dropped_unknown_sender".into(), h.dropped_unknown_sender);
            c.insert("hb.dropped_not_peer".into(), h.dropped_not_peer);
            c.insert("hb.input_overflows".into(), h.input_overflows);
            c.insert("hb.deaths_held".into(), h.deaths_held);
            c.insert("view_changes".into(), h.views);
            c.insert("failovers".into(), h.peer_deaths);
            c.insert("disowned".into(), h.disowned);
        }
        let pid = lab::herd_pid(n).with_context(|| format!("{} is not running", node_name(n)))?;
        return Ok((c, Some(process_ticks(pid as u32)?)));
    }
    let ns = node_ns(n);
    let link: serde_json::Value = serde_json::from_str(&in_ns_output(
        &ns,
        &["ip", "-s", "-j", "link", "show", "eth0"],
    )?)?;
    let rx = &link[0]["stats64"]["rx"];
    c.insert(
        "eth0.rx_packets".into(),
        rx["packets"].as_u64().unwrap_or(0),
    );
    c.insert(
        "eth0.rx_dropped".into(),
        rx["dropped"].as_u64().unwrap_or(0),
    );
    c.insert(
        "nft.jhash_dropped".into(),
        nft_counter(&in_ns_output(
            &ns,
            &["nft", "list", "table", "netdev", "herd-bench"],
        )?),
    );
    let snmp = in_ns_output(&ns, &["cat", "/proc/net/snmp"])?;
    c.insert("udp.no_ports".into(), snmp_field(&snmp, "Udp", "NoPorts")?);
    c.insert(
        "udp.rcvbuf_errors".into(),
        snmp_field(&snmp, "Udp", "RcvbufErrors")?,
    );
    c.insert(
        "ip.reasm_fails".into(),
        snmp_field(&snmp, "Ip", "ReasmFails")?,
    );
    c.insert(
        "ip.in_discards".into(),
        snmp_field(&snmp, "Ip", "InDiscards")?,
    );
    let netstat = in_ns_output(&ns, &["cat", "/proc/net/netstat"])?;
    c.insert(
        "tcp.listen_drops".into(),
        snmp_field(&netstat, "TcpExt", "ListenDrops")?,
    );
    Ok((c, None))
}

/// The packets of the first `counter packets N` of `nft list`'s output.
fn nft_counter(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn delta(after: &Counters, before: &Counters) -> Counters {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .collect()
}

/// One step: the client runs while trafgen floods.
fn step(o: &Options, setup: Setup, kind: Kind, rate: Rate, cfg: &Path) -> Result<Step> {
    let unsettled = setup.herd() && wait_settled(o.nodes, SETTLE).is_err();
    // A moment for the last step's flood to drain.
    std::thread::sleep(Duration::from_millis(500));
    let before = (1..=o.nodes)
        .map(|n| node_counters(setup, n))
        .collect::<Result<Vec<_>>>()?;
    let hz = clock_ticks_per_second()?;
    let m0 = MachineTicks::now()?;
    let gen0 = reaped_children_ticks()?;
    let stop = AtomicBool::new(false);
    let target = SocketAddr::new(VIP4.parse()?, 80);
    let timeout = Duration::from_millis(o.timeout_ms);
    let args = trafgen::args(cfg, lab::BRIDGE, rate, o.seconds);
    let (sent, short, keep) = std::thread::scope(|s| {
        let short = s.spawn(|| client::short(target, &stop, CLIENT_INTERVAL, timeout));
        let keep = s.spawn(|| client::keep_alive(target, &stop, CLIENT_INTERVAL, timeout));
        let sent = trafgen::run(CLIENT_NS, &args, o.seconds);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let short = short.join().unwrap_or_default();
        let keep = keep.join().unwrap_or_default();
        (sent, short, keep)
    });
    let (sent, _wall) = sent?;
    let m1 = MachineTicks::now()?;
    let gen1 = reaped_children_ticks()?;
    let after = (1..=o.nodes)
        .map(|n| node_counters(setup, n))
        .collect::<Result<Vec<_>>>()?;
    let nodes = before
        .iter()
        .zip(&after)
        .map(|((b, bt), (a, at))| {
            let cpu = match (bt, at) {
                (Some(b), Some(a)) => Some(a.saturating_sub(*b) as f64 / hz),
                _ => None,
            };
            (delta(a, b), cpu)
        })
        .collect();
    Ok(Step {
        setup,
        kind,
        asked: rate,
        sent,
        short,
        keep,
        nodes,
        machine_s: m1.busy.saturating_sub(m0.busy) as f64 / hz,
        softirq_s: m1.softirq.saturating_sub(m0.softirq) as f64 / hz,
        generator_s: gen1.saturating_sub(gen0) as f64 / hz,
        unsettled,
    })
}

/// Microseconds of `secs` per packet of `sent`.
fn per_packet_us(secs: f64, sent: &Sent) -> f64 {
    if sent.packets == 0 {
        return 0.0;
    }
    secs * 1e6 / sent.packets as f64
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The counters shown, in this order (those that moved).
const SHOWN: &[&str] = &[
    "rx_packets",
    "eth0.rx_packets",
    "accepted",
    "to_kernel",
    "dropped_not_owned",
    "dropped_no_rule",
    "dropped_malformed",
    "dropped_not_for_us",
    "dropped_not_responder",
    "arp_replies",
    "ndp_replies",
    "tx_failed",
    "kernel_frames_lost",
    "nic.imissed",
    "nic.rx_nombuf",
    "nic.ierrors",
    "ring_drops",
    "tap.imissed",
    "xdp.passed",
    "xdp.dropped",
    "xdp.to_fastpath",
    "guard.passed",
    "guard.dropped",
    "guard.to_fastpath",
    "guard.heartbeats",
    "guard.heartbeat_junk",
    "eth0.rx_dropped",
    "nft.jhash_dropped",
    "udp.no_ports",
    "udp.rcvbuf_errors",
    "ip.reasm_fails",
    "ip.in_discards",
    "tcp.listen_drops",
    "hb.received",
    "hb.dropped_malformed",
    "hb.dropped_unauthenticated",
    "hb.dropped_version",
    "hb.dropped_replayed",
    "hb.dropped_unknown_sender",
    "disowned",
];

fn report_step(s: &Step, nodes: u32) -> String {
    let mut out = format!(
        "{:<9} {:<8} asked {:>7} sent {:>9} in {:>5.2} s = {:>8.0} pps{}\n",
        s.setup.name(),
        s.kind.name(),
        s.asked.to_string(),
        s.sent.packets,
        s.sent.seconds,
        s.sent.pps(),
        if s.unsettled {
            "  (farm not settled before)"
        } else {
            ""
        }
    );
    for (what, t) in [("short", &s.short), ("keep-alive", &s.keep)] {
        out += &format!(
            "    client {what:<10} ok {:>5} failed {:>4}  p50 {:>6} ms  p99 {:>6} ms{}\n",
            t.ok,
            t.failed,
            ms(t.quantile_ms(0.5)),
            ms(t.quantile_ms(0.99)),
            if t.errors.is_empty() {
                String::new()
            } else {
                format!("  ({})", t.errors.join("; "))
            }
        );
    }
    out += &format!(
        "    cpu per flood packet: machine {:.2} us (softirq {:.2} us, generator process {:.2} us)\n",
        per_packet_us(s.machine_s, &s.sent),
        per_packet_us(s.softirq_s, &s.sent),
        per_packet_us(s.generator_s, &s.sent)
    );
    for (i, (c, cpu)) in s.nodes.iter().enumerate() {
        let n = i as u32 + 1;
        let mut line = format!("    {}", node_name(n));
        if s.setup.herd() {
            line += &format!(
                " view_changes {} failovers {}",
                c.get("view_changes").copied().unwrap_or(0),
                c.get("failovers").copied().unwrap_or(0)
            );
        }
        if let Some(cpu) = cpu {
            line += &format!(" herd cpu {:.2} us/pkt |", per_packet_us(*cpu, &s.sent));
        }
        for name in SHOWN {
            if let Some(v) = c.get(*name).filter(|v| **v > 0) {
                line += &format!(" {name} {v}");
            }
        }
        out += &line;
        out += "\n";
    }
    debug_assert_eq!(s.nodes.len(), nodes as usize);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_rate_held_stops_at_the_first_failure() {
        assert_eq!(highest_held(&[]), 0.0);
        assert_eq!(
            highest_held(&[(80000.0, 0), (10000.0, 0), (40000.0, 0)]),
            80000.0
        );
        assert_eq!(
            highest_held(&[(10000.0, 0), (40000.0, 2), (80000.0, 0)]),
            10000.0
        );
        assert_eq!(highest_held(&[(9990.0, 1), (40000.0, 0)]), 0.0);
    }

    #[test]
    fn nft_counter_and_macs_are_read() {
        let l = "table netdev herd-bench {\n chain ingress {\n  ip daddr 198.18.0.100 tcp dport 80 jhash ip saddr . tcp sport mod 3 seed 0x48657264 != 0 counter packets 1234 bytes 5678 drop\n }\n}\n";
        assert_eq!(nft_counter(l), 1234);
        assert_eq!(nft_counter("table netdev x {}"), 0);
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").is_err());
    }

    #[test]
    fn plot_points_take_the_worse_p99_and_the_timeout_without_answers() {
        let mut short = Tally {
            ok: 1,
            ..Tally::default()
        };
        short.latency_us.record(2000).unwrap();
        let keep = Tally {
            failed: 4,
            ..Tally::default()
        };
        let s = Step {
            setup: Setup::AfPacket,
            kind: Kind::Syn,
            asked: Rate::Pps(10000),
            sent: Sent {
                packets: 20000,
                bytes: 0,
                seconds: 2.0,
            },
            short,
            keep,
            nodes: vec![],
            machine_s: 1.0,
            softirq_s: 0.5,
            generator_s: 0.2,
            unsettled: false,
        };
        let p = plot_point(&s, 1000);
        assert_eq!(p.setup, "af_packet");
        assert_eq!(p.kind, "syn");
        assert_eq!(p.pps, 10000.0);
        assert_eq!(p.failed, 4);
        assert_eq!(p.p99_ms, 1000.0);
        assert!((per_packet_us(1.0, &s.sent) - 50.0).abs() < 1e-9);
        let mut c = Counters::new();
        c.insert("a".into(), 10);
        let mut d = Counters::new();
        d.insert("a".into(), 4);
        assert_eq!(delta(&c, &d)["a"], 6);
    }
}
