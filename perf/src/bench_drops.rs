//! `herd-bench drops`: what a packet of another node's bucket costs the
//! node that drops it, Herd's fastpath against an nftables `jhash` farm
//! node (the kernel's way to build such a farm since CLUSTERIP), on the
//! same traffic and the same CPU, alternately.
//!
//! - **Herd**: `herd run` reads a pcap of TCP SYNs to the VIP forever
//!   (`net_pcap`, `infinite_rx=1`) and owns one bucket of 4096, so it
//!   drops all but 1/4096 of them. Its lcore never idles, so the cost of a
//!   packet is the inverse of its rate. That includes the driver's copy of
//!   each frame into an mbuf: Herd's side is, if anything, overstated.
//! - **Kernel**: the same frames are sent by `dpdk-testpmd` (io forward,
//!   `net_af_packet`) into a veth whose peer, in namespace
//!   `herd-bench-kernel`, carries the VIP, the vMAC and a farm rule owning
//!   no bucket: `ip daddr VIP tcp dport 80 jhash ip saddr . tcp sport mod
//!   4096 != @mine drop`, once at the `netdev ingress` hook (the earliest
//!   the kernel offers) and once at `ip prerouting` (where farm rules
//!   usually sit). The receive path runs in softirq on the sender's CPU;
//!   its cost is the softirq CPU time over the packets the rule counted.
//!   The skb's allocation and copy happen before that (in the sender's
//!   system time), so the kernel's side is, if anything, understated.
//! - **XDP**: Herd's XDP pre-filter (af_xdp ports) attached to a veth in
//!   this namespace, same sender, owning 1 bucket of 4096 like Herd's run,
//!   once in each mode (`port.xdp_mode`): the other buckets' frames are
//!   dropped in the veth's driver (native XDP, in the sender's softirq) or
//!   in the kernel's receive path (generic XDP, where the nftables ingress
//!   hook runs, just before it); its cost is the softirq CPU time over the
//!   frames its counter dropped. On a veth the skb already exists (the
//!   sender's packet socket made it) and the veth's NAPI queue (native) or
//!   the backlog queue (generic) runs before the program: that is most of
//!   the figure. On a NIC's driver XDP runs before any skb; this bench has
//!   no such NIC.

use crate::bench_fastpath::{herd_rate, Guard, VIP};
use crate::lab::sh;
use crate::median;
use crate::procstat::{clock_ticks_per_second, MachineTicks};
use anyhow::{bail, Context, Result};
use config::XdpMode;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Rounds (each runs Herd and both kernel hooks).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// The CPU everything runs on.
    #[arg(long, default_value_t = 1)]
    pub cpu: u32,
    /// Distinct flows in the traffic.
    #[arg(long, default_value_t = 8192)]
    pub flows: u32,
    /// Where the pcap and logs go.
    #[arg(long, default_value = "perf/out")]
    pub out: PathBuf,
}

const NS: &str = "herd-bench-kernel";
const VETH_OUT: &str = "hbk-send";
const VETH_IN: &str = "hbk-farm";
/// The XDP layer's farm end (this namespace).
const VETH_XDP: &str = "hbk-xdp";

/// Where the kernel farm's rule sits.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Ingress,
    Prerouting,
}

impl Hook {
    fn ruleset(self) -> String {
        let (family, chain) = match self {
            Hook::Ingress => (
                "netdev",
                format!("type filter hook ingress device {VETH_IN} priority 0; policy accept;"),
            ),
            Hook::Prerouting => (
                "ip",
                "type filter hook prerouting priority raw; policy accept;".to_string(),
            ),
        };
        // The node owns no bucket: every VIP packet is hashed, looked up
        // in the (empty) set of its buckets and dropped.
        format!(
            "table {family} farm {{
  counter dropped {{}}
  set mine {{ typeof jhash ip saddr mod 4096; }}
  chain receive {{
    {chain}
    ip daddr {VIP} tcp dport 80 jhash ip saddr . tcp sport mod 4096 seed 0x48657264 != @mine counter name \"dropped\" drop
  }}
}}
"
        )
    }

    fn family(self) -> &'static str {
        match self {
            Hook::Ingress => "netdev",
            Hook::Prerouting => "ip",
        }
    }
}

