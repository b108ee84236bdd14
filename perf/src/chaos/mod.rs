//! `herd-lab chaos`: random faults on a membership farm while clients
//! keep long-lived connections and open new ones, and the checks of what
//! the farm promises (issue 14.2; docs/design.md §6 "chaos soak"):
//!
//! - every new connection is answered by exactly one node (a capture in
//!   the client namespace sees every SYN-ACK: two nodes answering one
//!   attempt is a violation);
//! - only connections of a node a fault took out break (crash, application
//!   kill, stop, link down, partition, mute), and only while that fault lasts
//!   (until the farm settled after the heal, plus the clients' timeout);
//!   drain, weight changes, heartbeat loss and busy CPUs break nothing;
//! - every bucket is served again within the recovery bound (a monitor
//!   reads every reachable node's owned buckets every 100 ms);
//! - the farm settles after every heal (every running node in the view,
//!   every bucket owned, no move left);
//! - `herd`'s resident memory does not grow over the run;
//! - nothing is left behind: a cleanly stopped node leaves no VIP and no
//!   nftables table in its namespace; the lab leaves no namespace, state
//!   or DPDK runtime files.
//!
//! Faults drawn from the seed ([`plan::Steps`]): one at a time, and in
//! about half of the farm-wide ones (heartbeat loss, busy CPUs) a node
//! fault as well, injected and healed while it lasts (`--one-at-a-time`
//! leaves those out); the
//! farm runs `split_brain = "majority"` (a node cut from the others
//! withdraws instead of answering with them: SafeKit's default, both sides
//! serving, answers twice by design).

pub mod clients;
pub mod judge;
pub mod plan;

use crate::lab;
use anyhow::{Context, Result};
use clients::Recorder;
use herd_control::status::Report;
use judge::{Observation, Rules, Window};
use plan::{Fault, FaultKind, Steps};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// How long to inject faults.
    #[arg(long, default_value_t = 2.0)]
    pub minutes: f64,
    /// Seed of the fault schedule (the same seed, the same faults).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Nodes of the farm (at least 3: a majority survives one fault).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// The nodes' port driver: af_packet or af_xdp.
    #[arg(long, default_value = "af_packet")]
    pub driver: String,
    /// Long-lived connections kept open at once.
    #[arg(long, default_value_t = 48)]
    pub held: u32,
    /// New connections per second.
    #[arg(long, default_value_t = 40)]
    pub new_per_second: u32,
    /// The faults to draw from (comma-separated names; default: all of
    /// crash, app-kill, stop-start, drain, weight, link-down,
    /// heartbeat-loss, partition, mute, cpu-hog).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault_kind)]
    pub faults: Vec<FaultKind>,
    /// The farm's split-brain policy. `majority` (default) lets a node cut
    /// from the others withdraw; with `serve-all` (SafeKit's default) both
    /// sides of a partition answer, which this run reports as a violation.
    #[arg(long, default_value = "majority")]
    pub split_brain: String,
    /// Longest time a bucket may go unserved (the failover goal is 250 ms
    /// at p99; the monitor's polling of busy nodes adds to what it sees).
    #[arg(long, default_value_t = 1000)]
    pub recovery_bound_ms: u64,
    /// No node fault inside a farm-wide one: every fault alone.
    #[arg(long)]
    pub one_at_a_time: bool,
}

fn parse_fault_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("{s:?} is not a fault (one of {})", names.join(", "))
        })
}

/// The clients' read and connect timeout: a connection that waits longer
/// is broken.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the farm may take to settle after a heal (moves end when the
/// held connections, which live up to 10 s, close).
const SETTLE_WITHIN: Duration = Duration::from_secs(45);
/// The app checker: withdraws a node 200 ms after its application dies,
/// until it is back (`action = "wait"`).
const EXTRA_CONFIG: &str = r#"
[[checkers]]
name = "app"
kind = "tcp"
address = "127.0.0.1:7000"
interval_ms = 100
timeout_ms = 300
failures_before_down = 2
action = "wait"
"#;

/// Nodes the monitor must not count as serving: their link is down, or
/// their application is dead while their checker has not seen it yet.
type Excluded = Arc<Mutex<BTreeSet<u32>>>;

