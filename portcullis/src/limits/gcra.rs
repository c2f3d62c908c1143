//! The generic cell rate algorithm (GCRA) over integer time.
//!
//! A bucket of `limit` units per `period_ms` holds at most `limit` units and
//! refills continuously at `limit / period_ms`: a full bucket may be spent at
//! once, after which one unit comes back every `period_ms / limit`. There are
//! no windows, so no double burst at a window edge. Times are kept multiplied
//! by `limit`, so every quantity (including `Retry-After`) is an exact integer.
//!
//! The same bucket serves request rates (cost 1) and token limits (cost = the
//! reserved tokens; [`Gcra::refund`] gives back what was not used and
//! [`Gcra::charge`] adds usage beyond the reservation as debt).

/// How many units per how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// Units per period; at least 1.
    pub limit: u64,
    /// Period length in milliseconds; at least 1.
    pub period_ms: i64,
}

/// The answer to [`Gcra::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Taken; `remaining` more units fit now, the bucket is full again in `reset_ms`.
    Admitted {
        /// Units that would still be admitted now.
        remaining: u64,
        /// Milliseconds until the bucket is full again.
        reset_ms: i64,
    },
    /// Refused; the same cost fits in `retry_after_ms` (never, if it exceeds the limit).
    Refused {
        /// Milliseconds until the same cost would be admitted; `None` if it never can.
        retry_after_ms: Option<i64>,
    },
}

/// One bucket's state: the theoretical arrival time, scaled by the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    tat: i128,
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a <= 0 { 0 } else { (a + b - 1) / b }
}

