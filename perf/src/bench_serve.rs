//! `herd-bench serve`: the served path of a Herd node (what nginx receives
//! and sends through the fastpath and the TAP) against the kernel's own
//! path, with real software: nginx serves, `wrk`, `ab` and `curl` load it
//! from the lab's client namespace, on the lab's topology (docs/design.md §7).
//!
//! Setups, each on a freshly built lab (`lab::up`), alternately within a
//! round (herd, nftables, plain; the next round in reverse order) so machine
//! noise hits all of them:
//!
//! - **herd**: `herd run` on every node (static ownership, the chosen
//!   driver), the lab application replaced by nginx. Offloads as the lab
//!   sets them: tx checksum off on the bridge-side peer `sN` and on `br0`,
//!   because the af_packet fastpath must see finished checksums; the
//!   node's `eth0` keeps tx checksum and TSO, as a NIC would (Herd sends
//!   the kernel's large TCP segments whole through it); the TAP `herd0`
//!   as `herd run` makes it (TSO and checksum offload toward the
//!   fastpath).
//! - **nftables**: the kernel farm node, N of them: the VIP resolves (in
//!   the client) to a multicast MAC that the bridge floods and every node
//!   joins (`ip maddr`); the VIP is on `lo` (`arp_ignore=1`,
//!   `arp_announce=2`), and a `netdev ingress` chain on `eth0` marks VIP
//!   frames as the host's and drops those whose `jhash ip saddr . tcp
//!   sport mod N` is not the node's index. Offloads: the kernel's defaults
//!   for a veth, tx checksum, TSO and GSO on (`eth0` and `sN`), GRO off;
//!   with `--kernel-nic nic`, the wire of Herd's nodes (tx checksum off on
//!   `sN`: MTU frames) and, unless Herd's are generic-mode af_xdp nodes
//!   (whose `eth0` is set up as the kernel nodes'), `eth0` as a
//!   native-mode af_xdp node's (GRO on, its NAPI threaded on CPU 1 on
//!   equal CPUs: the same emulated NIC).
//! - **plain**: one kernel node with the VIP on `eth0` (the client ARPs it),
//!   no filter; offloads as nftables. It runs in the 1-node case only: it
//!   is the reference for a single server, not for a farm.
//!
//! Only `br0` (the client's side, the same in every setup) keeps tx off.
//! Each setup prints the offloads it actually got in its first round.
//!
//! nginx (one per node, `ip netns exec herd-sN nginx`): `master_process
//! on`, `worker_processes 1`: in the `equal` layout nginx has one CPU, where
//! more workers could only take turns, and one worker per node keeps the
//! servers alike in every setup (a 3-node farm on 2 CPUs would otherwise
//! run 6 workers). `/` returns the node's name; `/bulk` sends a 100 MiB
//! file with `sendfile`; `PUT /upload/bulk` receives the same file (DAV,
//! into the node's directory; every file of the bench is on a tmpfs it
//! mounts for the run, so no figure waits on a disk).
//!
//! Clients, in the client namespace, each for `--seconds`: keep-alive
//! `wrk -t1 -c50`, new connections `ab -c 20` (HTTP/1.0, one connection
//! per request), one connection `wrk -t1 -c1 --latency` (req/s and the
//! median latency), bulk `curl` of `/bulk` and upload `curl -T` to
//! `/upload/bulk` (each repeated within the time, median Gbit/s). Before
//! them, 30 single curls check that every request
//! gets exactly one answer and each node serves only its share: each
//! answer names its node, and each node's kernel counted as many passive
//! TCP opens as answers named it.
//!
//! Layouts: `as-they-come` (no pinning; herd's lcores float over all CPUs)
//! and `equal`: nginx and the clients on CPU 0; Herd's lcores on CPU 1
//! (`dpdk.cpus`); the kernel nodes' receive work on CPU 1 by RPS (checked:
//! CPU 1 must receive RPS IPIs during the keep-alive run). Herd's
//! `af_packet` nodes get no RPS: their receive work is the lcore's (the
//! kernel's copy into the af_packet ring stays with the sender, as a NIC's
//! DMA would be; with RPS to CPU 1 as well, new connections measured 0.81
//! instead of 0.89: the IPI costs more than the copy). Herd's `af_xdp`
//! nodes hand their own flows to the kernel on `eth0` (the XDP pre-filter)
//! and send through it (the TAP's direct egress). By default (herd's
//! default on a veth) the pre-filter runs in generic mode, in the veth's
//! own receive path: on equal CPUs after RPS to CPU 1, like the kernel
//! nodes' nftables filter, where a NIC's interrupt and its native XDP
//! would be. With `--xdp-mode native` it runs in the veth's native XDP,
//! and `eth0` is set up as a NIC's interface: GRO on, and on equal CPUs
//! RPS to CPU 1 and its NAPI (the veth's driver work, with the program)
//! threaded on CPU 1.
//!
//! CPU time (`/proc`, clock ticks) around each client run: nginx (master
//! and workers), the client (this process's reaped children's time), herd
//! (whole processes, and their DPDK lcore threads), softirq (`/proc/stat`,
//! all CPUs) and the ksoftirqd threads (a part of softirq), and the whole
//! machine's busy time. The kernel charges softirq work both to softirq
//! and to the task it interrupted (tick accounting), so the rows overlap:
//! the machine total is the one to add up, and it assumes an otherwise
//! quiet machine. /proc counts in ticks of 10 ms: short runs are coarse.
//!
//! The host's other guests: a round in which the hypervisor stole more
//! than `--max-steal` (2 %) of the CPUs' time during any setup's client
//! runs (`/proc/stat`'s steal over the runs' wall time) is run again, up
//! to three times; on a shared host such rounds measure the neighbours.
//!
//! Output, per layout and farm size: the medians of each setup's figures
//! and the median over rounds of herd/nftables taken within each round
//! (for the median latency, herd's extra µs), each round's ratios as bars,
//! and the CPU per request. The last line, `RESULT serve`, has these
//! comparisons: unprefixed for layout `equal` with 1 node (or, if that was
//! not run, the first layout and size run, named by `base=`), prefixed
//! `n3_` for another farm size and `atc_`/`eq_` for the other layout.

use crate::bench_fastpath::Guard;
use crate::lab::{self, in_ns, in_ns_output, node_ip4, node_name, node_ns, CLIENT_NS, VIP4};
use crate::median;
use crate::procstat::{
    children_of, clock_ticks_per_second, ksoftirqd_pids, process_ticks, reaped_children_ticks,
    received_rps, worker_ticks, MachineTicks,
};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds each client run lasts.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds (each runs every setup once).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Farm sizes to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub nodes: Vec<u32>,
    /// CPU layouts to measure.
    #[arg(long, value_enum, default_value_t = LayoutArg::Both)]
    pub layout: LayoutArg,
    /// Herd's port driver.
    #[arg(long, default_value = "af_packet", value_parser = ["af_packet", "af_xdp"])]
    pub driver: String,
    /// The kernel nodes' `eth0` and wire: `veth` (the kernel's defaults
    /// for a veth: the client's large segments whole, no GRO, no NAPI, the
    /// driver work in the sender's context; the comparison the issues
    /// define) or `nic`, a diagnosis of what Herd itself adds: the wire
    /// Herd's nodes have (finished MTU frames), and with a generic-mode
    /// af_xdp node (the default) nothing else, its `eth0` is the kernel
    /// nodes'; otherwise an emulated NIC too (GRO on and, on equal CPUs,
    /// its NAPI threaded on CPU 1, as a native-mode af_xdp node's).
    #[arg(long, value_enum, default_value_t = KernelNic::Veth)]
    pub kernel_nic: KernelNic,
    /// With af_xdp, where the pre-filter runs (herd's `port.xdp_mode`).
    /// Unset: herd's default, `generic` on the lab's veth (the veth's
    /// receive path, after RPS, as a NIC's interrupt would be steered);
    /// `native`: the veth's own XDP, with the node's `eth0` set up as a
    /// NIC's interface (GRO on and, on equal CPUs, its NAPI threaded on
    /// CPU 1).
    #[arg(long, value_parser = ["native", "generic"])]
    pub xdp_mode: Option<String>,
    /// A TOML file appended to every herd node's config (a diagnosis:
    /// e.g. a `[polling]` section).
    #[arg(long)]
    pub extra_config: Option<PathBuf>,
    /// A diagnosis of what the kernel's XDP hook alone costs: the kernel
    /// nodes' `eth0` gets an XDP program that passes every frame, in the
    /// mode Herd's pre-filter runs in (generic unless `--xdp-mode
    /// native`). Built at run time with clang, which builds Herd too.
    #[arg(long)]
    pub kernel_xdp_pass: bool,
    /// A round in which the host stole more than this share (%) of the
    /// CPUs' time during any setup's client runs is run again, up to
    /// `ROUND_TRIES` times in all (its figures would say what the host's
    /// other guests did, not what the setups cost); 100 keeps every round.
    #[arg(long, default_value_t = 2.0)]
    pub max_steal: f64,
}

