//! The flood's packets as trafgen configurations (`man trafgen`), trafgen
//! run in the client namespace, and what it reports it sent.
//!
//! Every frame is written byte by byte: runtime random fields with
//! `drnd()`, checksums with `csumip()`, `csumtcp()`, `csumudp()` and
//! `csumtcp6()`, which trafgen computes after the random bytes are drawn.
//! trafgen 0.6.8 fails an assertion on `icmp6(type=…)`, and has no helper
//! for the ICMPv6 checksum: the neighbor solicitations are fixed frames
//! (from 64 sources, round robin) whose checksum is computed here.

use crate::pcap::checksum;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A flood's kind of packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// TCP SYN to VIP:80 from random sources of 198.19.0.0/16.
    Syn,
    /// UDP to VIP:9000 (a served port) from random sources.
    Udp,
    /// TCP SYN to VIP:81, a port with no rule.
    Norule,
    /// IPv4 fragments to the VIP: first fragments (MF, TCP to port 80)
    /// and later ones (offset 24 bytes), never completing.
    Frag,
    /// ARP requests for the VIP, broadcast.
    Arp,
    /// IPv6 neighbor solicitations for the IPv6 VIP, to its
    /// solicited-node multicast address.
    Ndp,
    /// UDP junk to the heartbeat port of every node, random sources.
    HbJunk,
    /// UDP junk to the heartbeat port of every node, its source spoofed
    /// as a peer's heartbeat address and port.
    HbSpoof,
    /// TCP SYN to [VIP6]:80 from random sources of 2001:2:1::/64.
    Syn6,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Syn,
        Kind::Udp,
        Kind::Norule,
        Kind::Frag,
        Kind::Arp,
        Kind::Ndp,
        Kind::HbJunk,
        Kind::HbSpoof,
        Kind::Syn6,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Syn => "syn",
            Kind::Udp => "udp",
            Kind::Norule => "norule",
            Kind::Frag => "frag",
            Kind::Arp => "arp",
            Kind::Ndp => "ndp",
            Kind::HbJunk => "hb-junk",
            Kind::HbSpoof => "hb-spoof",
            Kind::Syn6 => "syn6",
        }
    }
}

