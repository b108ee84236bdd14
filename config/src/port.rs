//! `[port]`: the NIC the fastpath polls, and how it attaches.

use crate::{valid_ifname, KeyedError};
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

/// `[port]`: the NIC and how the fastpath attaches to it, read through
/// the file's form ([`PortFile`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "PortFile", into = "PortFile")]
pub struct Port {
    pub device: Device,
    /// Rx/tx queues; one lcore polls each.
    pub queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
}

/// The NIC, by driver, with what each driver needs.
#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    AfPacket {
        interface: InterfaceName,
    },
    AfXdp {
        interface: InterfaceName,
        /// See [`PortFile::xdp_prefilter`].
        prefilter: Option<bool>,
        /// See [`PortFile::xdp_mode`].
        mode: Option<XdpMode>,
    },
    Pci {
        address: PciAddress,
    },
    Vdev {
        devargs: String,
    },
}

/// A Linux interface name (1 to 15 bytes, no `/`, `:` or blank).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn new(name: &str) -> Option<InterfaceName> {
        valid_ifname(name).then(|| InterfaceName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A PCI address, `dddd:bb:dd.f` in hexadecimal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress(String);

impl PciAddress {
    pub fn new(address: &str) -> Option<PciAddress> {
        valid_pci(address).then(|| PciAddress(address.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Port {
    pub fn driver(&self) -> Driver {
        match self.device {
            Device::AfPacket { .. } => Driver::AfPacket,
            Device::AfXdp { .. } => Driver::AfXdp,
            Device::Pci { .. } => Driver::Pci,
            Device::Vdev { .. } => Driver::Vdev,
        }
    }

    /// The kernel interface, for the drivers that attach to one
    /// (`af_packet`, `af_xdp`).
    pub fn interface(&self) -> Option<&InterfaceName> {
        match &self.device {
            Device::AfPacket { interface } | Device::AfXdp { interface, .. } => Some(interface),
            Device::Pci { .. } | Device::Vdev { .. } => None,
        }
    }

    /// `port.xdp_prefilter` (`af_xdp` only).
    pub fn xdp_prefilter(&self) -> Option<bool> {
        match self.device {
            Device::AfXdp { prefilter, .. } => prefilter,
            _ => None,
        }
    }

    /// `port.xdp_mode` (`af_xdp` only).
    pub fn xdp_mode(&self) -> Option<XdpMode> {
        match self.device {
            Device::AfXdp { mode, .. } => mode,
            _ => None,
        }
    }
}

/// `[port]` as the file has it: the keys of every driver optional, so that
/// a key the driver needs is an error that names it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortFile {
    pub driver: Driver,
    /// Linux interface, for `af_packet` and `af_xdp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// PCI address, for `pci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<String>,
    /// Devargs, for `vdev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_prefilter: Option<bool>,
    /// How the pre-filter attaches: `native` (in the driver's receive) or
    /// `generic` (in the kernel's receive path, after RPS). Unset: generic
    /// on a veth, native on any other interface (see [`XdpMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

impl TryFrom<PortFile> for Port {
    type Error = KeyedError;

    fn try_from(f: PortFile) -> Result<Port, KeyedError> {
        let device = f.device()?;
        if !(1..=16).contains(&f.queues) {
            return Err(KeyedError::new(
                "queues",
                format!("{} is out of range 1..=16", f.queues),
            ));
        }
        for (key, n) in [
            ("rx_descriptors", f.rx_descriptors),
            ("tx_descriptors", f.tx_descriptors),
        ] {
            if !(64..=8192).contains(&n) || !n.is_power_of_two() {
                return Err(KeyedError::new(
                    key,
                    format!("{n} must be a power of two in 64..=8192"),
                ));
            }
        }
        Ok(Port {
            device,
            queues: f.queues,
            rx_descriptors: f.rx_descriptors,
            tx_descriptors: f.tx_descriptors,
        })
    }
}

impl From<Port> for PortFile {
    fn from(p: Port) -> PortFile {
        let mut f = PortFile {
            driver: p.driver(),
            interface: None,
            pci: None,
            vdev: None,
            queues: p.queues,
            rx_descriptors: p.rx_descriptors,
            tx_descriptors: p.tx_descriptors,
            xdp_prefilter: None,
            xdp_mode: None,
        };
        match p.device {
            Device::AfPacket { interface } => f.interface = Some(interface.0),
            Device::AfXdp {
                interface,
                prefilter,
                mode,
            } => {
                f.interface = Some(interface.0);
                f.xdp_prefilter = prefilter;
                f.xdp_mode = mode;
            }
            Device::Pci { address } => f.pci = Some(address.0),
            Device::Vdev { devargs } => f.vdev = Some(devargs),
        }
        f
    }
}

impl PortFile {
    /// The device, with the keys its driver needs (the XDP keys only
    /// with `af_xdp`).
    fn device(&self) -> Result<Device, KeyedError> {
        if self.xdp_prefilter == Some(true) && self.driver != Driver::AfXdp {
            return Err(KeyedError::new(
                "xdp_prefilter",
                "needs driver \"af_xdp\" (the XDP program runs on a kernel-owned NIC)",
            ));
        }
        if self.xdp_mode.is_some()
            && (self.driver != Driver::AfXdp || self.xdp_prefilter == Some(false))
        {
            return Err(KeyedError::new(
                "xdp_mode",
                "says how the XDP pre-filter attaches: it needs driver \"af_xdp\" with the pre-filter on",
            ));
        }
        let interface = || {
            let name = self.interface.as_deref().unwrap_or("");
            InterfaceName::new(name).ok_or_else(|| {
                KeyedError::new(
                    "interface",
                    format!("{name:?} is not a Linux interface name (needed by this driver)"),
                )
            })
        };
        Ok(match self.driver {
            Driver::AfPacket => Device::AfPacket {
                interface: interface()?,
            },
            Driver::AfXdp => Device::AfXdp {
                interface: interface()?,
                prefilter: self.xdp_prefilter,
                mode: self.xdp_mode,
            },
            Driver::Pci => {
                let pci = self.pci.as_deref().unwrap_or("");
                Device::Pci {
                    address: PciAddress::new(pci).ok_or_else(|| {
                        KeyedError::new(
                            "pci",
                            format!("{pci:?} is not a PCI address like 0000:03:00.0"),
                        )
                    })?,
                }
            }
            Driver::Vdev => match self.vdev.as_deref() {
                Some(v) if !v.trim().is_empty() => Device::Vdev {
                    devargs: v.to_string(),
                },
                _ => {
                    return Err(KeyedError::new(
                        "vdev",
                        "missing: driver \"vdev\" needs the device's devargs",
                    ))
                }
            },
        })
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