/// How often one round is run at most while the host steals more than
/// `--max-steal`; the last try is kept, with a note.
const ROUND_TRIES: u32 = 3;

/// Whether herd's af_xdp nodes run the pre-filter in the veth's native XDP.
fn xdp_native(o: &Options) -> bool {
    o.driver == "af_xdp" && o.xdp_mode.as_deref() == Some("native")
}

/// Whether herd's af_xdp nodes run the pre-filter in generic mode (herd's
/// default on the lab's veth).
fn xdp_generic(o: &Options) -> bool {
    o.driver == "af_xdp" && !xdp_native(o)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelNic {
    Veth,
    Nic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    Both,
    AsTheyCome,
    Equal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    AsTheyCome,
    Equal,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::AsTheyCome => "as-they-come",
            Layout::Equal => "equal",
        }
    }
    /// The RESULT key prefix of this layout when it is not the base one.
    fn short(self) -> &'static str {
        match self {
            Layout::AsTheyCome => "atc",
            Layout::Equal => "eq",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    Herd,
    Nft,
    Plain,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Herd => "herd",
            Setup::Nft => "nftables",
            Setup::Plain => "plain",
        }
    }
}

const STATE_DIR: &str = "/run/herd-bench-serve";
const BULK_BYTES: u64 = 100 << 20;
/// Single curls of the share check.
const CHECK_CURLS: u32 = 30;
/// The seed of the nftables farm's jhash (any constant shared by the nodes).
const JHASH_SEED: &str = "0x48657264";

/// CPU seconds spent during one client run, by whom.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    nginx: f64,
    client: f64,
    herd: f64,
    lcores: f64,
    softirq: f64,
    ksoftirqd: f64,
    machine: f64,
    steal: f64,
    /// The run's wall-clock seconds (not a row: the share stolen is
    /// `steal / (wall * CPUs)`).
    wall: f64,
}

const CPU_ROWS: [&str; 8] = [
    "nginx",
    "client",
    "herd",
    "  lcores",
    "softirq",
    "  ksoftirqd",
    "total (machine)",
    "stolen by host",
];

impl Cpu {
    fn rows(&self) -> [f64; 8] {
        [
            self.nginx,
            self.client,
            self.herd,
            self.lcores,
            self.softirq,
            self.ksoftirqd,
            self.machine,
            self.steal,
        ]
    }
}

/// One client run: its figure, the work done (requests, or MB for bulk)
/// and the CPU it cost.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    value: f64,
    units: f64,
    cpu: Cpu,
}

/// One setup in one round.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    keepalive: Run,
    newconn: Run,
    c1: Run,
    c1_p50_us: f64,
    bulk: Run,
    upload: Run,
}

impl Figures {
    /// The runs of the CPU table, with their column titles.
    fn runs(&self) -> [(&'static str, &Run); 5] {
        [
            ("keepalive", &self.keepalive),
            ("newconn", &self.newconn),
            ("1 conn", &self.c1),
            ("bulk /MB", &self.bulk),
            ("upload /MB", &self.upload),
        ]
    }
}

/// The herd/nftables comparison of one layout and farm size (medians of
/// the rounds' ratios).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Summary {
    keepalive_ratio: f64,
    newconn_ratio: f64,
    bulk_ratio: f64,
    upload_ratio: f64,
    c1_p50_extra_us: f64,
    c1_ratio: f64,
}

/// Results of one layout and farm size: per round, per setup.
struct Cell {
    layout: Layout,
    nodes: u32,
    rounds: Vec<Vec<(Setup, Figures)>>,
}

impl Cell {
    fn of(&self, setup: Setup) -> Vec<Figures> {
        self.rounds
            .iter()
            .filter_map(|r| r.iter().find(|(s, _)| *s == setup).map(|(_, f)| *f))
            .collect()
    }

    /// Per round, herd's figure over nftables' (for the p50, the difference).
    fn per_round(&self, f: impl Fn(&Figures, &Figures) -> f64) -> Vec<f64> {
        self.of(Setup::Herd)
            .iter()
            .zip(self.of(Setup::Nft).iter())
            .map(|(h, n)| f(h, n))
            .collect()
    }

    fn summary(&self) -> Summary {
        let m = |f: &dyn Fn(&Figures, &Figures) -> f64| median(&mut self.per_round(f));
        Summary {
            keepalive_ratio: m(&|h, n| h.keepalive.value / n.keepalive.value),
            newconn_ratio: m(&|h, n| h.newconn.value / n.newconn.value),
            bulk_ratio: m(&|h, n| h.bulk.value / n.bulk.value),
            upload_ratio: m(&|h, n| h.upload.value / n.upload.value),
            c1_p50_extra_us: m(&|h, n| h.c1_p50_us - n.c1_p50_us),
            c1_ratio: m(&|h, n| h.c1.value / n.c1.value),
        }
    }
}

