//! `[tap]`: the exception path to the node's kernel.

use crate::{default_true, invalid, valid_ifname, ConfigError, Driver, KeyedError};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A route the kernel side of the node needs (e.g. back to the clients).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: Prefix,
    pub via: IpAddr,
}

/// The exception path: the TAP interface through which the kernel receives
/// accepted VIP traffic and everything not for the fastpath.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    #[serde(default = "default_tap_name")]
    pub name: String,
    /// Addresses of the node itself ("198.18.0.11/24"), put on the TAP.
    #[serde(default)]
    pub addresses: Vec<Prefix>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Set up the kernel side (addresses, routes, the VIPs on loopback, ARP
    /// sysctls, and the NIC's kernel interface silenced). On by default.
    #[serde(default = "default_true")]
    pub configure_kernel: bool,
    /// Let the kernel hand over large TCP segments with checksums to fill
    /// in (TSO4/TSO6, checksum offload), cut and summed by the fastpath.
    /// On by default; off makes the kernel segment and sum itself.
    #[serde(default = "default_true")]
    pub offloads: bool,
    /// Merge consecutive TCP segments of a flow, taken from the NIC in one
    /// burst, into one large segment for the kernel (GRO), each verified
    /// first. On by default; needs `offloads`.
    #[serde(default = "default_true")]
    pub gro: bool,
    /// What carries the exception path: Herd's own TAP (`tap`, the
    /// default) or DPDK's virtio-user over the kernel's vhost-net
    /// (`virtio-user`), whose kernel thread then does the kernel's part
    /// of each packet instead of the lcore. Needs `/dev/vhost-net`.
    #[serde(default)]
    pub backend: TapBackend,
    /// Replace the TAP by another DPDK vdev (benchmarks only).
    #[serde(default)]
    pub vdev: Option<String>,
    /// What the kernel sends on the TAP leaves through the NIC's own
    /// kernel interface directly (a tc program on the TAP redirects it),
    /// with that interface's offloads, instead of through an lcore. Only
    /// where the kernel keeps the NIC (`af_xdp`, `af_packet`): unset, on
    /// where the kernel allows it (Herd says so in its log where it does
    /// not), for every frame with `af_xdp` and for the flows the lcores
    /// have no room to send with `af_packet` (the egress balance);
    /// `true`: every frame, required (a start fails with the kernel's
    /// reason); `false`: off.
    #[serde(default)]
    pub direct_egress: Option<bool>,
}

/// See [`Tap::backend`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TapBackend {
    #[default]
    Tap,
    VirtioUser,
}

fn default_tap_name() -> String {
    "herd0".into()
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            name: default_tap_name(),
            addresses: Vec::new(),
            routes: Vec::new(),
            configure_kernel: true,
            offloads: true,
            gro: true,
            backend: TapBackend::Tap,
            vdev: None,
            direct_egress: None,
        }
    }
}

impl Tap {
    /// Checks `[tap]` (with the port's driver: direct egress needs a NIC
    /// the kernel keeps).
    pub(crate) fn validate(&self, driver: Driver) -> Result<(), ConfigError> {
        if !valid_ifname(&self.name) {
            return Err(invalid(
                "tap.name",
                format!("{:?} is not a Linux interface name", self.name),
            ));
        }
        if self.backend == TapBackend::VirtioUser && self.vdev.is_some() {
            return Err(invalid(
                "tap.backend",
                "\"virtio-user\" and tap.vdev both name the exception path: set one",
            ));
        }
        if self.direct_egress == Some(true) {
            let kernel_keeps_nic = matches!(driver, Driver::AfXdp | Driver::AfPacket);
            if !kernel_keeps_nic || self.backend != TapBackend::Tap || self.vdev.is_some() {
                return Err(invalid(
                    "tap.direct_egress",
                    "needs Herd's own TAP (no tap.vdev, backend \"tap\") and a NIC the kernel keeps (driver \"af_xdp\" or \"af_packet\")",
                ));
            }
        }
        Ok(())
    }
}

/// An address and a prefix length, written `198.18.0.11/24`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    pub address: IpAddr,
    pub length: u8,
}

impl TryFrom<String> for Prefix {
    type Error = KeyedError;

    fn try_from(s: String) -> Result<Prefix, KeyedError> {
        let (address, length) = parse_prefix(&s).map_err(KeyedError::here)?;
        Ok(Prefix { address, length })
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

/// Parses "address/prefix-length".
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not address/prefix-length"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} is over {max}"));
    }
    Ok((addr, len))
}
