//! The one thin safe layer over `dpdk-sys`: EAL, mempool, ports, mbufs and
//! lcore launch, ([`tap`]) the kernel's TAP that the fastpath opens
//! itself, and ([`wake`]) what ends an idle lcore's wait. Every `unsafe`
//! block of Herd outside `dpdk-sys` is here.

pub mod bpf;
pub mod tap;
pub mod wake;

use dpdk_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;

/// A DPDK call that failed: what was asked and DPDK's reason.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DpdkError {
    pub what: String,
    pub reason: String,
}

fn error(what: impl Into<String>, code: i32) -> DpdkError {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string for any error number.
    let reason = unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) }
        .to_string_lossy()
        .into_owned();
    DpdkError {
        what: what.into(),
        reason,
    }
}

fn last_error(what: impl Into<String>) -> DpdkError {
    // SAFETY: reads the calling thread's rte_errno.
    error(what, unsafe { sys::herd_errno() })
}

/// The version string of the DPDK Herd runs on.
pub fn version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::herd_dpdk_version()) }
        .to_string_lossy()
        .into_owned()
}

/// The initialised Environment Abstraction Layer. Only one per process;
/// dropping it cleans the EAL up.
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name).
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once("herd").chain(args.iter().map(String::as_str)) {
            owned.push(CString::new(a).map_err(|_| DpdkError {
                what: "EAL argument".into(),
                reason: format!("{a:?} contains a NUL byte"),
            })?);
        }
        // The EAL may keep and permute argv, so it gets leaked copies.
        let mut argv: Vec<*mut std::ffi::c_char> =
            owned.into_iter().map(CString::into_raw).collect();
        let argc = argv.len() as i32;
        // SAFETY: argv holds argc valid NUL-terminated strings that live for
        // the rest of the process (leaked above).
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        std::mem::forget(argv);
        if rc < 0 {
            return Err(last_error("EAL init"));
        }
        Ok(Eal { _private: () })
    }

    /// Creates a virtual device (`net_tap0`, ...) after init.
    pub fn create_vdev(&self, name: &str, args: &str) -> Result<(), DpdkError> {
        let cname = CString::new(name).map_err(|_| error("vdev name", libc::EINVAL))?;
        let cargs = CString::new(args).map_err(|_| error("vdev args", libc::EINVAL))?;
        // SAFETY: both are valid NUL-terminated strings for the call's duration.
        let rc = unsafe { sys::rte_vdev_init(cname.as_ptr(), cargs.as_ptr()) };
        if rc < 0 {
            return Err(error(format!("create {name} ({args})"), rc));
        }
        Ok(())
    }

    /// The worker lcores (every enabled lcore but the main one).
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        // SAFETY: plain queries of EAL state after init.
        let mut id = unsafe { sys::rte_get_next_lcore(u32::MAX, 1, 0) };
        while id < sys::RTE_MAX_LCORE {
            out.push(id);
            // SAFETY: as above.
            id = unsafe { sys::rte_get_next_lcore(id, 1, 0) };
        }
        out
    }

    /// Runs `work` on worker lcore `lcore`.
    pub fn launch<F: FnOnce() + Send + 'static>(
        &self,
        lcore: u32,
        work: F,
    ) -> Result<(), DpdkError> {
        type Work = Box<dyn FnOnce() + Send>;
        extern "C" fn trampoline(arg: *mut c_void) -> i32 {
            // SAFETY: `arg` is the Box<Work> leaked by `launch` below, taken
            // back exactly once here.
            let work: Box<Work> = unsafe { Box::from_raw(arg.cast()) };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
                Ok(()) => 0,
                Err(_) => -1,
            }
        }
        let arg = Box::into_raw(Box::new(Box::new(work) as Work));
        // SAFETY: trampoline has the C signature the EAL expects; arg stays
        // valid until trampoline takes it back.
        let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg.cast(), lcore) };
        if rc < 0 {
            // SAFETY: the launch failed, so the trampoline never runs and
            // the box is still ours to free.
            drop(unsafe { Box::from_raw(arg) });
            return Err(error(format!("launch on lcore {lcore}"), rc));
        }
        Ok(())
    }

    /// Waits until every worker lcore has returned.
    pub fn wait_workers(&self) {
        // SAFETY: called from the main lcore after launches.
        unsafe { sys::rte_eal_mp_wait_lcore() };
    }

    /// Finds a port by its device name (vdev name or PCI address).
    pub fn port_by_name(&self, name: &str) -> Result<Port, DpdkError> {
        let cname = CString::new(name).map_err(|_| error("port name", libc::EINVAL))?;
        let mut id = 0u16;
        // SAFETY: valid string and out pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if rc < 0 {
            return Err(error(format!("no DPDK port named {name}"), rc));
        }
        Ok(Port {
            id,
            name: name.into(),
        })
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: all ports are closed and lcores stopped before the Eal is
        // dropped (the owner drops it last).
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// A packet buffer pool.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: DPDK mempools are designed to be shared between lcores.
unsafe impl Send for Mempool {}
// SAFETY: as above; all mempool operations are thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    pub fn new(_eal: &Eal, name: &str, mbufs: u32) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| error("mempool name", libc::EINVAL))?;
        // SAFETY: valid name; the sizes are DPDK's defaults.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                mbufs,
                256,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                sys::SOCKET_ID_ANY,
            )
        };
        NonNull::new(ptr)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| last_error(format!("mempool {name} of {mbufs} mbufs")))
    }
}

