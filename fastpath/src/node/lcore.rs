//! The lcore: one per rx queue, polling its NIC queue and its TAP queue,
//! deciding every frame, and idling adaptively; the settings a reload
//! swaps under it.

use super::*;

/// What a reload may change in the lcores: the classifier they decide
/// with and their idle policy, each replaced whole. An lcore compares the
/// generation once per poll (one atomic load) and takes both when it
/// changed; a change rings the lcores' doorbells, so an idle one takes it
/// at once.
pub struct LcoreSettings {
    pub(super) classifier: arc_swap::ArcSwap<Classifier>,
    pub(super) policy: arc_swap::ArcSwap<IdlePolicy>,
    pub(super) generation: AtomicU64,
    pub(super) doorbells: Arc<Doorbells>,
}

impl LcoreSettings {
    pub(super) fn new(
        c: Arc<Classifier>,
        policy: IdlePolicy,
        doorbells: Arc<Doorbells>,
    ) -> LcoreSettings {
        LcoreSettings {
            classifier: arc_swap::ArcSwap::new(c),
            policy: arc_swap::ArcSwap::new(Arc::new(policy)),
            generation: AtomicU64::new(0),
            doorbells,
        }
    }

    pub fn classifier(&self) -> Arc<Classifier> {
        self.classifier.load_full()
    }

    pub fn policy(&self) -> IdlePolicy {
        **self.policy.load()
    }

    pub(super) fn replace_classifier(&self, c: Arc<Classifier>) {
        self.classifier.store(c);
        self.generation.fetch_add(1, Ordering::Release);
        self.doorbells.ring_all();
    }

    pub(super) fn replace_policy(&self, p: IdlePolicy) {
        self.policy.store(Arc::new(p));
        self.generation.fetch_add(1, Ordering::Release);
        self.doorbells.ring_all();
    }
}

/// One lcore's share of the work: one rx queue of the NIC and of the TAP.
pub(super) struct Worker {
    pub(super) queue: u16,
    pub(super) nic: Arc<Port>,
    pub(super) kernel: KernelPort,
    pub(super) pool: Arc<Mempool>,
    pub(super) classifier: Arc<Classifier>,
    /// Where a reload puts a new classifier and idle policy, and the
    /// generation of ours.
    pub(super) settings: Arc<LcoreSettings>,
    pub(super) settings_generation: u64,
    pub(super) table: TableReader,
    pub(super) counters: Arc<[LcoreCounters]>,
    pub(super) switches: Arc<[TableSwitch]>,
    pub(super) flow_gauges: Arc<[FlowGauges]>,
    /// Flows of the buckets moving in or out, this lcore's only.
    pub(super) flows: FlowTracker,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) policy: IdlePolicy,
    /// What ends an idle wait: this lcore's NIC queue socket and TAP
    /// queue where it has them, and its doorbell, always last.
    pub(super) wakers: Vec<Waker>,
    /// Whether those are all its sources of work.
    pub(super) wakeup: Wakeup,
    /// A packet on the NIC ends a wait (its queue's socket is a waker).
    pub(super) nic_wakes: bool,
    /// The lcores' doorbells (this one's is `self.queue`'s).
    pub(super) doorbells: Arc<Doorbells>,
    /// An `af_packet` port's way out for large segments, whole.
    pub(super) packet_tx: Option<PacketTx>,
    /// Whether the kernel's frames come through this lcore (not when the
    /// TAP's direct egress sends them).
    pub(super) kernel_reads: bool,
    /// The egress balance, where it runs: this lcore measures its load.
    pub(super) egress_balance: Option<Arc<EgressBalance>>,
    /// Merge the NIC's TCP segments before the TAP (`tap.gro`).
    pub(super) gro: bool,
}

impl Worker {
    /// Takes the newest classifier and idle policy (a reload changed the
    /// VIPs, the rules or the polling).
    pub(super) fn take_settings(&mut self) {
        self.settings_generation = self.settings.generation.load(Ordering::Acquire);
        self.classifier = self.settings.classifier();
        self.policy = self.settings.policy();
    }

