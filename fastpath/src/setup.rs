//! The kernel side of a node: what it takes for the kernel to serve the VIP
//! behind the fastpath, and to stay out of the fastpath's way.
//!
//! - The NIC's own kernel interface (af_packet / af_xdp) is silenced: no
//!   ARP, no IPv6, and with af_packet an nftables ingress drop so the kernel does
//!   not answer the frames the fastpath already handles (AF_PACKET sockets
//!   see frames before the ingress hook, so the fastpath still gets them).
//! - The TAP gets the node's addresses and routes and comes up.
//! - The VIPs go on `lo` with `arp_ignore`/`arp_announce`, as in direct
//!   server return: the kernel accepts VIP traffic but never answers ARP
//!   for it.
//!
//! This shells out to iproute2's `ip` and `nft` (Herd's documented runtime
//! dependency) rather than speaking rtnetlink: these are a handful of
//! one-off calls at start and stop, never on the packet path. Everything
//! done is recorded and undone by [`KernelSetup::undo`].

use std::net::IpAddr;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("kernel setup: `{command}` failed: {reason}")]
pub struct SetupError {
    pub command: String,
    pub reason: String,
}

fn lo_address(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// What was done, to be undone in reverse order.
#[derive(Debug, Default)]
pub struct KernelSetup {
    undo: Vec<Vec<String>>,
}

fn run(args: &[&str]) -> Result<(), SetupError> {
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| SetupError {
            command: command.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SetupError {
            command,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn sysctl(path: &str, value: &str) -> Result<(), SetupError> {
    std::fs::write(format!("/proc/sys/{path}"), value).map_err(|e| SetupError {
        command: format!("sysctl {path}={value}"),
        reason: e.to_string(),
    })
}

/// Detaches an XDP program named `program` that a crashed run left on
/// `nic` (a program attached through netlink outlives its process; the
/// PMD refuses to attach over it). Returns whether one was there.
pub fn detach_stale_xdp(nic: &str, program: &str) -> Result<bool, SetupError> {
    let out = Command::new("ip")
        .args(["link", "show", "dev", nic])
        .output()
        .map_err(|e| SetupError {
            command: format!("ip link show dev {nic}"),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = text
        .split("prog/xdp")
        .skip(1)
        .any(|rest| rest.split_whitespace().skip_while(|w| *w != "name").nth(1) == Some(program));
    if ours {
        // `xdp off` detaches the driver's (native) mode only.
        let mode = if text.contains(" xdpgeneric") {
            "xdpgeneric"
        } else {
            "xdp"
        };
        run(&["ip", "link", "set", "dev", nic, mode, "off"])?;
    }
    Ok(ours)
}

/// The kind of interface `nic` is (`ip -d link`'s `info_kind`: "veth",
/// "macvlan", …), or None for a physical NIC's (which has none).
pub fn interface_kind(nic: &str) -> Result<Option<String>, SetupError> {
    let failed = |reason: String| SetupError {
        command: format!("ip -d -j link show dev {nic}"),
        reason,
    };
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", nic])
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| failed(e.to_string()))?;
    Ok(links[0]["linkinfo"]["info_kind"]
        .as_str()
        .map(str::to_string))
}

impl KernelSetup {
    fn step(&mut self, doit: &[&str], undo: &[&str]) -> Result<(), SetupError> {
        run(doit)?;
        if !undo.is_empty() {
            self.undo.push(undo.iter().map(|s| s.to_string()).collect());
        }
        Ok(())
    }

    /// An nftables netdev table `<prefix>_<nic>` (replacing a stale one,
    /// removed by `undo`) with an ingress chain on `nic` of `policy`;
    /// returns the table's name.
    fn ingress_chain(
        &mut self,
        prefix: &str,
        nic: &str,
        policy: &str,
    ) -> Result<String, SetupError> {
        let table = format!(
            "{prefix}_{}",
            nic.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let _ = run(&["nft", "delete", "table", "netdev", &table]);
        self.step(
            &["nft", "add", "table", "netdev", &table],
            &["nft", "delete", "table", "netdev", &table],
        )?;
        let chain =
            format!("{{ type filter hook ingress device \"{nic}\" priority 0; policy {policy}; }}");
        run(&["nft", "add", "chain", "netdev", &table, "ingress", &chain])?;
        Ok(table)
    }

    /// Silences the NIC's kernel interface `nic` (see the module doc).
    pub fn silence_nic(&mut self, nic: &str, ingress_drop: bool) -> Result<(), SetupError> {
        self.step(
            &["ip", "link", "set", "dev", nic, "arp", "off", "up"],
            &["ip", "link", "set", "dev", nic, "arp", "on"],
        )?;
        // Absent when IPv6 is off in the kernel: nothing to silence then.
        let key = format!("net/ipv6/conf/{nic}/disable_ipv6");
        if let Ok(was) = std::fs::read_to_string(format!("/proc/sys/{key}")) {
            let was = was.trim();
            if was != "1" && sysctl(&key, "1").is_ok() {
                // Put back as it was (the interface's link-local address
                // comes back with it).
                let sysctl_key = key.replace('/', ".");
                self.undo.push(vec![
                    "sysctl".into(),
                    "-qw".into(),
                    format!("{sysctl_key}={was}"),
                ]);
            }
        }
        if ingress_drop {
            // nftables' netdev ingress hook runs after AF_PACKET taps, so
            // the fastpath still receives what the kernel is kept from.
            self.ingress_chain("herd", nic, "drop")?;
        }
        Ok(())
    }

    /// Lets the kernel take the frames the XDP pre-filter passed on `nic`
    /// (rewritten to the NIC's MAC `mac`). A veth's native XDP keeps the
    /// packet type it had before the program rewrote the MAC (the VIP's:
    /// "another host's"), and IPv4 drops such packets; an nftables netdev
    /// ingress rule marks them as the host's, as a NIC driver would after
    /// its XDP program. Everything else on `nic` goes to the fastpath, so
    /// only passed frames meet the rule.
    pub fn host_passed_frames(&mut self, nic: &str, mac: &str) -> Result<(), SetupError> {
        let table = self.ingress_chain("herd_xdp", nic, "accept")?;
        run(&[
            "nft", "add", "rule", "netdev", &table, "ingress", "ether", "daddr", mac, "meta",
            "pkttype", "set", "host",
        ])
    }

    /// Brings the TAP up with the node's addresses and routes, and puts the
    /// VIPs on loopback.
    pub fn configure_tap(&mut self, tap: &config::Tap, vips: &[IpAddr]) -> Result<(), SetupError> {
        let name = tap.name.as_str();
        for key in ["all", name] {
            sysctl(&format!("net/ipv4/conf/{key}/arp_ignore"), "1")?;
            sysctl(&format!("net/ipv4/conf/{key}/arp_announce"), "2")?;
        }
        let _ = sysctl(&format!("net/ipv6/conf/{name}/accept_dad"), "0");
        // No queueing discipline: a TAP never stops its queue (it drops
        // what its reader has not taken), so the default one only costs
        // an enqueue and a dequeue per frame the kernel sends, on the
        // application's CPU (a veth, a kernel node's interface, has none).
        if let Err(e) = run(&["tc", "qdisc", "replace", "dev", name, "root", "noqueue"]) {
            tracing::warn!("{name} keeps its queueing discipline: {e}");
        }
        run(&["ip", "link", "set", "dev", name, "up"])?;
        for a in &tap.addresses {
            run(&["ip", "addr", "add", &a.to_string(), "dev", name, "nodad"])?;
        }
        for r in &tap.routes {
            run(&[
                "ip",
                "route",
                "replace",
                &r.to.to_string(),
                "via",
                &r.via.to_string(),
                "dev",
                name,
            ])?;
        }
        for vip in vips {
            self.add_vip(*vip)?;
        }
        run(&["ip", "link", "set", "dev", "lo", "up"])?;
        Ok(())
    }

    /// Puts `vip` on loopback (replacing a stale one), to be removed by
    /// `undo` or [`KernelSetup::remove_vip`]. The kernel's connections from
    /// the VIP are reset first and again when it is removed: see
    /// [`reset_connections`].
    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), SetupError> {
        let addr = lo_address(vip);
        let _ = run(&["ip", "addr", "del", &addr, "dev", "lo"]);
        reset_connections(vip);
        let reset = reset_command(vip);
        self.undo
            .push(reset.iter().map(|s| s.to_string()).collect());
        self.step(
            &["ip", "addr", "add", &addr, "dev", "lo", "nodad"],
            &["ip", "addr", "del", &addr, "dev", "lo"],
        )
    }

    /// Takes `vip` off loopback (a reload removed it).
    pub fn remove_vip(&mut self, vip: IpAddr) -> Result<(), SetupError> {
        let addr = lo_address(vip);
        let undo: Vec<String> = ["ip", "addr", "del", &addr, "dev", "lo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        self.undo.retain(|u| *u != undo);
        let reset: Vec<String> = reset_command(vip).iter().map(|s| s.to_string()).collect();
        self.undo.retain(|u| *u != reset);
        let removed = run(&["ip", "addr", "del", &addr, "dev", "lo"]);
        reset_connections(vip);
        removed
    }

    /// Undoes everything, newest first; failures are logged, not fatal.
    pub fn undo(&mut self) {
        while let Some(cmd) = self.undo.pop() {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            if let Err(e) = run(&args) {
                tracing::warn!("undo: {e}");
            }
        }
    }
}

/// `ss` resetting every TCP connection of the kernel from `vip` (any
/// state but listening and closed).
fn reset_command(vip: IpAddr) -> [String; 8] {
    let src = ss_host(vip);
    ["ss", "-K", "-t", "-n", "state", "connected", "src", &src].map(String::from)
}

/// An address as `ss` filters take it (IPv6 in brackets, so a port can
/// follow).
pub fn ss_host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Resets the kernel's connections from `vip`. When a node starts, those
/// are left from before its stop or crash: the farm gave their buckets to
/// other nodes then, whose kernels reset the clients, but this kernel would
/// keep its side open as long as the application does (an idle one
/// forever), and a later move out of their bucket would wait for them
/// until `continuity.drain_timeout_ms`. When the VIP goes (a stop, a
/// reload), nothing serves its connections any more: the application
/// hears of it at once. Needs a kernel with `CONFIG_INET_DIAG_DESTROY`
/// (Debian's has it); without, they stay, with a warning.
pub fn reset_connections(vip: IpAddr) {
    let cmd = reset_command(vip);
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(out) => {
            // `ss` lists what it reset, under a header line.
            let reset = String::from_utf8_lossy(&out.stdout)
                .lines()
                .count()
                .saturating_sub(1);
            let err = String::from_utf8_lossy(&out.stderr);
            if reset > 0 {
                tracing::info!(%vip, connections = reset, "reset the kernel's connections left from before");
            }
            if !out.status.success() || err.contains("Operation not supported") {
                tracing::warn!(%vip, "could not reset the kernel's connections: {}", err.trim());
            }
        }
        Err(e) => tracing::warn!(%vip, "could not run ss to reset the kernel's connections: {e}"),
    }
}

/// Whatever ends a start or a run (an error after the kernel was set up, a
/// panic, a forgotten `undo`), the kernel is left as it was found: VIPs off
/// `lo`, nftables tables removed. `undo` empties the list, so an explicit
/// `undo` first makes this a no-op.
impl Drop for KernelSetup {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_setup_undoes_it_newest_first_and_only_once() {
        let dir = std::env::temp_dir().join(format!("herd-setup-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("undone");
        let step = |n: &str| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("echo {n} >> {}", log.display()),
            ]
        };
        let mut setup = KernelSetup {
            undo: vec![step("first"), step("second")],
        };
        drop(setup);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "second\nfirst\n");
        // An explicit undo, then the drop: each step runs once.
        std::fs::remove_file(&log).unwrap();
        setup = KernelSetup {
            undo: vec![step("only")],
        };
        setup.undo();
        drop(setup);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "only\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