fn to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Gcra {
    /// Takes `cost` units at `now_ms` if they fit.
    pub fn take(&mut self, spec: Spec, now_ms: i64, cost: u64) -> Take {
        let n = i128::from(spec.limit.max(1));
        let t = i128::from(spec.period_ms.max(1));
        let now = i128::from(now_ms) * n;
        let tat = self.tat.max(now);
        let new = tat + i128::from(cost) * t;
        let allow_at = new - t * n;
        if allow_at > now {
            let retry_after_ms = (cost <= spec.limit).then(|| to_i64(ceil_div(allow_at - now, n)));
            return Take::Refused { retry_after_ms };
        }
        self.tat = new;
        Take::Admitted {
            remaining: u64::try_from((now + t * n - new) / t).unwrap_or(0),
            reset_ms: to_i64(ceil_div(new - now, n)),
        }
    }

    /// Gives back `cost` units taken earlier.
    pub fn refund(&mut self, spec: Spec, cost: u64) {
        self.tat -= i128::from(cost) * i128::from(spec.period_ms.max(1));
    }

    /// Adds `cost` units without asking (usage beyond a reservation): debt
    /// that later requests wait for.
    pub fn charge(&mut self, spec: Spec, now_ms: i64, cost: u64) {
        let now = i128::from(now_ms) * i128::from(spec.limit.max(1));
        self.tat = self.tat.max(now) + i128::from(cost) * i128::from(spec.period_ms.max(1));
    }

    /// `(remaining, reset_ms)` at `now_ms` without taking anything.
    pub fn peek(&self, spec: Spec, now_ms: i64) -> (u64, i64) {
        let n = i128::from(spec.limit.max(1));
        let t = i128::from(spec.period_ms.max(1));
        let now = i128::from(now_ms) * n;
        let tat = self.tat.max(now);
        (
            u64::try_from((now + t * n - tat).max(0) / t).unwrap_or(0),
            to_i64(ceil_div(tat - now, n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn admitted(g: &mut Gcra, spec: Spec, now: i64, cost: u64) -> bool {
        matches!(g.take(spec, now, cost), Take::Admitted { .. })
    }

    #[test]
    fn full_bucket_then_one_per_interval() {
        let spec = Spec {
            limit: 3,
            period_ms: MIN,
        };
        let mut g = Gcra::default();
        let t0 = 1_000_000;
        assert_eq!(
            g.take(spec, t0, 1),
            Take::Admitted {
                remaining: 2,
                reset_ms: 20_000
            }
        );
        assert_eq!(
            g.take(spec, t0, 1),
            Take::Admitted {
                remaining: 1,
                reset_ms: 40_000
            }
        );
        assert_eq!(
            g.take(spec, t0, 1),
            Take::Admitted {
                remaining: 0,
                reset_ms: 60_000
            }
        );
        assert_eq!(
            g.take(spec, t0, 1),
            Take::Refused {
                retry_after_ms: Some(20_000)
            }
        );
        // One millisecond early: still refused, and the wait is exact.
        assert_eq!(
            g.take(spec, t0 + 19_999, 1),
            Take::Refused {
                retry_after_ms: Some(1)
            }
        );
        assert!(admitted(&mut g, spec, t0 + 20_000, 1));
        assert!(!admitted(&mut g, spec, t0 + 20_000, 1));
    }

    #[test]
    fn no_double_burst_at_a_window_edge() {
        // A fixed window would admit 10 at 59.999s and 10 more at 60.000s.
        let spec = Spec {
            limit: 10,
            period_ms: MIN,
        };
        let mut g = Gcra::default();
        let edge = 59_999;
        let first = (0..20).filter(|_| admitted(&mut g, spec, edge, 1)).count();
        let second = (0..20)
            .filter(|_| admitted(&mut g, spec, edge + 1, 1))
            .count();
        assert_eq!((first, second), (10, 0));
        // After a whole period the bucket is full again, not fuller.
        let later = (0..20)
            .filter(|_| admitted(&mut g, spec, edge + MIN, 1))
            .count();
        assert_eq!(later, 10);
    }

    #[test]
    fn every_unit_admits_exactly_its_limit_per_period() {
        for (limit, period) in [
            (5u64, 1_000i64),
            (60, 60_000),
            (100, 3_600_000),
            (2000, 86_400_000),
            (7, 30 * 86_400_000),
        ] {
            let spec = Spec {
                limit,
                period_ms: period,
            };
            let mut g = Gcra::default();
            let t0 = 1_700_000_000_000;
            let n = (0..limit * 2)
                .filter(|_| admitted(&mut g, spec, t0, 1))
                .count();
            assert_eq!(n as u64, limit, "burst for {limit}/{period}");
            // Exactly one more after one emission interval (rounded up), none a ms before.
            let interval = (period + limit as i64 - 1) / limit as i64;
            assert!(
                !admitted(&mut g, spec, t0 + interval - 1, 1),
                "{limit}/{period}"
            );
            assert!(admitted(&mut g, spec, t0 + interval, 1), "{limit}/{period}");
            // Over a whole period at a steady pace: `limit` more.
            let mut g = Gcra::default();
            let mut count = 0;
            let mut t = t0;
            while t < t0 + period {
                while admitted(&mut g, spec, t, 1) {
                    count += 1;
                }
                t += interval.max(1);
            }
            assert!(
                count as u64 >= limit && count as u64 <= 2 * limit,
                "{count}"
            );
        }
    }

    #[test]
    fn token_costs_reserve_refund_and_charge() {
        let spec = Spec {
            limit: 1000,
            period_ms: MIN,
        };
        let mut g = Gcra::default();
        let t0 = 0;
        assert!(admitted(&mut g, spec, t0, 600));
        assert_eq!(
            g.take(spec, t0, 600),
            Take::Refused {
                retry_after_ms: Some(12_000)
            }
        );
        // The first used only 100: 500 come back, so 600 fit now.
        g.refund(spec, 500);
        assert_eq!(g.peek(spec, t0), (900, 6_000));
        assert!(admitted(&mut g, spec, t0, 600));
        // Usage beyond the reservation is debt.
        g.charge(spec, t0, 700);
        assert_eq!(g.peek(spec, t0), (0, 84_000));
        assert_eq!(
            g.take(spec, t0, 1),
            Take::Refused {
                retry_after_ms: Some(24_060)
            }
        );
        // A cost above the limit never fits.
        assert_eq!(
            Gcra::default().take(spec, t0, 1001),
            Take::Refused {
                retry_after_ms: None
            }
        );
    }
}
