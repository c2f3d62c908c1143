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
    /// Where it is configured: `budgets[i]`, or `own budget of <subject>` (admin API).
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
    let configured = state.limits.budgets().into_iter().map(|b| (None, b));
    let own = state
        .limits
        .own_budgets()
        .into_iter()
        .map(|(subject, b)| (Some(subject), b));
    for (own_subject, b) in configured.chain(own).collect::<Vec<_>>() {
        let (start, end) = period_bounds(b.period, now);
        // subject -> (spent, reserved)
        let mut rows: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        if let Some(subject) = &own_subject {
            let spent = state
                .store
                .spend_since(subject, start)
                .await
                .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
            rows.insert(subject.clone(), (spent, 0));
        }
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
                .usage_summary(group, Some(start), None, None)
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
        for bucket in state.limits.tracked_budget_buckets(&b.label, start) {
            if let Some(amounts) = state.limits.budget_state(&b.label, start, &bucket) {
                rows.insert(bucket, amounts);
            }
        }
        for (subject, (spent, reserved)) in rows {
            let remaining = (b.micros - spent - reserved).max(0);
            data.push(BudgetView {
                budget: b.label.to_string(),
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
    /// Budget alerts the webhook accepted since start.
    pub alerts_sent_total: u64,
    /// Budget alerts not delivered since start (after retries, or dropped from a full queue).
    pub alerts_failed_total: u64,
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
        alerts_sent_total: c.alerts_sent.load(Ordering::Relaxed),
        alerts_failed_total: c.alerts_failed.load(Ordering::Relaxed),
        tracked: state.limits.tracked(),
    })
    .into_response()
}

// ------------------------------------------------ own limits (keys, users, teams)

use axum::body::Bytes;
use axum::extract::Path;
use serde::Deserialize;

use crate::limits::config::{LimitSet, OwnBudget, OwnLimits};

fn bad(message: String) -> ApiError {
    ApiError::BadRequest {
        message,
        param: None,
    }
}

/// Validates own limits and a budget given to `POST /admin/keys`.
pub(super) fn checked_own(
    state: &AppState,
    limits: Option<LimitSet>,
    budget: Option<OwnBudget>,
) -> Result<OwnLimits, ApiError> {
    let own = OwnLimits { limits, budget };
    own.check(&state.limits.budget_alerts()).map_err(bad)?;
    Ok(own)
}

/// Stores and applies a subject's own limits.
pub(super) async fn set_own(
    state: &AppState,
    subject: &str,
    own: OwnLimits,
) -> Result<(), ApiError> {
    state
        .limits
        .set_own(subject, own)
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    tracing::info!(subject, "own limits updated");
    Ok(())
}

type OwnPatch = (Option<Option<LimitSet>>, Option<Option<OwnBudget>>);

/// Validates the values of an own-limits patch before anything is stored.
pub(super) fn check_patch(state: &AppState, patch: &OwnPatch) -> Result<(), ApiError> {
    OwnLimits {
        limits: patch.0.clone().flatten(),
        budget: patch.1.clone().flatten(),
    }
    .check(&state.limits.budget_alerts())
    .map_err(bad)
}

/// Applies a PATCH of own limits (absent: unchanged, `null`: removed).
pub(super) async fn patch_own(
    state: &AppState,
    subject: &str,
    patch: OwnPatch,
) -> Result<OwnLimits, ApiError> {
    let mut own = state.limits.own(subject);
    let (limits, budget) = patch;
    if limits.is_none() && budget.is_none() {
        return Ok(own);
    }
    if let Some(l) = limits {
        own.limits = l;
    }
    if let Some(b) = budget {
        own.budget = b;
    }
    own.check(&state.limits.budget_alerts()).map_err(bad)?;
    set_own(state, subject, own.clone()).await?;
    Ok(own)
}

/// A key view with the key's own limits and budget filled in.
pub(super) fn key_view(state: &AppState, mut v: super::KeyView) -> super::KeyView {
    let own = state.limits.own(&format!("key:{}", v.id));
    v.limits = own.limits;
    v.budget = own.budget;
    v
}

/// `PATCH /admin/users/{id}`'s answer: the user and its own limits.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// The user.
    #[serde(flatten)]
    pub user: crate::store::UserRecord,
    /// Its own limits and budget.
    #[serde(flatten)]
    pub own: OwnLimits,
}

/// A team's own limits and budget.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamView {
    /// Team id.
    pub id: String,
    /// Its own limits and budget.
    #[serde(flatten)]
    pub own: OwnLimits,
}

/// `GET /admin/teams`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamList {
    /// Teams with own limits or a budget, by id.
    pub data: Vec<TeamView>,
}

/// Body of `PATCH /admin/teams/{id}` (absent: unchanged, `null`: removed).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchOwn {
    /// Own limits (replacing the units of `limits.defaults.team` it sets).
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<LimitSet>)]
    pub limits: Option<Option<LimitSet>>,
    /// Own budget.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(value_type = Option<OwnBudget>)]
    pub budget: Option<Option<OwnBudget>>,
}

/// Teams with own limits or a budget.
#[utoipa::path(get, path = "/admin/teams", responses((status = 200, body = TeamList), (status = 401)))]
pub async fn list_teams(State(state): State<AppState>, _: Extension<Admin>) -> Response {
    let data = state
        .limits
        .owns("team:")
        .into_iter()
        .map(|(s, own)| TeamView {
            id: s.strip_prefix("team:").unwrap_or(&s).to_owned(),
            own,
        })
        .collect();
    axum::Json(TeamList { data }).into_response()
}

/// One team's own limits and budget (empty when it has none).
#[utoipa::path(get, path = "/admin/teams/{id}", params(("id" = String, Path)), responses((status = 200, body = TeamView)))]
pub async fn get_team(
    State(state): State<AppState>,
    _: Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    let own = state.limits.own(&format!("team:{id}"));
    axum::Json(TeamView { id, own }).into_response()
}

/// Sets a team's own limits and budget; takes effect on the next request.
#[utoipa::path(patch, path = "/admin/teams/{id}", params(("id" = String, Path)), request_body = PatchOwn,
    responses((status = 200, body = TeamView), (status = 400)))]
pub async fn patch_team(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PatchOwn = super::parse_body(&body)?;
    if id.is_empty() || id.len() > 256 {
        return Err(bad("A team id is 1 to 256 characters.".into()));
    }
    let subject = format!("team:{id}");
    let before = serde_json::to_value(state.limits.own(&subject)).ok();
    let own = patch_own(&state, &subject, (req.limits, req.budget)).await?;
    let after = serde_json::to_value(&own).ok();
    if before != after {
        super::audit_change(&state, &admin, "team_updated", subject, before, after).await;
    }
    Ok(axum::Json(TeamView { id, own }).into_response())
}

/// Removes a team's own limits and budget.
#[utoipa::path(delete, path = "/admin/teams/{id}", params(("id" = String, Path)), responses((status = 200, body = TeamView)))]
pub async fn delete_team(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let subject = format!("team:{id}");
    let old = state.limits.own(&subject);
    if old != OwnLimits::default() {
        set_own(&state, &subject, OwnLimits::default()).await?;
        let before = serde_json::to_value(&old).ok();
        let after = serde_json::to_value(OwnLimits::default()).ok();
        super::audit_change(&state, &admin, "team_updated", subject, before, after).await;
    }
    Ok(axum::Json(TeamView {
        id,
        own: OwnLimits::default(),
    })
    .into_response())
}
