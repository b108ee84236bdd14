//! The optional kernel features a start sets up beside the ports: the
//! XDP pre-filter (af_xdp), the ingress guard (af_packet, af_xdp), the
//! direct egress, the packet socket for large segments, virtio-user;
//! each required, refused or absent as the config says.

use super::*;

/// The kernel's vhost-net, which virtio-user needs.
pub(super) const VHOST_NET: &str = "/dev/vhost-net";

/// The exception path as DPDK's virtio-user over the kernel's vhost-net
/// (`tap.backend = "virtio-user"`): a kernel TAP interface named
/// `tap.name`, fed by vhost-net's kernel thread rather than by the lcore.
pub(super) fn virtio_user(
    eal: &Eal,
    config: &Config,
    pool: &Mempool,
    mac: [u8; 6],
) -> Result<Port, NodeError> {
    if !std::path::Path::new(VHOST_NET).exists() {
        return Err(NodeError::NoVhostNet);
    }
    eal.create_vdev("virtio_user0", &virtio_user_args(config, mac))?;
    let port = eal.port_by_name("virtio_user0")?;
    super::start::start_port(&port, config, pool)?;
    Ok(port)
}

/// The packet socket that sends large segments whole on an `af_packet` or
/// `af_xdp` port (the kernel keeps the interface, and its TSO, in both)
/// whose TAP has offloads; other ports cut them in the fastpath.
pub(super) fn packet_tx(config: &Config) -> Result<Option<PacketTx>, NodeError> {
    match (config.port.interface(), &config.tap.vdev) {
        (Some(i), None) if config.tap.offloads => PacketTx::open(tap::interface_index(i.as_str()))
            .map(Some)
            .map_err(NodeError::system(format!("a packet socket on {i}"))),
        _ => Ok(None),
    }
}

/// The XDP pre-filter's object written where the af_xdp PMD loads it
/// from (`xdp_prog=`), when the config wants the pre-filter and the kernel
/// accepts the program (checked by loading it here first: the EAL cannot
/// be started twice). Unset `port.xdp_prefilter`: off, with a log line,
/// where the kernel refuses it; `true`: the kernel's refusal fails the
/// start.
pub(super) fn prefilter_object(config: &Config) -> Result<Option<std::path::PathBuf>, NodeError> {
    let Device::AfXdp {
        interface: nic,
        prefilter: wanted,
        ..
    } = &config.port.device
    else {
        return Ok(None);
    };
    if *wanted == Some(false) {
        return Ok(None);
    }
    let required = *wanted == Some(true);
    {
        match crate::setup::detach_stale_xdp(nic.as_str(), prefilter::PROGRAM) {
            Ok(true) => tracing::warn!("detached the XDP pre-filter a crashed run left on {nic}"),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not check {nic} for a stale XDP program: {e}"),
        }
    }
    let checked = dpdk::bpf::Object::load(prefilter::OBJECT).and_then(|probe| {
        drop(probe);
        let name = format!(
            "herd-xdp-prefilter-{}.o",
            config
                .dpdk
                .file_prefix
                .clone()
                .unwrap_or_else(|| std::process::id().to_string())
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, prefilter::OBJECT)?;
        Ok(path)
    });
    match checked {
        Ok(path) => Ok(Some(path)),
        Err(e) if required => Err(NodeError::Refused {
            key: "port.xdp_prefilter",
            value: "true".into(),
            refusal: format!("the kernel does not accept the XDP program: {e}"),
        }),
        Err(e) => {
            tracing::warn!("no XDP pre-filter (the kernel does not accept the program: {e}); the fastpath decides every frame");
            Ok(None)
        }
    }
}