pub fn run(o: &Options) -> Result<()> {
    if o.rounds == 0 || o.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    if !(0.0..=100.0).contains(&o.max_steal) {
        bail!("--max-steal is a share of the CPUs' time, 0 to 100 (%)");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if o.nodes.is_empty() || o.nodes.iter().any(|n| !(1..=8).contains(n)) {
        bail!("--nodes must list farm sizes of 1 to 8");
    }
    let mut node_counts: Vec<u32> = Vec::new();
    for n in &o.nodes {
        if !node_counts.contains(n) {
            node_counts.push(*n);
        }
    }
    let layouts = match o.layout {
        LayoutArg::Both => vec![Layout::AsTheyCome, Layout::Equal],
        LayoutArg::AsTheyCome => vec![Layout::AsTheyCome],
        LayoutArg::Equal => vec![Layout::Equal],
    };
    for tool in ["nginx", "wrk", "ab", "curl", "nft", "ethtool", "taskset"] {
        if !on_path(tool) {
            bail!("`{tool}` is not installed (ci/install.sh installs it)");
        }
    }
    let lscpu = Command::new("lscpu").output().context("running lscpu")?;
    println!(
        "CPU: {} ({} CPUs)   kernel {}",
        model_name(&String::from_utf8_lossy(&lscpu.stdout)).unwrap_or("unknown"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "driver {}{}, kernel nodes' NIC {}, {} round(s) of {} s per client run; nginx {}, 1 worker",
        o.driver,
        match (o.driver.as_str(), xdp_native(o)) {
            ("af_xdp", true) => " (XDP pre-filter native)",
            ("af_xdp", false) => " (XDP pre-filter generic)",
            _ => "",
        },
        match o.kernel_nic {
            KernelNic::Veth => "veth",
            KernelNic::Nic if xdp_generic(o) => "nic (the generic-mode af_xdp node's wire)",
            KernelNic::Nic => "nic (an emulated NIC, as a native-mode af_xdp node's)",
        },
        o.rounds,
        o.seconds,
        nginx_version()
    );
    if o.kernel_xdp_pass {
        println!(
            "kernel nodes: an XDP program that passes every frame on eth0 ({} mode)",
            kernel_xdp_mode(o).0
        );
    }
    let _cleanup = Cleanup;
    let dir = PathBuf::from(STATE_DIR);
    // A crashed run's mount and files.
    unmount_state();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    mount_tmpfs(&dir)?;
    write_bulk(&dir.join("bulk"))?;
    if o.kernel_xdp_pass {
        build_xdp_pass(&dir)?;
    }
    let mut cells = Vec::new();
    for &layout in &layouts {
        for &nodes in &node_counts {
            let mut cell = Cell {
                layout,
                nodes,
                rounds: Vec::new(),
            };
            println!("\n== layout {}, {nodes} node(s) ==", layout.name());
            for round in 1..=o.rounds {
                let mut order = vec![Setup::Herd, Setup::Nft];
                if nodes == 1 {
                    order.push(Setup::Plain);
                }
                if round % 2 == 0 {
                    order.reverse();
                }
                let mut tries = 0;
                let results = loop {
                    tries += 1;
                    let results = run_round(o, &dir, &order, nodes, layout, round, tries == 1)?;
                    let (setup, share) = most_stolen(&results, cpus);
                    if share * 100.0 <= o.max_steal {
                        break results;
                    }
                    let what = format!(
                        "the host stole {:.1} % of the CPUs' time during {}'s clients (--max-steal {})",
                        share * 100.0,
                        setup.name(),
                        o.max_steal
                    );
                    if tries == ROUND_TRIES {
                        println!("  r{round} kept after {tries} tries: {what}");
                        break results;
                    }
                    println!("  r{round} run again: {what}");
                };
                cell.rounds.push(results);
            }
            lab::down()?;
            print!("{}", report(&cell));
            cells.push(cell);
        }
    }
    let base_layout = if layouts.contains(&Layout::Equal) {
        Layout::Equal
    } else {
        layouts[0]
    };
    let base_nodes = if node_counts.contains(&1) {
        1
    } else {
        node_counts[0]
    };
    if (base_layout, base_nodes) != (Layout::Equal, 1) {
        println!(
            "\nnote: layout equal with 1 node was not run; the unprefixed RESULT keys are layout {} with {base_nodes} node(s)",
            base_layout.name()
        );
    }
    let keyed: Vec<(String, Summary)> = cells
        .iter()
        .map(|c| {
            (
                key_prefix(c.layout, c.nodes, base_layout, base_nodes),
                c.summary(),
            )
        })
        .collect();
    println!(
        "\n{}",
        result_line(
            &o.driver,
            &format!("{}/n{base_nodes}", base_layout.name()),
            &keyed
        )
    );
    Ok(())
}

/// One round: every setup in `order`, each on a lab of its own.
fn run_round(
    o: &Options,
    dir: &Path,
    order: &[Setup],
    nodes: u32,
    layout: Layout,
    round: u32,
    first_try: bool,
) -> Result<Vec<(Setup, Figures)>> {
    let mut results = Vec::new();
    for &setup in order {
        let f =
            measure(o, dir, setup, nodes, layout, round == 1 && first_try).with_context(|| {
                format!(
                    "{} ({} node(s), layout {}, round {round})",
                    setup.name(),
                    if setup == Setup::Plain { 1 } else { nodes },
                    layout.name()
                )
            })?;
        println!(
            "  r{round} {:<8} keepalive {:>8.0} req/s  newconn {:>7.0} req/s  1 conn {:>7.0} req/s p50 {:>5.0} us  bulk {:>6.2} Gbit/s  stolen {:.2} s",
            setup.name(),
            f.keepalive.value,
            f.newconn.value,
            f.c1.value,
            f.c1_p50_us,
            f.bulk.value,
            f.runs().iter().map(|r| r.1.cpu.steal).sum::<f64>()
        );
        results.push((setup, f));
    }
    Ok(results)
}

/// The setup of a round whose client runs the host stole the largest
/// share of the CPUs' time from, and that share (0 to 1).
fn most_stolen(results: &[(Setup, Figures)], cpus: usize) -> (Setup, f64) {
    results
        .iter()
        .map(|(setup, f)| {
            let (stolen, wall) = f.runs().iter().fold((0.0, 0.0), |(s, w), r| {
                (s + r.1.cpu.steal, w + r.1.cpu.wall)
            });
            let share = if wall > 0.0 {
                stolen / (wall * cpus as f64)
            } else {
                0.0
            };
            (*setup, share)
        })
        .fold(
            (Setup::Herd, 0.0),
            |worst, x| if x.1 > worst.1 { x } else { worst },
        )
}

/// Tears the lab down and removes the state dir, also on error.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lab::down();
        unmount_state();
        let _ = std::fs::remove_dir_all(STATE_DIR);
    }
}

/// The state dir on a tmpfs of its own: the bulk file, nginx's request
/// bodies and the uploaded files live in memory, so the upload measures
/// the served path, not the disk. `/run` is not a tmpfs on every host (on
/// some it is the root file system): there every upload wrote 100 MiB
/// through ext4 and its writeback, in nginx's time and at random moments.
fn mount_tmpfs(dir: &Path) -> Result<()> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "herd-bench-serve"])
        .arg(dir)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("could not mount a tmpfs on {} ({status})", dir.display());
    }
    Ok(())
}

/// The `--kernel-xdp-pass` program's object, in the state dir.
const XDP_PASS_OBJECT: &str = "xdp_pass.o";

/// Where `--kernel-xdp-pass` attaches its program, where Herd's pre-filter
/// runs in this bench: the mode's name and `ip link`'s keyword for it.
fn kernel_xdp_mode(o: &Options) -> (&'static str, &'static str) {
    if o.xdp_mode.as_deref() == Some("native") {
        ("native", "xdpdrv")
    } else {
        ("generic", "xdpgeneric")
    }
}

/// Compiles the `--kernel-xdp-pass` program into `dir`. It includes no
/// header (2 is `XDP_PASS`), so clang needs no system include path.
fn build_xdp_pass(dir: &Path) -> Result<()> {
    let source = dir.join("xdp_pass.c");
    std::fs::write(
        &source,
        "__attribute__((section(\"xdp\"), used)) int herd_bench_pass(void *ctx) { return 2; }\n\
         __attribute__((section(\"license\"), used)) char _license[] = \"GPL\";\n",
    )?;
    let status = Command::new("clang")
        .args(["-O2", "-target", "bpf", "-c"])
        .arg(&source)
        .arg("-o")
        .arg(dir.join(XDP_PASS_OBJECT))
        .status()
        .context("running clang (--kernel-xdp-pass builds its program with it)")?;
    if !status.success() {
        bail!("clang could not build the --kernel-xdp-pass program ({status})");
    }
    Ok(())
}

/// Unmounts the state dir's tmpfs, if it is mounted (as often as it is
/// listed: a shared mount can be listed twice, bounded all the same).
fn unmount_state() {
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(STATE_DIR)))
    };
    for _ in 0..4 {
        if !mounted() {
            break;
        }
        let _ = Command::new("umount").arg(STATE_DIR).status();
    }
}

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file()
}

fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_string()
        })
        .unwrap_or_default()
}

/// The "Model name" of `lscpu`'s output.
fn model_name(lscpu: &str) -> Option<&str> {
    lscpu
        .lines()
        .find_map(|l| l.strip_prefix("Model name:"))
        .map(str::trim)
}

/// The bulk file: real zero bytes (not sparse), so every read is of
/// page-cache pages like a real file's.
fn write_bulk(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..BULK_BYTES >> 20 {
        f.write_all(&chunk)?;
    }
    Ok(())
}

