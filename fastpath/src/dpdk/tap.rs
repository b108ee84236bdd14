//! The exception path's TAP, opened by Herd rather than by DPDK's
//! `net_tap`, with what `net_tap` (22.11) lacks:
//!
//! - a virtio-net header on every frame (`IFF_VNET_HDR`) and offloads
//!   (`TUNSETOFFLOAD`: checksum, TSO4, TSO6), so the kernel hands over its
//!   replies as TCP segments of up to 64 KiB with the checksum left to
//!   "hardware" (the fastpath cuts and sums them, see [`crate::offload`]);
//! - no `O_ASYNC`: `net_tap` arms one real-time signal per received packet
//!   to learn that its queue is not empty; Herd reads until `EAGAIN`, and
//!   an idle lcore waits in `ppoll` on its TAP queue and on its NIC
//!   queue's socket ([`port_sockets`]; see [`super::wake`]), so a packet
//!   from either side wakes it at once instead of at the end of a blind
//!   sleep;
//! - one queue (`IFF_MULTI_QUEUE`) per lcore.
//!
//! The interface lives as long as its queues' descriptors: it goes away
//! when the node stops or crashes.

use super::wake::Waker;
use crate::offload::VNET_HDR_LEN;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What the kernel may hand over with offloads on.
const OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// A TAP interface with one queue per lcore.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<TapQueue>,
    offloads: bool,
}

/// One queue of a [`Tap`]: the kernel spreads its flows over the queues.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

