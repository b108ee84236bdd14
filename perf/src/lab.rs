//! The lab of docs/design.md §7 on one machine: namespaces `herd-client` and
//! `herd-s1`…`herd-sN`, joined by a bridge, each node running `herd` on its
//! veth (af_packet) and the lab application.
//!
//! Addresses: VIP 198.18.0.100 and 2001:2::100; node sN at 198.18.0.(10+N)
//! and 2001:2::(10+N); the client at 198.18.0.2 and 2001:2::2, with local
//! routes that let it use any address of 198.19.0.0/16 and 2001:2:1::/64 as
//! a source. The bridge lives in the client namespace, so the lab touches
//! nothing of the host's own network. State (configs, logs, pids) is kept
//! in /run/herd-lab.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const STATE_DIR: &str = "/run/herd-lab";
pub const CLIENT_NS: &str = "herd-client";
pub const BRIDGE: &str = "br0";
pub const VIP4: &str = "198.18.0.100";
pub const VIP6: &str = "2001:2::100";
pub const CLIENT4: &str = "198.18.0.2";
pub const CLIENT6: &str = "2001:2::2";
pub const MAX_NODES: u32 = 64;

pub fn node_name(n: u32) -> String {
    format!("s{n}")
}
pub fn node_ns(n: u32) -> String {
    format!("herd-s{n}")
}
pub fn node_ip4(n: u32) -> String {
    format!("198.18.0.{}", 10 + n)
}
pub fn node_ip6(n: u32) -> String {
    format!("2001:2::{}", 10 + n)
}

/// Parses "s3" (or "3") into 3.
pub fn parse_node(s: &str) -> Result<u32> {
    let n: u32 = s
        .trim_start_matches('s')
        .parse()
        .with_context(|| format!("{s:?} is not a node name like s1"))?;
    if n == 0 || n > MAX_NODES {
        bail!("node {s:?} is out of range s1..s{MAX_NODES}");
    }
    Ok(n)
}

fn state(file: &str) -> PathBuf {
    Path::new(STATE_DIR).join(file)
}

/// Runs a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sh_quiet(args: &[&str]) {
    let _ = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs a command in namespace `ns`, failing with its stderr.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// Runs a command in namespace `ns` and returns its stdout, failing with