pub fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.out)?;
    let out = std::fs::canonicalize(&o.out)?;
    let pcap = out.join("flows.pcap");
    let vmac = config::vip_mac(VIP.into(), config::Delivery::Vmac);
    let frames = crate::pcap::syn_flows(o.flows, VIP.into(), vmac, 80);
    crate::pcap::write(&pcap, &frames)?;
    println!(
        "traffic: {} TCP SYN flows to {VIP}:80, 64-byte frames; each node owns no (Herd: 1 of 4096) bucket",
        o.flows
    );
    // Per round: Herd's (a kernel-bypass port), XDP's (af_xdp), the
    // ingress guard's (af_packet), ingress's and prerouting's ns per drop,
    // and the ratios to Herd's (taken within the round, under the same
    // machine noise).
    let mut figures: [Vec<f64>; 11] = Default::default();
    for round in 1..=o.rounds {
        let h = 1e3 / herd_rate(o.cpu, o.seconds, &out, &pcap, "0", VIP.into())?;
        let x = xdp_ns(o, &out, &pcap, vmac, XdpMode::Native)?;
        let g = xdp_ns(o, &out, &pcap, vmac, XdpMode::Generic)?;
        let a = guard_ns(o, &out, &pcap, vmac)?;
        let i = kernel_ns(o, &out, &pcap, vmac, Hook::Ingress)?;
        let p = kernel_ns(o, &out, &pcap, vmac, Hook::Prerouting)?;
        println!(
            "round {round}: herd {h:.1} ns/drop   xdp pre-filter {x:.1} ns/drop ({:.2}x), generic {g:.1} ns/drop ({:.2}x)   af_packet guard {a:.1} ns/drop ({:.2}x)   nft ingress {i:.0} ns/drop ({:.1}x)   nft prerouting {p:.0} ns/drop ({:.1}x)",
            x / h,
            g / h,
            a / h,
            i / h,
            p / h
        );
        for (f, v) in figures
            .iter_mut()
            .zip([h, x, g, a, i, p, x / h, g / h, a / h, i / h, p / h])
        {
            f.push(v);
        }
    }
    let [h, x, g, a, i, p, rx, rg, ra, ri, rp] = figures.map(|mut f| median(&mut f));
    println!(
        "median ns per dropped packet, by port driver: pci/vdev (the fastpath's lcore, kernel bypass) {h:.1}; af_xdp (its XDP pre-filter) {x:.1} native ({rx:.2}x), {g:.1} generic ({rg:.2}x); af_packet (the ingress guard's socket filter) {a:.1} ({ra:.2}x); nftables jhash farm {i:.0} (ingress, {ri:.1}x) and {p:.0} (prerouting, {rp:.1}x)"
    );
    println!(
        "RESULT drops herd_ns={h:.1} xdp_ns={x:.1} xdp_generic_ns={g:.1} guard_ns={a:.1} nft_ingress_ns={i:.0} nft_prerouting_ns={p:.0} xdp_ratio={rx:.2} xdp_generic_ratio={rg:.2} guard_ratio={ra:.2} ingress_ratio={ri:.1} prerouting_ratio={rp:.1}"
    );
    Ok(())
}

/// The kernel farm node: a namespace behind a veth; removed on drop.
struct KernelFarm;

