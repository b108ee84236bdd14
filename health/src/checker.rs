//! Checker policy: from a stream of probe results to UP/DOWN transitions.

use serde::Serialize;

/// When a checker's verdict flips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that make an up (or unknown) checker down.
    pub failures_before_down: u32,
    /// Consecutive successes that make a down (or unknown) checker up.
    pub successes_before_up: u32,
}

/// A checker's verdict. `Unknown` until enough results are in: after a
/// (re)start, a node does not count an untested application as healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Unknown,
    Up,
    Down,
}

/// Consecutive results of one checker.
#[derive(Clone, Debug)]
pub struct Track {
    policy: Policy,
    verdict: Verdict,
    successes: u32,
    failures: u32,
}

impl Track {
    pub fn new(policy: Policy) -> Track {
        Track {
            policy,
            verdict: Verdict::Unknown,
            successes: 0,
            failures: 0,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// New thresholds; the results so far stand (a reload).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Forgets the results so far (after the application was restarted).
    pub fn reset(&mut self) {
        self.verdict = Verdict::Unknown;
        self.successes = 0;
        self.failures = 0;
    }

    /// Records one probe result; returns `(from, to)` when the verdict
    /// changes.
    pub fn record(&mut self, ok: bool) -> Option<(Verdict, Verdict)> {
        let next = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= self.policy.successes_before_up).then_some(Verdict::Up)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.policy.failures_before_down).then_some(Verdict::Down)
        };
        match next {
            Some(v) if v != self.verdict => {
                let from = self.verdict;
                self.verdict = v;
                Some((from, v))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(down: u32, up: u32) -> Track {
        Track::new(Policy {
            failures_before_down: down,
            successes_before_up: up,
        })
    }

    #[test]
    fn unknown_until_enough_results() {
        let mut t = track(3, 2);
        assert_eq!(t.record(true), None);
        assert_eq!(t.verdict(), Verdict::Unknown);
        assert_eq!(t.record(true), Some((Verdict::Unknown, Verdict::Up)));
        let mut t = track(3, 2);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some((Verdict::Unknown, Verdict::Down)));
    }

    #[test]
    fn failures_must_be_consecutive() {
        let mut t = track(3, 1);
        assert_eq!(t.record(true), Some((Verdict::Unknown, Verdict::Up)));
        for _ in 0..5 {
            assert_eq!(t.record(false), None);
            assert_eq!(t.record(false), None);
            assert_eq!(
                t.record(true),
                None,
                "a success in between resets the count"
            );
        }
        assert_eq!(t.verdict(), Verdict::Up);
        t.record(false);
        t.record(false);
        assert_eq!(t.record(false), Some((Verdict::Up, Verdict::Down)));
        assert_eq!(t.record(false), None, "one transition, not one per failure");
        assert_eq!(t.record(true), Some((Verdict::Down, Verdict::Up)));
    }

    #[test]
    fn reset_forgets() {
        let mut t = track(1, 3);
        t.record(false);
        assert_eq!(t.verdict(), Verdict::Down);
        t.reset();
        assert_eq!(t.verdict(), Verdict::Unknown);
        t.record(true);
        t.record(true);
        assert_eq!(t.verdict(), Verdict::Unknown);
        assert_eq!(t.record(true), Some((Verdict::Unknown, Verdict::Up)));
    }

    proptest::proptest! {
        /// The verdict always matches the tail of the result stream.
        #[test]
        fn verdict_follows_the_last_results(results in proptest::collection::vec(proptest::bool::ANY, 0..60), down in 1u32..5, up in 1u32..5) {
            let mut t = track(down, up);
            for r in &results {
                t.record(*r);
            }
            let tail_ok = results.iter().rev().take_while(|r| **r).count() as u32;
            let tail_fail = results.iter().rev().take_while(|r| !**r).count() as u32;
            if tail_ok >= up {
                proptest::prop_assert_eq!(t.verdict(), Verdict::Up);
            }
            if tail_fail >= down {
                proptest::prop_assert_eq!(t.verdict(), Verdict::Down);
            }
        }
    }
}