/// Puts the pre-filter the PMD attached (in native mode) where
/// `port.xdp_mode` wants it, unset: generic on a veth, native elsewhere
/// (see [`XdpMode`]). A mode the config names is required; the default
/// falls back to native, with a log line.
pub(super) fn place_prefilter(
    config: &Config,
    nic: &str,
    t: &mut Teardown,
) -> Result<XdpMode, NodeError> {
    let mode = match config.port.xdp_mode() {
        Some(m) => m,
        None => match crate::setup::interface_kind(nic) {
            Ok(kind) => XdpMode::for_interface_kind(kind.as_deref()),
            Err(e) => {
                tracing::warn!("{e}: the XDP pre-filter stays in native mode");
                XdpMode::Native
            }
        },
    };
    let ifindex = tap::interface_index(nic);
    if mode == XdpMode::Native {
        // A driver without native XDP got the program in generic mode.
        return match dpdk::bpf::xdp_native_attached(ifindex) {
            Ok(true) => Ok(XdpMode::Native),
            Ok(false) if config.port.xdp_mode().is_some() => Err(NodeError::Refused {
                key: "port.xdp_mode",
                value: "\"native\"".into(),
                refusal: format!(
                    "{nic}'s driver has no native XDP (unset, the pre-filter runs in generic mode)"
                ),
            }),
            Ok(false) => Ok(XdpMode::Generic),
            Err(e) => {
                tracing::warn!(
                    "could not ask the kernel where the XDP pre-filter runs on {nic}: {e}"
                );
                Ok(mode)
            }
        };
    }
    match dpdk::bpf::move_xdp_to_generic(ifindex) {
        Ok(a) => {
            t.xdp_generic = Some(a);
            tracing::info!("the XDP pre-filter runs in generic mode on {nic}");
            Ok(XdpMode::Generic)
        }
        Err(e) if config.port.xdp_mode().is_some() => Err(NodeError::Refused {
            key: "port.xdp_mode",
            value: "\"generic\"".into(),
            refusal: format!(
                "the kernel does not take the XDP pre-filter in generic mode on {nic}: {e}"
            ),
        }),
        Err(e) => {
            tracing::warn!("the XDP pre-filter stays in native mode on {nic} (generic mode: {e})");
            Ok(XdpMode::Native)
        }
    }
}

/// The TAP's direct egress (`tap.direct_egress`, see [`crate::egress`])
/// when the config wants it and the port has a kernel interface to send
/// through. Unset: on (`af_xdp`, `af_packet`), with a log line where the kernel
/// refuses it; `true`: the kernel's refusal fails the start.
pub(super) fn direct_egress(config: &Config) -> Result<Option<DirectEgress>, NodeError> {
    let nic = match config.port.interface() {
        Some(nic) if config.tap.vdev.is_none() && config.tap.backend == TapBackend::Tap => {
            nic.as_str()
        }
        _ => return Ok(None),
    };
    let wanted = config.tap.direct_egress.unwrap_or(true);
    if !wanted {
        return Ok(None);
    }
    match DirectEgress::attach(
        tap::interface_index(&config.tap.name),
        tap::interface_index(nic),
    ) {
        Ok(d) => Ok(Some(d)),
        Err(e) if config.tap.direct_egress == Some(true) => Err(NodeError::Refused {
            key: "tap.direct_egress",
            value: "true".into(),
            refusal: format!(
                "the kernel does not take the tc program on {}: {e}",
                config.tap.name
            ),
        }),
        Err(e) => {
            tracing::warn!(
                "no direct egress (the kernel does not take the tc program on {}: {e}); what the kernel sends goes through the fastpath",
                config.tap.name
            );
            Ok(None)
        }
    }
}

