//! Adaptive polling: what an lcore does after a poll, as a pure policy.
//!
//! With traffic the lcore polls flat out. After `spin_polls` empty polls in
//! a row it stops polling until there is work again; any packet resets it.
//! How long it stops depends on what can end the wait ([`Wakeup`]):
//!
//! - [`Wakeup::Timer`]: nothing but time (a PCI or vdev port). It sleeps
//!   `min_sleep`, doubling each further empty poll up to `max_sleep`: an
//!   idle lcore wakes at most 1/`max_sleep` times a second, and the first
//!   packet after idle waits at most `max_sleep` (plus the timer's slack).
//! - [`Wakeup::Everything`]: every source of its work ends the wait (its
//!   NIC queue's socket, its TAP queue, its doorbell, which the control
//!   plane rings for a new table, a reload, a stop or a watchdog probe).
//!   It waits up to [`IDLE_WAIT`]: the time bounds nothing a user sees, so
//!   an idle lcore costs next to nothing, and stays off the CPU where, on
//!   a small host, the kernel's own packet work runs.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    pub spin_polls: u32,
    pub min_sleep: Duration,
    pub max_sleep: Duration,
}

impl IdlePolicy {
    pub fn from_config(p: &config::Polling) -> Self {
        IdlePolicy {
            spin_polls: p.spin_polls,
            min_sleep: Duration::from_micros(u64::from(p.min_sleep_us)),
            max_sleep: Duration::from_micros(u64::from(p.max_sleep_us)),
        }
    }
}

/// The longest wait of an lcore that everything wakes ([`Wakeup::Everything`]):
/// a safety net only (its flow tracker's sweep, about once a second, is
/// the one thing it does on time alone).
pub const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What can end an idle lcore's wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wakeup {
    /// Only its timer: it sleeps blind, `min_sleep` doubling to `max_sleep`.
    Timer,
    /// Every source of its work: it waits up to [`IDLE_WAIT`].
    Everything,
}

/// What to do before the next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Poll again at once.
    Poll,
    /// Sleep this long, then poll.
    Sleep(Duration),
}

/// One lcore's idle state.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: IdlePolicy,
    wakeup: Wakeup,
    empty_polls: u32,
    sleep: Duration,
}

impl Backoff {
    pub fn new(policy: IdlePolicy, wakeup: Wakeup) -> Self {
        Backoff {
            policy,
            wakeup,
            empty_polls: 0,
            sleep: Duration::ZERO,
        }
    }

    /// Called after each poll with the number of packets it found.
    #[inline]
    pub fn after_poll(&mut self, packets: usize) -> Idle {
        if packets > 0 {
            self.empty_polls = 0;
            self.sleep = Duration::ZERO;
            return Idle::Poll;
        }
        if self.empty_polls < self.policy.spin_polls {
            self.empty_polls += 1;
            return Idle::Poll;
        }
        self.sleep = match self.wakeup {
            Wakeup::Timer if self.sleep.is_zero() => self.policy.min_sleep,
            Wakeup::Timer => (self.sleep * 2).min(self.longest_wait()),
            Wakeup::Everything => self.longest_wait(),
        };
        Idle::Sleep(self.sleep)
    }

    /// `max_sleep` for an lcore that time wakes, [`IDLE_WAIT`] for one
    /// that everything wakes.
    fn longest_wait(&self) -> Duration {
        match self.wakeup {
            Wakeup::Timer => self.policy.max_sleep,
            Wakeup::Everything => IDLE_WAIT,
        }
    }

    /// After a poll that found packets and only dropped them, on an lcore
    /// that a packet wakes from its wait: nothing is in flight (no reply
    /// will come), so it waits at once, as long as the policy allows; the
    /// next packet ends the wait. On a farm of N nodes sharing CPUs, the
    /// N-1 that drop a packet leave the CPU to the one that serves it.
    #[inline]
    pub fn after_drops_only(&mut self) -> Idle {
        self.empty_polls = self.policy.spin_polls;
        self.sleep = self.longest_wait();
        Idle::Sleep(self.sleep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> IdlePolicy {
        IdlePolicy {
            spin_polls: 3,
            min_sleep: Duration::from_micros(10),
            max_sleep: Duration::from_micros(50),
        }
    }

    #[test]
    fn spins_then_sleeps_longer_up_to_the_bound() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        let got: Vec<Idle> = (0..8).map(|_| b.after_poll(0)).collect();
        let us = |n| Idle::Sleep(Duration::from_micros(n));
        assert_eq!(
            got,
            vec![
                Idle::Poll,
                Idle::Poll,
                Idle::Poll,
                us(10),
                us(20),
                us(40),
                us(50),
                us(50)
            ]
        );
    }

    #[test]
    fn a_burst_only_dropped_waits_at_once_and_a_served_one_polls_again() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        let us = |n| Idle::Sleep(Duration::from_micros(n));
        assert_eq!(b.after_drops_only(), us(50));
        assert_eq!(b.after_poll(0), us(50), "still waiting, no spin");
        assert_eq!(b.after_poll(1), Idle::Poll);
        assert_eq!(b.after_poll(0), Idle::Poll, "spins again after work");
    }

    #[test]
    fn a_packet_resets_to_polling() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        for _ in 0..10 {
            b.after_poll(0);
        }
        assert_eq!(b.after_poll(1), Idle::Poll);
        assert_eq!(b.after_poll(0), Idle::Poll);
        for _ in 0..2 {
            b.after_poll(0);
        }
        assert_eq!(b.after_poll(0), Idle::Sleep(Duration::from_micros(10)));
    }

    #[test]
    fn an_lcore_that_everything_wakes_spins_then_waits_long() {
        let mut b = Backoff::new(policy(), Wakeup::Everything);
        let got: Vec<Idle> = (0..6).map(|_| b.after_poll(0)).collect();
        let wait = Idle::Sleep(IDLE_WAIT);
        assert_eq!(
            got,
            vec![Idle::Poll, Idle::Poll, Idle::Poll, wait, wait, wait]
        );
        assert_eq!(b.after_poll(2), Idle::Poll, "a packet: polling again");
        assert_eq!(b.after_drops_only(), wait, "only drops: waits at once");
    }
}
