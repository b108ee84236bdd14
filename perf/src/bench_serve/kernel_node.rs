//! The kernel farm node, Herd's reference (also `herd-bench flood`'s): the
//! VIP on `lo`, resolved by the client to a multicast MAC that the bridge
//! floods and every node joins, and a `netdev ingress` chain on `eth0` that
//! marks VIP frames as the host's and drops those whose `jhash ip saddr .
//! tcp sport mod N` is not the node's index (or, for the plain node, just
//! the VIP on `eth0`); and the `--kernel-xdp-pass` program, built and
//! attached to a kernel node's `eth0`.

use super::options::Options;
use super::state::STATE_DIR;
use crate::lab::{self, in_ns, node_ip4, node_name, node_ns, CLIENT_NS, VIP4};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};

/// The seed of the nftables farm's jhash (any constant shared by the nodes).
const JHASH_SEED: &str = "0x48657264";

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
    join_farm(&ns, nodes, n - 1, counter)
}

/// The kernel node in `ns` as the nftables farm's node `k` (0-based) of
/// `nodes`: the VIP on `lo`, the multicast MAC joined, the farm's rule
/// loaded (`counter` as in [`kernel_node`]).
fn join_farm(ns: &str, nodes: u32, k: u32, counter: &str) -> Result<()> {
    in_ns(
        ns,
        &["ip", "addr", "add", &format!("{VIP4}/32"), "dev", "lo"],
    )?;
    // The VIP on lo must never be answered for (nor used as the
    // source of an ARP request) on eth0.
    in_ns(
        ns,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ],
    )?;
    in_ns(ns, &["ip", "maddr", "add", &farm_mac(), "dev", "eth0"])?;
    nft_load(ns, &nft_ruleset(nodes, k, counter))
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

/// The `--kernel-xdp-pass` program's object, in the state dir.
const XDP_PASS_OBJECT: &str = "xdp_pass.o";

/// Compiles the `--kernel-xdp-pass` program into `dir`. It includes no
/// header (2 is `XDP_PASS`), so clang needs no system include path.
pub(super) fn build_xdp_pass(dir: &Path) -> Result<()> {
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

/// Attaches the `--kernel-xdp-pass` program (built in the state dir) to
/// `eth0` of `ns`, in the mode Herd's pre-filter runs in.
pub(super) fn attach_xdp_pass(ns: &str, o: &Options) -> Result<()> {
    let object = Path::new(STATE_DIR).join(XDP_PASS_OBJECT);
    let mode = o.kernel_xdp_mode().1;
    in_ns(
        ns,
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
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
