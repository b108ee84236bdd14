//! `herd-bench serve`'s command line ([`Options`]) and what follows from
//! it: the layouts and farm sizes to run, and where Herd's XDP pre-filter
//! (and with `--kernel-xdp-pass`, the kernel nodes' program) runs.

use anyhow::{bail, Result};
use std::path::PathBuf;

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
pub(super) const ROUND_TRIES: u32 = 3;

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

/// A CPU layout (the module doc's "Layouts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    AsTheyCome,
    Equal,
}

impl Layout {
    /// The layout's name in the output (and on the command line).
    pub(super) fn name(self) -> &'static str {
        match self {
            Layout::AsTheyCome => "as-they-come",
            Layout::Equal => "equal",
        }
    }
    /// The RESULT key prefix of this layout when it is not the base one.
    pub(super) fn short(self) -> &'static str {
        match self {
            Layout::AsTheyCome => "atc",
            Layout::Equal => "eq",
        }
    }
}

impl Options {
    /// Refuses settings the bench cannot run with.
    pub(super) fn check(&self) -> Result<()> {
        if self.rounds == 0 || self.seconds == 0 {
            bail!("--rounds and --seconds must be at least 1");
        }
        if !(0.0..=100.0).contains(&self.max_steal) {
            bail!("--max-steal is a share of the CPUs' time, 0 to 100 (%)");
        }
        if self.nodes.is_empty() || self.nodes.iter().any(|n| !(1..=8).contains(n)) {
            bail!("--nodes must list farm sizes of 1 to 8");
        }
        Ok(())
    }

    /// The farm sizes to measure: each once, in the order given.
    pub(super) fn node_counts(&self) -> Vec<u32> {
        let mut node_counts: Vec<u32> = Vec::new();
        for n in &self.nodes {
            if !node_counts.contains(n) {
                node_counts.push(*n);
            }
        }
        node_counts
    }

    /// The CPU layouts to measure, in order.
    pub(super) fn layouts(&self) -> Vec<Layout> {
        match self.layout {
            LayoutArg::Both => vec![Layout::AsTheyCome, Layout::Equal],
            LayoutArg::AsTheyCome => vec![Layout::AsTheyCome],
            LayoutArg::Equal => vec![Layout::Equal],
        }
    }

    /// Whether herd's af_xdp nodes run the pre-filter in the veth's native
    /// XDP.
    pub(super) fn xdp_native(&self) -> bool {
        self.driver == "af_xdp" && self.xdp_mode.as_deref() == Some("native")
    }

    /// Whether herd's af_xdp nodes run the pre-filter in generic mode
    /// (herd's default on the lab's veth).
    pub(super) fn xdp_generic(&self) -> bool {
        self.driver == "af_xdp" && !self.xdp_native()
    }

    /// Where `--kernel-xdp-pass` attaches its program, where Herd's
    /// pre-filter runs in this bench: the mode's name and `ip link`'s
    /// keyword for it.
    pub(super) fn kernel_xdp_mode(&self) -> (&'static str, &'static str) {
        if self.xdp_mode.as_deref() == Some("native") {
            ("native", "xdpdrv")
        } else {
            ("generic", "xdpgeneric")
        }
    }

    /// The driver as the header names it (with af_xdp, where its
    /// pre-filter runs).
    pub(super) fn driver_label(&self) -> String {
        let mode = match (self.driver.as_str(), self.xdp_native()) {
            ("af_xdp", true) => " (XDP pre-filter native)",
            ("af_xdp", false) => " (XDP pre-filter generic)",
            _ => "",
        };
        format!("{}{mode}", self.driver)
    }

    /// The kernel nodes' NIC as the header names it.
    pub(super) fn kernel_nic_label(&self) -> &'static str {
        match self.kernel_nic {
            KernelNic::Veth => "veth",
            KernelNic::Nic if self.xdp_generic() => "nic (the generic-mode af_xdp node's wire)",
            KernelNic::Nic => "nic (an emulated NIC, as a native-mode af_xdp node's)",
        }
    }
}