/// its stderr.
pub fn in_ns_output(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .with_context(|| format!("running {} in {ns}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The directory of this executable: `herd` is looked for beside it.
pub fn sibling_binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().unwrap_or_default();
    me.parent()
        .map(|d| d.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// How to build the lab.
#[derive(Clone, Debug)]
pub struct LabSpec {
    pub nodes: u32,
    pub running: u32,
    pub queues: u16,
    pub delivery: String,
    /// The node's port driver: `af_packet` or `af_xdp`.
    pub driver: String,
    /// `static` (ranges by node) or `membership` (the protocol).
    pub ownership: String,
    /// With membership: `serve-all`, `majority` or `witness` (the witness
    /// is the client, 198.18.0.2).
    pub split_brain: String,
    /// Heartbeat networks: 1 (through the fastpath) or 2 (plus a kernel-only
    /// network, 198.18.1.0/24 on bridge `br1`).
    pub heartbeat_networks: u32,
    /// Extra TOML appended to every node's config.
    pub extra: String,
    /// `port.xdp_mode` of every node (af_xdp); `None`: herd's default
    /// (generic on the lab's veth).
    pub xdp_mode: Option<String>,
    /// `dpdk.cpus` of every node (the CPUs its lcores run on); `None`:
    /// herd's default, all CPUs.
    pub cpus: Option<String>,
}

impl LabSpec {
    /// `nodes` nodes, all running, on `driver` (`af_packet` or `af_xdp`),
    /// one queue each, vMAC delivery, buckets owned by membership over one
    /// heartbeat network, split brain served by all, herd's defaults for
    /// the rest: what the benches start from.
    pub fn membership(nodes: u32, driver: &str) -> Self {
        LabSpec {
            nodes,
            running: nodes,
            queues: 1,
            delivery: "vmac".into(),
            driver: driver.into(),
            ownership: "membership".into(),
            split_brain: "serve-all".into(),
            heartbeat_networks: 1,
            extra: String::new(),
            xdp_mode: None,
            cpus: None,
        }
    }
}

/// Static ownership: contiguous, nearly equal ranges of 4096 buckets.
pub fn bucket_range(n: u32, nodes: u32, buckets: u32) -> String {
    let lo = buckets * (n - 1) / nodes;
    let hi = buckets * n / nodes - 1;
    format!("{lo}-{hi}")
}

/// Each node's `/health` and `/metrics` listener, on its own address.
pub const HTTP_PORT: u16 = 9100;

/// The lab's heartbeat port on each node's own address.
pub const HEARTBEAT_PORT: u16 = 7100;

pub fn node_config(spec: &LabSpec, n: u32) -> String {
    let membership = spec.ownership == "membership";
    let mut farm_nodes = String::new();
    for i in 1..=spec.nodes {
        let owner = if membership {
            let mut hb = vec![format!("\"{}:{HEARTBEAT_PORT}\"", node_ip4(i))];
            if spec.heartbeat_networks > 1 {
                hb.push(format!("\"198.18.1.{}:{HEARTBEAT_PORT}\"", 10 + i));
            }
            format!("heartbeat = [{}]", hb.join(", "))
        } else {
            format!("buckets = \"{}\"", bucket_range(i, spec.nodes, 4096))
        };
        farm_nodes += &format!(
            "\n[[farm.nodes]]\nid = {i}\nname = \"{}\"\nweight = 1\n{owner}\n",
            node_name(i)
        );
    }
    let membership_section = if membership {
        let witness = if spec.split_brain == "witness" {
            format!("witness = \"{CLIENT4}\"\n")
        } else {
            String::new()
        };
        format!(
            "\n[membership]\nkey_file = \"{}\"\nsplit_brain = \"{}\"\n{witness}",
            state("farm.key").display(),
            spec.split_brain
        )
    } else {
        String::new()
    };
    format!(
        r#"# herd-lab node {name}
[node]
id = {n}
state_dir = "{state_dir}"

[farm]
name = "lab"
buckets = 4096
delivery = "{delivery}"
ownership = "{ownership}"
vips = ["{VIP4}", "{VIP6}"]
{farm_nodes}
[[rules]]
protocol = "tcp"
port = 80
affinity = "client-ip-port"

[[rules]]
protocol = "tcp"
port = 7000
affinity = "client-ip"

[[rules]]
protocol = "udp"
port = 9000
affinity = "client-ip"

[port]
driver = "{driver}"
interface = "eth0"
queues = {queues}
{xdp_mode}
[tap]
name = "herd0"
addresses = ["{ip4}/24", "{ip6}/64"]
routes = [{{ to = "198.19.0.0/16", via = "{CLIENT4}" }}, {{ to = "2001:2:1::/64", via = "{CLIENT6}" }}]

[dpdk]
memory_mb = 128
mbufs = 4095
file_prefix = "herd-lab-{name}"
{cpus}
[control]
socket = "{sock}"
http = "{ip4}:{HTTP_PORT}"
{membership_section}{extra}
"#,
        name = node_name(n),
        delivery = spec.delivery,
        ownership = spec.ownership,
        driver = spec.driver,
        queues = spec.queues,
        ip4 = node_ip4(n),
        ip6 = node_ip6(n),
        sock = state(&format!("{}.sock", node_name(n))).display(),
        state_dir = STATE_DIR,
        extra = spec.extra,
        xdp_mode = spec
            .xdp_mode
            .as_ref()
            .map(|m| format!("xdp_mode = \"{m}\"\n"))
            .unwrap_or_default(),
        cpus = spec
            .cpus
            .as_ref()
            .map(|c| format!("cpus = \"{c}\"\n"))
            .unwrap_or_default(),
    )
}

fn read_spec_nodes() -> Result<u32> {
    let text =
        std::fs::read_to_string(state("nodes")).context("no lab is up (run `herd-lab up`)")?;
    text.trim().parse().context("corrupt lab state")
}

/// Tears down whatever a previous lab (even a crashed one) left behind.
pub fn down() -> Result<()> {
    for n in 1..=MAX_NODES {
        let _ = stop_process(&format!("{}.herd", node_name(n)), Duration::from_secs(5));
        let _ = stop_process(&format!("{}.app", node_name(n)), Duration::from_secs(1));
    }
    // Namespaces: ours only, by name.
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ns = line.split_whitespace().next().unwrap_or("");
        if ns == CLIENT_NS || (ns.starts_with("herd-s") && ns[6..].parse::<u32>().is_ok()) {
            sh_quiet(&["ip", "netns", "pids", ns]);
            kill_ns_pids(ns);
            sh(&["ip", "netns", "del", ns])?;
        }
    }
    for entry in std::fs::read_dir("/var/run/dpdk")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("herd-lab-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let _ = std::fs::remove_dir_all(STATE_DIR);
    Ok(())
}

fn kill_ns_pids(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: i32, sig: i32) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

fn read_pid(file: &str) -> Option<i32> {
    std::fs::read_to_string(state(&format!("{file}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// SIGTERM, then SIGKILL after `grace`.
fn stop_process(file: &str, grace: Duration) -> Result<()> {
    let Some(pid) = read_pid(file) else {
        return Ok(());
    };
    if alive(pid) {
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            signal(pid, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(state(&format!("{file}.pid")));
    Ok(())
}

/// Starts `args` in namespace `ns`, detached, logging to `<file>.log`.
fn spawn_in_ns(ns: &str, file: &str, args: &[String]) -> Result<i32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state(&format!("{file}.log")))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {file}"))?;
    let pid = child.id() as i32;
    std::fs::write(state(&format!("{file}.pid")), pid.to_string())?;
    // The child is reaped by init when we exit; it must outlive this command.
    std::mem::forget(child);
    Ok(pid)
}

pub fn up(spec: &LabSpec) -> Result<()> {
    if spec.nodes == 0 || spec.nodes > MAX_NODES || spec.running > spec.nodes {
        bail!("--nodes must be 1..={MAX_NODES} and --running at most --nodes");
    }
    if !(1..=2).contains(&spec.heartbeat_networks) {
        bail!("--heartbeat-networks must be 1 or 2");
    }
    down().context("cleaning up an earlier lab")?;
    std::fs::create_dir_all(STATE_DIR)?;
    std::fs::write(state("nodes"), spec.nodes.to_string())?;
    // The farm's shared heartbeat key: fresh random bytes for each lab.
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    std::fs::write(state("farm.key"), key)?;
    sh(&["ip", "netns", "add", CLIENT_NS])?;
    let c = |args: &[&str]| in_ns(CLIENT_NS, args);
    c(&["ip", "link", "set", "lo", "up"])?;
    c(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    // No multicast snooping: flood multicast-MAC VIP traffic to every port.
    c(&[
        "ip",
        "link",
        "set",
        BRIDGE,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    c(&["sysctl", "-qw", "net.ipv6.conf.br0.accept_dad=0"])?;
    // The bridge stands for a switch: no iptables on bridged frames
    // (br_netfilter, where the kernel has it, calls them by default and
    // costs whoever forwards a frame, as much as its receive).
    for table in ["iptables", "ip6tables", "arptables"] {
        let _ = c(&[
            "sysctl",
            "-qw",
            &format!("net.bridge.bridge-nf-call-{table}=0"),
        ]);
    }
    c(&["sysctl", "-qw", "net.ipv4.conf.all.arp_announce=2"])?;
    // Locally generated packets leave a bridge or veth with their checksum
    // still to be filled in by "hardware"; an AF_PACKET reader (the node's
    // fastpath) would pass them on unfinished. A real NIC computes them.
    c(&["ethtool", "-K", BRIDGE, "tx", "off"])?;
    c(&["ip", "link", "set", BRIDGE, "up"])?;
    c(&["ip", "addr", "add", &format!("{CLIENT4}/24"), "dev", BRIDGE])?;
    c(&[
        "ip",
        "addr",
        "add",
        &format!("{CLIENT6}/64"),
        "dev",
        BRIDGE,
        "nodad",
    ])?;
    c(&["ip", "route", "add", "local", "198.19.0.0/16", "dev", "lo"])?;
    c(&[
        "ip",
        "-6",
        "route",
        "add",
        "local",
        "2001:2:1::/64",
        "dev",
        "lo",
    ])?;
    // IPv6 binds only to configured addresses unless told otherwise.
    c(&["sysctl", "-qw", "net.ipv6.ip_nonlocal_bind=1"])?;
    if spec.heartbeat_networks > 1 {
        c(&["ip", "link", "add", "br1", "type", "bridge"])?;
        c(&["ip", "link", "set", "br1", "up"])?;
    }
    for n in 1..=spec.nodes {
        let ns = node_ns(n);
        let peer = node_name(n);
        sh(&["ip", "netns", "add", &ns])?;
        in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
        if spec.heartbeat_networks > 1 {
            let hb = format!("hb{n}");
            c(&[
                "ip", "link", "add", &hb, "type", "veth", "peer", "name", "hb0", "netns", &ns,
            ])?;
            c(&["ip", "link", "set", &hb, "master", "br1", "up"])?;
            in_ns(
                &ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("198.18.1.{}/24", 10 + n),
                    "dev",
                    "hb0",
                ],
            )?;
            in_ns(&ns, &["ip", "link", "set", "hb0", "up"])?;
        }
        c(&[
            "ip", "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        c(&["ip", "link", "set", &peer, "master", BRIDGE, "up"])?;
        c(&["ethtool", "-K", &peer, "tx", "off"])?;
        // The node's own end keeps its offloads, as a NIC would: the large
        // TCP segments Herd sends whole through a packet socket cross the
        // veth unsegmented (the bridge's port above finishes checksums of
        // what flows toward the node).
        in_ns(&ns, &["ethtool", "-K", "eth0", "tx", "on"])?;
        let mac = format!("02:00:00:00:00:{n:02x}");
        in_ns(&ns, &["ip", "link", "set", "eth0", "address", &mac, "up"])?;
        std::fs::write(
            state(&format!("{}.toml", node_name(n))),
            node_config(spec, n),
        )?;
        start_app(n)?;
    }
    for n in 1..=spec.running {
        start(n)?;
    }
    for n in 1..=spec.running {
        wait_ready(n, Duration::from_secs(30))?;
    }
    Ok(())
}

pub fn start_app(n: u32) -> Result<()> {
    let _ = stop_process(&format!("{}.app", node_name(n)), Duration::from_secs(1));
    let lab = sibling_binary("herd-lab");
    spawn_in_ns(
        &node_ns(n),
        &format!("{}.app", node_name(n)),
        &[
            lab.display().to_string(),
            "app".into(),
            "--name".into(),
            node_name(n),
        ],
    )?;
    Ok(())
}

/// Stops a node's application (SIGTERM, then SIGKILL after a second);
/// nothing to do if it is not running.
pub fn stop_app(n: u32) -> Result<()> {
    stop_process(&format!("{}.app", node_name(n)), Duration::from_secs(1))
}

pub fn kill_app(n: u32) -> Result<()> {
    let Some(pid) = read_pid(&format!("{}.app", node_name(n))) else {
        bail!("{} has no application running", node_name(n))
    };
    signal(pid, libc::SIGKILL);
    Ok(())
}

/// Starts `herd` on node `n` (after a crash too).
pub fn start(n: u32) -> Result<()> {
    let nodes = read_spec_nodes()?;
    if n > nodes {
        bail!("the lab has {nodes} nodes, not {}", node_name(n));
    }
    if read_pid(&format!("{}.herd", node_name(n))).is_some_and(alive) {
        bail!("{} is already running", node_name(n));
    }
    let herd = sibling_binary("herd");
    let cfg = state(&format!("{}.toml", node_name(n)));
    spawn_in_ns(
        &node_ns(n),
        &format!("{}.herd", node_name(n)),
        &[
            herd.display().to_string(),
            "run".into(),
            "--config".into(),
            cfg.display().to_string(),
        ],
    )?;
    Ok(())
}

/// The pid of node `n`'s `herd`, if it is running.
pub fn herd_pid(n: u32) -> Option<i32> {
    read_pid(&format!("{}.herd", node_name(n))).filter(|p| alive(*p))
}

/// SIGKILL of a node's `herd` (a crash).
pub fn kill(n: u32) -> Result<()> {
    let Some(pid) = read_pid(&format!("{}.herd", node_name(n))) else {
        bail!("{} is not running", node_name(n))
    };
    signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// SIGTERM of a node's `herd` (a clean stop).
pub fn stop(n: u32) -> Result<()> {
    stop_process(&format!("{}.herd", node_name(n)), Duration::from_secs(10))
}

pub fn node_status_json(n: u32) -> Result<String> {
    let herd = sibling_binary("herd");
    let sock = state(&format!("{}.sock", node_name(n)));
    let out = Command::new(&herd)
        .args(["status", "--json", "--socket"])
        .arg(&sock)
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Node `n`'s status, typed.
pub fn node_status(n: u32) -> Result<herd_control::status::Report> {
    Ok(serde_json::from_str(&node_status_json(n)?)?)
}

/// Waits until node `n` answers on its control socket with its TAP up.
pub fn wait_ready(n: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if node_status_json(n).is_ok() {
            return Ok(());
        }
        if !read_pid(&format!("{}.herd", node_name(n))).is_some_and(alive) {
            let log = std::fs::read_to_string(state(&format!("{}.herd.log", node_name(n))))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "{} exited while starting:\n{}",
                node_name(n),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!("{} did not become ready within {timeout:?}", node_name(n));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One line per node: running or not, owned buckets, counters.
pub fn status() -> Result<String> {
    let nodes = read_spec_nodes()?;
    let mut out = String::new();
    for n in 1..=nodes {
        let running = read_pid(&format!("{}.herd", node_name(n))).is_some_and(alive);
        match node_status_json(n) {
            Ok(j) => {
                let v: herd_control::status::Report = serde_json::from_str(&j)?;
                let t = &v.node.totals;
                out += &format!(
                    "{} up  buckets {:>4} [{}]  rx {} accepted {} not-owned {} to-kernel {} from-kernel {}\n",
                    node_name(n),
                    v.node.owned_buckets,
                    v.node.owned_ranges,
                    t.rx_packets,
                    t.accepted,
                    t.dropped_not_owned,
                    t.to_kernel,
                    t.from_kernel
                );
            }
            Err(_) => {
                out += &format!(
                    "{} {}\n",
                    node_name(n),
                    if running { "starting" } else { "down" }
                )
            }
        }
    }
    Ok(out)
}

/// Runs a command in a namespace, inheriting stdio; returns its exit code.
pub fn exec_in(ns: &str, cmd: &[String]) -> Result<i32> {
    if cmd.is_empty() {
        bail!("no command given");
    }
    let status = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .status()?;
    Ok(status.code().unwrap_or(1))
}