/// One setup, one round: builds the lab, starts nginx, runs the clients.
fn measure(
    o: &Options,
    dir: &Path,
    setup: Setup,
    nodes: u32,
    layout: Layout,
    first: bool,
) -> Result<Figures> {
    let nodes = if setup == Setup::Plain { 1 } else { nodes };
    let pin = layout == Layout::Equal;
    bring_up(setup, nodes, layout, o)?;
    if first {
        print_offloads(setup, nodes)?;
    }
    let mut servers = Vec::new();
    for n in 1..=nodes {
        servers.push(start_nginx(dir, n, pin)?);
    }
    for n in 1..=nodes {
        wait_nginx(n, &mut servers[n as usize - 1])?;
    }
    check_shares(nodes, pin)?;
    let herd: Vec<u32> = (1..=nodes)
        .filter_map(lab::herd_pid)
        .map(|p| p as u32)
        .collect();
    if setup == Setup::Herd && herd.len() != nodes as usize {
        bail!("a herd node is not running");
    }
    let nginx: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    if pin {
        check_pinning(&nginx, &herd)?;
    }
    let procs = Procs {
        nginx,
        herd,
        ksoftirqd: ksoftirqd_pids(),
    };
    let tcp0 = tcp_counters(nodes)?;
    let secs = o.seconds.to_string();
    let url = format!("http://{VIP4}/");

    let (out, cpu) = timed_client(
        &procs,
        pin,
        &["wrk", "-t1", "-c50", &format!("-d{secs}s"), &url],
        o.seconds + 15,
    )?;
    let w = parse_wrk(&out).context("keep-alive wrk")?;
    check_wrk(&w, "keep-alive wrk")?;
    let keepalive = Run {
        value: w.rps,
        units: w.requests as f64,
        cpu: cpu.0,
    };
    // RPS must have moved the kernel node's (and a generic-mode af_xdp
    // node's) receive work to CPU 1 (on the emulated NIC its NAPI thread
    // there does it all: no IPI to count).
    let steered = match setup {
        Setup::Herd => xdp_generic(o),
        _ => o.kernel_nic == KernelNic::Veth || xdp_generic(o),
    };
    if pin && steered && cpu.1 == 0 {
        bail!("RPS did not take effect: CPU 1 received no RPS interrupt during the keep-alive run");
    }

    // -n after -t: `-t` resets the request limit to 50000; -t bounds the run.
    let (out, cpu) = timed_client(
        &procs,
        pin,
        &["ab", "-q", "-c", "20", "-t", &secs, "-n", "10000000", &url],
        o.seconds + 30,
    )?;
    let a = parse_ab(&out).context("ab")?;
    check_ab(&a)?;
    let newconn = Run {
        value: a.rps,
        units: a.complete as f64,
        cpu: cpu.0,
    };

    let (out, cpu) = timed_client(
        &procs,
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
    let c1 = Run {
        value: w.rps,
        units: w.requests as f64,
        cpu: cpu.0,
    };
    let c1_p50_us = w.p50_us.context("wrk printed no latency distribution")?;

    let bulk = transfer(o, &procs, pin, Transfer::Download, dir)?;
    let upload = transfer(o, &procs, pin, Transfer::Upload, dir)?;
    let tcp1 = tcp_counters(nodes)?;
    let (retrans, rsts) = (tcp1.0 - tcp0.0, tcp1.1 - tcp0.1);
    if retrans > 0 || rsts > 0 {
        println!(
            "  note: {} node(s) retransmitted {retrans} TCP segments and sent {rsts} RSTs during the clients",
            setup.name()
        );
    }
    // Stops nginx (SIGTERM, SIGKILL after 10 s) before the next lab.
    drop(servers);
    Ok(Figures {
        keepalive,
        newconn,
        c1,
        c1_p50_us,
        bulk,
        upload,
    })
}

/// The `equal` layout as it runs: nginx (master and workers) on CPU 0,
/// herd's lcores on CPU 1.
fn check_pinning(nginx: &[u32], herd: &[u32]) -> Result<()> {
    let allowed = |task: &str| -> Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{task}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no Cpus_allowed_list in /proc/{task}/status"))
    };
    for pid in nginx.iter().chain(&children_of(nginx)) {
        let cpus = allowed(&pid.to_string())?;
        if cpus != "0" {
            bail!("nginx {pid} may run on CPUs {cpus}, not 0");
        }
    }
    for pid in herd {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let tid = task?.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))?;
            // The lcores: the main one (the process's first thread) and the
            // workers. DPDK's control threads (interrupts, IPC) stay off
            // the lcores' CPUs; they sleep.
            let lcore = tid == pid.to_string()
                || comm.starts_with("rte-worker")
                || comm.starts_with("lcore-worker");
            if !lcore {
                continue;
            }
            let cpus = allowed(&format!("{pid}/task/{tid}"))?;
            if cpus != "1" {
                bail!("herd {pid} thread {tid} may run on CPUs {cpus}, not 1");
            }
        }
    }
    Ok(())
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

/// Builds the lab for `setup` and configures the nodes' kernels.
fn bring_up(setup: Setup, nodes: u32, layout: Layout, o: &Options) -> Result<()> {
    let driver = o.driver.as_str();
    let spec = lab::LabSpec {
        nodes,
        running: if setup == Setup::Herd { nodes } else { 0 },
        queues: 1,
        delivery: "vmac".into(),
        driver: driver.into(),
        ownership: "static".into(),
        split_brain: "serve-all".into(),
        heartbeat_networks: 1,
        extra: match &o.extra_config {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading --extra-config {}", p.display()))?,
            None => String::new(),
        },
        xdp_mode: o.xdp_mode.clone(),
        cpus: (layout == Layout::Equal).then(|| "1".to_string()),
    };
    lab::up(&spec)?;
    for n in 1..=nodes {
        lab::stop_app(n)?;
    }
    if setup == Setup::Herd {
        // With af_xdp the XDP pre-filter hands the node's own flows to its
        // kernel on eth0, and the TAP's direct egress sends its replies
        // out of eth0: eth0 is set up as a NIC's kernel interface would
        // be. GRO on (a NIC's default; a veth's is off). On equal CPUs,
        // the receive work goes where the kernel nodes' does (CPU 1): the
        // stack's by RPS, like theirs, and the driver's (the veth's NAPI,
        // which runs the XDP program) by threaded NAPI pinned there, as a
        // NIC's interrupt would be; the kernel nodes' veth has no NAPI (no
        // XDP, no GRO) and does its driver work in the sender's context.
        if driver == "af_xdp" {
            for n in 1..=nodes {
                if xdp_generic(o) {
                    // Generic mode: the program runs in the veth's own
                    // receive path, after RPS, as the kernel nodes' filter.
                    if layout == Layout::Equal {
                        steer_rps(&node_ns(n))?;
                    }
                    continue;
                }
                in_ns(&node_ns(n), &["ethtool", "-K", "eth0", "gro", "on"])?;
                if layout == Layout::Equal {
                    steer_rps(&node_ns(n))?;
                    steer_napi(&node_ns(n))?;
                }
            }
        }
        return Ok(());
    }
    let mac = farm_mac();
    for n in 1..=nodes {
        let ns = node_ns(n);
        kernel_node(
            n,
            nodes,
            setup == Setup::Nft,
            o.kernel_nic == KernelNic::Veth,
            "",
        )?;
        if o.kernel_xdp_pass {
            let object = Path::new(STATE_DIR).join(XDP_PASS_OBJECT);
            let mode = kernel_xdp_mode(o).1;
            in_ns(
                &ns,
                &[
                    "ip",
                    "link",
                    "set",
                    "dev",
                    "eth0",
                    mode,
                    "obj",
                    &object.display().to_string(),
                    "sec",
                    "xdp",
                ],
            )?;
        }
        let emulated_nic = o.kernel_nic == KernelNic::Nic && !xdp_generic(o);
        if emulated_nic {
            // The emulated NIC (see above): a veth with GRO has NAPI,
            // which runs where its thread is.
            in_ns(&ns, &["ethtool", "-K", "eth0", "gro", "on"])?;
        }
        if layout == Layout::Equal {
            steer_rps(&ns)?;
            if emulated_nic {
                steer_napi(&ns)?;
            }
        }
    }
    if setup == Setup::Nft {
        farm_neigh(&mac)?;
    }
    Ok(())
}

/// The nftables farm's VIP MAC: the multicast MAC of the VIP, which the
/// bridge floods and every node joins.
pub(crate) fn farm_mac() -> String {
    mac_string(config::vip_mac(
        VIP4.parse().expect("the lab's VIP"),
        config::Delivery::Multicast,
    ))
}

/// The client resolves the nftables farm's VIP to its multicast MAC.
pub(crate) fn farm_neigh(mac: &str) -> Result<()> {
    in_ns(
        CLIENT_NS,
        &[
            "ip",
            "neigh",
            "replace",
            VIP4,
            "lladdr",
            mac,
            "dev",
            lab::BRIDGE,
            "nud",
            "permanent",
        ],
    )
}

