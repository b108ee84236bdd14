//! A running node: the EAL, the NIC and TAP ports, one lcore per rx queue
//! running the packet decision, and the status the control socket reports.

use crate::balance;
use crate::counters::{BurstCounts, FlowGauges, FlowStats, LcoreCounters, TableSwitch};
use crate::decision::{Classifier, DropReason, RuleTable, Verdict, Vip};
use crate::dpdk::tap::{self, PacketTx, Tap, TapQueue};
use crate::dpdk::wake::{self, Doorbells, Waker};
use crate::dpdk::{self, Eal, Mbuf, Mempool, Port, PortStats, BURST};
use crate::egress::{DirectEgress, EgressBalance};
use crate::flows::FlowTracker;
use crate::offload::gro::{self, Merger};
use crate::offload::{self, Segmenter, VnetHdr, F_NEEDS_CSUM, GSO_NONE, VNET_HDR_LEN};
use crate::poll::{Backoff, Idle, IdlePolicy, Wakeup};
use crate::prefilter;
use crate::reply;
use crate::setup::KernelSetup;
use crate::table::{BucketTable, Mirror, Move, TablePublisher, TableReader};
use config::{Config, Device, Driver, TapBackend, XdpMode};
/// The status model lives in `node-status`, which readers link without DPDK.
pub use node_status::{
    ranges_string, GuardStatus, LcoreStatus, NodeStatus, PollingStatus, PrefilterCounts,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

mod features;
mod lcore;
mod plan;
mod reader;
mod start;
use features::*;
pub use lcore::LcoreSettings;
use lcore::*;
use plan::*;
pub use plan::{classifier, eal_args, static_table, virtio_user_args};
pub use reader::StatusReader;
use reader::*;

/// Why a node did not start or a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Dpdk(#[from] dpdk::DpdkError),
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    /// A system resource the node needs could not be had: `what` names it.
    #[error("{what}: {source}")]
    System {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The config requires a kernel feature (`key = value`) that this
    /// kernel or interface refuses. Unset, the node would run without it.
    #[error("{key} = {value}, but {refusal}")]
    Refused {
        key: &'static str,
        value: String,
        refusal: String,
    },
    /// `tap.backend = "virtio-user"` on a kernel without vhost-net.
    #[error(
        "tap.backend = \"virtio-user\" needs {VHOST_NET} (the kernel's vhost_net module), \
         and this kernel has none: use tap.backend = \"tap\""
    )]
    NoVhostNet,
    /// Fewer DPDK worker lcores than the port's queues.
    #[error("{workers} worker lcores for {queues} queues")]
    TooFewLcores { workers: usize, queues: u16 },
    /// The test hook [`FAIL_AFTER_KERNEL_SETUP`] is set.
    #[error("{FAIL_AFTER_KERNEL_SETUP} is set: the start fails here")]
    FailedOnPurpose,
}

impl NodeError {
    fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
        let what = what.into();
        move |source| NodeError::System { what, source }
    }
}

/// Set in the environment, a start fails right after the kernel set-up
/// (tests: every error path releases what the start set up).
pub const FAIL_AFTER_KERNEL_SETUP: &str = "HERD_TEST_FAIL_AFTER_KERNEL_SETUP";

/// A started node. Dropping it (or [`RunningNode::shutdown`]) stops it
/// cleanly: lcores, kernel set-up, ports, then DPDK.
pub struct RunningNode {
    /// The ports, counters and table, as the status reads them. Dropped
    /// before `teardown`, so that the ports are no longer shared.
    parts: StatusReader,
    teardown: Teardown,
}

/// What a start has set up, undone in reverse order when it drops: on a
/// start that fails half-way as on a node that stops. The lcores are told
/// to stop and waited for, the kernel set-up is undone (VIPs off `lo`,
/// nftables tables, the NIC's addresses), the ports are closed, the mbuf
/// pool freed, and the EAL cleaned up last.
struct Teardown {
    stop: Arc<AtomicBool>,
    /// Rung after `stop` is set, so that idle lcores see it at once.
    doorbells: Arc<Doorbells>,
    kernel: Mutex<KernelSetup>,
    /// The pre-filter moved to generic mode (the PMD's close knows only
    /// the native one).
    xdp_generic: Option<dpdk::bpf::XdpAttachment>,
    nic: Option<Arc<Port>>,
    /// Whether the NIC was put in promiscuous mode (left when it closes).
    promiscuous: bool,
    /// A DPDK port on the kernel side (virtio-user, a vdev); Herd's own
    /// TAP closes with its last descriptor.
    kernel_port: Option<Arc<Port>>,
    pool: Option<Arc<Mempool>>,
    eal: Option<Eal>,
}