/// Runs the chaos; `Ok(true)` when no violation was seen.
pub fn run(o: &Options) -> Result<bool> {
    anyhow::ensure!(o.nodes >= 3, "--nodes must be at least 3");
    anyhow::ensure!(o.minutes > 0.0, "--minutes must be positive");
    let spec = lab::LabSpec {
        split_brain: o.split_brain.clone(),
        extra: EXTRA_CONFIG.into(),
        ..lab::LabSpec::membership(o.nodes, &o.driver)
    };
    let kinds: &[FaultKind] = if o.faults.is_empty() {
        &FaultKind::ALL
    } else {
        &o.faults
    };
    println!(
        "chaos: seed {}, {} minutes, {} nodes ({}, split brain {}), {} held connections, {} new connections/s, faults {}",
        o.seed,
        o.minutes,
        o.nodes,
        o.driver,
        o.split_brain,
        o.held,
        o.new_per_second,
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
    );
    lab::up(&spec)?;
    let result = soak(o);
    let down = lab::down();
    let (windows, mut observations, end_ms, summary) = result?;
    down.context("taking the lab down")?;
    observations.extend(leftovers());
    let rules = Rules {
        grace_ms: 2 * CLIENT_TIMEOUT.as_millis() as u64,
        recovery_bound_ms: o.recovery_bound_ms,
        rss_growth_kib: 16 * 1024,
        end_ms,
    };
    let violations = judge::judge(&windows, &observations, &rules);
    println!("{summary}");
    for line in per_kind(&windows, &observations) {
        println!("{line}");
    }
    for v in &violations {
        println!("VIOLATION at {:.1} s: {}", v.at_ms as f64 / 1000.0, v.what);
    }
    println!(
        "RESULT chaos seed={} minutes={} faults={} violations={}",
        o.seed,
        o.minutes,
        windows.len(),
        violations.len()
    );
    Ok(violations.is_empty())
}

type Soak = (Vec<Window>, Vec<Observation>, u64, String);

/// One line per kind of fault: how many, the connections broken while
/// they lasted, the longest time a bucket went unserved.
fn per_kind(windows: &[Window], observations: &[Observation]) -> Vec<String> {
    let mut kinds: BTreeMap<FaultKind, (u32, u32, u64)> = BTreeMap::new();
    let within = |at: u64| {
        windows
            .iter()
            .rev()
            .find(|w| w.start_ms <= at)
            .map(|w| w.fault.kind)
    };
    for w in windows {
        kinds.entry(w.fault.kind).or_default().0 += 1;
    }
    for o in observations {
        match o {
            Observation::Broken { at_ms, .. } => {
                if let Some(k) = within(*at_ms) {
                    kinds.entry(k).or_default().1 += 1;
                }
            }
            Observation::Unserved { from_ms, to_ms, .. } => {
                if let Some(k) = within(*from_ms) {
                    let e = kinds.entry(k).or_default();
                    e.2 = e.2.max(to_ms - from_ms);
                }
            }
            _ => {}
        }
    }
    kinds
        .into_iter()
        .map(|(k, (n, broken, unserved))| {
            format!(
                "  {:<15} {n:>3} faults, {broken:>4} connections broken, longest unserved {unserved} ms",
                k.name()
            )
        })
        .collect()
}