impl Tap {
    /// Creates TAP `name` with `queues` queues and MAC `mac`; with
    /// `offloads`, the kernel may send large TCP segments and partial
    /// checksums.
    pub fn open(name: &str, queues: u16, mac: [u8; 6], offloads: bool) -> io::Result<Tap> {
        let mut opened = Vec::with_capacity(usize::from(queues));
        for q in 0..queues.max(1) {
            let path = c"/dev/net/tun";
            // SAFETY: a valid NUL-terminated path; the returned descriptor
            // is owned by the OwnedFd below and nowhere else.
            let raw = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            check(raw, "open /dev/net/tun")?;
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut req = ifreq(name)?;
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE)
                    as libc::c_short;
            // SAFETY: TUNSETIFF reads (and writes the name back into) the
            // ifreq we own, which outlives the call.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
            check(rc, &format!("TUNSETIFF {name} queue {q}"))?;
            let hdr_len = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
            check(rc, "TUNSETVNETHDRSZ")?;
            let flags: libc::c_uint = if offloads { OFFLOADS } else { 0 };
            // SAFETY: TUNSETOFFLOAD takes its argument by value.
            let rc =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
            check(rc, "TUNSETOFFLOAD")?;
            if q == 0 {
                let mut req = ifreq(name)?;
                let mut addr = libc::sockaddr {
                    sa_family: libc::ARPHRD_ETHER,
                    sa_data: [0; 14],
                };
                for (d, s) in addr.sa_data.iter_mut().zip(mac) {
                    *d = s as libc::c_char;
                }
                req.ifr_ifru.ifru_hwaddr = addr;
                // SAFETY: the TAP's own descriptor takes SIOCSIFHWADDR with
                // an ifreq we own.
                let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFHWADDR, &mut req) };
                check(rc, &format!("set the MAC of {name}"))?;
            }
            opened.push(TapQueue { fd });
        }
        Ok(Tap {
            name: name.to_string(),
            queues: opened,
            offloads,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn offloads(&self) -> bool {
        self.offloads
    }

    /// Queue `q` (one per lcore).
    pub fn queue(&self, q: u16) -> &TapQueue {
        &self.queues[usize::from(q)]
    }
}

impl TapQueue {
    /// Reads one frame: its virtio-net header into `hdr`, its first bytes
    /// into `head`, the rest into `tail`. Returns the frame's length
    /// (without the header), `Ok(None)` when the queue is empty.
    #[inline]
    pub fn read(
        &self,
        hdr: &mut [u8; VNET_HDR_LEN],
        head: &mut [u8],
        tail: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: head.as_mut_ptr().cast(),
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: tail.as_mut_ptr().cast(),
                iov_len: tail.len(),
            },
        ];
        // SAFETY: each iovec describes a buffer we borrow mutably for the
        // duration of the call; the kernel writes at most their lengths.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let n = n as usize;
        if n < VNET_HDR_LEN {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        Ok(Some(n - VNET_HDR_LEN))
    }

    /// Writes one frame behind virtio-net header `hdr`.
    #[inline]
    pub fn write(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<()> {
        write_parts(self.fd.as_raw_fd(), [hdr, frame, &[]])
    }

    /// Writes one frame made of `parts` (a merged segment's headers and
    /// payloads, at most [`MAX_PARTS`]) behind `hdr`, with one `writev`.
    #[inline]
    pub fn write_gathered(&self, hdr: &[u8; VNET_HDR_LEN], parts: &[&[u8]]) -> io::Result<()> {
        if parts.len() > MAX_PARTS {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut iov = [empty; MAX_PARTS + 1];
        for (v, p) in iov
            .iter_mut()
            .zip(std::iter::once(&hdr[..]).chain(parts.iter().copied()))
        {
            *v = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
        }
        // SAFETY: the first `parts.len() + 1` iovecs describe buffers we
        // borrow for the call; the kernel only reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), parts.len() as i32 + 1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The queue's descriptor, to wait on.
    pub fn waker(&self) -> Waker {
        Waker::new(self.fd.as_raw_fd())
    }
}

/// Pieces of one frame written with [`TapQueue::write_gathered`] at most.
pub const MAX_PARTS: usize = 64;

/// One `writev` of `parts` (a header and a frame in up to two pieces).
#[inline]
fn write_parts(fd: i32, parts: [&[u8]; 3]) -> io::Result<()> {
    let iov = parts.map(|p| libc::iovec {
        iov_base: p.as_ptr() as *mut libc::c_void,
        iov_len: p.len(),
    });
    // SAFETY: the iovecs describe buffers we borrow for the call; the
    // kernel only reads them (writev never writes through iov_base).
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The sockets of this process's `af_packet` ports bound to interface
/// `ifindex` (or, for `af_xdp`, its XDP sockets), oldest first: DPDK's
/// PMDs open one per queue, in queue order, and do not expose them.
pub fn port_sockets(ifindex: u32, xdp: bool) -> Vec<Waker> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.into_iter()
        .filter(|&fd| {
            let mut domain: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: SO_DOMAIN writes one int into `domain`; a descriptor
            // that is not a socket (or closed meanwhile) fails, and is
            // skipped.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_DOMAIN,
                    (&mut domain as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return false;
            }
            if xdp {
                return domain == libc::AF_XDP;
            }
            if domain != libc::AF_PACKET {
                return false;
            }
            // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: getsockname writes at most `len` bytes into `addr`.
            let rc = unsafe {
                libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_ll).cast(), &mut len)
            };
            // Bound to every protocol: the PMD's (Herd's own send-only
            // sockets are bound to none).
            rc == 0
                && addr.sll_ifindex as u32 == ifindex
                && addr.sll_protocol == (libc::ETH_P_ALL as u16).to_be()
        })
        .map(Waker::new)
        .collect()
}

/// Keeps a port's packet socket from receiving the frames this host
/// sends on its interface (through [`PacketTx`]: a packet socket sees
/// them otherwise, as the kernel's taps do). `PACKET_IGNORE_OUTGOING`
/// cannot do it: the PMD's sockets are in a fanout group, whose hook
/// takes that flag only when the group is made. A classic BPF filter on
/// the socket drops outgoing frames before their copy into the ring.
pub fn ignore_outgoing(socket: Waker) -> io::Result<()> {
    const SKF_AD_PKTTYPE: u32 = 4;
    let code = [
        // A = the packet type (an ancillary load).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: (libc::SKF_AD_OFF as u32).wrapping_add(SKF_AD_PKTTYPE),
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: u32::from(libc::PACKET_OUTGOING),
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        },
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program during the call; `code` and
    // `prog` outlive it. The descriptor is the port's open socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    check(rc, "a filter for outgoing frames")
}

/// Frames an `af_packet` port's socket dropped since the last call
/// because its ring was full (`PACKET_STATISTICS`, which resets the
/// kernel's counts on each read: the caller keeps the sum). DPDK 22.11's
/// PMD never reads them, so nothing else loses them.
pub fn packet_socket_drops(socket: Waker) -> io::Result<u64> {
    // struct tpacket_stats (tp_packets, tp_drops), or its v3 form with
    // one more count: the kernel copies at most `len` bytes.
    let mut stats = [0u32; 3];
    let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: PACKET_STATISTICS writes at most `len` bytes into `stats`,
    // which outlives the call; the descriptor is the port's open socket
    // (a closed one fails).
    let rc = unsafe {
        libc::getsockopt(
            socket.fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(rc, "PACKET_STATISTICS")?;
    Ok(u64::from(stats[1]))
}

/// The index of kernel interface `name` (0 if there is none).
pub fn interface_index(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: a valid NUL-terminated name.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Large TCP segments out of an `af_packet` port, whole: a packet socket
/// with `PACKET_VNET_HDR` is the kernel's TSO for packet sockets, which
/// DPDK 22.11's `af_packet` PMD does not use. The interface segments the
/// frame (in hardware, or not at all on a veth) instead of the fastpath,
/// and the receiver gets one large segment instead of ~45 frames.
#[derive(Debug)]
pub struct PacketTx {
    fd: OwnedFd,
}

/// The virtio-net header of a packet socket: `virtio_net_hdr` without
/// `num_buffers` (the size before Linux 6.2's `PACKET_VNET_HDR_SZ`).
const PACKET_VNET_HDR_LEN: usize = 10;

impl PacketTx {
    /// A send-only packet socket on interface `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<PacketTx> {
        // SAFETY: plain socket creation; protocol 0 receives nothing.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw, "packet socket")?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let on: libc::c_int = 1;
        // No PACKET_QDISC_BYPASS: its direct transmit drops what the
        // interface must segment in software (`dev_direct_xmit`).
        // SAFETY: the option reads one int from the pointer.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        check(rc, "PACKET_VNET_HDR")?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: bind reads `len` bytes of the address we own.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(rc, "bind the packet socket")?;
        Ok(PacketTx { fd })
    }

    /// Sends one frame, `head` then `tail`, behind the TAP's virtio-net
    /// header `hdr` (whose GSO and checksum fields the kernel acts on).
    #[inline]
    pub fn send(&self, hdr: &[u8; VNET_HDR_LEN], head: &[u8], tail: &[u8]) -> io::Result<()> {
        write_parts(
            self.fd.as_raw_fd(),
            [&hdr[..PACKET_VNET_HDR_LEN], head, tail],
        )
    }
}
