//! What ends an idle lcore's wait: descriptors that become readable when
//! there is work ([`Waker`]: a NIC queue's socket, a TAP queue) and a
//! [`Doorbell`] the control plane rings for everything else (a new table,
//! a reload, a stop, a watchdog probe). An lcore that all its sources can
//! wake waits in `ppoll` for as long as nothing happens.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A descriptor that becomes readable when there is work: a TAP queue,
/// the socket under an `af_packet`/`af_xdp` port's queue, a doorbell. It
/// does not own the descriptor: whoever made it keeps that open while
/// lcores run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waker(i32);

impl Waker {
    pub(crate) fn new(fd: i32) -> Self {
        Waker(fd)
    }

    pub(crate) fn fd(self) -> i32 {
        self.0
    }
}

/// The most descriptors one wait watches (a NIC queue, a TAP queue, a
/// doorbell, and room for one more).
pub const MAX_WAKERS: usize = 4;

/// Waits until one of `wakers` is readable or `timeout` passes; returns
/// which were readable, bit `i` for `wakers[i]`, 0 on a timeout.
pub fn wait_readable(wakers: &[Waker], timeout: Duration) -> u32 {
    let mut fds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; MAX_WAKERS];
    let n = wakers.len().min(fds.len());
    for (p, w) in fds.iter_mut().zip(wakers) {
        p.fd = w.0;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `n` pollfds we own, a timespec we own, no signal mask. A
    // waker's descriptor stays open while lcores run (its port, TAP or
    // doorbell outlives them); if it were closed, ppoll would report
    // POLLNVAL, which ends the wait like a packet would.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
    if rc <= 0 {
        return 0;
    }
    fds[..n]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// An eventfd one lcore waits on and anyone may ring: rings add up until
/// the lcore clears them, so none is lost between its last look and its
/// wait.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    pub fn new() -> io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; it returns a new descriptor
        // or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Doorbell { fd })
    }

    /// Ends the lcore's wait, or its next one.
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which we own. It fails only
        // when the count would overflow, and then the bell is rung anyway.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes the rings so far (the bell is quiet until the next).
    pub fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`, which we own; on a
        // quiet bell it fails with EAGAIN (non-blocking), which is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }

    pub fn waker(&self) -> Waker {
        Waker(self.fd.as_raw_fd())
    }
}

/// One doorbell per lcore, by queue.
#[derive(Debug)]
pub struct Doorbells(Vec<Doorbell>);

impl Doorbells {
    pub fn new(lcores: usize) -> io::Result<Doorbells> {
        (0..lcores)
            .map(|_| Doorbell::new())
            .collect::<io::Result<_>>()
            .map(Doorbells)
    }

    pub fn get(&self, queue: usize) -> &Doorbell {
        &self.0[queue]
    }

    /// Wakes every lcore.
    pub fn ring_all(&self) {
        for d in &self.0 {
            d.ring();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_ring_ends_the_wait_and_a_cleared_bell_lets_it_time_out() {
        let bell = Doorbell::new().unwrap();
        let w = [bell.waker()];
        bell.ring();
        bell.ring();
        let t = Instant::now();
        assert_eq!(wait_readable(&w, Duration::from_secs(5)), 1);
        assert!(t.elapsed() < Duration::from_secs(5));
        bell.clear();
        assert_eq!(
            wait_readable(&w, Duration::from_millis(20)),
            0,
            "one clear takes both rings"
        );
    }

    #[test]
    fn a_ring_from_another_thread_wakes_the_waiter_and_says_which() {
        let bells = std::sync::Arc::new(Doorbells::new(2).unwrap());
        let w = [bells.get(0).waker(), bells.get(1).waker()];
        let ringer = std::thread::spawn({
            let bells = std::sync::Arc::clone(&bells);
            move || bells.get(1).ring()
        });
        assert_eq!(wait_readable(&w, Duration::from_secs(30)), 0b10);
        ringer.join().unwrap();
    }
}