/// Where the flood goes, as the setup under test is addressed.
#[derive(Clone, Debug)]
pub struct Targets {
    /// The generator's source MAC (the client bridge's).
    pub src_mac: [u8; 6],
    pub vip4: Ipv4Addr,
    pub vip6: Ipv6Addr,
    /// The destination MAC of IPv4 VIP frames (Herd's vMAC, the nftables
    /// farm's multicast MAC).
    pub vip4_mac: [u8; 6],
    pub vip6_mac: [u8; 6],
    /// Each node's address and its `eth0` MAC.
    pub nodes: Vec<(Ipv4Addr, [u8; 6])>,
    pub heartbeat_port: u16,
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("0x{b:02x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bytes(b: &[u8]) -> String {
    b.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An Ethernet header.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> String {
    format!(
        "  /* eth */ {}, {}, c16({ethertype:#06x}),\n",
        mac(dst),
        mac(src)
    )
}

/// A source of 198.19.0.0/16 drawn for each packet.
const RANDOM_SRC4: &str = "198, 19, drnd(2)";

/// An IPv4 header at offset 14: `payload` bytes follow it; `frag` is the
/// flags and fragment offset field; `src` bytes as trafgen text.
fn ipv4(proto: u8, payload: usize, frag: u16, src: &str, dst: Ipv4Addr) -> String {
    format!(
        "  /* ipv4 */ 0x45, 0x00, c16({}), drnd(2), c16({frag:#06x}), 64, {proto}, csumip(14, 33),\n  {src}, {},\n",
        20 + payload,
        bytes(&dst.octets())
    )
}

/// A TCP SYN at offset `l4` (34 after IPv4, 54 after IPv6), from a random
/// port, with the checksum trafgen computes (`csum`).
fn tcp_syn(dport: u16, csum: &str) -> String {
    format!(
        "  /* tcp */ drnd(2), c16({dport}), drnd(4), c32(0), 0x50, 0x02, c16(64240), {csum}, c16(0)\n"
    )
}

/// Random junk to a UDP port: `sport` as trafgen text.
fn udp_junk(sport: &str, dport: u16, junk: usize) -> String {
    format!(
        "  /* udp */ {sport}, c16({dport}), c16({}), csumudp(14, 34),\n  drnd({junk})\n",
        8 + junk
    )
}

/// The solicited-node multicast address of `a` (ff02::1:ffXX:XXXX).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A neighbor solicitation for `target` from `src` (with its link-layer
/// address option): the ICMPv6 message, its checksum filled in.
pub fn neighbor_solicitation(src: Ipv6Addr, target: Ipv6Addr, src_mac: [u8; 6]) -> Vec<u8> {
    let dst = solicited_node(target);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src_mac);
    let mut pseudo = Vec::with_capacity(40 + icmp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = checksum(&pseudo);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    icmp
}

/// Neighbor solicitations come from this many sources, round robin.
pub const NDP_SOURCES: u16 = 64;

/// The trafgen configuration of a flood of `kind` at `t`: one or more
/// packets, sent round robin.
pub fn config(kind: Kind, t: &Targets) -> Result<String> {
    let mut out = format!(
        "/* herd-bench flood: {} */\n",
        match kind {
            Kind::Syn => "TCP SYN to the VIP, port 80",
            Kind::Udp => "UDP to the VIP, port 9000",
            Kind::Norule => "TCP SYN to the VIP, port 81 (no rule)",
            Kind::Frag => "IPv4 fragments to the VIP",
            Kind::Arp => "ARP requests for the VIP",
            Kind::Ndp => "IPv6 neighbor solicitations for the VIP",
            Kind::HbJunk => "UDP junk to every node's heartbeat port",
            Kind::HbSpoof => "UDP junk to every node's heartbeat port from a peer's address",
            Kind::Syn6 => "TCP SYN to the IPv6 VIP, port 80",
        }
    );
    let packet = |out: &mut String, body: String| {
        let _ = write!(out, "{{\n{body}}}\n");
    };
    match kind {
        Kind::Syn | Kind::Norule => {
            let port = if kind == Kind::Syn { 80 } else { 81 };
            packet(
                &mut out,
                eth(t.vip4_mac, t.src_mac, 0x0800)
                    + &ipv4(6, 20, 0, RANDOM_SRC4, t.vip4)
                    + &tcp_syn(port, "csumtcp(14, 34)"),
            );
        }
        Kind::Udp => packet(
            &mut out,
            eth(t.vip4_mac, t.src_mac, 0x0800)
                + &ipv4(17, 8 + 32, 0, RANDOM_SRC4, t.vip4)
                + &udp_junk("drnd(2)", 9000, 32),
        ),
        Kind::Frag => {
            // A first fragment: MF, offset 0, a TCP header to port 80 and
            // 4 bytes (24: a multiple of 8); a later one: offset 3 (24
            // bytes), the last, 16 bytes. Random ids: none completes.
            packet(
                &mut out,
                eth(t.vip4_mac, t.src_mac, 0x0800)
                    + &ipv4(6, 24, 0x2000, RANDOM_SRC4, t.vip4)
                    + tcp_syn(80, "drnd(2)").trim_end()
                    + ", drnd(4)\n",
            );
            packet(
                &mut out,
                eth(t.vip4_mac, t.src_mac, 0x0800)
                    + &ipv4(6, 16, 0x0003, RANDOM_SRC4, t.vip4)
                    + "  drnd(16)\n",
            );
        }
        Kind::Arp => packet(
            &mut out,
            eth([0xff; 6], t.src_mac, 0x0806)
                + &format!(
                    "  /* arp request */ c16(1), c16(0x0800), 6, 4, c16(1),\n  {}, {RANDOM_SRC4},\n  0, 0, 0, 0, 0, 0, {}\n",
                    mac(t.src_mac),
                    bytes(&t.vip4.octets())
                ),
        ),
        Kind::Ndp => {
            let dst = solicited_node(t.vip6);
            let o = dst.octets();
            let dst_mac = [0x33, 0x33, o[12], o[13], o[14], o[15]];
            for i in 0..NDP_SOURCES {
                let src = Ipv6Addr::new(0x2001, 2, 1, 0, 0, 0, 1, 0x1000 + i);
                let icmp = neighbor_solicitation(src, t.vip6, t.src_mac);
                packet(
                    &mut out,
                    eth(dst_mac, t.src_mac, 0x86dd)
                        + &format!(
                            "  /* ipv6 */ 0x60, 0, 0, 0, c16({}), 58, 255,\n  {},\n  {},\n  /* icmpv6 NS */ {}\n",
                            icmp.len(),
                            bytes(&src.octets()),
                            bytes(&dst.octets()),
                            bytes(&icmp)
                        ),
                );
            }
        }
        Kind::HbJunk => {
            if t.nodes.is_empty() {
                bail!("hb-junk needs a node");
            }
            for (ip, m) in &t.nodes {
                packet(
                    &mut out,
                    eth(*m, t.src_mac, 0x0800)
                        + &ipv4(17, 8 + 64, 0, RANDOM_SRC4, *ip)
                        + &udp_junk("drnd(2)", t.heartbeat_port, 64),
                );
            }
        }
        Kind::HbSpoof => {
            if t.nodes.len() < 2 {
                bail!("hb-spoof needs two nodes (a node and a peer to pose as)");
            }
            for (ip, m) in &t.nodes {
                for (peer, _) in t.nodes.iter().filter(|(p, _)| p != ip) {
                    packet(
                        &mut out,
                        eth(*m, t.src_mac, 0x0800)
                            + &ipv4(17, 8 + 64, 0, &bytes(&peer.octets()), *ip)
                            + &udp_junk(&format!("c16({})", t.heartbeat_port), t.heartbeat_port, 64),
                    );
                }
            }
        }
        Kind::Syn6 => packet(
            &mut out,
            eth(t.vip6_mac, t.src_mac, 0x86dd)
                + &format!(
                    "  /* ipv6 */ 0x60, 0, 0, 0, c16(20), 6, 64,\n  0x20, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, drnd(8),\n  {},\n",
                    bytes(&t.vip6.octets())
                )
                + &tcp_syn(80, "csumtcp6(14, 54)"),
        ),
    }
    Ok(out)
}

/// A flood step's rate: packets per second, or as fast as trafgen goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Pps(u64),
    Max,
}

impl Rate {
    pub fn parse(s: &str) -> std::result::Result<Rate, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        match s.trim_end_matches("pps").parse::<u64>() {
            Ok(n) if (1..=100_000_000).contains(&n) => Ok(Rate::Pps(n)),
            _ => Err(format!(
                "{s:?}: a rate is packets per second (1 to 10^8) or `max`"
            )),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rate::Pps(n) => write!(f, "{n}"),
            Rate::Max => write!(f, "max"),
        }
    }
}