/// A file removed when dropped.
pub(super) struct RemoveOnDrop(pub(super) std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The maps of the pre-filter the PMD loaded, configured for `classifier`.
pub(super) fn prefilter_maps(classifier: &Classifier) -> std::io::Result<prefilter::Maps> {
    let maps = prefilter::Maps::in_process()?;
    maps.configure(classifier)?;
    Ok(maps)
}

/// The drops of an `af_packet` port's full rings: each read of a
/// socket's count resets it, so every reader adds to one sum.
pub(super) struct RingDrops {
    pub(super) sockets: Vec<Waker>,
    pub(super) sum: AtomicU64,
}

impl RingDrops {
    /// The drops so far (`None`: no such sockets).
    pub(super) fn read(&self) -> Option<u64> {
        if self.sockets.is_empty() {
            return None;
        }
        for s in &self.sockets {
            match tap::packet_socket_drops(*s) {
                Ok(n) => {
                    self.sum.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("the port's ring drops: {e}"),
            }
        }
        Some(self.sum.load(Ordering::Relaxed))
    }
}

/// Loads the ingress guard (`bpf/guard.c`) for an `af_packet` or `af_xdp`
/// port: on af_packet its socket filter goes on `sockets` (other nodes'
/// buckets never reach the rings); with membership and Herd's own TAP its
/// tc program takes peers' heartbeats from the NIC's interface into the
/// TAP, apart from the data (`xdp`: the pre-filter's maps, which then
/// pass heartbeats instead of sending them to the lcore). Whatever fails
/// is logged and left to the fastpath, as without the guard.
pub(super) fn ingress_guard(
    config: &Config,
    classifier: &Classifier,
    sockets: &[Waker],
    own_tap: bool,
    xdp: Option<&prefilter::Maps>,
) -> Option<prefilter::Guard> {
    let nic = config.port.interface()?.as_str();
    let mut guard = match prefilter::LoadedGuard::load().and_then(|g| {
        g.maps().configure(classifier)?;
        Ok(g)
    }) {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("the ingress guard did not load ({e}): the fastpath sees every frame and every heartbeat");
            return None;
        }
    };
    // The tc program only sorts heartbeats: with static ownership there
    // are none, and it would cost every arriving frame for nothing.
    let sorts_heartbeats = config.farm.ownership == config::Ownership::Membership && own_tap;
    if sorts_heartbeats {
        if let Err(e) = guard.attach_ingress(
            tap::interface_index(nic),
            tap::interface_index(&config.tap.name),
        ) {
            tracing::warn!(
                "no tc program on {nic}'s ingress: heartbeats take the fastpath's way ({e})"
            );
        }
        let local = config.this_node().heartbeat.clone();
        let peers: Vec<IpAddr> = config
            .peers()
            .flat_map(|n| n.heartbeat.iter().map(|a| a.ip()))
            .collect();
        match guard.take_heartbeats(&local, &peers, xdp) {
            Ok(()) => tracing::info!(
                "peers' heartbeats go from {nic} to the TAP in the kernel, apart from the data"
            ),
            Err(e) => tracing::warn!("peers' heartbeats take the fastpath's way ({e})"),
        }
    }
    if config.port.driver() == Driver::AfPacket {
        if let Err(e) = guard.filter(sockets) {
            tracing::warn!("the port's sockets copy every frame: no socket filter ({e})");
        }
    }
    Some(guard.running())
}

/// What follows each published table: the pre-filter takes it, then the
/// lcores are woken to switch (an idle one would switch at its next
/// packet: the same decisions, but its switch time would read late). If
/// the pre-filter's maps cannot take a table, the pre-filter leaves every
/// frame to the fastpath rather than decide by an old table.
pub(super) fn on_publish(
    prefilter: Option<Arc<prefilter::Maps>>,
    doorbells: Arc<Doorbells>,
) -> Mirror {
    Arc::new(move |table: &BucketTable| {
        if let Some(maps) = &prefilter {
            if let Err(e) = maps.publish(table) {
                tracing::error!("the XDP pre-filter could not take table {}: {e}; it now leaves every frame to the fastpath", table.generation());
                if let Err(e) = maps.defer_all() {
                    tracing::error!("the XDP pre-filter could not be set aside either: {e}");
                }
            }
        }
        doorbells.ring_all();
    })
}