impl KernelFarm {
    fn up(vmac: [u8; 6], hook: Hook) -> Result<KernelFarm> {
        Self::remove();
        let farm = KernelFarm;
        let mac = vmac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let vip = format!("{VIP}/32");
        sh(&["ip", "netns", "add", NS])?;
        sh(&[
            "ip", "link", "add", VETH_OUT, "type", "veth", "peer", "name", VETH_IN, "netns", NS,
        ])?;
        sh(&["ip", "link", "set", VETH_OUT, "up"])?;
        // The farm's interface answers to the vMAC, as a node of a kernel
        // farm does (promiscuous NIC and pkttype rewritten, or the MAC
        // set): the frames reach IP as the node's own.
        for args in [
            vec!["link", "set", VETH_IN, "address", &mac],
            vec!["link", "set", VETH_IN, "up"],
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "198.18.0.11/24", "dev", VETH_IN],
            vec!["addr", "add", &vip, "dev", "lo"],
        ] {
            let mut full = vec!["ip", "-n", NS];
            full.extend(args);
            sh(&full)?;
        }
        let mut nft = Command::new("ip")
            .args(["netns", "exec", NS, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft (Debian package nftables)")?;
        {
            use std::io::Write;
            let mut stdin = nft.stdin.take().context("nft stdin")?;
            stdin.write_all(hook.ruleset().as_bytes())?;
        }
        let result = nft.wait_with_output()?;
        if !result.status.success() {
            bail!(
                "nft refused the farm ruleset: {}",
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
        Ok(farm)
    }

    fn dropped(hook: Hook) -> Result<u64> {
        let out = Command::new("ip")
            .args(["netns", "exec", NS, "nft", "-j", "list", "counter"])
            .args([hook.family(), "farm", "dropped"])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("nft counter: {}", String::from_utf8_lossy(&out.stderr)))?;
        v["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .context("no packet count in nft's counter")
    }

    fn remove() {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", NS])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for KernelFarm {
    fn drop(&mut self) {
        Self::remove();
    }
}

fn kernel_ns(o: &Options, out: &Path, pcap: &Path, vmac: [u8; 6], hook: Hook) -> Result<f64> {
    let _farm = KernelFarm::up(vmac, hook)?;
    drop_cost(o, out, pcap, || KernelFarm::dropped(hook))
}

/// The sender: `dpdk-testpmd` replaying the pcap into `VETH_OUT` on the
/// measured CPU.
fn sender(o: &Options, out: &Path, pcap: &Path) -> Result<Guard> {
    let cpu = o.cpu;
    let log = std::fs::File::create(out.join("bench-drops-sender.log"))?;
    let child = Command::new("dpdk-testpmd")
        .args([
            format!("--lcores=0@({cpu}),1@({cpu})"),
            "--no-huge".into(),
            "-m1024".into(),
            "--file-prefix=herd-bench-kernel".into(),
            "--no-pci".into(),
            "--no-telemetry".into(),
            format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display()),
            format!("--vdev=net_af_packet0,iface={VETH_OUT}"),
            "--".into(),
            "--forward-mode=io".into(),
            "--nb-cores=1".into(),
            "--total-num-mbufs=32767".into(),
            "--stats-period=10".into(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dpdk-testpmd (Debian package dpdk-dev)")?;
    Ok(Guard(child))
}

/// Softirq ns per packet `dropped` counts while the sender runs: a steady
/// window of `--seconds` after the first drop.
fn drop_cost(
    o: &Options,
    out: &Path,
    pcap: &Path,
    dropped: impl Fn() -> Result<u64>,
) -> Result<f64> {
    let mut sender = sender(o, out, pcap)?;
    // Wait for the traffic to flow, then measure a steady window.
    let deadline = Instant::now() + Duration::from_secs(30);
    while dropped()? == 0 {
        if let Some(code) = sender.0.try_wait()? {
            bail!("the sender (testpmd) exited ({code}); see bench-drops-sender.log");
        }
        if Instant::now() > deadline {
            bail!("no packet reached the dropping side within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (p0, s0) = (dropped()?, MachineTicks::now()?.softirq);
    std::thread::sleep(Duration::from_secs(o.seconds));
    let (p1, s1) = (dropped()?, MachineTicks::now()?.softirq);
    drop(sender);
    if p1 <= p0 || s1 <= s0 {
        bail!("{} packets dropped in {} softirq ticks", p1 - p0, s1 - s0);
    }
    let seconds = (s1 - s0) as f64 / clock_ticks_per_second()?;
    Ok(seconds * 1e9 / (p1 - p0) as f64)
}

/// A veth pair in this namespace for the XDP layer: the sender's end and
/// the farm's, which carries the pre-filter; removed on drop.
struct XdpVeth;

impl XdpVeth {
    fn up() -> Result<XdpVeth> {
        Self::remove();
        sh(&[
            "ip", "link", "add", VETH_OUT, "type", "veth", "peer", "name", VETH_XDP,
        ])?;
        for dev in [VETH_OUT, VETH_XDP] {
            sh(&["ip", "link", "set", dev, "up"])?;
        }
        Ok(XdpVeth)
    }

    fn remove() {
        let _ = Command::new("ip")
            .args(["link", "del", VETH_OUT])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for XdpVeth {
    fn drop(&mut self) {
        Self::remove();
    }
}

/// The XDP pre-filter (`port.xdp_prefilter`, af_xdp) on the veth in `mode`
/// (native: in the veth's driver; generic: in the kernel's receive path;
/// both in the sender's softirq like the kernel farm's rule), owning 1
/// bucket of 4096 as Herd's run does: the frames of the other buckets are
/// dropped before the kernel's stack.
fn xdp_ns(o: &Options, out: &Path, pcap: &Path, vmac: [u8; 6], mode: XdpMode) -> Result<f64> {
    use fastpath::prefilter::{OBJECT, PROGRAM};
    let _veth = XdpVeth::up()?;
    let (object, maps) = one_bucket_of_4096(OBJECT, vmac).context("the XDP pre-filter")?;
    let _attached = object
        .attach_xdp(
            PROGRAM,
            fastpath::dpdk::tap::interface_index(VETH_XDP),
            mode,
        )
        .context("attaching the XDP pre-filter")?;
    drop_cost(o, out, pcap, || Ok(maps.counts()?.dropped))
}

/// `elf` (the pre-filter or the ingress guard) loaded with the bench's
/// VIP and rule, owning 1 bucket of 4096 as Herd's run does.
fn one_bucket_of_4096(
    elf: &[u8],
    vmac: [u8; 6],
) -> Result<(fastpath::dpdk::bpf::Object, fastpath::prefilter::Maps)> {
    use fastpath::decision::{Affinity, Classifier, RuleTable, Transport, Vip};
    use fastpath::dpdk::bpf::Object;
    use fastpath::prefilter::Maps;
    let object = Object::load(elf).context("loading the program")?;
    let maps = Maps::of(&object)?;
    let mut rules = RuleTable::new();
    rules.insert(Transport::Tcp, 80, Affinity::ClientIpPort);
    maps.configure(&Classifier {
        own_mac: [0x02, 0, 0, 0, 0, 0x11],
        vips4: vec![Vip {
            address: VIP,
            mac: vmac,
        }],
        vips6: Vec::new(),
        rules,
    })?;
    maps.publish(&fastpath::table::BucketTable::new(1, 4096, [0], false))?;
    Ok((object, maps))
}

/// An `af_packet` port's ingress guard: its socket filter on a packet
/// socket that receives every frame of this namespace (as the PMD's
/// socket on its interface), owning 1 bucket of 4096: the other buckets'
/// frames are dropped before any copy into the socket. It runs where an
/// af_packet node's does, in the receive path's packet taps (the sender's
/// softirq); after the taps the kernel's stack drops the frames, which
/// are for another host (the vMAC).
fn guard_ns(o: &Options, out: &Path, pcap: &Path, vmac: [u8; 6]) -> Result<f64> {
    use fastpath::prefilter::{GUARD, SOCKET_FILTER};
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsFd;
    let _veth = XdpVeth::up()?;
    let (object, maps) = one_bucket_of_4096(GUARD, vmac).context("the ingress guard")?;
    // ETH_P_ALL, in network order, as packet sockets take it.
    let all = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(all)).context("a packet socket")?;
    object
        .attach_socket_filter_on(SOCKET_FILTER, socket.as_fd())
        .context("attaching the socket filter")?;
    drop_cost(o, out, pcap, || Ok(maps.counts()?.dropped))
}