    /// The lcore's loop, until the node stops: each poll takes a burst
    /// from the NIC, decides it, hands the kernel its share, takes the
    /// kernel's frames, sends, and then polls again or waits.
    pub(super) fn run(mut self) {
        dpdk::set_timer_slack_ns(1_000);
        self.take_settings();
        let mut st = LoopState::new(self.policy, self.wakeup);
        while !self.stop.load(Ordering::Relaxed) {
            let poll_start = self.egress_balance.is_some().then(std::time::Instant::now);
            if self.settings.generation.load(Ordering::Acquire) != self.settings_generation {
                self.take_settings();
                st.backoff = Backoff::new(self.policy, self.wakeup);
            }
            let mut c = BurstCounts {
                polls: 1,
                ..Default::default()
            };
            let n = self.nic.rx_burst(self.queue, &mut st.rx);
            if n > 0 {
                self.decide_burst(&mut st, &mut c);
                self.to_kernel(&mut st, &mut c);
            }
            let k = self.take_from_kernel(&mut st, &mut c, n);
            c.from_kernel += k as u64;
            c.tx_failed += self.nic.tx_burst(self.queue, &mut st.to_nic) as u64;
            let poll_end = self.measure_load(&mut st, poll_start, n + k > 0);
            self.idle(&mut st, c, n, k, poll_end);
        }
    }

    /// Decides the burst in `st.rx`: the VIP's frames to the kernel
    /// (owned) or dropped, ARP and NDP answered, the rest to the kernel.
    #[inline(always)]
    fn decide_burst(&mut self, st: &mut LoopState, c: &mut BurstCounts) {
        let q = usize::from(self.queue);
        let own_mac = self.classifier.own_mac;
        let table = self.table.current();
        note_switch(&self.switches[q], table, &mut st.generation);
        // Classify the whole burst first: the packets' hash chains then
        // overlap, and the verdict's unpredictable branch is taken after
        // the work instead of in the middle of it.
        let mut verdicts = [Verdict::ToKernel; BURST];
        if let Some(now_ms) = st.upkeep.tick(&mut self.flows, table, &self.flow_gauges[q]) {
            // Buckets move: their packets are decided flow by flow.
            for (v, m) in verdicts.iter_mut().zip(st.rx.iter()) {
                *v = self.classifier.classify_tracked(
                    m.data(),
                    table,
                    Some((&mut self.flows, now_ms)),
                );
            }
        } else {
            for (v, m) in verdicts.iter_mut().zip(st.rx.iter()) {
                *v = self.classifier.classify(m.data(), table);
            }
        }
        c.rx_packets += st.rx.len() as u64;
        let out = &mut Sorted {
            to_tap: &mut st.to_tap,
            to_nic: &mut st.to_nic,
            dropped: &mut st.dropped,
        };
        for (mut m, verdict) in st.rx.drain(..).zip(verdicts) {
            // VIP traffic of an owned bucket or of another node's (nearly
            // all of it): sorted without a branch on which (see
            // push_either; `|`, not `||`, for the same reason). The own
            // MAC is written into both: a dropped frame's bytes no longer
            // matter.
            let accept = verdict == Verdict::Accept;
            if accept | (verdict == Verdict::Drop(DropReason::NotOwned)) {
                if let Some(dst) = m.data_mut().get_mut(..6) {
                    dst.copy_from_slice(&own_mac);
                }
                c.accepted += u64::from(accept);
                c.dropped_not_owned += u64::from(!accept);
                dpdk::push_either(m, out.to_tap, out.dropped, accept);
                continue;
            }
            self.sort_other(m, verdict, out, c);
        }
        dpdk::free_bulk(&mut st.dropped);
    }

