//! A node's start, in the order its parts depend on each other: the EAL,
//! the NIC, the kernel's port, the kernel's way out, the kernel set-up,
//! the lcores. Whatever a step set up is in the [`Teardown`] before the
//! next step runs, so a start that fails half-way undoes it all.

use super::*;

/// The kernel's way out of the node: through the lcores, straight out of
/// the NIC's interface (the direct egress), or both (the egress balance).
struct Egress {
    direct: Option<Arc<DirectEgress>>,
    balance: Option<Arc<EgressBalance>>,
    /// The lcores send (some of) the kernel's frames.
    lcores_send: bool,
    /// Each lcore's packet socket for large segments, whole.
    packet_txs: Vec<Option<PacketTx>>,
}

/// What every lcore shares.
struct Shared {
    nic: Arc<Port>,
    kernel_port: KernelPort,
    pool: Arc<Mempool>,
    classifier: Arc<Classifier>,
    settings: Arc<LcoreSettings>,
    counters: Arc<[LcoreCounters]>,
    switches: Arc<[TableSwitch]>,
    flow_gauges: Arc<[FlowGauges]>,
    policy: IdlePolicy,
}

impl RunningNode {
    /// Starts the node with bucket table `table`: EAL, ports, kernel
    /// side, lcores.
    pub fn start(config: Config, table: BucketTable) -> Result<RunningNode, NodeError> {
        let xdp_prog = prefilter_object(&config)?;
        // The PMD loads the program from the file when its queues are set
        // up; the file goes when this start ends, however it ends.
        let _xdp_file = xdp_prog.clone().map(RemoveOnDrop);
        let mut t = Teardown::begin(&config, xdp_prog.as_deref())?;
        let workers = t.eal().worker_lcores();
        let queues = config.port.queues;
        if workers.len() < usize::from(queues) {
            return Err(NodeError::TooFewLcores {
                workers: workers.len(),
                queues,
            });
        }
        let pool = Arc::new(Mempool::new(t.eal(), "herd_mbufs", config.dpdk.mbufs)?);
        t.pool = Some(Arc::clone(&pool));
        let nic = start_nic(&mut t, &config, &pool)?;
        let xdp_mode = match (&xdp_prog, config.port.interface()) {
            (Some(_), Some(nic_if)) => Some(place_prefilter(&config, nic_if.as_str(), &mut t)?),
            _ => None,
        };
        let nic_mac = nic.mac()?;
        let kernel_port = open_kernel_port(&mut t, &config, &pool, nic_mac)?;
        let mut egress = kernel_egress(&config, &kernel_port)?;
        set_up_kernel(&mut t, &config, xdp_prog.is_some(), nic_mac)?;
        if std::env::var_os(FAIL_AFTER_KERNEL_SETUP).is_some() {
            return Err(NodeError::FailedOnPurpose);
        }

        let classifier = Arc::new(classifier(&config, nic_mac));
        let policy = IdlePolicy::from_config(&config.polling);
        let shared = Shared {
            settings: Arc::new(LcoreSettings::new(
                Arc::clone(&classifier),
                policy,
                Arc::clone(&t.doorbells),
            )),
            counters: (0..queues).map(|_| LcoreCounters::default()).collect(),
            switches: (0..queues).map(|_| TableSwitch::default()).collect(),
            flow_gauges: (0..queues).map(|_| FlowGauges::default()).collect(),
            nic,
            kernel_port,
            pool,
            classifier,
            policy,
        };
        let xdp_maps = match &xdp_prog {
            Some(_) => Some(Arc::new(
                prefilter_maps(&shared.classifier)
                    .map_err(NodeError::system("the XDP pre-filter"))?,
            )),
            None => None,
        };
        let nic_sockets = nic_sockets(&config);
        let guard = ingress_guard(
            &config,
            &shared.classifier,
            &nic_sockets,
            matches!(shared.kernel_port, KernelPort::Tap(_)),
            xdp_maps.as_deref(),
        )
        .map(Arc::new);
        keep_own_frames_out(&config, &nic_sockets, guard.as_deref(), &egress);
        let prefilter = match (&xdp_maps, &guard) {
            (Some(m), _) => Some(Arc::clone(m)),
            (None, Some(g)) if g.filters_sockets() => Some(Arc::clone(g.maps())),
            _ => None,
        };
        let publisher = TablePublisher::with_mirror(
            table,
            on_publish(prefilter.clone(), Arc::clone(&t.doorbells)),
        );
        let lcores: Vec<u32> = workers.into_iter().take(usize::from(queues)).collect();
        for (q, &lcore) in lcores.iter().enumerate() {
            let worker = worker(
                &t,
                &config,
                &shared,
                &publisher,
                &nic_sockets,
                &mut egress,
                q,
            );
            t.eal().launch(lcore, move || worker.run())?;
        }
        log_started(&config, &shared.nic, nic_mac);
        let ring_drops = Arc::new(RingDrops::of(&config, &nic_sockets));
        Ok(RunningNode {
            teardown: t,
            parts: StatusReader {
                config: Arc::new(config),
                nic: shared.nic,
                kernel: shared.kernel_port,
                nic_mac,
                lcores,
                counters: shared.counters,
                switches: shared.switches,
                flow_gauges: shared.flow_gauges,
                publisher,
                prefilter,
                guard,
                ring_drops,
                xdp_mode,
                direct_egress: egress.direct,
                egress_balance: egress.balance,
                settings: shared.settings,
            },
        })
    }
}

