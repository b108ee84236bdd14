//! `herd setup`: the kernel set-up a node's config needs before `herd
//! run`, done with the tools of Debian's `dpdk` package: hugepages
//! reserved and hugetlbfs mounted (`dpdk-hugepages.py`) when
//! `dpdk.hugepages` is on, the NIC bound to vfio-pci (`dpdk-devbind.py`)
//! with the `pci` driver. `af_packet` and `af_xdp` need nothing: the
//! kernel keeps the interface.
//!
//! What to do is a pure function of the config and what the host has
//! ([`plan`]); running it is a loop over commands. Idempotent: a host
//! already set up gets no step.

use config::{Config, Device};

/// Where hugetlbfs is mounted when it is not yet (dpdk-hugepages.py's
/// default).
const HUGEPAGES_DIR: &str = "/dev/hugepages";

/// What the host has now, as far as the set-up goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// The default hugepage size.
    pub hugepage_kb: u64,
    pub hugepages_total: u64,
    pub hugepages_free: u64,
    /// Whether a hugetlbfs is mounted anywhere.
    pub hugetlbfs_mounted: bool,
    /// The driver the config's PCI device is bound to, if any.
    pub pci_driver: Option<String>,
}

/// One command of the set-up, with why it is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub why: String,
    pub argv: Vec<String>,
}

fn step(why: String, argv: &[&str]) -> Step {
    Step {
        why,
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }
}

/// The commands that bring `host` to what `config` needs, in order.
pub fn plan(config: &Config, host: &Host) -> Vec<Step> {
    let mut steps = Vec::new();
    if config.dpdk.hugepages {
        let needed_kb = u64::from(config.dpdk.memory_mb) * 1024;
        let free_kb = host.hugepages_free * host.hugepage_kb;
        if free_kb < needed_kb && host.hugepage_kb > 0 {
            // Reserving sets the total: keep what others use and add what
            // is missing.
            let missing = (needed_kb - free_kb).div_ceil(host.hugepage_kb);
            let total_kb = (host.hugepages_total + missing) * host.hugepage_kb;
            steps.push(step(
                format!(
                    "dpdk.memory_mb = {} needs {} kB of free hugepages, {} kB are free",
                    config.dpdk.memory_mb, needed_kb, free_kb
                ),
                &["dpdk-hugepages.py", "--reserve", &format!("{total_kb}K")],
            ));
        }
        if !host.hugetlbfs_mounted {
            // dpdk-hugepages.py mounts on /dev/hugepages, which it does not
            // create (and a failed mount does not fail it).
            steps.push(step(
                "dpdk.hugepages = true needs a mounted hugetlbfs".into(),
                &["mkdir", "-p", HUGEPAGES_DIR],
            ));
            steps.push(step(
                "dpdk.hugepages = true needs a mounted hugetlbfs".into(),
                &["dpdk-hugepages.py", "--mount", "--directory", HUGEPAGES_DIR],
            ));
        }
    }
    if let Device::Pci { address } = &config.port.device {
        let pci = address.as_str();
        if host.pci_driver.as_deref() != Some("vfio-pci") {
            steps.push(step(
                "port.driver = \"pci\" needs vfio-pci loaded".into(),
                &["modprobe", "vfio-pci"],
            ));
            steps.push(step(
                format!(
                    "port.pci = {pci:?} is bound to {}, DPDK needs vfio-pci",
                    host.pci_driver.as_deref().unwrap_or("no driver")
                ),
                &["dpdk-devbind.py", "--bind=vfio-pci", pci],
            ));
        }
    }
    steps
}