    /// A frame that is neither an owned nor another node's VIP frame:
    /// to the kernel, answered (ARP, NDP) or dropped by its reason.
    #[inline(always)]
    fn sort_other(&self, mut m: Mbuf, verdict: Verdict, st: &mut Sorted<'_>, c: &mut BurstCounts) {
        let own_mac = self.classifier.own_mac;
        match verdict {
            Verdict::ToKernel => {
                c.to_kernel += 1;
                st.to_tap.push(m);
            }
            // Sorted by decide_burst; the arm keeps this match whole.
            Verdict::Accept => {
                c.accepted += 1;
                m.data_mut()[..6].copy_from_slice(&own_mac);
                st.to_tap.push(m);
            }
            Verdict::ArpReply { arp_offset, vip } => {
                let v = self.classifier.vips4[usize::from(vip)];
                if reply::arp_reply_in_place(
                    m.data_mut(),
                    usize::from(arp_offset),
                    own_mac,
                    v.address,
                    v.mac,
                ) {
                    c.arp_replies += 1;
                    st.to_nic.push(m);
                } else {
                    c.dropped_malformed += 1;
                }
            }
            Verdict::NdpAdvert { ipv6_offset, vip } => {
                let v = self.classifier.vips6[usize::from(vip)];
                match reply::ndp_advert_in_place(
                    m.room_mut(),
                    usize::from(ipv6_offset),
                    own_mac,
                    v.address,
                    v.mac,
                ) {
                    Some(len) if m.set_len(len) => {
                        c.ndp_replies += 1;
                        st.to_nic.push(m);
                    }
                    _ => {
                        c.dropped_malformed += 1;
                        st.dropped.push(m);
                    }
                }
            }
            Verdict::Drop(reason) => {
                match reason {
                    DropReason::NotOwned => c.dropped_not_owned += 1,
                    DropReason::NoRule => c.dropped_no_rule += 1,
                    DropReason::Malformed(_) => c.dropped_malformed += 1,
                    DropReason::NotForUs => c.dropped_not_for_us += 1,
                    DropReason::NotResponder => c.dropped_not_responder += 1,
                }
                st.dropped.push(m);
            }
        }
    }

    /// Hands the kernel what the burst gave it: through Herd's TAP (with
    /// a flow's segments merged, `tap.gro`) or a DPDK port.
    #[inline(always)]
    fn to_kernel(&self, st: &mut LoopState, c: &mut BurstCounts) {
        match &self.kernel {
            KernelPort::Tap(tap) => {
                let queue = tap.queue(self.queue);
                let mut write = |hdr: &VnetHdr, parts: &[&[u8]]| {
                    let written = match parts {
                        [frame] => queue.write(&hdr.to_bytes(), frame),
                        _ => {
                            c.kernel_merged += parts.len() as u64;
                            queue.write_gathered(&hdr.to_bytes(), parts)
                        }
                    };
                    if written.is_err() {
                        c.kernel_frames_lost += parts.len() as u64;
                    }
                };
                if self.gro && tap.offloads() {
                    // Segments of a flow merged (GRO), verified first; the
                    // rest unflagged: the kernel verifies every checksum it
                    // was not told of.
                    for m in st.to_tap.drain(..) {
                        st.merger.push(m, &mut write);
                    }
                    st.merger.flush(&mut write);
                } else {
                    for m in st.to_tap.drain(..) {
                        write(&VnetHdr::default(), &[m.data()]);
                    }
                }
            }
            KernelPort::Port(p) => c.tx_failed += p.tx_burst(self.queue, &mut st.to_tap) as u64,
        }
    }

    /// Takes the kernel's frames for the NIC into `st.to_nic`, when a
    /// read is due; returns how many it took.
    #[inline(always)]
    fn take_from_kernel(&self, st: &mut LoopState, c: &mut BurstCounts, n: usize) -> usize {
        let own_mac = self.classifier.own_mac;
        // An empty read of the kernel's queue is a system call (on Herd's
        // TAP): read it when this poll gave the kernel frames (its answers
        // are often queued at once), when the last read found some, and
        // otherwise every fourth poll (under a full NIC burst, only then).
        let gave = c.accepted + c.to_kernel > 0 && n < BURST;
        let due = self.kernel_reads && (gave || st.tap_found || st.polls_since_read >= 3);
        let k = match &self.kernel {
            _ if !due => 0,
            KernelPort::Tap(tap) => st.from_tap.receive(
                tap.queue(self.queue),
                &self.pool,
                &NicOut {
                    nic: &self.nic,
                    queue: self.queue,
                    own_mac: &own_mac,
                    packet_tx: self.packet_tx.as_ref(),
                },
                &mut st.to_nic,
                c,
            ),
            KernelPort::Port(p) => {
                let k = p.rx_burst(self.queue, &mut st.to_nic);
                // Whatever the kernel sent, it leaves with the NIC's own
                // MAC: never a VIP's MAC, which must stay unlearnable by
                // switches.
                let from = st.to_nic.len() - k;
                for m in &mut st.to_nic[from..] {
                    if let Some(src) = m.data_mut().get_mut(6..12) {
                        src.copy_from_slice(&own_mac);
                    }
                }
                k
            }
        };
        if due {
            st.tap_found = k > 0;
            st.polls_since_read = 0;
        } else {
            st.polls_since_read += 1;
        }
        k
    }