fn log_started(config: &Config, nic: &Port, nic_mac: [u8; 6]) {
    tracing::info!(
        node = config.node.id,
        nic = %nic.name(),
        mac = %mac_string(&nic_mac),
        queues = config.port.queues,
        "fastpath started"
    );
    let marked = dpdk::close_on_exec_all();
    tracing::debug!(marked, "descriptors marked close-on-exec");
}

impl RingDrops {
    /// The port's ring drops: read from its sockets on af_packet.
    fn of(config: &Config, nic_sockets: &[Waker]) -> RingDrops {
        RingDrops {
            sockets: if config.port.driver() == Driver::AfPacket {
                nic_sockets.to_vec()
            } else {
                Vec::new()
            },
            sum: AtomicU64::new(0),
        }
    }
}

impl Teardown {
    /// The lcores' doorbells and the EAL: the first of a start.
    fn begin(config: &Config, xdp_prog: Option<&std::path::Path>) -> Result<Teardown, NodeError> {
        let doorbells = Doorbells::new(usize::from(config.port.queues))
            .map_err(NodeError::system("the lcores' doorbells (eventfd)"))?;
        Ok(Teardown {
            stop: Arc::new(AtomicBool::new(false)),
            doorbells: Arc::new(doorbells),
            kernel: Mutex::new(KernelSetup::default()),
            xdp_generic: None,
            nic: None,
            promiscuous: false,
            kernel_port: None,
            pool: None,
            eal: Some(Eal::init(&eal_args(config, xdp_prog))?),
        })
    }
}

/// The NIC's port, started with its queues, in promiscuous mode.
fn start_nic(
    t: &mut Teardown,
    config: &Config,
    pool: &Arc<Mempool>,
) -> Result<Arc<Port>, NodeError> {
    let nic = Arc::new(t.eal().port_by_name(&nic_port_name(config))?);
    t.nic = Some(Arc::clone(&nic));
    start_port(&nic, config, pool)?;
    nic.enable_promiscuous()?;
    t.promiscuous = true;
    Ok(nic)
}

/// Starts a port with the config's queues and descriptors (the NIC's,
/// and a DPDK port on the kernel side alike).
pub(super) fn start_port(port: &Port, config: &Config, pool: &Mempool) -> Result<(), NodeError> {
    Ok(port.configure_and_start(
        pool,
        config.port.queues,
        config.port.rx_descriptors,
        config.port.tx_descriptors,
    )?)
}

/// The kernel's side of the node: Herd's own TAP, virtio-user, or a
/// DPDK vdev. It has the NIC's MAC, so what the kernel sends leaves with
/// the NIC's own MAC and peers see one MAC per node.
fn open_kernel_port(
    t: &mut Teardown,
    config: &Config,
    pool: &Arc<Mempool>,
    nic_mac: [u8; 6],
) -> Result<KernelPort, NodeError> {
    let queues = config.port.queues;
    Ok(match (&config.tap.vdev, config.tap.backend) {
        (Some(v), _) => {
            let port = Arc::new(t.eal().port_by_name(&vdev_name(v))?);
            t.kernel_port = Some(Arc::clone(&port));
            start_port(&port, config, pool)?;
            KernelPort::Port(port)
        }
        (None, TapBackend::VirtioUser) => {
            let port = Arc::new(virtio_user(t.eal(), config, pool, nic_mac)?);
            t.kernel_port = Some(Arc::clone(&port));
            KernelPort::Port(port)
        }
        (None, TapBackend::Tap) => KernelPort::Tap(Arc::new(
            Tap::open(&config.tap.name, queues, nic_mac, config.tap.offloads)
                .map_err(NodeError::system(format!("the TAP {}", config.tap.name)))?,
        )),
    })
}

