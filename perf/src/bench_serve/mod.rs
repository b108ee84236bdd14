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
//!
//! The parts: `options` (the command line), `setups` (the labs of herd,
//! nftables and plain), `kernel_node` (the nftables jhash farm node, also
//! `herd-bench flood`'s), `nginx`, `clients` (wrk, ab, curl) with `cpu`
//! (what a run cost), `parsers` (the clients' reports), `figures` and
//! `report` (what is printed), `state` (the state dir on a tmpfs). This
//! file runs the rounds.

mod clients;
mod cpu;
mod figures;
mod kernel_node;
mod nginx;
mod options;
mod parsers;
mod report;
mod setups;
mod state;

pub(crate) use kernel_node::{farm_mac, farm_neigh, kernel_node};
pub use options::{KernelNic, LayoutArg, Options};
pub(crate) use parsers::snmp_field;

use crate::bench_fastpath::Guard;
use crate::lab;
use crate::procstat::ksoftirqd_pids;
use anyhow::{bail, Context, Result};
use cpu::Procs;
use figures::{Cell, Figures};
use options::{Layout, ROUND_TRIES};
use setups::Setup;
use std::path::Path;

pub fn run(o: &Options) -> Result<()> {
    o.check()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let node_counts = o.node_counts();
    let layouts = o.layouts();
    check_tools()?;
    report::print_header(o)?;
    let _cleanup = state::Cleanup;
    let dir = state::prepare(o)?;
    let mut cells = Vec::new();
    for &layout in &layouts {
        for &nodes in &node_counts {
            let cell = measure_cell(o, &dir, layout, nodes, cpus)?;
            print!("{}", report::report(&cell));
            cells.push(cell);
        }
    }
    report::print_result(o, &cells, &layouts, &node_counts);
    Ok(())
}

/// Fails unless every program the bench runs is installed.
fn check_tools() -> Result<()> {
    for tool in ["nginx", "wrk", "ab", "curl", "nft", "ethtool", "taskset"] {
        if !on_path(tool) {
            bail!("`{tool}` is not installed (ci/install.sh installs it)");
        }
    }
    Ok(())
}

/// Whether `tool` is on the `PATH` (or in `/usr/sbin`).
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file()
}

/// Every round of one layout and farm size (`cpus`: the machine's); the
/// lab is down after.
fn measure_cell(o: &Options, dir: &Path, layout: Layout, nodes: u32, cpus: usize) -> Result<Cell> {
    let mut cell = Cell {
        layout,
        nodes,
        rounds: Vec::new(),
    };
    println!("\n== layout {}, {nodes} node(s) ==", layout.name());
    for round in 1..=o.rounds {
        let results = run_quiet_round(o, dir, nodes, layout, round, cpus)?;
        cell.rounds.push(results);
    }
    lab::down()?;
    Ok(cell)
}

/// Round `round`, run again while the host stole more than `--max-steal`
/// of the CPUs' time during a setup's clients (at most `ROUND_TRIES` times
/// in all: the last try is kept, with a note).
fn run_quiet_round(
    o: &Options,
    dir: &Path,
    nodes: u32,
    layout: Layout,
    round: u32,
    cpus: usize,
) -> Result<Vec<(Setup, Figures)>> {
    let order = setups::round_order(nodes, round);
    let mut tries = 0;
    loop {
        tries += 1;
        let results = run_round(o, dir, &order, nodes, layout, round, tries == 1)?;
        let (setup, share) = most_stolen(&results, cpus);
        if share * 100.0 <= o.max_steal {
            return Ok(results);
        }
        let what = format!(
            "the host stole {:.1} % of the CPUs' time during {}'s clients (--max-steal {})",
            share * 100.0,
            setup.name(),
            o.max_steal
        );
        if tries == ROUND_TRIES {
            println!("  r{round} kept after {tries} tries: {what}");
            return Ok(results);
        }
        println!("  r{round} run again: {what}");
    }
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
    setups::bring_up(setup, nodes, layout, o)?;
    if first {
        setups::print_offloads(setup, nodes)?;
    }
    let servers = nginx::start(dir, nodes, pin)?;
    clients::check_shares(nodes, pin)?;
    let procs = measured_procs(setup, nodes, &servers, pin)?;
    let tcp0 = clients::tcp_counters(nodes)?;
    let figures = clients::run_all(o, &procs, pin, setups::rps_steered(setup, o), dir)?;
    let tcp1 = clients::tcp_counters(nodes)?;
    let (retrans, rsts) = (tcp1.0 - tcp0.0, tcp1.1 - tcp0.1);
    if retrans > 0 || rsts > 0 {
        println!(
            "  note: {} node(s) retransmitted {retrans} TCP segments and sent {rsts} RSTs during the clients",
            setup.name()
        );
    }
    // Stops nginx (SIGTERM, SIGKILL after 10 s) before the next lab.
    drop(servers);
    Ok(figures)
}

/// The processes whose CPU is measured: the nginx servers, every node's
/// herd (all of them for the herd setup) and the ksoftirqd threads; in the
/// `equal` layout (`pin`), nginx and herd's lcores checked where they run.
fn measured_procs(setup: Setup, nodes: u32, servers: &[Guard], pin: bool) -> Result<Procs> {
    let herd: Vec<u32> = (1..=nodes)
        .filter_map(lab::herd_pid)
        .map(|p| p as u32)
        .collect();
    if setup == Setup::Herd && herd.len() != nodes as usize {
        bail!("a herd node is not running");
    }
    let nginx: Vec<u32> = servers.iter().map(|s| s.0.id()).collect();
    if pin {
        setups::check_pinning(&nginx, &herd)?;
    }
    Ok(Procs {
        nginx,
        herd,
        ksoftirqd: ksoftirqd_pids(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::Cpu;
    use figures::Run;

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
}
