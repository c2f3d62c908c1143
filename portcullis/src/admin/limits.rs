//! `GET /admin/budgets` and `GET /admin/limits`: budget spend and the limiter's counters.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::authn::Admin;
use crate::authz::glob;
use crate::authz::rules::Subject;
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::limits::budget::period_bounds;
use crate::limits::config::{BudgetPeriod, usd};
use crate::store::UsageGroup;

/// One budget of one subject in its current period.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// Where it is configured, `budgets[i]`.
    pub budget: String,
    /// The subject it is counted for: `team:<id>`, `user:<id>`, `key:<id>` or `anonymous`.
    pub subject: String,
    /// `daily`, `weekly`, `monthly` or `total`.
    pub period: BudgetPeriod,
    /// Start of the current period (RFC 3339).
    pub period_start: String,
    /// End of the current period (RFC 3339); `null` for `total`.
    pub period_end: Option<String>,
    /// The budget, micro-dollars.
    pub budget_micros: i64,
    /// Spent this period, micro-dollars.
    pub spent_micros: i64,
    /// Reserved by requests in flight, micro-dollars.
    pub reserved_micros: i64,
    /// Budget minus spend and reservations (never below 0), micro-dollars.
    pub remaining_micros: i64,
    /// The budget in US dollars (decimal string).
    pub budget_usd: String,
    /// Spent in US dollars (decimal string).
    pub spent_usd: String,
    /// Remaining in US dollars (decimal string).
    pub remaining_usd: String,
}

/// `GET /admin/budgets`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetList {
    /// One row per budget and subject with spend this period (or tracked since start).
    pub data: Vec<BudgetView>,
}

/// Each budget's spend, reservations, remaining amount and period end, per subject.
#[utoipa::path(get, path = "/admin/budgets", responses((status = 200, body = BudgetList), (status = 401)))]
pub async fn budgets(
    State(state): State<AppState>,
    _: Extension<Admin>,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let mut data = Vec::new();
    for b in state.limits.budgets() {
        let (start, end) = period_bounds(b.period, now);
        // subject -> (spent, reserved)
        let mut rows: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (group, kind) in [
            (UsageGroup::Team, "team"),
            (UsageGroup::User, "user"),
            (UsageGroup::Key, "key"),
        ] {
            let globs: Vec<&str> = b
                .subjects
                .iter()
                .filter_map(|s| match (s, kind) {
                    (Subject::Team(g), "team")
                    | (Subject::User(g), "user")
                    | (Subject::Key(g), "key") => Some(g.as_str()),
                    _ => None,
                })
                .collect();
            if globs.is_empty() {
                continue;
            }
            let summary = state
                .store
                .usage_summary(group, Some(start), None)
                .await
                .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
            for r in summary {
                if let Some(v) = r.group
                    && globs.iter().any(|g| glob::matches(g, &v))
                {
                    rows.insert(format!("{kind}:{v}"), (r.cost_micros, 0));
                }
            }
        }
        for bucket in state.limits.tracked_budget_buckets(b.index, start) {
            if let Some(amounts) = state.limits.budget_state(b.index, start, &bucket) {
                rows.insert(bucket, amounts);
            }
        }
        for (subject, (spent, reserved)) in rows {
            let remaining = (b.micros - spent - reserved).max(0);
            data.push(BudgetView {
                budget: format!("budgets[{}]", b.index),
                subject,
                period: b.period,
                period_start: rfc3339(start),
                period_end: end.map(rfc3339),
                budget_micros: b.micros,
                spent_micros: spent,
                reserved_micros: reserved,
                remaining_micros: remaining,
                budget_usd: usd(b.micros),
                spent_usd: usd(spent),
                remaining_usd: usd(remaining),
            });
        }
    }
    Ok(axum::Json(BudgetList { data }).into_response())
}

/// `GET /admin/limits`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimiterStats {
    /// Requests refused by a rate, token or concurrency limit since start.
    pub rate_limited_total: u64,
    /// Requests refused by an exhausted budget since start.
    pub budget_exhausted_total: u64,
    /// Successful requests whose provider reported no usage (charged their reservation).
    pub usage_unreported_total: u64,
    /// Tracked buckets per kind, and the bound (`limits.max_tracked_subjects`).
    #[schema(value_type = Object)]
    pub tracked: serde_json::Value,
}

/// The limiter's counters and how many subjects it tracks.
#[utoipa::path(get, path = "/admin/limits", responses((status = 200, body = LimiterStats), (status = 401)))]
pub async fn stats(State(state): State<AppState>, _: Extension<Admin>) -> Response {
    let c = state.limits.counters();
    axum::Json(LimiterStats {
        rate_limited_total: c.rate_limited.load(Ordering::Relaxed),
        budget_exhausted_total: c.budget_exhausted.load(Ordering::Relaxed),
        usage_unreported_total: c.usage_unreported.load(Ordering::Relaxed),
        tracked: state.limits.tracked(),
    })
    .into_response()
}