/// The kernel's way out, set before the TAP comes up: from its first
/// frame, what the kernel sends leaves through the NIC's interface where
/// the direct egress runs. On af_packet the lcores read every frame
/// anyway: unless the config says otherwise, they also send the kernel's
/// while they have room (the egress balance).
fn kernel_egress(config: &Config, kernel_port: &KernelPort) -> Result<Egress, NodeError> {
    let direct = match kernel_port {
        KernelPort::Tap(_) => direct_egress(config)?.map(Arc::new),
        KernelPort::Port(_) => None,
    };
    let balance = match &direct {
        Some(d)
            if config.port.driver() == Driver::AfPacket && config.tap.direct_egress.is_none() =>
        {
            Some(Arc::new(
                EgressBalance::new(d.clone(), usize::from(config.port.queues))
                    .map_err(NodeError::system("the egress balance's map"))?,
            ))
        }
        _ => None,
    };
    let lcores_send = direct.is_none() || balance.is_some();
    let packet_txs = (0..config.port.queues)
        .map(|_| {
            if lcores_send {
                packet_tx(config)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Egress {
        direct,
        balance,
        lcores_send,
        packet_txs,
    })
}

/// The kernel set-up (config's `tap.configure_kernel`): the NIC's own
/// interface silenced, the frames the pre-filter passes let in, the TAP's
/// addresses and routes, the VIPs.
fn set_up_kernel(
    t: &mut Teardown,
    config: &Config,
    prefilter: bool,
    nic_mac: [u8; 6],
) -> Result<(), NodeError> {
    if !config.tap.configure_kernel || config.tap.vdev.is_some() {
        return Ok(());
    }
    let kernel = t.kernel.get_mut().unwrap_or_else(|e| e.into_inner());
    if let Some(nic_if) = config.port.interface() {
        kernel.silence_nic(nic_if.as_str(), config.port.driver() == Driver::AfPacket)?;
        if prefilter {
            kernel.host_passed_frames(nic_if.as_str(), &mac_string(&nic_mac))?;
        }
    }
    kernel.configure_tap(&config.tap, &config.farm.vips)?;
    Ok(())
}

/// The NIC's queue sockets (af_packet, af_xdp), one per queue: they wake
/// idle lcores. None where they are not found (then lcores wake on the
/// TAP and on time).
fn nic_sockets(config: &Config) -> Vec<Waker> {
    let Some(i) = config.port.interface() else {
        return Vec::new();
    };
    let queues = config.port.queues;
    let found = tap::port_sockets(
        tap::interface_index(i.as_str()),
        config.port.driver() == Driver::AfXdp,
    );
    if found.len() == usize::from(queues) {
        found
    } else {
        tracing::warn!(
            found = found.len(),
            queues,
            "the NIC's queue sockets were not found: idle lcores wake on the TAP and on time only"
        );
        Vec::new()
    }
}

/// An af_packet socket also sees what the node sends through the packet
/// socket or the direct egress; an XDP socket sees only what arrives. The
/// guard's socket filter drops those frames too; without it, the sockets
/// are told to ignore outgoing frames.
fn keep_own_frames_out(
    config: &Config,
    nic_sockets: &[Waker],
    guard: Option<&prefilter::Guard>,
    egress: &Egress,
) {
    if config.port.driver() == Driver::AfPacket
        && !guard.is_some_and(|g| g.filters_sockets())
        && (egress.packet_txs.iter().any(Option::is_some) || egress.direct.is_some())
    {
        for s in nic_sockets {
            if let Err(e) = tap::ignore_outgoing(*s) {
                tracing::warn!("the NIC's socket sees what Herd sends: {e}");
            }
        }
    }
}

/// Queue `q`'s lcore: what wakes it and what it works with.
fn worker(
    t: &Teardown,
    config: &Config,
    shared: &Shared,
    publisher: &TablePublisher,
    nic_sockets: &[Waker],
    egress: &mut Egress,
    q: usize,
) -> Worker {
    let mut wakers: Vec<Waker> = nic_sockets.get(q).copied().into_iter().collect();
    // With the direct egress alone, nothing waits in the TAP's queues.
    let kernel_reads = egress.lcores_send;
    let kernel_wakes = match (&shared.kernel_port, kernel_reads) {
        (_, false) => true,
        (KernelPort::Tap(tap), true) => {
            wakers.push(tap.queue(q as u16).waker());
            true
        }
        // A DPDK port on the kernel side has nothing to wait on.
        (KernelPort::Port(_), true) => false,
    };
    let nic_wakes = nic_sockets.get(q).is_some();
    wakers.push(t.doorbells.get(q).waker());
    Worker {
        queue: q as u16,
        nic: Arc::clone(&shared.nic),
        kernel: shared.kernel_port.clone(),
        pool: Arc::clone(&shared.pool),
        classifier: Arc::clone(&shared.classifier),
        settings: Arc::clone(&shared.settings),
        settings_generation: 0,
        table: publisher.reader(),
        counters: Arc::clone(&shared.counters),
        switches: Arc::clone(&shared.switches),
        flow_gauges: Arc::clone(&shared.flow_gauges),
        flows: FlowTracker::new(
            config.continuity.max_flows as usize,
            config.continuity.flow_idle_timeout_ms,
        ),
        stop: Arc::clone(&t.stop),
        policy: shared.policy,
        wakeup: if nic_wakes && kernel_wakes {
            Wakeup::Everything
        } else {
            Wakeup::Timer
        },
        nic_wakes,
        doorbells: Arc::clone(&t.doorbells),
        wakers,
        packet_tx: egress.packet_txs[q].take(),
        kernel_reads,
        egress_balance: egress.balance.clone(),
        gro: config.tap.offloads && config.tap.gro,
    }
}
