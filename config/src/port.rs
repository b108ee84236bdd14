//! `[port]`: the NIC the fastpath polls, and how it attaches.

use crate::{invalid, valid_ifname, ConfigError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// A Linux interface through an AF_PACKET socket (`net_af_packet`).
    AfPacket,
    /// A Linux interface through AF_XDP (`net_af_xdp`).
    AfXdp,
    /// A NIC bound to vfio-pci, by PCI address.
    Pci,
    /// Any DPDK virtual device, given as its full devargs (benchmarks).
    Vdev,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub driver: Driver,
    /// Linux interface, for `af_packet` and `af_xdp`.
    pub interface: Option<String>,
    /// PCI address, for `pci`.
    pub pci: Option<String>,
    /// Devargs, for `vdev`.
    pub vdev: Option<String>,
    /// Rx/tx queues; one lcore polls each.
    #[serde(default = "default_queues")]
    pub queues: u16,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    /// With `af_xdp`: an XDP program on the port decides the common frame
    /// in the driver (owned bucket → the kernel's stack, another node's →
    /// drop, the rest → the fastpath). Unset: on where the kernel allows
    /// it (Herd says so in its log where it does not); `true`: required
    /// (a start fails with the kernel's reason); `false`: off.
    #[serde(default)]
    pub xdp_prefilter: Option<bool>,
    /// How the pre-filter attaches: `native` (in the driver's receive) or
    /// `generic` (in the kernel's receive path, after RPS). Unset: generic
    /// on a veth, native on any other interface (see [`XdpMode`]).
    #[serde(default)]
    pub xdp_mode: Option<XdpMode>,
}

/// Where an XDP program runs on an interface.
///
/// On a NIC, `Native` is the fast one: the driver runs the program on its
/// own buffers in the softirq of its interrupt. A veth has no interrupt and
/// no buffers of its own: its native XDP moves the peer's frames through a
/// ring into NAPI (a thread to wake, or the sender's CPU) and copies each
/// one into a page first, where `Generic` runs the program in the veth's
/// ordinary receive path, on the CPU that receive is steered to (RPS), as a
/// NIC's interrupt would be. Measured in
/// `perf/notes/2026-11-25-serve-af-xdp-generic-mode.md`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    Native,
    Generic,
}

impl XdpMode {
    /// The mode for unset `port.xdp_mode` on an interface of kind `kind`
    /// (`ip -d link`'s `info_kind`, none for a physical NIC's driver).
    pub fn for_interface_kind(kind: Option<&str>) -> XdpMode {
        match kind {
            Some("veth") => XdpMode::Generic,
            _ => XdpMode::Native,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

fn default_queues() -> u16 {
    1
}
fn default_descriptors() -> u16 {
    1024
}

impl Port {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_device()?;
        if self.xdp_prefilter == Some(true) && self.driver != Driver::AfXdp {
            return Err(invalid(
                "port.xdp_prefilter",
                "needs driver \"af_xdp\" (the XDP program runs on a kernel-owned NIC)",
            ));
        }
        if self.xdp_mode.is_some()
            && (self.driver != Driver::AfXdp || self.xdp_prefilter == Some(false))
        {
            return Err(invalid(
                "port.xdp_mode",
                "says how the XDP pre-filter attaches: it needs driver \"af_xdp\" with the pre-filter on",
            ));
        }
        if !(1..=16).contains(&self.queues) {
            return Err(invalid(
                "port.queues",
                format!("{} is out of range 1..=16", self.queues),
            ));
        }
        for (key, n) in [
            ("port.rx_descriptors", self.rx_descriptors),
            ("port.tx_descriptors", self.tx_descriptors),
        ] {
            if !(64..=8192).contains(&n) || !n.is_power_of_two() {
                return Err(invalid(
                    key,
                    format!("{n} must be a power of two in 64..=8192"),
                ));
            }
        }
        Ok(())
    }

    /// The device key the driver needs.
    fn validate_device(&self) -> Result<(), ConfigError> {
        match self.driver {
            Driver::AfPacket | Driver::AfXdp => {
                let name = self.interface.as_deref().unwrap_or("");
                if !valid_ifname(name) {
                    return Err(invalid(
                        "port.interface",
                        format!("{name:?} is not a Linux interface name (needed by this driver)"),
                    ));
                }
            }
            Driver::Pci => {
                let pci = self.pci.as_deref().unwrap_or("");
                if !valid_pci(pci) {
                    return Err(invalid(
                        "port.pci",
                        format!("{pci:?} is not a PCI address like 0000:03:00.0"),
                    ));
                }
            }
            Driver::Vdev => {
                if self.vdev.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(invalid(
                        "port.vdev",
                        "missing: driver \"vdev\" needs the device's devargs",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_pci(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}
