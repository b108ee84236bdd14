//! `[dpdk]` and `[polling]`: the EAL's resources and the lcores' idle
//! policy.

use crate::{invalid, BucketRanges, ConfigError, KeyedError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dpdk {
    /// CPUs the lcores may run on, as a list ("0-1", "2,3"). Empty: all.
    #[serde(default)]
    pub cpus: Option<CpuSet>,
    /// Use hugepages (hugetlbfs must be mounted); otherwise `--no-huge`.
    #[serde(default)]
    pub hugepages: bool,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Keeps several DPDK processes on one machine apart.
    #[serde(default)]
    pub file_prefix: Option<String>,
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Passed to the EAL as they are, after Herd's own arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn default_memory_mb() -> u32 {
    256
}
fn default_mbufs() -> u32 {
    8191
}

impl Default for Dpdk {
    fn default() -> Self {
        Dpdk {
            cpus: None,
            hugepages: false,
            memory_mb: default_memory_mb(),
            file_prefix: None,
            mbufs: default_mbufs(),
            extra_args: Vec::new(),
        }
    }
}

/// Adaptive polling: after work an lcore keeps polling for `spin_us`,
/// then waits for work. Where a packet or the control plane wakes
/// it (`af_packet`, `af_xdp`), the wait has no timer to speak of; where
/// only time does (PCI, vdev), it sleeps `min_sleep_us`, doubling up to
/// `max_sleep_us`, which bounds the first packet's wait after idle.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Polling {
    #[serde(default = "default_spin_us")]
    pub spin_us: u32,
    #[serde(default = "default_min_sleep_us")]
    pub min_sleep_us: u32,
    #[serde(default = "default_max_sleep_us")]
    pub max_sleep_us: u32,
}

/// 100 µs: a one-connection round trip through the lab's veth, nginx and
/// the client is 30-60 µs; a spin that ends before the next request
/// makes the lcore's wake-up (tens of µs on a virtual CPU) part of every
/// request (perf/notes/2026-12-04-serve-egress-balance.md).
fn default_spin_us() -> u32 {
    100
}
fn default_min_sleep_us() -> u32 {
    10
}
/// 1.5 ms: at 1 ms an idle lcore's ~1000 wake-ups a second cost 2–3.5 %
/// of a virtual CPU, at the edge of the 3 % goal
/// (perf/notes/2026-11-24-fastpath-idle-sleep.md).
fn default_max_sleep_us() -> u32 {
    1500
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            spin_us: default_spin_us(),
            min_sleep_us: default_min_sleep_us(),
            max_sleep_us: default_max_sleep_us(),
        }
    }
}

impl Dpdk {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.memory_mb < 64 {
            return Err(invalid("dpdk.memory_mb", "at least 64 MB are needed"));
        }
        if self.mbufs < 1024 {
            return Err(invalid("dpdk.mbufs", "at least 1024 mbufs are needed"));
        }
        if let Some(p) = &self.file_prefix {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    "dpdk.file_prefix",
                    format!("{p:?}: use letters, digits, '-' and '_'"),
                ));
            }
        }
        Ok(())
    }
}

impl Polling {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_sleep_us == 0 || self.min_sleep_us > self.max_sleep_us {
            return Err(invalid(
                "polling.min_sleep_us",
                "must be > 0 and <= polling.max_sleep_us",
            ));
        }
        if self.max_sleep_us > 100_000 {
            return Err(invalid(
                "polling.max_sleep_us",
                "more than 100 ms would make the first packet after idle wait too long",
            ));
        }
        Ok(())
    }
}

/// A set of CPUs, written as a list such as `0-3,6`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct CpuSet {
    /// As written, blanks removed (DPDK's `--lcores` takes it so).
    text: String,
    cpus: Vec<u32>,
}

impl CpuSet {
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for CpuSet {
    type Error = KeyedError;

    fn try_from(s: String) -> Result<CpuSet, KeyedError> {
        let cpus = parse_cpu_list(&s).map_err(KeyedError::here)?;
        Ok(CpuSet {
            text: s.replace(' ', ""),
            cpus,
        })
    }
}

impl From<CpuSet> for String {
    fn from(c: CpuSet) -> String {
        c.text
    }
}

/// Parses a CPU list such as "0-3,6".
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let ranges = BucketRanges::parse(s)?;
    let cpus: Vec<u32> = ranges.iter().collect();
    if cpus.iter().any(|c| *c >= 1024) {
        return Err(format!("{s:?}: CPU numbers go up to 1023"));
    }
    Ok(cpus)
}
