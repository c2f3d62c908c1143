//! Budgets: spend in integer micro-dollars per budget, subject and period,
//! reserved atomically before a call and settled after it.

use std::sync::Mutex;

use time::{Date, Duration, Month, OffsetDateTime, Time};

use super::config::BudgetPeriod;

/// `[start, end)` of the period containing `now_ms`; `end` is `None` for `total`.
pub fn period_bounds(period: BudgetPeriod, now_ms: i64) -> (i64, Option<i64>) {
    let Ok(now) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000) else {
        return (0, None);
    };
    let ms = |d: Date| {
        i64::try_from(
            d.with_time(Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp_nanos()
                / 1_000_000,
        )
        .unwrap_or(i64::MAX)
    };
    let day = now.date();
    match period {
        BudgetPeriod::Total => (0, None),
        BudgetPeriod::Daily => (ms(day), day.next_day().map(ms)),
        BudgetPeriod::Weekly => {
            let back = i64::from(day.weekday().number_days_from_monday());
            let start = day - Duration::days(back);
            (ms(start), Some(ms(start + Duration::days(7))))
        }
        BudgetPeriod::Monthly => {
            let start = Date::from_calendar_date(day.year(), day.month(), 1).unwrap_or(day);
            let (y, m) = match day.month() {
                Month::December => (day.year() + 1, Month::January),
                m => (day.year(), m.next()),
            };
            let end = Date::from_calendar_date(y, m, 1).ok().map(ms);
            (ms(start), end)
        }
    }
}

/// Spend of one budget for one subject in one period.
#[derive(Debug, Default)]
pub struct BudgetState {
    /// `(spent, reserved)` micro-dollars; one lock so reserve and settle are atomic.
    amounts: Mutex<(i64, i64)>,
    /// The ledger's spend for this period has been added.
    pub(crate) loaded: tokio::sync::OnceCell<()>,
    /// Alert thresholds (percent) that have fired this period.
    alerted: Mutex<Vec<u32>>,
}

impl BudgetState {
    fn lock(&self) -> std::sync::MutexGuard<'_, (i64, i64)> {
        self.amounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds spend recorded before this process started.
    pub fn add_loaded(&self, micros: i64) {
        self.lock().0 += micros;
    }

    /// Reserves `micros` if spend + reservations + `micros` stays within `limit`.
    /// A budget already spent refuses even a free request.
    pub fn try_reserve(&self, limit: i64, micros: i64) -> bool {
        let mut g = self.lock();
        let (spent, reserved) = *g;
        if spent >= limit || spent.saturating_add(reserved).saturating_add(micros) > limit {
            return false;
        }
        g.1 += micros;
        true
    }

    /// Replaces a reservation by the actual cost; returns the new spend.
    pub fn settle(&self, reserved: i64, actual: i64) -> i64 {
        let mut g = self.lock();
        g.1 -= reserved;
        g.0 = g.0.saturating_add(actual);
        g.0
    }

    /// `(spent, reserved)`.
    pub fn amounts(&self) -> (i64, i64) {
        *self.lock()
    }

    /// Marks the threshold `percent` fired; true the first time.
    pub fn fire(&self, percent: u32) -> bool {
        let mut g = self
            .alerted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.contains(&percent) {
            return false;
        }
        g.push(percent);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        crate::clock::parse_time(s).unwrap_or_default()
    }

    #[test]
    fn periods_are_calendar_aligned_in_utc() {
        let now = at("2026-03-18T15:04:05Z"); // a Wednesday
        assert_eq!(
            period_bounds(BudgetPeriod::Daily, now),
            (at("2026-03-18T00:00:00Z"), Some(at("2026-03-19T00:00:00Z")))
        );
        assert_eq!(
            period_bounds(BudgetPeriod::Weekly, now),
            (at("2026-03-16T00:00:00Z"), Some(at("2026-03-23T00:00:00Z")))
        );
        assert_eq!(
            period_bounds(BudgetPeriod::Monthly, now),
            (at("2026-03-01T00:00:00Z"), Some(at("2026-04-01T00:00:00Z")))
        );
        assert_eq!(
            period_bounds(BudgetPeriod::Monthly, at("2026-12-31T23:59:59Z")),
            (at("2026-12-01T00:00:00Z"), Some(at("2027-01-01T00:00:00Z")))
        );
        assert_eq!(period_bounds(BudgetPeriod::Total, now), (0, None));
    }

    #[test]
    fn reserve_and_settle_hold_the_limit() {
        let s = BudgetState::default();
        assert!(s.try_reserve(100, 40));
        assert!(s.try_reserve(100, 40));
        assert!(!s.try_reserve(100, 40));
        assert_eq!(s.settle(40, 10), 10);
        assert!(s.try_reserve(100, 40));
        assert_eq!(s.amounts(), (10, 80));
        s.settle(40, 60);
        s.settle(40, 40);
        assert_eq!(s.amounts(), (110, 0));
        assert!(!s.try_reserve(100, 0));
        assert!(s.fire(80));
        assert!(!s.fire(80));
        assert!(s.fire(100));
    }
}