impl Teardown {
    fn eal(&self) -> &Eal {
        self.eal.as_ref().expect("the EAL lives until the teardown")
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.doorbells.ring_all();
        if let Some(eal) = &self.eal {
            eal.wait_workers();
        }
        self.kernel
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .undo();
        drop(self.xdp_generic.take());
        if let (true, Some(nic)) = (self.promiscuous, &self.nic) {
            if let Err(e) = nic.disable_promiscuous() {
                tracing::warn!("{e}");
            }
        }
        for port in [self.kernel_port.take(), self.nic.take()]
            .into_iter()
            .flatten()
        {
            match Arc::try_unwrap(port) {
                Ok(p) => p.close(),
                Err(_) => tracing::warn!("a port is still shared at shutdown: left open"),
            }
        }
        drop(self.pool.take());
        drop(self.eal.take());
    }
}

impl RunningNode {
    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// Applies the idle policy, VIPs and rules of `config` to the running
    /// node (a reload; the caller checked that nothing else changed), without
    /// breaking a connection: new VIPs reach the kernel first; the XDP
    /// pre-filter leaves every frame to the fastpath while the lcores take
    /// the new classifier and its maps change; removed VIPs leave the
    /// kernel last.
    pub fn reconfigure(&self, config: &Config) -> Result<(), NodeError> {
        let policy = IdlePolicy::from_config(&config.polling);
        if policy != self.parts.settings.policy() {
            self.parts.settings.replace_policy(policy);
        }
        let old = self.parts.settings.classifier();
        let same_farm =
            |c: &Classifier| c.vips4 == old.vips4 && c.vips6 == old.vips6 && c.rules == old.rules;
        let new = Arc::new(classifier(config, self.parts.nic_mac));
        if same_farm(&new) {
            return Ok(());
        }
        let mut kernel = self
            .teardown
            .kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let sets_kernel = config.tap.configure_kernel && config.tap.vdev.is_none();
        let has = |c: &Classifier, a: IpAddr| c.vips().any(|v| v == a);
        if sets_kernel {
            for vip in new.vips().filter(|a| !has(&old, *a)) {
                kernel.add_vip(vip)?;
            }
        }
        let swap = || self.parts.settings.replace_classifier(Arc::clone(&new));
        match &self.parts.prefilter {
            Some(maps) => maps
                .reconfigure(&old, &new, swap, || self.parts.publisher.load())
                .map_err(NodeError::system("the XDP pre-filter's maps"))?,
            None => swap(),
        }
        if sets_kernel {
            for vip in old.vips().filter(|a| !has(&new, *a)) {
                kernel.remove_vip(vip)?;
            }
        }
        Ok(())
    }

    /// A function that reads the frames the NIC's queues dropped so far
    /// (full rings: `imissed`, `af_packet`'s ring drops; no buffer:
    /// `rx_nombuf`): the membership driver reads it every period, and
    /// growth says this node may have missed heartbeats.
    ///
    /// When the ingress guard takes peers' heartbeats apart from the data,
    /// a full ring or queue loses none of them: nothing to report then.
    pub fn input_drops(&self) -> Box<dyn FnMut() -> u64 + Send> {
        if self
            .parts
            .guard
            .as_ref()
            .is_some_and(|g| g.takes_heartbeats())
        {
            return Box::new(|| 0);
        }
        let nic = Arc::clone(&self.parts.nic);
        let rings = Arc::clone(&self.parts.ring_drops);
        Box::new(move || {
            let s = nic.stats();
            s.imissed + s.rx_nombuf + rings.read().unwrap_or(0)
        })
    }

    /// A function that reads the NIC's link through DPDK (for the
    /// `interface = "nic"` checker).
    pub fn nic_link(&self) -> Arc<dyn Fn() -> Option<bool> + Send + Sync> {
        let nic = Arc::clone(&self.parts.nic);
        Arc::new(move || nic.link_up())
    }

    /// Publishes new bucket tables to the lcores.
    pub fn publisher(&self) -> TablePublisher {
        self.parts.publisher.clone()
    }

    pub fn status(&self) -> NodeStatus {
        self.parts.status()
    }

    /// A handle that reads the node's status from any thread.
    pub fn status_reader(&self) -> StatusReader {
        self.parts.clone()
    }

    /// Stops the lcores, undoes the kernel setup, closes the ports (the
    /// TAP interface goes with its port) and cleans the EAL up.
    /// Stops the node (what dropping it does), and says so.
    pub fn shutdown(self) {
        drop(self);
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_what_refused_it() {
        let e = NodeError::Refused {
            key: "tap.direct_egress",
            value: "true".into(),
            refusal: "the kernel does not take the tc program on herd0: EPERM".into(),
        };
        assert_eq!(
            e.to_string(),
            "tap.direct_egress = true, but the kernel does not take the tc program on herd0: EPERM"
        );
        let e = NodeError::system("the TAP herd0")(std::io::Error::other("no such device"));
        assert_eq!(e.to_string(), "the TAP herd0: no such device");
        assert_eq!(
            NodeError::TooFewLcores {
                workers: 1,
                queues: 2
            }
            .to_string(),
            "1 worker lcores for 2 queues"
        );
        assert!(NodeError::NoVhostNet.to_string().contains(VHOST_NET));
    }
}