/// What trafgen says it sent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    /// Its own count of the time it sent for (the longest of its CPUs).
    pub seconds: f64,
}

impl Sent {
    /// The rate it reached (packets over its own time).
    pub fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.packets as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Parses trafgen's closing report:
///
/// ```text
///       577536 packets outgoing
///     31186944 bytes outgoing
///            1 sec, 974215 usec on CPU0 (577536 packets)
/// ```
pub fn parse_output(text: &str) -> Result<Sent> {
    let mut sent = Sent::default();
    let (mut packets, mut bytes, mut cpus) = (None, None, 0);
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_suffix(" packets outgoing") {
            packets = Some(n.trim().parse::<u64>()?);
        } else if let Some(n) = line.strip_suffix(" bytes outgoing") {
            bytes = Some(n.trim().parse::<u64>()?);
        } else if let Some((secs, rest)) = line.split_once(" sec, ") {
            let Some((usecs, _)) = rest.split_once(" usec on CPU") else {
                continue;
            };
            let (Ok(s), Ok(u)) = (secs.trim().parse::<u64>(), usecs.trim().parse::<u64>()) else {
                continue;
            };
            sent.seconds = sent.seconds.max(s as f64 + u as f64 / 1e6);
            cpus += 1;
        }
    }
    sent.packets = packets.context("trafgen printed no `packets outgoing`")?;
    sent.bytes = bytes.context("trafgen printed no `bytes outgoing`")?;
    if cpus == 0 {
        bail!("trafgen printed no time per CPU");
    }
    Ok(sent)
}

/// The most packets one step may ask for (`max` runs until stopped).
const MAX_PACKETS: u64 = 1_000_000_000;

