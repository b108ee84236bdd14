//! The egress balance: which share of the kernel's flows leaves through an
//! lcore and which straight out of the NIC's interface (the TAP's direct
//! egress), decided from the lcores' load, as a pure policy.
//!
//! On a port whose NIC the kernel keeps and whose every frame an lcore
//! reads anyway (`af_packet`), the kernel's replies can leave either way.
//! Through the lcore (a TAP read, a packet-socket send) the sending work
//! runs on the lcore's CPU and leaves the application's CPUs alone; the
//! direct egress sends them in the application's own system call and asks
//! nothing of the lcore. The first is better while the lcore has room, the
//! second once it has none. So the lcore measures how much of its time
//! went to polls that found work, window by window, and:
//!
//! - above [`BUSY_HIGH`] it keeps [`STEP`] fewer flow slots (of
//!   [`SLOTS`]): their frames leave directly;
//! - below [`BUSY_LOW`] it takes [`STEP`] slots back;
//! - in between, nothing changes (the band keeps it from swinging).
//!
//! With several lcores, each reports its windows and whichever ends a
//! window first once a [`WINDOW`] has passed since the last decision
//! decides, on the busiest of the lcores' recent windows
//! ([`busiest`]): an idle lcore, waiting for work, reports nothing, and
//! its last window, however busy, stops counting after [`FRESH`].
//!
//! A flow's slot is its hash (the kernel's `skb->hash`) modulo [`SLOTS`],
//! so a flow keeps its way between changes, and a change moves one step's
//! flows at most every [`WINDOW`]. A flow moved from the lcore to the
//! direct egress may overtake a few of its own frames still queued on the
//! TAP: TCP takes that as reordering, never as a loss of the connection.

use std::time::{Duration, Instant};

/// Flow slots: `kept` of them leave through the lcore.
pub const SLOTS: u32 = 256;
/// Slots moved per decision.
pub const STEP: u32 = 32;
/// A decision per window of this long.
pub const WINDOW: Duration = Duration::from_millis(20);
/// Busier than this (in thousandths of the window), fewer kept slots.
pub const BUSY_HIGH: u32 = 850;
/// Less busy than this, more kept slots.
pub const BUSY_LOW: u32 = 600;

/// How long an lcore's last window counts toward a decision: an lcore
/// that reported none for this long has been waiting for work.
pub const FRESH: Duration = WINDOW.saturating_mul(2);

/// The busiest of the lcores' windows (each: its load in thousandths and
/// the time it ended, on one clock) that ended within [`FRESH`] of
/// `now`; 0 when none did.
pub fn busiest(windows: impl IntoIterator<Item = (u32, Duration)>, now: Duration) -> u32 {
    windows
        .into_iter()
        .filter(|&(_, ended)| now.saturating_sub(ended) <= FRESH)
        .map(|(busy, _)| busy)
        .max()
        .unwrap_or(0)
}

/// One lcore's load, window by window.
#[derive(Clone, Debug)]
pub struct Load {
    start: Option<Instant>,
    busy: Duration,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    pub fn new() -> Self {
        Load {
            start: None,
            busy: Duration::ZERO,
        }
    }

    /// After a poll that ran from `from` to `to`, `worked` if it found
    /// work. At the end of a window, the share of it spent working, in
    /// thousandths.
    pub fn after_poll(&mut self, from: Instant, to: Instant, worked: bool) -> Option<u32> {
        let start = *self.start.get_or_insert(from);
        if worked {
            self.busy += to.saturating_duration_since(from);
        }
        let wall = to.saturating_duration_since(start);
        if wall < WINDOW {
            return None;
        }
        let busy = (self.busy.as_nanos() * 1000 / wall.as_nanos()).min(1000) as u32;
        self.start = Some(to);
        self.busy = Duration::ZERO;
        Some(busy)
    }
}

/// The flow slots kept for the lcores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balance {
    kept: u32,
}

impl Default for Balance {
    fn default() -> Self {
        Self::new()
    }
}

impl Balance {
    /// Every flow through the lcores until they are busy.
    pub fn new() -> Self {
        Balance { kept: SLOTS }
    }