/// Kernel node `n` of `nodes` on a lab built with no herd running: the
/// kernel's offloads (with `veth_offloads`, the kernel's defaults for a
/// veth on the bridge's side too), its own address on `eth0`, and either
/// the VIP on `eth0` (a plain node) or, with `farm`, the nftables farm
/// node: the VIP on `lo`, the multicast MAC joined, the farm's jhash rule
/// at `netdev ingress` (`counter` is put in that rule: "" or "counter").
pub(crate) fn kernel_node(
    n: u32,
    nodes: u32,
    farm: bool,
    veth_offloads: bool,
    counter: &str,
) -> Result<()> {
    let ns = node_ns(n);
    let peer = node_name(n);
    // A kernel node runs with the kernel's own offloads (the lab turns
    // tx off for the af_packet fastpath). On the emulated NIC its wire
    // stays as Herd's is: finished MTU frames (no TSO toward the node),
    // which also gives its veth NAPI (a veth uses its NAPI, and GRO,
    // only while its peer has no TSO).
    if veth_offloads {
        in_ns(
            CLIENT_NS,
            &["ethtool", "-K", &peer, "tx", "on", "tso", "on", "gso", "on"],
        )?;
    }
    in_ns(
        &ns,
        &[
            "ethtool", "-K", "eth0", "tx", "on", "tso", "on", "gso", "on",
        ],
    )?;
    in_ns(
        &ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", node_ip4(n)),
            "dev",
            "eth0",
        ],
    )?;
    if !farm {
        in_ns(
            &ns,
            &["ip", "addr", "add", &format!("{VIP4}/32"), "dev", "eth0"],
        )?;
        return Ok(());
    }
    in_ns(
        &ns,
        &["ip", "addr", "add", &format!("{VIP4}/32"), "dev", "lo"],
    )?;
    // The VIP on lo must never be answered for (nor used as the
    // source of an ARP request) on eth0.
    in_ns(
        &ns,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ],
    )?;
    in_ns(&ns, &["ip", "maddr", "add", &farm_mac(), "dev", "eth0"])?;
    nft_load(&ns, &nft_ruleset(nodes, n - 1, counter))
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The nftables farm node `k` (0-based) of `nodes`: VIP frames (to the
/// multicast MAC) are the host's, and the other nodes' flows are dropped
/// at the earliest hook.
/// `counter`: "" or "counter" (in the drop rule).
pub(crate) fn nft_ruleset(nodes: u32, k: u32, counter: &str) -> String {
    let counter = if counter.is_empty() {
        String::new()
    } else {
        format!("{counter} ")
    };
    format!(
        "table netdev herd-bench {{
  chain ingress {{
    type filter hook ingress device eth0 priority 0; policy accept;
    ip daddr {VIP4} meta pkttype set host
    ip daddr {VIP4} tcp dport 80 jhash ip saddr . tcp sport mod {nodes} seed {JHASH_SEED} != {k} {counter}drop
  }}
}}
"
    )
}

fn nft_load(ns: &str, ruleset: &str) -> Result<()> {
    use std::io::Write;
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nft")?;
    nft.stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())?;
    let out = nft.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft refused the farm ruleset in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// RPS: eth0's receive work on CPU 1 (mask 2), read back to be sure.
fn steer_rps(ns: &str) -> Result<()> {
    let file = "/sys/class/net/eth0/queues/rx-0/rps_cpus";
    in_ns(ns, &["sh", "-c", &format!("echo 2 > {file}")])?;
    let mask = in_ns_output(ns, &["cat", file])?;
    if u64::from_str_radix(&mask.trim().replace(',', ""), 16).ok() != Some(2) {
        bail!("{ns}: rps_cpus reads {:?} after writing 2", mask.trim());
    }
    Ok(())
}