/// Reads what [`plan`] needs from /proc and /sys.
pub fn read_host(config: &Config) -> Host {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let pci_driver = match &config.port.device {
        Device::Pci { address } => Some(address),
        _ => None,
    }
    .and_then(|pci| {
        std::fs::read_link(format!("/sys/bus/pci/devices/{pci}/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    });
    Host {
        hugepage_kb: field("Hugepagesize"),
        hugepages_total: field("HugePages_Total"),
        hugepages_free: field("HugePages_Free"),
        hugetlbfs_mounted: mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")),
        pci_driver,
    }
}

/// Sets the host up for `config` (or prints the commands with
/// `dry_run`), stopping at the first command that fails; then checks that
/// nothing is missing any more (the tools do not always fail when they
/// do not succeed).
pub fn set_up(config: &Config, dry_run: bool) -> anyhow::Result<()> {
    let steps = plan(config, &read_host(config));
    run(&steps, dry_run)?;
    if !dry_run && !steps.is_empty() {
        let left = plan(config, &read_host(config));
        if let Some(s) = left.first() {
            anyhow::bail!("the host is still not set up: {}", s.why);
        }
        println!("setup: done");
    }
    Ok(())
}

fn run(steps: &[Step], dry_run: bool) -> anyhow::Result<()> {
    if steps.is_empty() {
        println!("setup: nothing to do");
        return Ok(());
    }
    for s in steps {
        println!("setup: {}: {}", s.why, s.argv.join(" "));
        if dry_run {
            continue;
        }
        let status = std::process::Command::new(&s.argv[0])
            .args(&s.argv[1..])
            .status()
            .map_err(|e| anyhow::anyhow!("{}: {e}", s.argv[0]))?;
        if !status.success() {
            anyhow::bail!("{} failed ({status})", s.argv.join(" "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example node with `port` and `dpdk` replaced.
    fn config(port: &str, dpdk: &str) -> Config {
        let mut t: toml::Table = toml::from_str(include_str!("../../examples/node.toml")).unwrap();
        t.insert(
            "port".into(),
            toml::from_str::<toml::Table>(port).unwrap().into(),
        );
        t.insert(
            "dpdk".into(),
            toml::from_str::<toml::Table>(dpdk).unwrap().into(),
        );
        Config::from_toml(&toml::to_string(&t).unwrap()).unwrap()
    }

    fn host() -> Host {
        Host {
            hugepage_kb: 2048,
            ..Host::default()
        }
    }

    #[test]
    fn a_kernel_kept_interface_without_hugepages_needs_nothing() {
        let c = config("driver = \"af_xdp\"\ninterface = \"eth0\"", "");
        assert_eq!(plan(&c, &host()), Vec::new());
    }

    #[test]
    fn hugepages_are_reserved_beyond_what_others_use_and_mounted() {
        let c = config(
            "driver = \"af_packet\"\ninterface = \"eth0\"",
            "hugepages = true\nmemory_mb = 512",
        );
        let h = Host {
            hugepages_total: 100,
            hugepages_free: 56,
            ..host()
        };
        let steps = plan(&c, &h);
        // 512 MiB = 256 pages, 56 free: 200 more, 300 in all.
        assert_eq!(steps[0].argv, ["dpdk-hugepages.py", "--reserve", "614400K"]);
        assert_eq!(steps[1].argv, ["mkdir", "-p", "/dev/hugepages"]);
        assert_eq!(
            steps[2].argv,
            [
                "dpdk-hugepages.py",
                "--mount",
                "--directory",
                "/dev/hugepages"
            ]
        );
        assert_eq!(steps.len(), 3);
        let ready = Host {
            hugepages_total: 300,
            hugepages_free: 256,
            hugetlbfs_mounted: true,
            ..host()
        };
        assert_eq!(plan(&c, &ready), Vec::new(), "already set up");
    }

    #[test]
    fn a_pci_nic_is_bound_to_vfio_pci_unless_it_is() {
        let c = config("driver = \"pci\"\npci = \"0000:03:00.0\"", "");
        let h = Host {
            pci_driver: Some("ixgbe".into()),
            ..host()
        };
        let steps = plan(&c, &h);
        assert_eq!(steps[0].argv, ["modprobe", "vfio-pci"]);
        assert_eq!(
            steps[1].argv,
            ["dpdk-devbind.py", "--bind=vfio-pci", "0000:03:00.0"]
        );
        assert!(steps[1].why.contains("ixgbe"), "{}", steps[1].why);
        let bound = Host {
            pci_driver: Some("vfio-pci".into()),
            ..host()
        };
        assert_eq!(plan(&c, &bound), Vec::new());
    }
}