impl Mempool {
    /// One mbuf from the pool (`None` when it is empty).
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid for our lifetime; a non-null result is
        // a fresh mbuf that we own.
        NonNull::new(unsafe { sys::herd_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }
}

/// One received or to-be-sent packet; freed when dropped.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by one lcore at a time; moving it is how DPDK
// hands packets between lcores.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// The packet's bytes (first segment: all headers are there).
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid and ours; data_len bytes from
        // buf_addr + data_off are initialised packet data. The fields are
        // read in Rust (bindgen's layout of rte_mbuf) rather than through
        // the shim: this is the per-packet path.
        unsafe {
            let m = self.0.as_ref();
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and we hold the only reference.
        unsafe {
            let m = self.0.as_ref();
            std::slice::from_raw_parts_mut(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The whole writable room of the first segment, from the data start;
    /// bytes past the current length are whatever the buffer held.
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        // SAFETY: the buffer has data_room bytes from the data pointer, all
        // owned by this mbuf (mbuf buffers are allocated, so never
        // uninitialised memory in the Rust sense after pool creation zeroes
        // them).
        unsafe {
            let m = self.0.as_ptr();
            std::slice::from_raw_parts_mut(
                sys::herd_pktmbuf_data(m),
                usize::from(sys::herd_pktmbuf_data_room(m)),
            )
        }
    }

    /// Sets the length of a single-segment packet; false if it does not fit.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        let Ok(len) = u16::try_from(len) else {
            return false;
        };
        // SAFETY: the shim checks the length against the buffer.
        unsafe { sys::herd_pktmbuf_set_len(self.0.as_ptr(), len) == 0 }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and give it back to its pool once.
        unsafe { sys::herd_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// Frees all of `pkts` in one call (cheaper than one free per packet).
#[inline]
pub fn free_bulk(pkts: &mut Vec<Mbuf>) {
    let len = pkts.len();
    if len == 0 {
        return;
    }
    // SAFETY: `pkts` holds `len` owned mbufs; the Vec forgets them before
    // DPDK frees them, so each is freed exactly once.
    unsafe {
        pkts.set_len(0);
        sys::herd_pktmbuf_free_bulk(pkts.as_mut_ptr().cast(), len as u32);
    }
}

/// Appends `m` to `yes` if `to_yes`, else to `no`, without a branch on
/// `to_yes`: the pointer is written after the end of both lists and only
/// one length grows. The fastpath's accept/drop split is a coin flip per
/// packet on a two-node farm; as a branch it mispredicts half the time.
#[inline]
pub fn push_either(m: Mbuf, yes: &mut Vec<Mbuf>, no: &mut Vec<Mbuf>, to_yes: bool) {
    if yes.len() == yes.capacity() || no.len() == no.capacity() {
        // Never on the lcore path (both lists hold a burst); kept correct.
        if to_yes {
            yes.push(m);
        } else {
            no.push(m);
        }
        return;
    }
    let m = std::mem::ManuallyDrop::new(m);
    let ptr = m.0;
    // SAFETY: both lists have room for one more element (checked above).
    // The pointer is written into the spare slot of each, but only the
    // list whose length grows owns it; the other slot stays outside its
    // list's length, so the mbuf is owned (and freed) exactly once.
    unsafe {
        yes.as_mut_ptr()
            .add(yes.len())
            .cast::<NonNull<sys::rte_mbuf>>()
            .write(ptr);
        no.as_mut_ptr()
            .add(no.len())
            .cast::<NonNull<sys::rte_mbuf>>()
            .write(ptr);
        yes.set_len(yes.len() + usize::from(to_yes));
        no.set_len(no.len() + usize::from(!to_yes));
    }
}

/// The most packets one rx burst returns.
pub const BURST: usize = 32;

pub use node_status::PortStats;

/// An Ethernet port.
pub struct Port {
    id: u16,
    name: String,
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Port({} {})", self.id, self.name)
    }
}

impl Port {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Configures `queues` rx and tx queues and starts the port.
    pub fn configure_and_start(
        &self,
        pool: &Mempool,
        queues: u16,
        rx_desc: u16,
        tx_desc: u16,
    ) -> Result<(), DpdkError> {
        let conf = sys::rte_eth_conf::default();
        // SAFETY: valid port id and configuration.
        let rc = unsafe { sys::rte_eth_dev_configure(self.id, queues, queues, &conf) };
        if rc < 0 {
            return Err(error(
                format!("configure {} with {queues} queues", self.name),
                rc,
            ));
        }
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY as u32
        } else {
            socket as u32
        };
        for q in 0..queues {
            // SAFETY: configured port, queue in range, NULL conf = driver default.
            let rc = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.ptr.as_ptr(),
                )
            };
            if rc < 0 {
                return Err(error(format!("{} rx queue {q}", self.name), rc));
            }
            // SAFETY: as above.
            let rc = unsafe {
                sys::rte_eth_tx_queue_setup(self.id, q, tx_desc, socket, std::ptr::null())
            };
            if rc < 0 {
                return Err(error(format!("{} tx queue {q}", self.name), rc));
            }
        }
        // SAFETY: configured port.
        let rc = unsafe { sys::rte_eth_dev_start(self.id) };
        if rc < 0 {
            return Err(error(format!("start {}", self.name), rc));
        }
        Ok(())
    }

    pub fn enable_promiscuous(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port id.
        let rc = unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        if rc < 0 {
            return Err(error(format!("promiscuous mode on {}", self.name), rc));
        }
        Ok(())
    }

    /// Back out of promiscuous mode (a Linux interface's `IFF_PROMISC`,
    /// which the af_packet and af_xdp drivers set and leave set on close).
    pub fn disable_promiscuous(&self) -> Result<(), DpdkError> {
        // SAFETY: valid port id.
        let rc = unsafe { sys::rte_eth_promiscuous_disable(self.id) };
        if rc < 0 {
            return Err(error(
                format!("leaving promiscuous mode on {}", self.name),
                rc,
            ));
        }
        Ok(())
    }

    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port id and out pointer.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if rc < 0 {
            return Err(error(format!("MAC address of {}", self.name), rc));
        }
        Ok(addr.addr_bytes)
    }

    /// The link status as the driver reports it (`None`: unknown).
    pub fn link_up(&self) -> Option<bool> {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid port id and out pointer; the call does not wait.
        if unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) } < 0 {
            return None;
        }
        Some(link.link_status() != 0)
    }

    pub fn stats(&self) -> PortStats {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out pointer.
        if unsafe { sys::rte_eth_stats_get(self.id, &mut s) } < 0 {
            return PortStats::default();
        }
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Receives up to `BURST - out.len()` packets into `out` (which must
    /// have capacity for `BURST`, so nothing allocates).
    #[inline]
    pub fn rx_burst(&self, queue: u16, out: &mut Vec<Mbuf>) -> usize {
        let room = BURST.min(out.capacity() - out.len());
        let start = out.len();
        // SAFETY: `out` has room for `room` more pointers after `start`;
        // the driver writes that many valid mbuf pointers at most, which
        // become owned by `out` (Mbuf is a transparent non-null pointer).
        unsafe {
            let dst = out.as_mut_ptr().add(start).cast::<*mut sys::rte_mbuf>();
            let n = usize::from(sys::herd_rx_burst(self.id, queue, dst, room as u16));
            out.set_len(start + n);
            n
        }
    }

    /// Sends all of `pkts`; returns how many the driver did not take (those
    /// are freed). `pkts` is left empty.
    #[inline]
    pub fn tx_burst(&self, queue: u16, pkts: &mut Vec<Mbuf>) -> usize {
        let len = pkts.len();
        if len == 0 {
            return 0;
        }
        let mut sent = 0usize;
        // SAFETY: `pkts` holds `len` owned mbufs; the driver takes ownership
        // of the first `n` it reports sent. The rest are dropped (freed) by
        // reading them out exactly once; the Vec forgets them all first.
        unsafe {
            let base = pkts.as_mut_ptr();
            // Two tries: a full ring often drains in the time of one call.
            for _ in 0..2 {
                let n = sys::herd_tx_burst(
                    self.id,
                    queue,
                    base.add(sent).cast(),
                    (len - sent).min(u16::MAX as usize) as u16,
                );
                sent += usize::from(n);
                if sent == len {
                    break;
                }
            }
            pkts.set_len(0);
            for i in sent..len {
                drop(std::ptr::read(base.add(i)));
            }
        }
        len - sent
    }

    /// Stops and closes the port (a TAP interface disappears with it).
    pub fn close(self) {
        // SAFETY: no lcore uses the port any more (the owner waits for them).
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// Lets the calling thread's sleeps end within `ns` of their deadline
/// (Linux's default slack is 50 µs), so adaptive polling wakes on time.
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK only changes the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// CPU time (user + system) the calling thread has used.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Marks every open descriptor above stderr close-on-exec. DPDK opens its
/// runtime files (memory segment lists, config) without `O_CLOEXEC` and
/// holds locks on them: a script or checker started by the node would
/// inherit them, and a node restarted after a crash could not lock its
/// own runtime files while that child lives. Returns how many it marked.
pub fn close_on_exec_all() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    let mut marked = 0;
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags;
        // a descriptor closed meanwhile (the directory's own) fails with
        // EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0
                && flags & libc::FD_CLOEXEC == 0
                && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) == 0
            {
                marked += 1;
            }
        }
    }
    marked
}