/// Threaded NAPI on eth0 of `ns` (a veth: it has NAPI while an XDP
/// program is attached or GRO is on), its threads on CPU 1, checked.
fn steer_napi(ns: &str) -> Result<()> {
    let file = "/sys/class/net/eth0/threaded";
    in_ns(ns, &["sh", "-c", &format!("echo 1 > {file}")])?;
    if in_ns_output(ns, &["cat", file])?.trim() != "1" {
        bail!("{ns}: eth0's NAPI is not threaded (no XDP program and no GRO on it?)");
    }
    // Every node's thread is named after its eth0: all go to CPU 1.
    let pids = Command::new("pgrep").arg("^napi/eth0-").output()?;
    let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if pids.is_empty() {
        bail!("{ns}: no NAPI thread of eth0");
    }
    for pid in &pids {
        let out = Command::new("taskset").args(["-p", "2", pid]).output()?;
        if !out.status.success() {
            bail!(
                "taskset -p 2 {pid}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn print_offloads(setup: Setup, nodes: u32) -> Result<()> {
    let mut parts = Vec::new();
    // Node 1 stands for all: every node is set up alike.
    if nodes >= 1 {
        let n = 1;
        let ns = node_ns(n);
        parts.push(format!(
            "eth0 {}",
            offloads(&in_ns_output(&ns, &["ethtool", "-k", "eth0"])?)
        ));
        parts.push(format!(
            "peer {} {}",
            node_name(n),
            offloads(&in_ns_output(CLIENT_NS, &["ethtool", "-k", &node_name(n)])?)
        ));
        if setup == Setup::Herd {
            parts.push(format!(
                "tap herd0 {}",
                offloads(&in_ns_output(&ns, &["ethtool", "-k", "herd0"])?)
            ));
        }
    }
    println!("  {} offloads (s1): {}", setup.name(), parts.join("; "));
    Ok(())
}

/// The offloads that matter here, from `ethtool -k`: each feature's own
/// state, not its group's (TSO reads "on" as a group when tx checksums are
/// off, while its one feature is "off [requested on]").
fn offloads(ethtool_k: &str) -> String {
    let state = |name: &str| {
        ethtool_k
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "tx-csum {} tso {} gso {} gro {}",
        state("tx-checksumming"),
        state("tx-tcp-segmentation"),
        state("generic-segmentation-offload"),
        state("generic-receive-offload")
    )
}

/// nginx's configuration for node `name`, its files in `dir`, the bulk
/// file in `root`.
fn nginx_conf(name: &str, dir: &Path, root: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# herd-bench serve, node {name}
daemon off;
# Workers as root: a PUT writes into the bench's directory.
user root;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type text/plain;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 80;
        listen [::]:80;
        root {root};
        location = / {{
            return 200 "{name}\n";
        }}
        location = /bulk {{
        }}
        location /upload/ {{
            root {d};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}
}}
"#,
        root = root.display()
    )
}

/// Starts nginx in node `n`'s namespace as our child (`daemon off`): the
/// guard stops it (SIGTERM: nginx's fast shutdown).
fn start_nginx(dir: &Path, n: u32, pin: bool) -> Result<Guard> {
    let node_dir = dir.join(node_name(n));
    std::fs::create_dir_all(&node_dir)?;
    let conf = node_dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&node_name(n), &node_dir, dir))?;
    let log = std::fs::File::create(node_dir.join("nginx.out"))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node_ns(n)]);
    if pin {
        cmd.args(["taskset", "-c", "0"]);
    }
    let child = cmd
        .arg("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(node_dir.join("error.log"))
        .arg("-p")
        .arg(&node_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting nginx")?;
    Ok(Guard(child))
}

/// Waits until node `n`'s nginx answers on the node's own address.
fn wait_nginx(n: u32, server: &mut Guard) -> Result<()> {
    let url = format!("http://{}/", node_ip4(n));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(body) = client(false, &["curl", "-s", "-m", "1", &url], 5) {
            if body.trim() == node_name(n) {
                return Ok(());
            }
        }
        if let Some(code) = server.0.try_wait()? {
            let log =
                std::fs::read_to_string(Path::new(STATE_DIR).join(node_name(n)).join("error.log"))
                    .unwrap_or_default();
            bail!("nginx on {} exited ({code}): {}", node_name(n), log.trim());
        }
        if Instant::now() > deadline {
            bail!(
                "nginx on {} did not answer at {url} within 10 s",
                node_name(n)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `CHECK_CURLS` single requests to the VIP: each must get one answer, and
/// every node must have accepted exactly the connections it answered.
fn check_shares(nodes: u32, pin: bool) -> Result<()> {
    let opens = |n| -> Result<u64> {
        snmp_field(
            &in_ns_output(&node_ns(n), &["cat", "/proc/net/snmp"])?,
            "Tcp",
            "PassiveOpens",
        )
    };
    let before = (1..=nodes).map(opens).collect::<Result<Vec<u64>>>()?;
    let mut answers = vec![0u64; nodes as usize];
    let url = format!("http://{VIP4}/");
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
fn tcp_counters(nodes: u32) -> Result<(u64, u64)> {
    let mut sums = (0, 0);
    for n in 1..=nodes {
        let snmp = in_ns_output(&node_ns(n), &["cat", "/proc/net/snmp"])?;
        sums.0 += snmp_field(&snmp, "Tcp", "RetransSegs")?;
        sums.1 += snmp_field(&snmp, "Tcp", "OutRsts")?;
    }
    Ok(sums)
}

/// A field of `/proc/net/snmp` (a header line of names, then one of values).
pub(crate) fn snmp_field(snmp: &str, proto: &str, field: &str) -> Result<u64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("no {proto} lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {proto} {field} in /proc/net/snmp"))
}

/// Runs a client command in the client namespace (on CPU 0 if `pin`),
/// killed after `timeout_s`; returns its stdout, failing with its stderr.
fn client(pin: bool, args: &[&str], timeout_s: u64) -> Result<String> {
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

/// The processes whose CPU time is measured.
struct Procs {
    nginx: Vec<u32>,
    herd: Vec<u32>,
    ksoftirqd: Vec<u32>,
}

/// CPU times in clock ticks at one instant.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    nginx: u64,
    children: u64,
    herd: u64,
    lcores: u64,
    softirq: u64,
    ksoftirqd: u64,
    machine: u64,
    steal: u64,
    rps_cpu1: u64,
    at: Option<Instant>,
}

impl Procs {
    fn sample(&self) -> Result<Sample> {
        let mut s = Sample::default();
        // nginx: each master and its workers (children of the master).
        let children = children_of(&self.nginx);
        for pid in self.nginx.iter().chain(&children) {
            s.nginx += process_ticks(*pid).unwrap_or(0);
        }
        for &pid in &self.herd {
            s.herd += process_ticks(pid)?;
            s.lcores += worker_ticks(pid)?;
        }
        for &pid in &self.ksoftirqd {
            s.ksoftirqd += process_ticks(pid).unwrap_or(0);
        }
        // Our reaped children: the client runs, once each has exited.
        s.children = reaped_children_ticks()?;
        let m = MachineTicks::now()?;
        (s.softirq, s.machine, s.steal) = (m.softirq, m.busy, m.steal);
        s.rps_cpu1 = received_rps(&std::fs::read_to_string("/proc/net/softnet_stat")?, 1);
        s.at = Some(Instant::now());
        Ok(s)
    }
}

impl Sample {
    fn since(&self, before: &Sample) -> Result<Cpu> {
        let hz = clock_ticks_per_second()?;
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        Ok(Cpu {
            nginx: d(self.nginx, before.nginx),
            client: d(self.children, before.children),
            herd: d(self.herd, before.herd),
            lcores: d(self.lcores, before.lcores),
            softirq: d(self.softirq, before.softirq),
            ksoftirqd: d(self.ksoftirqd, before.ksoftirqd),
            machine: d(self.machine, before.machine),
            steal: d(self.steal, before.steal),
            wall: match (self.at, before.at) {
                (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64(),
                _ => 0.0,
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Wrk {
    requests: u64,
    rps: f64,
    p50_us: Option<f64>,
    socket_errors: u64,
    non_2xx: u64,
}

/// wrk's report (with or without `--latency`).
fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk {
        requests: 0,
        rps: f64::NAN,
        p50_us: None,
        socket_errors: 0,
        non_2xx: 0,
    };
    let mut requests = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().context("wrk Requests/sec")?;
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if let Some(v) = line.strip_prefix("50%") {
            w.p50_us = Some(duration_us(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 20497, write 0, timeout 0"
            w.socket_errors = v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = v.trim().parse().context("wrk Non-2xx")?;
        }
    }
    w.requests = requests.context("no \"N requests in\" line in wrk's output")?;
    if w.rps.is_nan() {
        bail!("no Requests/sec in wrk's output");
    }
    Ok(w)
}

/// A wrk duration ("29.00us", "2.03ms", "1.20s") in µs.
fn duration_us(s: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("unknown duration {s:?}")
    };
    let us = num
        .parse::<f64>()
        .with_context(|| format!("duration {s:?}"))?
        * scale;
    // wrk prints two decimals: keep no more than that (2.03 ms is 2030 µs).
    Ok((us * 100.0).round() / 100.0)
}

/// Errors tolerated in a client run: a few, or one in a thousand.
fn tolerated(errors: u64, requests: u64) -> bool {
    errors <= 10 + requests / 1000
}

fn check_wrk(w: &Wrk, what: &str) -> Result<()> {
    if w.requests == 0 {
        bail!("{what}: nginx answered no request");
    }
    if w.non_2xx > 0 {
        bail!("{what}: {} answers were not 2xx/3xx", w.non_2xx);
    }
    if !tolerated(w.socket_errors, w.requests) {
        bail!(
            "{what}: {} socket errors in {} requests",
            w.socket_errors,
            w.requests
        );
    }
    if w.socket_errors > 0 {
        println!(
            "  note: {what}: {} socket errors in {} requests",
            w.socket_errors, w.requests
        );
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Ab {
    complete: u64,
    failed: u64,
    non_2xx: u64,
    rps: f64,
}

/// ab's report.
fn parse_ab(text: &str) -> Result<Ab> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
    };
    Ok(Ab {
        complete: field("Complete requests:")
            .and_then(|v| v.parse().ok())
            .context("no Complete requests in ab's output")?,
        failed: field("Failed requests:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        non_2xx: field("Non-2xx responses:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        rps: field("Requests per second:")
            .and_then(|v| v.parse().ok())
            .context("no Requests per second in ab's output")?,
    })
}

fn check_ab(a: &Ab) -> Result<()> {
    if a.complete == 0 {
        bail!("ab: nginx answered no request");
    }
    if a.non_2xx > 0 {
        bail!("ab: {} answers were not 2xx", a.non_2xx);
    }
    if !tolerated(a.failed, a.complete) {
        bail!("ab: {} failed requests of {}", a.failed, a.complete);
    }
    if a.failed > 0 {
        println!("  note: ab: {} failed requests of {}", a.failed, a.complete);
    }
    Ok(())
}

/// curl's `-w '%{speed_download} %{size_download} %{http_code}'`: bytes
/// per second, bytes, HTTP status.
fn parse_curl(text: &str) -> Result<(f64, u64, u32)> {
    let mut f = text.split_whitespace();
    let (Some(speed), Some(size), Some(code)) = (f.next(), f.next(), f.next()) else {
        bail!("curl printed {text:?}");
    };
    Ok((
        speed.parse().context("curl speed")?,
        size.parse().context("curl size")?,
        code.parse().context("curl status")?,
    ))
}

/// A ratio as a bar, 20 characters to 1.0 (marked with `|` when short of
/// it), at most 40.
fn bar(ratio: f64) -> String {
    let width = if ratio.is_finite() {
        (ratio * 20.0).round().clamp(0.0, 40.0) as usize
    } else {
        0
    };
    let mut s = "#".repeat(width);
    if width < 20 {
        s += &" ".repeat(20 - width);
        s.push('|');
    }
    s
}

fn cell_or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The tables of one layout and farm size.
fn report(cell: &Cell) -> String {
    let mut out = format!(
        "\n-- layout {}, {} node(s): medians over {} round(s) --\n",
        cell.layout.name(),
        cell.nodes,
        cell.rounds.len()
    );
    let setups = [Setup::Herd, Setup::Nft, Setup::Plain];
    let med = |setup: Setup, f: &dyn Fn(&Figures) -> f64| {
        let mut v: Vec<f64> = cell.of(setup).iter().map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let s = cell.summary();
    type Row<'a> = (&'a str, &'a dyn Fn(&Figures) -> f64, usize, String);
    let rows: [Row; 6] = [
        (
            "keep-alive req/s (wrk -c50)",
            &|f| f.keepalive.value,
            0,
            format!("{:.3}", s.keepalive_ratio),
        ),
        (
            "new connections req/s (ab -c20)",
            &|f| f.newconn.value,
            0,
            format!("{:.3}", s.newconn_ratio),
        ),
        (
            "one connection req/s (wrk -c1)",
            &|f| f.c1.value,
            0,
            format!("{:.3}", s.c1_ratio),
        ),
        (
            "one connection p50 us",
            &|f| f.c1_p50_us,
            1,
            format!("{:+.1} us", s.c1_p50_extra_us),
        ),
        (
            "bulk Gbit/s (curl)",
            &|f| f.bulk.value,
            2,
            format!("{:.3}", s.bulk_ratio),
        ),
        (
            "upload Gbit/s (curl -T)",
            &|f| f.upload.value,
            2,
            format!("{:.3}", s.upload_ratio),
        ),
    ];
    out += &format!(
        "{:<32} {:>10} {:>10} {:>10} {:>14}\n",
        "figure", "herd", "nftables", "plain", "herd/nftables"
    );
    for (name, f, decimals, ratio) in &rows {
        let v = setups.map(|s| cell_or_dash(med(s, f), *decimals));
        out += &format!(
            "{name:<32} {:>10} {:>10} {:>10} {ratio:>14}\n",
            v[0], v[1], v[2]
        );
    }
    out += "herd/nftables per round (20 # = 1.0):\n";
    type Ratio<'a> = (&'a str, &'a dyn Fn(&Figures, &Figures) -> f64);
    let charts: [Ratio; 5] = [
        ("keepalive", &|h, n| h.keepalive.value / n.keepalive.value),
        ("newconn", &|h, n| h.newconn.value / n.newconn.value),
        ("1 conn", &|h, n| h.c1.value / n.c1.value),
        ("bulk", &|h, n| h.bulk.value / n.bulk.value),
        ("upload", &|h, n| h.upload.value / n.upload.value),
    ];
    for (name, f) in charts {
        for (i, r) in cell.per_round(f).iter().enumerate() {
            out += &format!("{name:<10} r{} {r:5.2} |{}\n", i + 1, bar(*r));
        }
    }
    out += "CPU per request, us (bulk: per MB), medians over rounds:\n";
    for setup in setups {
        let figs = cell.of(setup);
        if figs.is_empty() {
            continue;
        }
        out += &format!("{:<18}", setup.name());
        for (title, _) in figs[0].runs() {
            out += &format!(" {title:>10}");
        }
        out += "\n";
        for (row, label) in CPU_ROWS.iter().enumerate() {
            // Rows 2 and 3 are herd's and its lcores'.
            if setup != Setup::Herd && (row == 2 || row == 3) {
                continue;
            }
            out += &format!("  {label:<16}");
            for col in 0..figs[0].runs().len() {
                let mut v: Vec<f64> = figs
                    .iter()
                    .map(|f| {
                        let run = f.runs()[col].1;
                        run.cpu.rows()[row] * 1e6 / run.units
                    })
                    .collect();
                out += &format!(" {:>10.2}", median(&mut v));
            }
            out += "\n";
        }
    }
    out
}

/// The RESULT key prefix of a layout and farm size, against the base ones.
fn key_prefix(layout: Layout, nodes: u32, base_layout: Layout, base_nodes: u32) -> String {
    let mut p = String::new();
    if layout != base_layout {
        p += layout.short();
        p.push('_');
    }
    if nodes != base_nodes {
        p += &format!("n{nodes}_");
    }
    p
}

fn result_line(driver: &str, base: &str, cells: &[(String, Summary)]) -> String {
    let mut line = format!("RESULT serve driver={driver}");
    for (p, s) in cells
        .iter()
        .filter(|(p, _)| p.is_empty())
        .chain(cells.iter().filter(|(p, _)| !p.is_empty()))
    {
        line += &format!(
            " {p}keepalive_ratio={:.3} {p}newconn_ratio={:.3} {p}bulk_ratio={:.3} {p}upload_ratio={:.3} {p}c1_p50_extra_us={:.1} {p}c1_ratio={:.3}",
            s.keepalive_ratio, s.newconn_ratio, s.bulk_ratio, s.upload_ratio, s.c1_p50_extra_us, s.c1_ratio
        );
    }
    line + &format!(" base={base}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setup's figures whose five client runs each lasted `wall` s and
    /// lost `steal` s to the host.
    fn figures_with_steal(wall: f64, steal: f64) -> Figures {
        let run = Run {
            cpu: Cpu {
                wall,
                steal,
                ..Cpu::default()
            },
            ..Run::default()
        };
        Figures {
            keepalive: run,
            newconn: run,
            c1: run,
            bulk: run,
            upload: run,
            ..Figures::default()
        }
    }

    #[test]
    fn the_setup_the_host_stole_most_from_names_the_round() {
        let results = vec![
            (Setup::Herd, figures_with_steal(4.0, 0.02)),
            (Setup::Nft, figures_with_steal(4.0, 0.4)),
            (Setup::Plain, figures_with_steal(4.0, 0.0)),
        ];
        let (setup, share) = most_stolen(&results, 2);
        assert_eq!(setup, Setup::Nft);
        // 5 runs x 0.4 s stolen of 5 x 4 s on 2 CPUs.
        assert!((share - 0.05).abs() < 1e-9, "{share}");
        let (_, quiet) = most_stolen(&results[2..], 2);
        assert_eq!(quiet, 0.0);
    }

    const WRK_C50: &str = "Running 2s test @ http://198.18.0.100/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   657.30us  636.72us   8.75ms   93.66%
    Req/Sec    49.52k     8.62k   61.38k    55.00%
  98437 requests in 2.01s, 14.08MB read
Requests/sec:  49093.31
Transfer/sec:      7.02MB
";

    const WRK_C1_LATENCY: &str = "Running 2s test @ http://198.18.0.100/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    40.80us  184.50us   5.47ms   99.49%
    Req/Sec    31.75k   765.04    32.19k    95.24%
  Latency Distribution
     50%   29.00us
     75%   30.00us
     90%   31.00us
     99%   52.00us
  66358 requests in 2.10s, 9.49MB read
Requests/sec:  31611.07
Transfer/sec:      4.52MB
";

    const WRK_ERRORS: &str = "Running 2s test @ http://198.18.0.11:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.64ms    2.19ms  23.66ms   85.38%
    Req/Sec     2.83k     1.28k    6.26k    80.00%
  Latency Distribution
     50%    2.03ms
     75%    2.72ms
     90%    4.89ms
     99%    7.57ms
  5696 requests in 2.02s, 828.81KB read
  Socket errors: connect 0, read 20497, write 0, timeout 0
Requests/sec:   2818.81
Transfer/sec:    410.16KB
";

    const WRK_404: &str = "Running 1s test @ http://198.18.0.11/nothere
  1 threads and 5 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   268.24us  499.74us   5.14ms   94.94%
    Req/Sec    28.21k     1.26k   29.09k    90.91%
  30832 requests in 1.10s, 9.06MB read
  Non-2xx or 3xx responses: 30832
Requests/sec:  28029.52
Transfer/sec:      8.23MB
";

    const AB: &str = "This is ApacheBench, Version 2.3 <$Revision$>
Copyright 1996 Adam Twiss, Zeus Technology Ltd, http://www.zeustech.net/
Licensed to The Apache Software Foundation, http://www.apache.org/

Benchmarking 198.18.0.100 (be patient).....done


Server Software:        nginx/1.22.1
Server Hostname:        198.18.0.100
Server Port:            80

Document Path:          /
Document Length:        3 bytes

Concurrency Level:      20
Time taken for tests:   2.000 seconds
Complete requests:      15018
Failed requests:        0
Total transferred:      2180365 bytes
HTML transferred:       45111 bytes
Requests per second:    7507.72 [#/sec] (mean)
Time per request:       2.664 [ms] (mean)
Time per request:       0.133 [ms] (mean, across all concurrent requests)
Transfer rate:          1064.45 [Kbytes/sec] received

Connection Times (ms)
              min  mean[+/-sd] median   max
Connect:        0    1   1.3      1      29
Processing:     0    2   1.6      1      33
Waiting:        0    1   1.4      1      29
Total:          0    3   2.0      2      34
";

    #[test]
    fn wrk_keepalive() {
        let w = parse_wrk(WRK_C50).unwrap();
        assert_eq!(
            w,
            Wrk {
                requests: 98437,
                rps: 49093.31,
                p50_us: None,
                socket_errors: 0,
                non_2xx: 0
            }
        );
        check_wrk(&w, "t").unwrap();
    }

    #[test]
    fn wrk_latency_distribution() {
        let w = parse_wrk(WRK_C1_LATENCY).unwrap();
        assert_eq!(w.requests, 66358);
        assert_eq!(w.p50_us, Some(29.0));
        assert_eq!(w.rps, 31611.07);
    }

    #[test]
    fn wrk_errors_fail_the_run() {
        let w = parse_wrk(WRK_ERRORS).unwrap();
        assert_eq!(w.socket_errors, 20497);
        assert_eq!(w.p50_us, Some(2030.0));
        assert!(check_wrk(&w, "t").is_err());
        let w = parse_wrk(WRK_404).unwrap();
        assert_eq!(w.non_2xx, 30832);
        assert!(check_wrk(&w, "t").is_err());
        assert!(parse_wrk("unable to connect to 198.18.0.11:81 Connection refused").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_us("29.00us").unwrap(), 29.0);
        assert_eq!(duration_us("2.03ms").unwrap(), 2030.0);
        assert_eq!(duration_us("1.50s").unwrap(), 1.5e6);
        assert!(duration_us("3m").is_err());
    }

    #[test]
    fn ab_report() {
        let a = parse_ab(AB).unwrap();
        assert_eq!(
            a,
            Ab {
                complete: 15018,
                failed: 0,
                non_2xx: 0,
                rps: 7507.72
            }
        );
        check_ab(&a).unwrap();
        let failed = AB.replace("Failed requests:        0", "Failed requests:        500");
        assert!(check_ab(&parse_ab(&failed).unwrap()).is_err());
        assert!(parse_ab("apr_socket_recv: Connection reset by peer (104)").is_err());
    }

    #[test]
    fn curl_write_out() {
        assert_eq!(
            parse_curl("501639 104857600 200").unwrap(),
            (501639.0, 104857600, 200)
        );
        assert_eq!(parse_curl("1.5e9 10 404").unwrap().2, 404);
        assert!(parse_curl("").is_err());
    }

    #[test]
    fn snmp_and_stat_files() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 0 12 0 0 0 0 0 3 0 7 0\n";
        assert_eq!(snmp_field(snmp, "Tcp", "PassiveOpens").unwrap(), 12);
        assert_eq!(snmp_field(snmp, "Tcp", "OutRsts").unwrap(), 7);
        assert!(snmp_field(snmp, "Udp", "InDatagrams").is_err());
        assert_eq!(
            model_name("Architecture: x86_64\nModel name:        AMD EPYC\n"),
            Some("AMD EPYC")
        );
    }

    #[test]
    fn offloads_read_each_feature() {
        let k = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\ttx-checksum-ipv4: off [fixed]\nscatter-gather: on\ntcp-segmentation-offload: on\n\ttx-tcp-segmentation: off [requested on]\ngeneric-segmentation-offload: on\ngeneric-receive-offload: off\n";
        assert_eq!(offloads(k), "tx-csum off tso off gso on gro off");
    }

    #[test]
    fn nginx_config() {
        let c = nginx_conf(
            "s2",
            Path::new("/run/herd-bench-serve/s2"),
            Path::new("/run/herd-bench-serve"),
        );
        for line in [
            "daemon off;",
            "master_process on;",
            "worker_processes 1;",
            "pid /run/herd-bench-serve/s2/nginx.pid;",
            "error_log /run/herd-bench-serve/s2/error.log;",
            "access_log off;",
            "sendfile on;",
            "keepalive_requests 1000000;",
            "listen 80;",
            "root /run/herd-bench-serve;",
            "return 200 \"s2\\n\";",
            "location = /bulk {",
            "user root;",
            "dav_methods PUT;",
        ] {
            assert!(c.contains(line), "{line} missing from\n{c}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }

    #[test]
    fn nft_rules() {
        let r = nft_ruleset(3, 2, "");
        assert!(r.contains("hook ingress device eth0"));
        assert!(r.contains("ip daddr 198.18.0.100 meta pkttype set host"));
        assert!(r.contains(
            "ip daddr 198.18.0.100 tcp dport 80 jhash ip saddr . tcp sport mod 3 seed 0x48657264 != 2 drop"
        ));
        assert_eq!(mac_string([1, 0, 0x5e, 0x12, 0, 0x64]), "01:00:5e:12:00:64");
    }

    #[test]
    fn bars_and_result_line() {
        assert_eq!(bar(1.0), "#".repeat(20));
        assert_eq!(bar(0.9), format!("{}  |", "#".repeat(18)));
        assert_eq!(bar(5.0).len(), 40);
        assert_eq!(bar(f64::NAN), format!("{}|", " ".repeat(20)));
        assert_eq!(key_prefix(Layout::Equal, 1, Layout::Equal, 1), "");
        assert_eq!(key_prefix(Layout::Equal, 3, Layout::Equal, 1), "n3_");
        assert_eq!(
            key_prefix(Layout::AsTheyCome, 3, Layout::Equal, 1),
            "atc_n3_"
        );
        let s = Summary {
            keepalive_ratio: 0.91234,
            newconn_ratio: 0.95,
            bulk_ratio: 0.5,
            upload_ratio: 0.75,
            c1_p50_extra_us: 12.34,
            c1_ratio: 0.8,
        };
        let n3 = Summary {
            keepalive_ratio: 1.0,
            ..s
        };
        assert_eq!(
            result_line("af_packet", "equal/n1", &[("n3_".into(), n3), (String::new(), s)]),
            "RESULT serve driver=af_packet keepalive_ratio=0.912 newconn_ratio=0.950 bulk_ratio=0.500 upload_ratio=0.750 c1_p50_extra_us=12.3 c1_ratio=0.800 n3_keepalive_ratio=1.000 n3_newconn_ratio=0.950 n3_bulk_ratio=0.500 n3_upload_ratio=0.750 n3_c1_p50_extra_us=12.3 n3_c1_ratio=0.800 base=equal/n1"
        );
    }

    #[test]
    fn summary_is_the_median_of_round_ratios() {
        let fig = |v: f64, p50: f64| Figures {
            keepalive: Run {
                value: v,
                units: 1.0,
                cpu: Cpu::default(),
            },
            newconn: Run {
                value: v,
                ..Run::default()
            },
            c1: Run {
                value: v,
                ..Run::default()
            },
            c1_p50_us: p50,
            bulk: Run {
                value: v,
                ..Run::default()
            },
            upload: Run {
                value: v,
                ..Run::default()
            },
        };
        let cell = Cell {
            layout: Layout::Equal,
            nodes: 1,
            rounds: vec![
                vec![
                    (Setup::Herd, fig(90.0, 30.0)),
                    (Setup::Nft, fig(100.0, 25.0)),
                ],
                vec![
                    (Setup::Nft, fig(100.0, 20.0)),
                    (Setup::Herd, fig(50.0, 40.0)),
                ],
                vec![
                    (Setup::Herd, fig(120.0, 20.0)),
                    (Setup::Nft, fig(100.0, 21.0)),
                ],
            ],
        };
        let s = cell.summary();
        assert_eq!(s.keepalive_ratio, 0.9);
        assert_eq!(s.c1_p50_extra_us, 5.0);
        let text = report(&cell);
        assert!(
            text.contains("keepalive  r2  0.50 |##########          |"),
            "{text}"
        );
    }
}