    /// The poll's end, when the egress balance measures the lcore's load
    /// (the spin then needs no second reading of the clock).
    #[inline(always)]
    fn measure_load(
        &self,
        st: &mut LoopState,
        poll_start: Option<std::time::Instant>,
        worked: bool,
    ) -> Option<std::time::Instant> {
        let (Some(from), Some(eb)) = (poll_start, &self.egress_balance) else {
            return None;
        };
        let to = std::time::Instant::now();
        if let Some(busy) = st.load.after_poll(from, to, worked) {
            eb.after_window(usize::from(self.queue), busy, to);
        }
        Some(to)
    }

    /// After a poll that took `n` frames from the NIC and `k` from the
    /// kernel: publishes its counts `c` and polls again or waits.
    #[inline(always)]
    fn idle(
        &mut self,
        st: &mut LoopState,
        mut c: BurstCounts,
        n: usize,
        k: usize,
        poll_end: Option<std::time::Instant>,
    ) {
        let q = usize::from(self.queue);
        // With a NIC that wakes a waiting lcore, only a VIP's traffic this
        // node serves and the kernel's frames keep it polling (a request
        // in flight: its reply, or the client's next packet, is near). A
        // burst this node only dropped sends it back to waiting, so the
        // nodes that are not the flow's owner leave the CPU to the one
        // that serves it; so does one it only answered (ARP, NDP) or
        // handed to the kernel for the node itself (heartbeats, every
        // peer's every 25 ms: a spin for each would cost a 64-node farm's
        // lcore a quarter of a CPU), whose answer, if any, wakes it from
        // the TAP.
        let served = k + c.accepted as usize;
        let idle = if self.nic_wakes && served == 0 && n > 0 && n < BURST {
            st.backoff.after_drops_only()
        } else {
            st.backoff
                .after_poll(n + k, || poll_end.unwrap_or_else(std::time::Instant::now))
        };
        match idle {
            Idle::Sleep(d) => {
                // An idle lcore still switches tables before it sleeps.
                let table = self.table.current();
                note_switch(&self.switches[q], table, &mut st.generation);
                st.upkeep.tick(&mut self.flows, table, &self.flow_gauges[q]);
                c.idle_sleeps += 1;
                // What this poll did is shown before the wait, which may
                // be long.
                self.counters[q].add(&c);
                // A packet from the wire or the kernel, or the doorbell,
                // ends it.
                let ready = wake::wait_readable(&self.wakers, d);
                let doorbell = 1 << (self.wakers.len() - 1);
                if ready & doorbell != 0 {
                    self.doorbells.get(q).clear();
                }
            }
            Idle::Poll => self.counters[q].add(&c),
        }
    }
}

/// Where a decided frame goes: to the kernel, to the NIC (an answer), or
/// to be freed.
struct Sorted<'a> {
    to_tap: &'a mut Vec<Mbuf>,
    to_nic: &'a mut Vec<Mbuf>,
    dropped: &'a mut Vec<Mbuf>,
}