fn soak(o: &Options) -> Result<Soak> {
    wait_settled(o.nodes, &all(o.nodes), SETTLE_WITHIN).context("the farm did not settle")?;
    let start = Instant::now();
    let rec = Recorder::new(start);
    let excluded: Excluded = Arc::default();
    let mut threads = Vec::new();
    {
        let rec = Arc::clone(&rec);
        threads.push(std::thread::spawn(move || clients::capture(rec)));
    }
    {
        let (rec, excluded, nodes) = (Arc::clone(&rec), Arc::clone(&excluded), o.nodes);
        threads.push(std::thread::spawn(move || monitor(&rec, &excluded, nodes)));
    }
    // Four openers share the rate.
    let every = Duration::from_secs_f64(4.0 / f64::from(o.new_per_second.max(1)));
    for i in 0..4 {
        let rec = Arc::clone(&rec);
        threads.push(std::thread::spawn(move || {
            clients::open_new(rec, i, every, CLIENT_TIMEOUT)
        }));
    }
    for i in 0..o.held {
        let (rec, seed) = (Arc::clone(&rec), o.seed);
        threads.push(std::thread::spawn(move || {
            clients::hold(rec, i, seed, Duration::from_millis(200), CLIENT_TIMEOUT)
        }));
    }
    let result = inject_all(o, &rec, &excluded);
    rec.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let windows = result?;
    let end_ms = rec.now_ms();
    let summary = format!(
        "chaos: {} faults in {:.0} s; held connections opened {} (lines echoed {}); new connections {} answered, {} failed; {} frames captured",
        windows.len(),
        end_ms as f64 / 1000.0,
        rec.held_opened.load(Ordering::Relaxed),
        rec.held_lines.load(Ordering::Relaxed),
        rec.new_ok.load(Ordering::Relaxed),
        rec.new_failed.load(Ordering::Relaxed),
        rec.frames_seen.load(Ordering::Relaxed),
    );
    Ok((windows, rec.take_observations(), end_ms, summary))
}

fn all(nodes: u32) -> BTreeSet<u32> {
    (1..=nodes).collect()
}

fn stamp(rec: &Recorder) -> String {
    format!("[{:>7.1} s]", rec.now_ms() as f64 / 1000.0)
}