    /// A balance that keeps `kept` slots (at most [`SLOTS`]).
    pub fn with_kept(kept: u32) -> Self {
        Balance {
            kept: kept.min(SLOTS),
        }
    }

    pub fn kept(&self) -> u32 {
        self.kept
    }

    /// After a window whose busiest lcore worked `busy` thousandths of it:
    /// the new number of kept slots if it changes.
    pub fn after_window(&mut self, busy: u32) -> Option<u32> {
        let kept = if busy > BUSY_HIGH {
            self.kept.saturating_sub(STEP)
        } else if busy < BUSY_LOW {
            (self.kept + STEP).min(SLOTS)
        } else {
            self.kept
        };
        (kept != self.kept).then(|| {
            self.kept = kept;
            kept
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reports_the_share_of_it_spent_in_polls_that_worked() {
        let mut load = Load::new();
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        // 10 ms of work, then 10 ms of empty polls: half.
        assert_eq!(load.after_poll(us(0), us(10_000), true), None);
        assert_eq!(load.after_poll(us(10_000), us(19_999), false), None);
        assert_eq!(load.after_poll(us(19_999), us(20_000), false), Some(500));
        // The next window starts where that one ended.
        assert_eq!(load.after_poll(us(20_000), us(39_000), true), None);
        assert_eq!(load.after_poll(us(39_000), us(40_000), true), Some(1000));
    }

    #[test]
    fn a_wait_counts_as_idle_time() {
        let mut load = Load::new();
        let t0 = Instant::now();
        let us = |n| t0 + Duration::from_micros(n);
        assert_eq!(load.after_poll(us(0), us(5_000), true), None);
        // The lcore waited 95 ms, then a poll found work.
        assert_eq!(load.after_poll(us(100_000), us(100_001), true), Some(50));
    }

    #[test]
    fn the_busiest_recent_window_decides_and_an_old_one_no_longer_counts() {
        let ms = Duration::from_millis;
        let now = ms(1_000);
        // Lcore 1 saturated 10 ms ago, lcore 0 light just now.
        assert_eq!(busiest([(100, ms(1_000)), (950, ms(990))], now), 950);
        // Lcore 1's busy window ended before it went to wait, FRESH ago
        // and more: it no longer counts.
        assert_eq!(
            busiest([(100, ms(1_000)), (950, now - FRESH - ms(1))], now),
            100
        );
        assert_eq!(
            busiest([(950, now - FRESH)], now),
            950,
            "FRESH itself still counts"
        );
        assert_eq!(busiest([], now), 0, "no lcore reported");
        // A window stamped after `now` (another lcore's clock ran ahead
        // between its reading and this one's) counts.
        assert_eq!(busiest([(900, ms(1_001))], now), 900);
        assert!(FRESH >= 2 * WINDOW, "a working lcore reports every WINDOW");
    }

    #[test]
    fn a_busy_lcore_gives_flows_to_the_direct_egress_step_by_step_down_to_none() {
        let mut b = Balance::new();
        let mut kept = vec![b.kept()];
        for _ in 0..10 {
            if let Some(k) = b.after_window(990) {
                kept.push(k);
            }
        }
        assert_eq!(kept, vec![256, 224, 192, 160, 128, 96, 64, 32, 0]);
        assert_eq!(b.after_window(1000), None, "none left to give");
    }

    #[test]
    fn an_lcore_with_room_takes_them_back_and_the_band_between_holds() {
        let mut b = Balance::new();
        for _ in 0..3 {
            b.after_window(900);
        }
        assert_eq!(b.kept(), 160);
        for busy in [BUSY_LOW, 700, BUSY_HIGH] {
            assert_eq!(b.after_window(busy), None, "{busy} is in the band");
        }
        assert_eq!(b.after_window(BUSY_LOW - 1), Some(192));
        assert_eq!(b.after_window(0), Some(224));
        assert_eq!(b.after_window(0), Some(256));
        assert_eq!(b.after_window(0), None, "every flow is the lcore's");
    }
}