/// What an lcore's loop keeps between polls: its burst buffers, its idle
/// policy's state, the table generation it last saw, its flow upkeep,
/// its TAP reader and GRO merger, when it last read the kernel's queue,
/// and its load for the egress balance.
struct LoopState {
    rx: Vec<Mbuf>,
    to_tap: Vec<Mbuf>,
    /// Room for the frames of a large segment from the kernel.
    to_nic: Vec<Mbuf>,
    dropped: Vec<Mbuf>,
    backoff: Backoff,
    generation: u64,
    upkeep: FlowUpkeep,
    from_tap: FromTap,
    merger: Merger<Mbuf>,
    tap_found: bool,
    polls_since_read: u32,
    load: balance::Load,
}

impl LoopState {
    fn new(policy: IdlePolicy, wakeup: Wakeup) -> Self {
        LoopState {
            rx: Vec::with_capacity(BURST),
            to_tap: Vec::with_capacity(BURST),
            to_nic: Vec::with_capacity(4 * BURST),
            dropped: Vec::with_capacity(BURST),
            backoff: Backoff::new(policy, wakeup),
            generation: 0,
            upkeep: FlowUpkeep::new(),
            from_tap: FromTap::new(),
            merger: Merger::default(),
            tap_found: false,
            polls_since_read: 0,
            load: balance::Load::new(),
        }
    }
}

// A run of the merger is one gathered TAP write.
const _: () = assert!(gro::MAX_SEGMENTS <= tap::MAX_PARTS);

/// The merger holds the NIC's frames for the kernel as mbufs.
impl gro::Frame for Mbuf {
    fn bytes(&self) -> &[u8] {
        self.data()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

/// What an lcore needs to take frames from Herd's TAP: a spare mbuf to
/// read into and room for the rest of a large segment.
pub(super) struct FromTap {
    pub(super) spare: Option<Mbuf>,
    /// A large segment, contiguous: its first bytes are copied here from
    /// the mbuf, the rest is read here directly.
    pub(super) segment: Vec<u8>,
}

impl FromTap {
    /// Room for the largest TSO segment (64 KiB of IP) and its headers.
    pub(super) const SEGMENT_ROOM: usize = 68 * 1024;

    pub(super) fn new() -> Self {
        FromTap {
            spare: None,
            segment: vec![0; Self::SEGMENT_ROOM],
        }
    }

    /// Reads up to a burst of frames from the kernel into `to_nic`,
    /// cutting large segments (or handing them whole to `packet_tx`),
    /// completing checksums and giving each the NIC's own MAC as source;
    /// sends to the NIC whenever `to_nic` is full. Returns the frames
    /// taken from the kernel.
    pub(super) fn receive(
        &mut self,
        tap: &TapQueue,
        pool: &Mempool,
        out: &NicOut<'_>,
        to_nic: &mut Vec<Mbuf>,
        c: &mut BurstCounts,
    ) -> usize {
        let mut taken = 0;
        for _ in 0..BURST {
            let Some(mut m) = self.spare.take().or_else(|| pool.alloc()) else {
                c.kernel_frames_lost += 1;
                break;
            };
            let mut raw_hdr = [0u8; VNET_HDR_LEN];
            let head_len = m.room_mut().len();
            let len = match tap.read(&mut raw_hdr, m.room_mut(), &mut self.segment[head_len..]) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    self.spare = Some(m);
                    break;
                }
                Err(_) => {
                    c.kernel_frames_lost += 1;
                    self.spare = Some(m);
                    break;
                }
            };
            let hdr = VnetHdr::parse(&raw_hdr);
            if len >= self.segment.len() {
                // Filled every byte offered: possibly cut short.
                c.kernel_frames_lost += 1;
                self.spare = Some(m);
                continue;
            }
            if hdr.gso_type == GSO_NONE {
                let ok = len <= head_len
                    && m.set_len(len)
                    && (hdr.flags & F_NEEDS_CSUM == 0
                        || offload::complete_checksum(m.data_mut(), &hdr).is_ok());
                if ok {
                    out.push(m, to_nic, c);
                    taken += 1;
                } else {
                    c.kernel_frames_lost += 1;
                    self.spare = Some(m);
                }
                continue;
            }
            c.kernel_segments += 1;
            let head = len.min(head_len);
            if let Some(packet_tx) = out.packet_tx {
                // What waits for the NIC goes first: a flow's frames
                // leave in order.
                c.tx_failed += out.nic.tx_burst(out.queue, to_nic) as u64;
                let room = m.room_mut();
                room[6..12].copy_from_slice(out.own_mac);
                match packet_tx.send(
                    &raw_hdr,
                    &room[..head],
                    &self.segment[head_len..len.max(head_len)],
                ) {
                    Ok(()) => taken += 1,
                    Err(_) => c.kernel_frames_lost += 1,
                }
                self.spare = Some(m);
                continue;
            }
            self.segment[..head].copy_from_slice(&m.room_mut()[..head]);
            let Ok(seg) = Segmenter::new(&self.segment[..len], &hdr) else {
                c.kernel_frames_lost += 1;
                self.spare = Some(m);
                continue;
            };
            let count = seg.count();
            let mut next = Some(m);
            for i in 0..count {
                let Some(mut frame) = next.take().or_else(|| pool.alloc()) else {
                    c.kernel_frames_lost += (count - i) as u64;
                    break;
                };
                match seg.write(i, frame.room_mut()) {
                    Some(n) if frame.set_len(n) => {
                        out.push(frame, to_nic, c);
                        taken += 1;
                    }
                    _ => c.kernel_frames_lost += 1,
                }
            }
        }
        taken
    }
}