/// Injects faults one after the other until the time is up.
fn inject_all(o: &Options, rec: &Recorder, excluded: &Excluded) -> Result<Vec<Window>> {
    let deadline = Duration::from_secs_f64(o.minutes * 60.0);
    let mut windows = Vec::new();
    let mut rss = RssWatch::default();
    rss.sample(o.nodes);
    // Give the clients a moment to open their connections.
    std::thread::sleep(Duration::from_secs(2));
    // An empty `--faults` is every kind (the schedule's default).
    for step in Steps::new(o.seed, o.nodes, &o.faults, !o.one_at_a_time) {
        let fault = step.fault;
        if rec.start.elapsed() + fault.hold > deadline {
            break;
        }
        println!("{} fault: {fault}", stamp(rec));
        let start_ms = rec.now_ms();
        let heal = match inject(fault, o.nodes, excluded, rec) {
            Ok(h) => h,
            Err(e) => {
                failed(rec, format!("{fault}: injecting it: {e:#}"));
                break;
            }
        };
        let mut inner_window = None;
        let mut held = Duration::ZERO;
        if let Some(inner) = step.inner {
            std::thread::sleep(inner.after);
            println!("{} fault inside it: {}", stamp(rec), inner.fault);
            let inner_start_ms = rec.now_ms();
            match inject(inner.fault, o.nodes, excluded, rec) {
                Ok(inner_heal) => {
                    std::thread::sleep(inner.fault.hold);
                    if let Err(e) = inner_heal.run(excluded, rec) {
                        failed(rec, format!("{}: healing it: {e:#}", inner.fault));
                    }
                }
                Err(e) => failed(rec, format!("{}: injecting it: {e:#}", inner.fault)),
            }
            inner_window = Some((inner.fault, inner_start_ms));
            held = Duration::from_millis(rec.now_ms() - start_ms);
        }
        std::thread::sleep(fault.hold.saturating_sub(held));
        if let Err(e) = heal.run(excluded, rec) {
            failed(rec, format!("{fault}: healing it: {e:#}"));
        }
        let settled = wait_settled(o.nodes, &all(o.nodes), SETTLE_WITHIN);
        let settled_ms = settled.is_ok().then(|| rec.now_ms());
        match &settled {
            Ok(()) => println!("{} settled", stamp(rec)),
            Err(e) => println!("{} NOT settled: {e:#}", stamp(rec)),
        }
        windows.push(Window {
            fault,
            start_ms,
            settled_ms,
        });
        // The node fault's window lasts as long: the farm settles once,
        // after both heals.
        if let Some((fault, start_ms)) = inner_window {
            windows.push(Window {
                fault,
                start_ms,
                settled_ms,
            });
        }
        rss.sample(o.nodes);
        if settled.is_err() {
            // Nothing after this would be judged fairly.
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The clients keep going a little after the last heal.
    std::thread::sleep(Duration::from_secs(2));
    rss.sample(o.nodes);
    for o in rss.observations() {
        rec.observe(o);
    }
    Ok(windows)
}

fn failed(rec: &Recorder, what: String) {
    println!("{} FAILED: {what}", stamp(rec));
    rec.observe(Observation::Failed {
        at_ms: rec.now_ms(),
        what,
    });
}

/// What undoes a fault.
enum Heal {
    StartHerd(u32),
    StartApp(u32),
    ControlStart(u32),
    WeightConfig(u32),
    LinkUp(u32),
    /// The fault's nftables table (named after its kind, so that a node
    /// fault inside a farm-wide one has a table of its own) on these nodes.
    RemoveTables(Vec<u32>, String),
    KillHogs(Vec<std::process::Child>),
}

fn inject(f: Fault, nodes: u32, excluded: &Excluded, rec: &Recorder) -> Result<Heal> {
    let n = f.node;
    let table = format!("herdchaos_{}", f.kind.name().replace('-', "_"));
    Ok(match f.kind {
        FaultKind::Crash => {
            lab::kill(n)?;
            Heal::StartHerd(n)
        }
        FaultKind::StopStart => {
            lab::stop(n)?;
            // A clean stop leaves nothing behind in the node's namespace.
            for what in namespace_leftovers(n) {
                rec.observe(Observation::Leftover { what });
            }
            Heal::StartHerd(n)
        }
        FaultKind::AppKill => {
            excluded.lock().expect("no panic holding it").insert(n);
            lab::kill_app(n)?;
            Heal::StartApp(n)
        }
        FaultKind::Drain => {
            control(n, "drain")?;
            Heal::ControlStart(n)
        }
        FaultKind::Weight => {
            control(n, &format!("weight {}", f.weight))?;
            Heal::WeightConfig(n)
        }
        FaultKind::LinkDown => {
            excluded.lock().expect("no panic holding it").insert(n);
            lab::in_ns(
                lab::CLIENT_NS,
                &["ip", "link", "set", &lab::node_name(n), "down"],
            )?;
            Heal::LinkUp(n)
        }
        FaultKind::HeartbeatLoss => {
            let rule = format!(
                "udp dport {} numgen random mod 100 < {} drop",
                lab::HEARTBEAT_PORT,
                f.loss_percent
            );
            let nodes: Vec<u32> = (1..=nodes).collect();
            for &i in &nodes {
                nft_table(i, &table, &[("input", &rule)])?;
            }
            Heal::RemoveTables(nodes, table)
        }
        FaultKind::Partition => {
            let rule = format!("udp dport {} drop", lab::HEARTBEAT_PORT);
            nft_table(n, &table, &[("input", &rule), ("output", &rule)])?;
            Heal::RemoveTables(vec![n], table)
        }
        FaultKind::Mute => {
            let rule = format!("udp dport {} drop", lab::HEARTBEAT_PORT);
            nft_table(n, &table, &[("output", &rule)])?;
            Heal::RemoveTables(vec![n], table)
        }
        FaultKind::CpuHog => {
            let cpus = std::thread::available_parallelism().map_or(2, |c| c.get());
            let mut hogs = Vec::new();
            for _ in 0..2 * cpus {
                hogs.push(
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .context("starting a busy process")?,
                );
            }
            Heal::KillHogs(hogs)
        }
    })
}

impl Heal {
    fn run(self, excluded: &Excluded, rec: &Recorder) -> Result<()> {
        let include = |n: u32| excluded.lock().expect("no panic holding it").remove(&n);
        match self {
            Heal::StartHerd(n) => {
                println!("{} heal: s{n} starts (joins)", stamp(rec));
                lab::start(n)?;
                lab::wait_ready(n, Duration::from_secs(30))?;
            }
            Heal::StartApp(n) => {
                println!("{} heal: s{n}'s application starts", stamp(rec));
                lab::start_app(n)?;
                include(n);
            }
            Heal::ControlStart(n) => {
                println!("{} heal: herd start on s{n}", stamp(rec));
                control(n, "start")?;
            }
            Heal::WeightConfig(n) => {
                println!("{} heal: s{n} back to its configured weight", stamp(rec));
                control(n, "weight config")?;
            }
            Heal::LinkUp(n) => {
                println!("{} heal: s{n}'s link up", stamp(rec));
                lab::in_ns(
                    lab::CLIENT_NS,
                    &["ip", "link", "set", &lab::node_name(n), "up"],
                )?;
                include(n);
            }
            Heal::RemoveTables(nodes, table) => {
                println!("{} heal: heartbeats pass again", stamp(rec));
                for n in nodes {
                    lab::in_ns(
                        &lab::node_ns(n),
                        &["nft", "delete", "table", "inet", &table],
                    )?;
                }
            }
            Heal::KillHogs(hogs) => {
                println!("{} heal: the busy processes end", stamp(rec));
                for mut h in hogs {
                    let _ = h.kill();
                    let _ = h.wait();
                }
            }
        }
        Ok(())
    }
}

/// An nftables table `table` in node `n`'s namespace with one dropping
/// rule per (hook, rule).
fn nft_table(n: u32, table: &str, rules: &[(&str, &str)]) -> Result<()> {
    let ns = lab::node_ns(n);
    lab::in_ns(&ns, &["nft", "add", "table", "inet", table])?;
    for (hook, rule) in rules {
        let chain = format!("{{ type filter hook {hook} priority 0; }}");
        lab::in_ns(&ns, &["nft", "add", "chain", "inet", table, hook, &chain])?;
        let mut args = vec!["nft", "add", "rule", "inet", table, hook];
        args.extend(rule.split(' '));
        lab::in_ns(&ns, &args)?;
    }
    Ok(())
}

/// One request on node `n`'s control socket; the reply must not be an
/// error.
fn control(n: u32, request: &str) -> Result<serde_json::Value> {
    let v = control_request(n, request, Duration::from_secs(10))?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("s{n} refused {request:?}: {e}");
    }
    Ok(v)
}

fn control_request(n: u32, request: &str, timeout: Duration) -> Result<serde_json::Value> {
    let path = format!("{}/{}.sock", lab::STATE_DIR, lab::node_name(n));
    let mut stream = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("s{n}'s control socket"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// Marks the buckets of `ranges` ("0-99,200").
fn mark(ranges: &str, into: &mut [bool]) {
    for part in ranges.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) {
            for b in lo..=hi.min(into.len().saturating_sub(1)) {
                into[b] = true;
            }
        }
    }
}

/// Node `n`'s status, read on its control socket.
fn status(n: u32) -> Result<Report> {
    let v = control_request(n, "status", Duration::from_secs(1))?;
    Ok(serde_json::from_value(v)?)
}

/// Every 100 ms: are all buckets owned by some node the clients can reach?
/// A gap is recorded when it closes (or at the end).
fn monitor(rec: &Recorder, excluded: &Excluded, nodes: u32) {
    let mut gap: Option<(u64, u32)> = None;
    while !rec.stop.load(Ordering::Relaxed) {
        let out = excluded.lock().expect("no panic holding it").clone();
        let mut served = vec![false; 4096];
        for n in (1..=nodes).filter(|n| !out.contains(n)) {
            if let Ok(r) = status(n) {
                mark(&r.node.owned_ranges, &mut served);
                mark(&r.node.moving_in_ranges, &mut served);
            }
        }
        let missing = served.iter().filter(|s| !**s).count() as u32;
        let now = rec.now_ms();
        match (&mut gap, missing) {
            (None, 0) => {}
            (None, m) => gap = Some((now, m)),
            (Some((_, most)), m) if m > 0 => *most = (*most).max(m),
            (Some((from, most)), _) => {
                let (from, most) = (*from, *most);
                println!(
                    "[{:>7.1} s] {most} buckets were unserved for {} ms",
                    now as f64 / 1000.0,
                    now - from
                );
                rec.observe(Observation::Unserved {
                    from_ms: from,
                    to_ms: now,
                    buckets: most,
                });
                gap = None;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some((from, most)) = gap {
        rec.observe(Observation::Unserved {
            from_ms: from,
            to_ms: rec.now_ms(),
            buckets: most,
        });
    }
}

/// Settled: every node of `running` is up with `running` as its view,
/// the buckets are all owned, nothing moves.
fn settled(nodes: u32, running: &BTreeSet<u32>) -> bool {
    let mut owned = 0;
    for n in 1..=nodes {
        let Ok(r) = status(n) else {
            if running.contains(&n) {
                return false;
            }
            continue;
        };
        let view: BTreeSet<u32> = r
            .membership
            .iter()
            .flat_map(|m| m.view.iter().map(|id| u32::from(*id)))
            .collect();
        let moving = r.node.moving_in + r.node.moving_out;
        if running.contains(&n) && (&view != running || moving != 0) {
            return false;
        }
        owned += r.node.owned_buckets;
    }
    owned == 4096
}

fn wait_settled(nodes: u32, running: &BTreeSet<u32>, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !settled(nodes, running) {
        if Instant::now() > deadline {
            let mut why = String::new();
            for n in 1..=nodes {
                match status(n) {
                    Ok(r) => {
                        why += &format!(
                            " s{n}: view {:?} owned {} in {} out {};",
                            r.membership.map(|m| m.view).unwrap_or_default(),
                            r.node.owned_buckets,
                            r.node.moving_in,
                            r.node.moving_out
                        )
                    }
                    Err(e) => why += &format!(" s{n}: {e:#};"),
                }
            }
            anyhow::bail!("not settled within {within:?}:{why}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Each `herd` process's resident memory: its first sample 20 s after it
/// was first seen (after the warm-up), and its last.
#[derive(Default)]
struct RssWatch {
    pids: BTreeMap<i32, RssOf>,
}

/// One process: (node, first seen, first sample after the warm-up, last).
type RssOf = (u32, Instant, Option<(Instant, u64)>, Option<(Instant, u64)>);

impl RssWatch {
    fn sample(&mut self, nodes: u32) {
        for n in 1..=nodes {
            let Some(pid) = lab::herd_pid(n) else {
                continue;
            };
            let Some(kib) = rss_kib(pid) else { continue };
            let now = Instant::now();
            let e = self.pids.entry(pid).or_insert((n, now, None, None));
            if now.duration_since(e.1) >= Duration::from_secs(20) {
                if e.2.is_none() {
                    e.2 = Some((now, kib));
                }
                e.3 = Some((now, kib));
            }
        }
    }

    fn observations(&self) -> Vec<Observation> {
        self.pids
            .iter()
            .filter_map(|(&pid, &(node, _, first, last))| {
                let ((t0, first), (t1, last)) = (first?, last?);
                let seconds = t1.duration_since(t0).as_secs();
                println!(
                    "s{node}'s herd (pid {pid}): RSS {first} KiB, {last} KiB {seconds} s later"
                );
                Some(Observation::Rss {
                    node,
                    pid,
                    first_kib: first,
                    last_kib: last,
                    seconds,
                })
            })
            .collect()
    }
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a cleanly stopped node left in its namespace: a VIP on `lo`,
/// an nftables table of Herd's.
fn namespace_leftovers(n: u32) -> Vec<String> {
    let ns = lab::node_ns(n);
    let mut out = Vec::new();
    let addrs = lab::in_ns_output(&ns, &["ip", "addr", "show", "dev", "lo"]).unwrap_or_default();
    for vip in [lab::VIP4, lab::VIP6] {
        if addrs.contains(&format!(" {vip}/")) {
            out.push(format!("VIP {vip} on lo of {ns} after a clean stop"));
        }
    }
    let tables = lab::in_ns_output(&ns, &["nft", "list", "tables"]).unwrap_or_default();
    for t in tables.lines().filter(|l| l.contains(" herd_")) {
        out.push(format!("nftables {t:?} in {ns} after a clean stop"));
    }
    out
}

/// What the lab left on the host after `herd-lab down`.
fn leftovers() -> Vec<Observation> {
    let mut out = Vec::new();
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for l in netns.lines().filter(|l| l.starts_with("herd-")) {
        out.push(format!("namespace {l}"));
    }
    for n in 1..=lab::MAX_NODES {
        if lab::herd_pid(n).is_some() {
            out.push(format!("s{n}'s herd still running"));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/var/run/dpdk") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("herd-lab-") {
                out.push(format!("DPDK runtime files /var/run/dpdk/{name}"));
            }
        }
    }
    out.into_iter()
        .map(|what| Observation::Leftover { what })
        .collect()
}
