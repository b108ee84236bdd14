//! `[farm]` and `[[farm.nodes]]`: what every node of the farm shares, and
//! static ownership.

use crate::{invalid, BucketRanges, Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Farm {
    pub name: String,
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub ownership: Ownership,
    pub vips: Vec<IpAddr>,
    pub nodes: Vec<FarmNode>,
}

fn default_buckets() -> u32 {
    4096
}

/// How VIP traffic reaches every node (docs/design.md §2).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// The VIP resolves to a locally administered unicast MAC that is never
    /// a source address, so switches flood it (SafeKit vmac_invisible).
    #[default]
    Vmac,
    /// The VIP resolves to a multicast MAC (NLB multicast, CLUSTERIP).
    Multicast,
}

/// Who owns which bucket.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Fixed by `farm.nodes[].buckets`.
    #[default]
    Static,
    /// Decided by the membership protocol from who is alive (`[membership]`).
    Membership,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FarmNode {
    pub id: u16,
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Static ownership: bucket ranges such as "0-2047,4000".
    #[serde(default)]
    pub buckets: Option<String>,
    /// Membership: the node's heartbeat address (ip:port) on each
    /// heartbeat network, the same networks in the same order on every node.
    #[serde(default)]
    pub heartbeat: Vec<std::net::SocketAddr>,
}

fn default_weight() -> u32 {
    1
}

/// Where VIP traffic of one bucket goes: the validated, static ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticOwnership {
    /// `owners[b]` is the id of the node owning bucket `b`.
    pub owners: Vec<u16>,
}

impl Farm {
    /// Checks `[farm]`; returns the node ids.
    pub(crate) fn validate(&self) -> Result<BTreeSet<u16>, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(invalid("farm.name", "must not be empty"));
        }
        if !(1..=1 << 20).contains(&self.buckets) {
            return Err(invalid(
                "farm.buckets",
                format!("{} is out of range 1..=1048576", self.buckets),
            ));
        }
        self.validate_vips()?;
        self.validate_nodes()
    }

    fn validate_vips(&self) -> Result<(), ConfigError> {
        if self.vips.is_empty() || self.vips.len() > 64 {
            return Err(invalid(
                "farm.vips",
                format!("a farm has 1 to 64 VIPs, not {}", self.vips.len()),
            ));
        }
        let mut seen_vips = BTreeSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            let key = format!("farm.vips[{i}]");
            if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
                return Err(invalid(key, format!("{vip} cannot be a VIP")));
            }
            if let IpAddr::V4(v4) = vip {
                if v4.is_broadcast() {
                    return Err(invalid(key, format!("{vip} cannot be a VIP")));
                }
            }
            if !seen_vips.insert(*vip) {
                return Err(invalid(key, format!("duplicate VIP {vip}")));
            }
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<BTreeSet<u16>, ConfigError> {
        // One node is allowed for benchmarks and trials; a farm has 2 to 64.
        if !(1..=64).contains(&self.nodes.len()) {
            return Err(invalid(
                "farm.nodes",
                format!("a farm has 1 to 64 nodes, not {}", self.nodes.len()),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !ids.insert(n.id) {
                return Err(invalid(
                    format!("farm.nodes[{i}].id"),
                    format!("duplicate node id {}", n.id),
                ));
            }
            if n.name.trim().is_empty() {
                return Err(invalid(
                    format!("farm.nodes[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("farm.nodes[{i}].name"),
                    format!("duplicate node name {:?}", n.name),
                ));
            }
        }
        Ok(ids)
    }
}

impl Config {
    /// The bucket owners of static ownership, checked: every bucket owned
    /// by exactly one node.
    pub fn static_ownership(&self) -> Result<StaticOwnership, ConfigError> {
        let n = self.farm.buckets as usize;
        let mut owners: Vec<Option<u16>> = vec![None; n];
        for (i, node) in self.farm.nodes.iter().enumerate() {
            let key = format!("farm.nodes[{i}].buckets");
            let Some(spec) = &node.buckets else {
                return Err(invalid(
                    key,
                    "missing: static ownership needs each node's bucket ranges",
                ));
            };
            let ranges = BucketRanges::parse(spec).map_err(|e| invalid(&key, e))?;
            for b in ranges.iter() {
                let Some(slot) = owners.get_mut(b as usize) else {
                    return Err(invalid(
                        &key,
                        format!("bucket {b} is beyond farm.buckets ({n})"),
                    ));
                };
                if let Some(other) = slot {
                    return Err(invalid(
                        &key,
                        format!("bucket {b} is also owned by node {other}"),
                    ));
                }
                *slot = Some(node.id);
            }
        }
        if let Some(b) = owners.iter().position(Option::is_none) {
            return Err(invalid(
                "farm.nodes",
                format!("bucket {b} has no owner: static ownership must cover 0..{n}"),
            ));
        }
        Ok(StaticOwnership {
            owners: owners.into_iter().map(|o| o.unwrap_or_default()).collect(),
        })
    }
}

/// The MAC a VIP resolves to.
///
/// `vmac`: `02:48:` + the IPv4 address, or `02:86:` + the last four bytes of
/// an IPv6 address (locally administered, unicast). `multicast`: the IPv4
/// multicast MAC `01:00:5e:` + the low 23 bits of the VIP, or the IPv6 one
/// `33:33:` + its last four bytes (the prefix CLUSTERIP and NLB use).
pub fn vip_mac(vip: IpAddr, delivery: Delivery) -> [u8; 6] {
    match (vip, delivery) {
        (IpAddr::V4(a), Delivery::Vmac) => {
            let o = a.octets();
            [0x02, 0x48, o[0], o[1], o[2], o[3]]
        }
        (IpAddr::V6(a), Delivery::Vmac) => {
            let o = a.octets();
            [0x02, 0x86, o[12], o[13], o[14], o[15]]
        }
        (IpAddr::V4(a), Delivery::Multicast) => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        (IpAddr::V6(a), Delivery::Multicast) => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}