/// Where an lcore's frames from the kernel leave.
pub(super) struct NicOut<'a> {
    pub(super) nic: &'a Port,
    pub(super) queue: u16,
    pub(super) own_mac: &'a [u8; 6],
    /// Large segments leave whole here (an `af_packet` port's TSO).
    pub(super) packet_tx: Option<&'a PacketTx>,
}

impl NicOut<'_> {
    /// Queues `m` for the NIC with the NIC's own MAC as source (never a
    /// VIP's MAC, which must stay unlearnable by switches), sending the
    /// queue first if it is full.
    #[inline]
    pub(super) fn push(&self, mut m: Mbuf, to_nic: &mut Vec<Mbuf>, c: &mut BurstCounts) {
        if to_nic.len() == to_nic.capacity() {
            c.tx_failed += self.nic.tx_burst(self.queue, to_nic) as u64;
        }
        if let Some(src) = m.data_mut().get_mut(6..12) {
            src.copy_from_slice(self.own_mac);
        }
        to_nic.push(m);
    }
}

/// Sweeps an lcore's flow tracker about once a second while buckets move,
/// and empties it when they stop moving.
pub(super) struct FlowUpkeep {
    /// The origin of the tracker's millisecond clock.
    pub(super) clock: std::time::Instant,
    pub(super) tracking: bool,
    pub(super) last_sweep_ms: u32,
}

impl FlowUpkeep {
    pub(super) const EVERY_MS: u32 = 1000;

    pub(super) fn new() -> Self {
        FlowUpkeep {
            clock: std::time::Instant::now(),
            tracking: false,
            last_sweep_ms: 0,
        }
    }

    /// Keeps the tracker in step with `table`; the time in milliseconds
    /// when the table's moving buckets need the tracker. Nothing moving
    /// and nothing tracked: one flag test, no clock read.
    #[inline]
    pub(super) fn tick(
        &mut self,
        flows: &mut FlowTracker,
        table: &BucketTable,
        gauges: &FlowGauges,
    ) -> Option<u32> {
        let moving = table.has_moves();
        if !moving && !self.tracking {
            return None;
        }
        let now_ms = self.clock.elapsed().as_millis() as u32;
        if moving != self.tracking || now_ms.wrapping_sub(self.last_sweep_ms) >= Self::EVERY_MS {
            flows.sweep(now_ms, table);
            gauges.record(flows.counts());
            self.last_sweep_ms = now_ms;
            self.tracking = moving;
        }
        moving.then_some(now_ms)
    }
}

/// Records when an lcore first uses a newly published table.
#[inline]
pub(super) fn note_switch(switch: &TableSwitch, table: &BucketTable, seen: &mut u64) {
    if table.generation() != *seen {
        *seen = table.generation();
        let ns = table
            .published_at()
            .map_or(0, |p| p.elapsed().as_nanos() as u64);
        switch.record(*seen, ns);
    }
}
