//! The setups compared, each on a freshly built lab: **herd** (`herd run`
//! on every node, the lab application stopped for nginx), **nftables**
//! (the kernel farm nodes of `kernel_node`) and **plain** (one
//! kernel node with the VIP on `eth0`); their interfaces as the module doc
//! describes (offloads, GRO, RPS and threaded NAPI on CPU 1 in the `equal`
//! layout), the offloads each actually got, and the `equal` layout's
//! pinning, checked.

use super::kernel_node::{attach_xdp_pass, farm_mac, farm_neigh, kernel_node};
use super::options::{KernelNic, Layout, Options};
use crate::lab::{self, in_ns, in_ns_output, node_name, node_ns, CLIENT_NS};
use crate::procstat::{children_of, is_lcore_worker};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// A setup of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Setup {
    Herd,
    Nft,
    Plain,
}

impl Setup {
    /// The setup's name in the output.
    pub(super) fn name(self) -> &'static str {
        match self {
            Setup::Herd => "herd",
            Setup::Nft => "nftables",
            Setup::Plain => "plain",
        }
    }
}

/// The setups of round `round` in order: herd, nftables and (with 1 node)
/// plain, the next round in reverse order, so that machine noise hits all
/// of them.
pub(super) fn round_order(nodes: u32, round: u32) -> Vec<Setup> {
    let mut order = vec![Setup::Herd, Setup::Nft];
    if nodes == 1 {
        order.push(Setup::Plain);
    }
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// Whether `setup`'s receive work reaches CPU 1 by RPS in the `equal`
/// layout (the kernel nodes' on a veth, and a generic-mode af_xdp node's):
/// then CPU 1 must receive RPS interrupts during the keep-alive run. On the
/// emulated NIC its NAPI thread there does it all: no IPI to count.
pub(super) fn rps_steered(setup: Setup, o: &Options) -> bool {
    match setup {
        Setup::Herd => o.xdp_generic(),
        _ => o.kernel_nic == KernelNic::Veth || o.xdp_generic(),
    }
}

/// Builds the lab for `setup` and configures the nodes' kernels.
pub(super) fn bring_up(setup: Setup, nodes: u32, layout: Layout, o: &Options) -> Result<()> {
    lab::up(&lab_spec(setup, nodes, layout, o)?)?;
    for n in 1..=nodes {
        lab::stop_app(n)?;
    }
    if setup == Setup::Herd {
        return herd_nodes(nodes, layout, o);
    }
    kernel_nodes(setup, nodes, layout, o)
}

/// The lab of `setup`: herd running on every node for the herd setup, on
/// none for the kernel's.
fn lab_spec(setup: Setup, nodes: u32, layout: Layout, o: &Options) -> Result<lab::LabSpec> {
    Ok(lab::LabSpec {
        nodes,
        running: if setup == Setup::Herd { nodes } else { 0 },
        queues: 1,
        delivery: "vmac".into(),
        driver: o.driver.clone(),
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
    })
}

/// Herd's nodes' `eth0`. With af_xdp the XDP pre-filter hands the node's
/// own flows to its kernel on eth0, and the TAP's direct egress sends its
/// replies out of eth0: eth0 is set up as a NIC's kernel interface would
/// be. GRO on (a NIC's default; a veth's is off). On equal CPUs, the
/// receive work goes where the kernel nodes' does (CPU 1): the stack's by
/// RPS, like theirs, and the driver's (the veth's NAPI, which runs the XDP
/// program) by threaded NAPI pinned there, as a NIC's interrupt would be;
/// the kernel nodes' veth has no NAPI (no XDP, no GRO) and does its driver
/// work in the sender's context.
fn herd_nodes(nodes: u32, layout: Layout, o: &Options) -> Result<()> {
    if o.driver != "af_xdp" {
        return Ok(());
    }
    for n in 1..=nodes {
        if o.xdp_generic() {
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
    Ok(())
}

/// The kernel nodes of the nftables or plain setup (and with
/// `--kernel-xdp-pass` their XDP program); for nftables, the client
/// resolves the VIP to the farm's multicast MAC.
fn kernel_nodes(setup: Setup, nodes: u32, layout: Layout, o: &Options) -> Result<()> {
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
            attach_xdp_pass(&ns, o)?;
        }
        let emulated_nic = o.kernel_nic == KernelNic::Nic && !o.xdp_generic();
        if emulated_nic {
            // The emulated NIC (as herd's native-mode af_xdp nodes'
            // eth0): a veth with GRO has NAPI, which runs where its
            // thread is.
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

/// Prints the offloads `setup` got (node 1's `eth0`, its bridge-side peer,
/// herd's TAP).
pub(super) fn print_offloads(setup: Setup, nodes: u32) -> Result<()> {
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

/// The `equal` layout as it runs: nginx (master and workers) on CPU 0,
/// herd's lcores on CPU 1.
pub(super) fn check_pinning(nginx: &[u32], herd: &[u32]) -> Result<()> {
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
            let lcore = tid == pid.to_string() || is_lcore_worker(&comm);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_read_each_feature() {
        let k = "Features for eth0:\nrx-checksumming: on\ntx-checksumming: off\n\ttx-checksum-ipv4: off [fixed]\nscatter-gather: on\ntcp-segmentation-offload: on\n\ttx-tcp-segmentation: off [requested on]\ngeneric-segmentation-offload: on\ngeneric-receive-offload: off\n";
        assert_eq!(offloads(k), "tx-csum off tso off gso on gro off");
    }
}
