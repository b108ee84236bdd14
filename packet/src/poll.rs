//! Adaptive polling: what an lcore does after a poll, as a pure policy.
//!
//! With traffic the lcore polls flat out. After work it keeps polling for
//! `spin` (a time, not a count of polls: a poll's cost ranges from ~20 ns
//! on a packet socket's ring to a system call on Herd's TAP), then stops
//! until there is work again; any packet resets it. The spin covers the
//! gap until a served request's next packet (its client's next request, a
//! window of ACKs): waking a waiting thread costs tens of µs on a virtual
//! CPU. How long it stops depends on what can end the wait ([`Wakeup`]):
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
//!
//! The policy reads no clock: the lcore passes one, which it reads only
//! every [`CLOCK_EVERY`] empty polls (the spin starts at the first read).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdlePolicy {
    pub spin: Duration,
    pub min_sleep: Duration,
    pub max_sleep: Duration,
}

impl IdlePolicy {
    pub fn from_config(p: &config::Polling) -> Self {
        IdlePolicy {
            spin: Duration::from_micros(u64::from(p.spin_us)),
            min_sleep: Duration::from_micros(u64::from(p.min_sleep_us)),
            max_sleep: Duration::from_micros(u64::from(p.max_sleep_us)),
        }
    }
}

/// The longest wait of an lcore that everything wakes ([`Wakeup::Everything`]):
/// a safety net only (its flow tracker's sweep, about once a second, is
/// the one thing it does on time alone).
pub const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Empty polls between two reads of the clock while spinning: a read is
/// ~20-50 ns on a virtual CPU, as much as an empty poll of a ring.
pub const CLOCK_EVERY: u32 = 16;

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
    /// Empty polls since the last work (while spinning).
    empty_polls: u32,
    /// When the spin started (the first clock read after work).
    spin_start: Option<Instant>,
    /// The last sleep; zero while spinning.
    sleep: Duration,
}

impl Backoff {
    pub fn new(policy: IdlePolicy, wakeup: Wakeup) -> Self {
        Backoff {
            policy,
            wakeup,
            empty_polls: 0,
            spin_start: None,
            sleep: Duration::ZERO,
        }
    }