/// trafgen's command line (after `ip netns exec NS`): one process (`-P
/// 1`), the system's socket memory and IRQ affinity left alone
/// (`--no-sock-mem`, `--notouch-irq`: trafgen 0.6.8 takes no `-A`); a
/// rate sends in trafgen's slow mode (`-b`, sendto per packet), `max`
/// through its TX_RING.
pub fn args(cfg: &Path, dev: &str, rate: Rate, seconds: u64) -> Vec<String> {
    let mut a: Vec<String> = ["trafgen", "-i"].iter().map(|s| s.to_string()).collect();
    a.push(cfg.display().to_string());
    a.extend(["-o", dev, "-P", "1", "--no-sock-mem", "--notouch-irq"].map(String::from));
    match rate {
        Rate::Pps(r) => {
            a.extend([
                "-b".into(),
                format!("{r}pps"),
                "-n".into(),
                (r * seconds).max(1).to_string(),
            ]);
        }
        Rate::Max => a.extend(["-n".into(), MAX_PACKETS.to_string()]),
    }
    a
}

/// Runs trafgen in namespace `ns` for about `seconds` (SIGINT then, if it
/// has not finished; SIGKILL 3 s later); returns what it sent and the
/// wall-clock seconds it ran.
pub fn run(ns: &str, args: &[String], seconds: u64) -> Result<(Sent, f64)> {
    let start = Instant::now();
    // trafgen forks its sending process(es) and waits for them: in a
    // process group of its own, a signal reaches them all.
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting trafgen")?;
    let output = crate::child::Output::read(&mut child)?;
    let stop_at = start + Duration::from_secs(seconds) + Duration::from_millis(300);
    let kill_at = stop_at + Duration::from_secs(3);
    let mut interrupted = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        let now = Instant::now();
        if now >= kill_at {
            signal_group(child.id(), "-KILL");
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if now >= stop_at && !interrupted {
            // `ip netns exec` execs trafgen: the child leads the group.
            signal_group(child.id(), "-INT");
            interrupted = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed().as_secs_f64();
    let (out, err) = output.join();
    let text = out + &err;
    if status.is_none() {
        bail!(
            "trafgen did not stop on SIGINT; killed. It said: {}",
            text.trim()
        );
    }
    let sent = parse_output(&text).with_context(|| format!("trafgen said: {}", text.trim()))?;
    Ok((sent, wall))
}

/// Sends `sig` ("-INT", "-KILL") to the process group `pgid`.
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            src_mac: [0x02, 0, 0, 0, 0, 0x99],
            vip4: Ipv4Addr::new(198, 18, 0, 100),
            vip6: "2001:2::100".parse().unwrap(),
            vip4_mac: [0x02, 0x48, 198, 18, 0, 100],
            vip6_mac: [0x02, 0x86, 0, 0, 1, 0],
            nodes: (1..=3)
                .map(|n| (Ipv4Addr::new(198, 18, 0, 10 + n), [2, 0, 0, 0, 0, n]))
                .collect(),
            heartbeat_port: 7100,
        }
    }

    /// The packets of a configuration, as their text.
    fn packets(cfg: &str) -> Vec<&str> {
        cfg.split('{').skip(1).collect()
    }

    /// The bytes a packet's text stands for, counting each function by
    /// the bytes it writes.
    fn length(packet: &str) -> usize {
        let body: String = packet
            .lines()
            .map(|l| match l.find("/*") {
                Some(i) => {
                    let end = l.find("*/").map_or(l.len(), |j| j + 2);
                    format!("{}{}", &l[..i], &l[end..])
                }
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let body = body.split('}').next().unwrap();
        // Split on commas outside parentheses.
        let (mut depth, mut items, mut cur) = (0, Vec::new(), String::new());
        for c in body.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            cur.push(c);
        }
        items.push(cur);
        items
            .iter()
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .map(|i| {
                if let Some(n) = i.strip_prefix("drnd(") {
                    n.trim_end_matches(')').parse().unwrap()
                } else if i.starts_with("c16(") || i.starts_with("csum") {
                    2
                } else if i.starts_with("c32(") {
                    4
                } else {
                    1
                }
            })
            .sum()
    }

    #[test]
    fn syn_is_a_tcp_syn_to_the_vip_from_random_sources() {
        let cfg = config(Kind::Syn, &targets()).unwrap();
        let p = packets(&cfg);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("0x02, 0x48, 0xc6, 0x12, 0x00, 0x64, 0x02, 0x00"));
        assert!(p[0].contains("c16(0x0800)"));
        assert!(p[0].contains("c16(40), drnd(2), c16(0x0000), 64, 6, csumip(14, 33)"));
        assert!(p[0].contains("198, 19, drnd(2), 198, 18, 0, 100"));
        assert!(p[0].contains("c16(80)"));
        assert!(p[0].contains("0x50, 0x02"));
        assert!(p[0].contains("csumtcp(14, 34)"));
        assert_eq!(length(p[0]), 14 + 20 + 20);
        let n = config(Kind::Norule, &targets()).unwrap();
        assert!(n.contains("c16(81)") && !n.contains("c16(80)"));
    }

    #[test]
    fn udp_goes_to_the_served_port() {
        let cfg = config(Kind::Udp, &targets()).unwrap();
        let p = packets(&cfg);
        assert!(p[0].contains(", 64, 17, csumip(14, 33)"));
        assert!(p[0].contains("c16(9000), c16(40), csumudp(14, 34)"));
        assert!(p[0].contains("c16(60)"));
        assert_eq!(length(p[0]), 14 + 20 + 8 + 32);
    }

    #[test]
    fn fragments_are_first_and_later_ones() {
        let cfg = config(Kind::Frag, &targets()).unwrap();
        let p = packets(&cfg);
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("c16(44), drnd(2), c16(0x2000)"));
        assert_eq!(length(p[0]), 14 + 44);
        assert!(p[1].contains("c16(36), drnd(2), c16(0x0003)"));
        assert_eq!(length(p[1]), 14 + 36);
    }

    #[test]
    fn arp_asks_for_the_vip_by_broadcast() {
        let cfg = config(Kind::Arp, &targets()).unwrap();
        let p = packets(&cfg);
        assert!(p[0].contains("0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02"));
        assert!(p[0].contains("c16(0x0806)"));
        assert!(p[0].contains("c16(1), c16(0x0800), 6, 4, c16(1)"));
        assert!(
            p[0].trim_end().ends_with("198, 18, 0, 100\n}") || p[0].contains("198, 18, 0, 100\n")
        );
        assert_eq!(length(p[0]), 14 + 28);
    }

    #[test]
    fn ndp_solicits_the_vip_with_good_checksums() {
        let t = targets();
        assert_eq!(
            solicited_node(t.vip6),
            "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap()
        );
        let cfg = config(Kind::Ndp, &t).unwrap();
        let p = packets(&cfg);
        assert_eq!(p.len(), NDP_SOURCES as usize);
        assert!(p[0].contains("0x33, 0x33, 0xff, 0x00, 0x01, 0x00"));
        assert!(p[0].contains("c16(32), 58, 255"));
        assert_eq!(length(p[0]), 14 + 40 + 32);
        // The checksum verifies: the sum over the pseudo-header and the
        // message is all ones.
        let src: Ipv6Addr = "2001:2:1::1:1005".parse().unwrap();
        let icmp = neighbor_solicitation(src, t.vip6, t.src_mac);
        let mut pseudo = src.octets().to_vec();
        pseudo.extend_from_slice(&solicited_node(t.vip6).octets());
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&icmp);
        assert_eq!(checksum(&pseudo), 0);
        assert_eq!(icmp[0], 135);
        assert_eq!(&icmp[8..24], &t.vip6.octets());
    }

    #[test]
    fn heartbeat_floods_reach_every_node() {
        let t = targets();
        let cfg = config(Kind::HbJunk, &t).unwrap();
        let p = packets(&cfg);
        assert_eq!(p.len(), 3);
        for (i, pkt) in p.iter().enumerate() {
            assert!(pkt.contains(&format!(
                "0x02, 0x00, 0x00, 0x00, 0x00, 0x{:02x}, 0x02",
                i + 1
            )));
            assert!(pkt.contains(&format!("198, 19, drnd(2), 198, 18, 0, {}", 11 + i)));
            assert!(pkt.contains("drnd(2), c16(7100), c16(72), csumudp(14, 34)"));
            assert_eq!(length(pkt), 14 + 20 + 8 + 64);
        }
        let cfg = config(Kind::HbSpoof, &t).unwrap();
        let p = packets(&cfg);
        // Every node, from each of its peers.
        assert_eq!(p.len(), 6);
        assert!(p[0].contains("198, 18, 0, 12, 198, 18, 0, 11"));
        assert!(p[1].contains("198, 18, 0, 13, 198, 18, 0, 11"));
        assert!(p[2].contains("198, 18, 0, 11, 198, 18, 0, 12"));
        assert!(p
            .iter()
            .all(|p| p.contains("c16(7100), c16(7100), c16(72)")));
        let mut one = t.clone();
        one.nodes.truncate(1);
        assert!(config(Kind::HbSpoof, &one).is_err());
    }

    #[test]
    fn syn6_comes_from_random_sources_of_the_client_prefix() {
        let cfg = config(Kind::Syn6, &targets()).unwrap();
        let p = packets(&cfg);
        assert!(p[0].contains("0x02, 0x86, 0x00, 0x00, 0x01, 0x00"));
        assert!(p[0].contains("c16(0x86dd)"));
        assert!(p[0].contains("0x20, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, drnd(8)"));
        assert!(p[0].contains("32, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0"));
        assert!(p[0].contains("csumtcp6(14, 54)"));
        assert_eq!(length(p[0]), 14 + 40 + 20);
    }

    #[test]
    fn trafgen_report_is_parsed() {
        let text = "\n       577536 packets outgoing\n     31186944 bytes outgoing\n           1 sec, 974215 usec on CPU0 (577536 packets)\n";
        let s = parse_output(text).unwrap();
        assert_eq!(s.packets, 577536);
        assert_eq!(s.bytes, 31186944);
        assert!((s.seconds - 1.974215).abs() < 1e-9);
        assert!((s.pps() - 577536.0 / 1.974215).abs() < 1e-6);
        assert!(parse_output("trafgen: assertion failed").is_err());
        let two = "10 packets outgoing\n540 bytes outgoing\n 0 sec, 5 usec on CPU0 (6 packets)\n 0 sec, 9 usec on CPU1 (4 packets)\n";
        assert!((parse_output(two).unwrap().seconds - 9e-6).abs() < 1e-12);
    }

    #[test]
    fn rates_and_arguments() {
        assert_eq!(Rate::parse("max"), Ok(Rate::Max));
        assert_eq!(Rate::parse("40000"), Ok(Rate::Pps(40000)));
        assert_eq!(Rate::parse("500pps"), Ok(Rate::Pps(500)));
        assert!(Rate::parse("0").is_err());
        assert!(Rate::parse("fast").is_err());
        let a = args(Path::new("/x.cfg"), "br0", Rate::Pps(10000), 5);
        assert_eq!(
            a.join(" "),
            "trafgen -i /x.cfg -o br0 -P 1 --no-sock-mem --notouch-irq -b 10000pps -n 50000"
        );
        let a = args(Path::new("/x.cfg"), "br0", Rate::Max, 5);
        assert!(a.join(" ").ends_with("--notouch-irq -n 1000000000"));
    }

    /// Every kind's configuration is one trafgen accepts: one packet of
    /// each, sent on the loopback of a namespace of its own (as root,
    /// with trafgen installed; CI has both).
    #[test]
    fn trafgen_accepts_every_kinds_configuration() {
        let ns = format!("herd-trafgen-test-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "a namespace (run as root)");
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        let mut failures = Vec::new();
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
            .status();
        for kind in Kind::ALL {
            let cfg = dir.join(format!("{}.cfg", kind.name()));
            std::fs::write(&cfg, config(kind, &targets()).unwrap()).unwrap();
            let out = Command::new("timeout")
                .args([
                    "20", "ip", "netns", "exec", &ns, "trafgen", "-o", "lo", "-n", "1",
                ])
                .args(["-P", "1", "--no-sock-mem", "--notouch-irq", "-i"])
                .arg(&cfg)
                .output()
                .expect("trafgen runs (Debian's netsniff-ng)");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            if parse_output(&text).is_err() {
                failures.push(format!("{}: {text}", kind.name()));
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