    /// Called after each poll with the number of packets it found; `now`
    /// is called only when the spin needs the time.
    #[inline]
    pub fn after_poll(&mut self, packets: usize, now: impl FnOnce() -> Instant) -> Idle {
        if packets > 0 {
            self.empty_polls = 0;
            self.spin_start = None;
            self.sleep = Duration::ZERO;
            return Idle::Poll;
        }
        if self.sleep.is_zero() {
            self.empty_polls += 1;
            if !self.empty_polls.is_multiple_of(CLOCK_EVERY) {
                return Idle::Poll;
            }
            let t = now();
            let start = *self.spin_start.get_or_insert(t);
            if t.saturating_duration_since(start) < self.policy.spin {
                return Idle::Poll;
            }
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
        self.spin_start = None;
        self.sleep = self.longest_wait();
        Idle::Sleep(self.sleep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: Duration = Duration::from_micros(30);

    fn policy() -> IdlePolicy {
        IdlePolicy {
            spin: SPIN,
            min_sleep: Duration::from_micros(10),
            max_sleep: Duration::from_micros(50),
        }
    }

    /// A clock the test moves: `step` per read.
    struct Clock {
        t: Instant,
        step: Duration,
        reads: u32,
    }

    impl Clock {
        fn new(step_us: u64) -> Self {
            Clock {
                t: Instant::now(),
                step: Duration::from_micros(step_us),
                reads: 0,
            }
        }
        fn poll(&mut self, b: &mut Backoff, packets: usize) -> Idle {
            b.after_poll(packets, || {
                self.reads += 1;
                self.t += self.step;
                self.t
            })
        }
    }

    /// Polls with nothing found until the first sleep; the polls it took.
    fn polls_until_sleep(b: &mut Backoff, clock: &mut Clock) -> (u32, Idle) {
        for i in 1..=10_000 {
            let idle = clock.poll(b, 0);
            if idle != Idle::Poll {
                return (i, idle);
            }
        }
        panic!("never slept");
    }

    #[test]
    fn spins_for_the_spin_time_then_sleeps_longer_up_to_the_bound() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        // 10 µs per clock read: the spin's start is the first read, so
        // the third read after it (30 µs) ends the spin.
        let mut clock = Clock::new(10);
        let (polls, first) = polls_until_sleep(&mut b, &mut clock);
        assert_eq!(polls, 4 * CLOCK_EVERY);
        assert_eq!(clock.reads, 4);
        let us = |n| Idle::Sleep(Duration::from_micros(n));
        assert_eq!(first, us(10));
        let rest: Vec<Idle> = (0..4).map(|_| clock.poll(&mut b, 0)).collect();
        assert_eq!(rest, vec![us(20), us(40), us(50), us(50)]);
        assert_eq!(clock.reads, 4, "no clock read once sleeping");
    }

    #[test]
    fn a_slow_poll_spins_fewer_polls_for_the_same_time() {
        let mut fast = Backoff::new(policy(), Wakeup::Timer);
        let (fast_polls, _) = polls_until_sleep(&mut fast, &mut Clock::new(1));
        let mut slow = Backoff::new(policy(), Wakeup::Timer);
        let (slow_polls, _) = polls_until_sleep(&mut slow, &mut Clock::new(15));
        assert_eq!(fast_polls, 31 * CLOCK_EVERY);
        assert_eq!(slow_polls, 3 * CLOCK_EVERY);
    }

    #[test]
    fn no_spin_waits_at_the_first_clock_read() {
        let mut b = Backoff::new(
            IdlePolicy {
                spin: Duration::ZERO,
                ..policy()
            },
            Wakeup::Everything,
        );
        let (polls, idle) = polls_until_sleep(&mut b, &mut Clock::new(1));
        assert_eq!((polls, idle), (CLOCK_EVERY, Idle::Sleep(IDLE_WAIT)));
    }

    #[test]
    fn a_burst_only_dropped_waits_at_once_and_a_served_one_polls_again() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        let mut clock = Clock::new(10);
        let us = |n| Idle::Sleep(Duration::from_micros(n));
        assert_eq!(b.after_drops_only(), us(50));
        assert_eq!(clock.poll(&mut b, 0), us(50), "still waiting, no spin");
        assert_eq!(clock.poll(&mut b, 1), Idle::Poll);
        assert_eq!(clock.poll(&mut b, 0), Idle::Poll, "spins again after work");
    }

    #[test]
    fn a_packet_restarts_the_spin() {
        let mut b = Backoff::new(policy(), Wakeup::Timer);
        let mut clock = Clock::new(10);
        // Work arrives just before the spin would end: a full spin again.
        for _ in 0..3 * CLOCK_EVERY {
            assert_eq!(clock.poll(&mut b, 0), Idle::Poll);
        }
        assert_eq!(clock.poll(&mut b, 1), Idle::Poll);
        let (polls, idle) = polls_until_sleep(&mut b, &mut clock);
        assert_eq!(polls, 4 * CLOCK_EVERY);
        assert_eq!(idle, Idle::Sleep(Duration::from_micros(10)));
    }

    #[test]
    fn an_lcore_that_everything_wakes_spins_then_waits_long() {
        let mut b = Backoff::new(policy(), Wakeup::Everything);
        let mut clock = Clock::new(10);
        let wait = Idle::Sleep(IDLE_WAIT);
        assert_eq!(polls_until_sleep(&mut b, &mut clock).1, wait);
        assert_eq!(clock.poll(&mut b, 0), wait);
        assert_eq!(clock.poll(&mut b, 2), Idle::Poll, "a packet: polling again");
        assert_eq!(b.after_drops_only(), wait, "only drops: waits at once");
    }
}
