//! Limits: request rates, token limits, concurrency caps and budgets.
//!
//! ```text
//! Permit + Estimate ─► Limiter::admit ─► Reservation (#[must_use]) ─► … ─► Reservation::settle / drop
//! ```
//!
//! - Request rates are GCRA buckets ([`gcra`]): exact `Retry-After`, no double burst.
//! - Token limits are GCRA buckets too, charged the estimate up front and
//!   settled with the reported usage (refund, or debt beyond the estimate).
//! - Concurrency caps are counters; the [`Reservation`] holds a slot until it
//!   is settled or dropped (completion, error, client disconnect).
//! - Budgets reserve the estimated cost under one lock per budget and subject
//!   and settle the real cost, in integer micro-dollars ([`budget`]).
//!
//! All state is in memory, in caches bounded by `limits.max_tracked_subjects`
//! entries per unit and expired after a period of idleness, so a spray of
//! distinct principals cannot grow memory without bound. Time comes from
//! [`crate::clock`]. Budget spend is read from the store's per-day spend
//! (kept with the ledger) the first time a subject is seen in a period.
//! The configured policy (limits, budgets, prices) is swapped whole on reload;
//! the state stays.

pub mod budget;
pub mod config;
pub mod estimate;
pub mod gcra;
pub mod sse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::sync::Cache;

use self::budget::BudgetState;
use self::config::{BudgetAlerts, BudgetConfig, LimitSet, Price, Pricing, RatePeriod, Unit};
pub use self::estimate::Estimate;
use self::gcra::{Gcra, Spec, Take};
use crate::authn::Principal;
use crate::authz::Permit;
use crate::authz::glob;
use crate::authz::rules::Subject;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::ApiError;
use crate::store::SharedStore;

/// Endpoint groups whose requests carry token usage or a price: token limits and budgets apply to them.
pub const BILLABLE_GROUPS: &[&str] = &[
    "chat",
    "completions",
    "responses",
    "embeddings",
    "images",
    "audio",
];

/// Which limit refused a request, for the message and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where it is configured, e.g. `limits.defaults.user.requests_per_minute`.
    pub limit: String,
    /// Whose bucket, e.g. `user:alice`.
    pub subject: String,
    /// What the limit is, e.g. `60 requests per minute`.
    pub what: String,
    /// How long until the same request would fit.
    pub retry_after: Duration,
    /// For request and token limits: `("requests" | "tokens", limit)`, for the `x-ratelimit-*` headers of the 429.
    pub rate: Option<(&'static str, u64)>,
}

type Bucket = Arc<Mutex<Gcra>>;

fn lock(b: &Bucket) -> std::sync::MutexGuard<'_, Gcra> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The values of the `x-ratelimit-*` headers of one kind (`requests` or `tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeader {
    /// The limit.
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: i64,
}

impl RateHeader {
    fn tighter(self, other: Option<RateHeader>) -> RateHeader {
        match other {
            // remaining/limit smaller is tighter: compare cross-multiplied.
            Some(o)
                if u128::from(o.remaining) * u128::from(self.limit)
                    <= u128::from(self.remaining) * u128::from(o.limit) =>
            {
                o
            }
            _ => self,
        }
    }
}

/// Counters of what the limiter did (exposed at `GET /admin/limits`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests refused by a rate, token or concurrency limit.
    pub rate_limited: AtomicU64,
    /// Requests refused by an exhausted budget.
    pub budget_exhausted: AtomicU64,
    /// Successful requests whose provider reported no usage: charged their reservation.
    pub usage_unreported: AtomicU64,
    /// Budget alerts the webhook accepted.
    pub alerts_sent: AtomicU64,
    /// Budget alerts that could not be delivered (after retries, or the queue was full).
    pub alerts_failed: AtomicU64,
}

/// A subject's own limits and budget, ready to apply: its limits merged over
/// the defaults of its kind, and its budget.
struct Own {
    limits: config::OwnLimits,
    slots: Option<Vec<Slot>>,
    budget: Option<Arc<BudgetConfig>>,
}

impl Own {
    fn new(subject: &str, limits: config::OwnLimits, pol: &Policy) -> Own {
        let defaults = match subject.split_once(':').map(|(k, _)| k) {
            Some("key") => &pol.limits.key,
            Some("user") => &pol.limits.user,
            Some("team") => &pol.limits.team,
            _ => &LimitSet::default(),
        };
        Own {
            slots: limits
                .limits
                .as_ref()
                .map(|l| slots(&format!("limits of {subject}"), &l.over(defaults))),
            budget: limits.budget_config(subject, &pol.alerts).map(Arc::new),
            limits,
        }
    }
}

/// One unit of one configured limit, named once: the refusal names `name`;
/// the state caches key the bucket by `id` (which includes the value, so a
/// changed limit starts a fresh bucket) and the subject.
#[derive(Debug, Clone)]
struct Slot {
    unit: Unit,
    limit: u64,
    /// `limits.defaults.key.requests_per_minute`.
    name: Arc<str>,
    /// `name|limit`.
    id: Arc<str>,
}

fn slots(scope: &str, set: &LimitSet) -> Vec<Slot> {
    set.units()
        .map(|(unit, limit)| {
            let name = format!("{scope}.{}", unit.key());
            Slot {
                unit,
                limit,
                id: format!("{name}|{limit}").into(),
                name: name.into(),
            }
        })
        .collect()
}

/// A bucket in the state caches: which limit, whose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StateKey {
    limit: Arc<str>,
    subject: Arc<str>,
}

/// A budget's state: which budget, which period, whose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BudgetKey {
    budget: Arc<str>,
    start: i64,
    subject: Arc<str>,
}

/// What the configuration says; swapped whole on reload, while the limiter's
/// state (buckets, counters, spend) stays.
struct Policy {
    limits: config::LimitsConfig,
    /// `limits.defaults.{key,user,team}`, as slots.
    defaults: [Vec<Slot>; 3],
    /// `limits.rules[i]`, as slots.
    rules: Vec<Vec<Slot>>,
    budgets: Vec<Arc<BudgetConfig>>,
    pricing: Pricing,
    alerts: BudgetAlerts,
}

impl Policy {
    fn of(config: &Config) -> Policy {
        let l = &config.limits;
        Policy {
            defaults: [
                slots("limits.defaults.key", &l.key),
                slots("limits.defaults.user", &l.user),
                slots("limits.defaults.team", &l.team),
            ],
            rules: l
                .rules
                .iter()
                .map(|r| slots(&format!("limits.rules[{}]", r.index), &r.limits))
                .collect(),
            limits: config.limits.clone(),
            budgets: config.budgets.iter().cloned().map(Arc::new).collect(),
            pricing: config.pricing.clone(),
            alerts: config.budget_alerts.clone(),
        }
    }
}

/// One budget alert on its way to a webhook.
struct AlertJob {
    url: crate::secret::Secret,
    /// The store setting that makes it once per threshold per period.
    marker: String,
    payload: serde_json::Value,
}

struct Shared {
    overrides: std::sync::RwLock<std::collections::HashMap<String, Arc<Own>>>,
    has_overrides: std::sync::atomic::AtomicBool,
    policy: ArcSwap<Policy>,
    max_tracked: u64,
    rates: [Cache<StateKey, Bucket>; 5],
    concurrency: Cache<StateKey, Arc<AtomicU64>>,
    budget_states: Cache<BudgetKey, Arc<BudgetState>>,
    store: SharedStore,
    clock: SharedClock,
    /// The alert queue, started with the first alert (`None`: no runtime to run it on).
    alerts: std::sync::OnceLock<Option<AlertQueue>>,
    counters: Counters,
}

/// The alert task and what feeds and stops it.
struct AlertQueue {
    tx: tokio::sync::mpsc::Sender<AlertJob>,
    /// Awaited at shutdown ([`Limiter::finish_alerts`]).
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Tells the task to take no new alerts and end once the queue is empty.
    closing: Arc<tokio::sync::Notify>,
}

impl Shared {
    /// The own limits and budgets (a poisoned lock still holds valid data:
    /// every writer replaces whole entries).
    fn overrides(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<String, Arc<Own>>> {
        self.overrides
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn overrides_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, Arc<Own>>> {
        self.overrides
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The limiter: cheap to clone.
#[derive(Clone)]
pub struct Limiter(Arc<Shared>);

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rules", &self.0.policy.load().limits.rules.len())
            .field("budgets", &self.0.policy.load().budgets.len())
            .finish_non_exhaustive()
    }
}

fn period_index(p: RatePeriod) -> usize {
    match p {
        RatePeriod::Second => 0,
        RatePeriod::Minute => 1,
        RatePeriod::Hour => 2,
        RatePeriod::Day => 3,
        RatePeriod::Month => 4,
    }
}

/// The bucket a matched subject pattern stands for: per team, per user, per
/// key; role, issuer and `*` patterns count per user (else per key).
pub fn bucket_of(subject: &Subject, p: &Principal) -> Arc<str> {
    if let (Subject::Team(_), Some(t)) = (subject, p.team_subject()) {
        return t.clone();
    }
    if let (Subject::Key(_), Some(k)) = (subject, p.key_subject()) {
        return k.clone();
    }
    match (p.user_subject(), p.key_subject()) {
        (Some(u), _) => u.clone(),
        (None, Some(k)) => k.clone(),
        (None, None) => Arc::from("anonymous"),
    }
}

/// Sets OpenAI's `x-ratelimit-{limit,remaining,reset}-{kind}` headers
/// (`kind`: `requests` or `tokens`; anything else sets nothing).
pub fn insert_rate_headers(
    out: &mut http::HeaderMap,
    kind: &str,
    limit: u64,
    remaining: u64,
    reset_ms: i64,
) {
    use http::HeaderName;
    const REQUESTS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ];
    const TOKENS: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ];
    let [l, r, t] = match kind {
        "requests" => REQUESTS,
        "tokens" => TOKENS,
        _ => return,
    };
    out.insert(l, http::HeaderValue::from(limit));
    out.insert(r, http::HeaderValue::from(remaining));
    if let Ok(v) = http::HeaderValue::from_str(&reset_text(reset_ms)) {
        out.insert(t, v);
    }
}

/// A reset time in OpenAI's style: `20ms`, `1.5s`, `6m0s`, `1h0m0s`.
pub fn reset_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn describe(unit: Unit, limit: u64) -> String {
    match unit {
        Unit::Requests(p) => format!("{limit} requests per {}", p.name()),
        Unit::Tokens(p) => format!("{limit} tokens per {}", p.name()),
        Unit::Concurrent => format!("{limit} concurrent requests"),
    }
}

impl Limiter {
    /// A limiter for `config`'s `limits`, `budgets` and `pricing`.
    pub fn new(config: &Config, store: SharedStore, clock: SharedClock) -> Limiter {
        let cap = config.limits.max_tracked_subjects;
        let rate = |p: RatePeriod| {
            Cache::builder()
                .max_capacity(cap)
                .time_to_idle(Duration::from_millis(u64::try_from(p.ms()).unwrap_or(1)))
                .build()
        };
        Limiter(Arc::new(Shared {
            overrides: std::sync::RwLock::default(),
            has_overrides: std::sync::atomic::AtomicBool::new(false),
            policy: ArcSwap::from_pointee(Policy::of(config)),
            max_tracked: cap,
            rates: [
                rate(RatePeriod::Second),
                rate(RatePeriod::Minute),
                rate(RatePeriod::Hour),
                rate(RatePeriod::Day),
                rate(RatePeriod::Month),
            ],
            concurrency: Cache::builder()
                .max_capacity(cap)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            budget_states: Cache::builder()
                .max_capacity(cap)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            store,
            clock,
            alerts: std::sync::OnceLock::new(),
            counters: Counters::default(),
        }))
    }

    /// Applies a reloaded configuration's `limits`, `budgets`, `budget_alerts`
    /// and `pricing`. Buckets of limits that did not change keep their state;
    /// a changed limit starts a fresh bucket. Budget spend stays (it is the
    /// subject's spend in the period, whatever the amount). Requests in flight
    /// settle against what they reserved. `max_tracked_subjects` needs a restart.
    pub fn reconfigure(&self, config: &Config) {
        let pol = Arc::new(Policy::of(config));
        // Own limits merge over the new defaults; own budgets take the new alert defaults.
        let mut map = self.0.overrides_mut();
        for (subject, own) in map.iter_mut() {
            *own = Arc::new(Own::new(subject, own.limits.clone(), &pol));
        }
        self.0.policy.store(pol);
    }

    /// Own budgets (admin API) that chose alert thresholds while no
    /// `budget_alerts.webhook` is configured: their alerts have nowhere to go.
    /// Named on reload and at start, so the operator hears of it.
    pub fn silent_alerts(&self) -> Vec<String> {
        if self.0.policy.load().alerts.webhook.is_some() {
            return Vec::new();
        }
        let map = self.0.overrides();
        let mut out: Vec<String> = map
            .iter()
            .filter(|(_, own)| {
                own.limits
                    .budget
                    .as_ref()
                    .and_then(|b| b.alert_at_percent.as_ref())
                    .is_some_and(|t| !t.is_empty())
            })
            .map(|(subject, _)| {
                format!("the own budget of {subject} has alert thresholds, but budget_alerts.webhook is not set: its alerts are not sent")
            })
            .collect();
        out.sort();
        out
    }

    /// The alert defaults in force (own budgets are checked against them).
    pub fn budget_alerts(&self) -> BudgetAlerts {
        self.0.policy.load().alerts.clone()
    }

    /// True when any limit or budget is configured (or set through the admin API).
    pub fn active(&self) -> bool {
        let p = self.0.policy.load();
        !p.limits.is_empty()
            || !p.budgets.is_empty()
            || self.0.has_overrides.load(Ordering::Relaxed)
    }

    /// Loads the own limits and budgets stored through the admin API.
    pub async fn load_overrides(&self) -> Result<usize, crate::store::StoreError> {
        let rows = self.0.store.list_limit_overrides().await?;
        let n = rows.len();
        for r in rows {
            fn parse<T: serde::de::DeserializeOwned>(v: Option<String>) -> Option<T> {
                v.and_then(|t| serde_json::from_str(&t).ok())
            }
            let own = config::OwnLimits {
                limits: parse(r.limits),
                budget: parse(r.budget),
            };
            self.install(r.subject, own);
        }
        Ok(n)
    }

    fn install(&self, subject: String, own: config::OwnLimits) {
        let mut map = self.0.overrides_mut();
        if own.limits.is_none() && own.budget.is_none() {
            map.remove(&subject);
        } else {
            let own = Own::new(&subject, own, &self.0.policy.load());
            map.insert(subject, Arc::new(own));
        }
        self.0
            .has_overrides
            .store(!map.is_empty(), Ordering::Relaxed);
    }

    /// Stores and applies `subject`'s own limits and budget (both `None`: removes them).
    pub async fn set_own(
        &self,
        subject: &str,
        own: config::OwnLimits,
    ) -> Result<(), crate::store::StoreError> {
        let json = |v: Option<String>| v;
        let record = crate::store::LimitOverrideRecord {
            subject: subject.to_owned(),
            limits: json(
                own.limits
                    .as_ref()
                    .and_then(|l| serde_json::to_string(l).ok()),
            ),
            budget: json(
                own.budget
                    .as_ref()
                    .and_then(|b| serde_json::to_string(b).ok()),
            ),
        };
        self.0
            .store
            .put_limit_override(&record, self.0.clock.now_ms())
            .await?;
        self.install(subject.to_owned(), own);
        Ok(())
    }

    /// `subject`'s own limits and budget (empty when it has none).
    pub fn own(&self, subject: &str) -> config::OwnLimits {
        self.own_arc(subject)
            .map(|o| o.limits.clone())
            .unwrap_or_default()
    }

    fn own_arc(&self, subject: &str) -> Option<Arc<Own>> {
        if !self.0.has_overrides.load(Ordering::Relaxed) {
            return None;
        }
        self.0.overrides().get(subject).cloned()
    }

    /// Every subject with own limits or a budget whose name starts with `prefix` (`team:`), sorted.
    pub fn owns(&self, prefix: &str) -> Vec<(String, config::OwnLimits)> {
        let map = self.0.overrides();
        let mut out: Vec<_> = map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.limits.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Own budgets, with their subjects.
    pub fn own_budgets(&self) -> Vec<(String, Arc<BudgetConfig>)> {
        let map = self.0.overrides();
        map.iter()
            .filter_map(|(k, v)| v.budget.clone().map(|b| (k.clone(), b)))
            .collect()
    }

    /// `limits.default_max_tokens`.
    pub fn default_max_tokens(&self) -> Option<u64> {
        self.0.policy.load().limits.default_max_tokens
    }

    /// The price of a model.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.0.policy.load().pricing.get(provider, model)
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// Entries tracked now, per kind (approximate; for `GET /admin/limits`).
    pub fn tracked(&self) -> serde_json::Value {
        let s = &self.0;
        serde_json::json!({
            "request_and_token_buckets": s.rates.iter().map(Cache::entry_count).sum::<u64>(),
            "concurrency_counters": s.concurrency.entry_count(),
            "budgets": s.budget_states.entry_count(),
            "max_per_kind": s.max_tracked,
        })
    }

    /// The configured budgets.
    pub fn budgets(&self) -> Vec<Arc<BudgetConfig>> {
        self.0.policy.load().budgets.clone()
    }

    /// The in-memory state of one budget bucket in the period starting at `start`, if tracked.
    pub fn budget_state(&self, label: &str, start: i64, bucket: &str) -> Option<(i64, i64)> {
        let key = BudgetKey {
            budget: label.into(),
            start,
            subject: bucket.into(),
        };
        self.0
            .budget_states
            .get(&key)
            .filter(|s| s.loaded.initialized())
            .map(|s| s.amounts())
    }

    /// Tracked budget buckets of the budget `label` in the period starting at `start`.
    pub fn tracked_budget_buckets(&self, label: &str, start: i64) -> Vec<String> {
        self.0
            .budget_states
            .iter()
            .filter(|(k, _)| &*k.budget == label && k.start == start)
            .map(|(k, _)| k.subject.to_string())
            .collect()
    }

    /// Applies every limit and budget that covers this request. On refusal
    /// nothing stays taken.
    pub async fn admit(
        &self,
        permit: &Permit,
        est: Estimate,
        price: Option<Price>,
    ) -> Result<Reservation, ApiError> {
        let s = &self.0;
        let mut res = Reservation::empty(self.clone());
        let billable = BILLABLE_GROUPS.contains(&permit.group());
        res.billable = billable;
        if billable {
            res.reserved_tokens = est.tokens();
            res.reserved_cost =
                price.map_or(0, |pr| pr.cost(est.prompt_tokens, 0, est.output_tokens));
        }
        let pol = s.policy.load_full();
        let overrides = s.has_overrides.load(Ordering::Relaxed);
        if pol.limits.is_empty() && pol.budgets.is_empty() && !overrides {
            return Ok(res);
        }
        let p = permit.principal();
        let now = s.clock.now_ms();
        let provider = permit.provider().name.as_str();
        let model = permit.model();
        // (whose bucket, which limits); own limits are held through their `Own`.
        let mut sets: Vec<(Arc<str>, &[Slot])> = Vec::new();
        let mut owns: Vec<(Arc<str>, Arc<Own>)> = Vec::new();
        let mut budgets: Vec<(Arc<BudgetConfig>, Arc<str>)> = Vec::new();
        for (i, (subject, defaults)) in [
            (p.key_subject(), &pol.limits.key),
            (p.user_subject(), &pol.limits.user),
            (p.team_subject(), &pol.limits.team),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(bucket) = subject else { continue };
            if defaults.is_empty() && !overrides {
                continue;
            }
            match self.own_arc(bucket) {
                Some(own) => {
                    if let Some(b) = own.budget.clone() {
                        budgets.push((b, bucket.clone()));
                    }
                    if own.slots.is_some() {
                        owns.push((bucket.clone(), own));
                    } else if !defaults.is_empty() {
                        sets.push((bucket.clone(), &pol.defaults[i]));
                    }
                }
                None if !defaults.is_empty() => sets.push((bucket.clone(), &pol.defaults[i])),
                None => {}
            }
        }
        for (bucket, own) in &owns {
            if let Some(sl) = &own.slots {
                sets.push((bucket.clone(), sl));
            }
        }
        for (r, rule_slots) in pol.limits.rules.iter().zip(&pol.rules) {
            let models_ok = r.models.as_ref().is_none_or(|globs| {
                model.is_some_and(|m| {
                    globs.iter().any(|g| {
                        let (gp, gm) = g.split_once('/').unwrap_or((g.as_str(), "*"));
                        glob::matches(gp, provider) && glob::matches(gm, m)
                    })
                })
            });
            if !models_ok {
                continue;
            }
            if let Some(subject) = r.subjects.iter().find(|sub| sub.matches(p)) {
                sets.push((bucket_of(subject, p), rule_slots));
            }
        }
        for (bucket, slots) in &sets {
            for slot in slots.iter() {
                let (unit, limit) = (slot.unit, slot.limit);
                let refused = |retry_ms: i64| Refusal {
                    limit: slot.name.to_string(),
                    subject: bucket.to_string(),
                    what: describe(unit, limit),
                    retry_after: Duration::from_millis(u64::try_from(retry_ms).unwrap_or(0)),
                    rate: match unit {
                        Unit::Requests(_) => Some(("requests", limit)),
                        Unit::Tokens(_) => Some(("tokens", limit)),
                        Unit::Concurrent => None,
                    },
                };
                let key = StateKey {
                    limit: slot.id.clone(),
                    subject: bucket.clone(),
                };
                match unit {
                    Unit::Requests(period) | Unit::Tokens(period) => {
                        let cost = match unit {
                            Unit::Tokens(_) if !billable => continue,
                            Unit::Tokens(_) => est.tokens(),
                            _ => 1,
                        };
                        let spec = Spec {
                            limit,
                            period_ms: period.ms(),
                        };
                        let (b, took) = self.take(period, key, spec, now, cost);
                        match took {
                            Take::Admitted {
                                remaining,
                                reset_ms,
                            } => {
                                let h = RateHeader {
                                    limit,
                                    remaining,
                                    reset_ms,
                                };
                                if let Unit::Tokens(_) = unit {
                                    res.headers.tokens = Some(h.tighter(res.headers.tokens));
                                    res.tokens.push((b, spec));
                                } else {
                                    res.headers.requests = Some(h.tighter(res.headers.requests));
                                    res.requests.push((b, spec));
                                }
                            }
                            Take::Refused { retry_after_ms } => {
                                s.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                                let r = refused(retry_after_ms.unwrap_or(period.ms()));
                                return Err(if retry_after_ms.is_none() {
                                    ApiError::RequestTooLarge(Box::new(r))
                                } else {
                                    ApiError::RateLimited(Box::new(r))
                                });
                            }
                        }
                    }
                    Unit::Concurrent => {
                        let c = s.concurrency.get_with(key, Arc::default);
                        let ok = c
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                (n < limit).then_some(n + 1)
                            })
                            .is_ok();
                        if !ok {
                            s.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                            return Err(ApiError::RateLimited(Box::new(refused(1000))));
                        }
                        res.concurrency.push(c);
                    }
                }
            }
        }
        if billable {
            for b in &pol.budgets {
                if let Some(subject) = b.subjects.iter().find(|sub| sub.matches(p)) {
                    budgets.push((b.clone(), bucket_of(subject, p)));
                }
            }
        }
        if billable && !budgets.is_empty() {
            let cost = res.reserved_cost;
            for (b, bucket) in budgets {
                let (start, end) = budget::period_bounds(b.period, now);
                let key = BudgetKey {
                    budget: b.label.clone(),
                    start,
                    subject: bucket.clone(),
                };
                let state = s.budget_states.get_with(key, Arc::default);
                state
                    .loaded
                    .get_or_try_init(|| async {
                        let spent = s.store.spend_since(&bucket, start).await?;
                        state.add_loaded(spent);
                        Ok::<(), crate::store::StoreError>(())
                    })
                    .await
                    .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
                if !state.try_reserve(b.micros, cost) {
                    s.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                    let wait = end.map_or(86_400_000, |e| (e - now).max(1000));
                    return Err(ApiError::QuotaExceeded(Box::new(Refusal {
                        limit: b.label.to_string(),
                        subject: bucket.to_string(),
                        what: format!(
                            "a {} budget of ${}",
                            match b.period {
                                config::BudgetPeriod::Daily => "daily",
                                config::BudgetPeriod::Weekly => "weekly",
                                config::BudgetPeriod::Monthly => "monthly",
                                config::BudgetPeriod::Total => "total",
                            },
                            config::usd(b.micros)
                        ),
                        retry_after: Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
                        rate: None,
                    })));
                }
                res.budgets.push(Hold {
                    state,
                    budget: b.clone(),
                    bucket,
                    start,
                    end,
                });
            }
        }
        // Admitted: the request counts stay taken whatever happens next.
        res.requests.clear();
        Ok(res)
    }

    /// Takes `cost` from the bucket `key` of `period`'s cache (created full if absent).
    fn take(
        &self,
        period: RatePeriod,
        key: StateKey,
        spec: Spec,
        now: i64,
        cost: u64,
    ) -> (Bucket, Take) {
        let b = self.0.rates[period_index(period)].get_with(key, Bucket::default);
        let took = lock(&b).take(spec, now, cost);
        (b, took)
    }

    /// At shutdown, once no request can fire a new alert: delivers the alerts
    /// still queued (with their retries), waiting at most `within`. An alert
    /// not delivered by then is lost, with a warning: alerts are sent at most
    /// once per threshold and period.
    pub async fn finish_alerts(&self, within: Duration) {
        let Some(Some(queue)) = self.0.alerts.get() else {
            return;
        };
        let task = queue
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(task) = task else { return };
        queue.closing.notify_one();
        if tokio::time::timeout(within, task).await.is_err() {
            tracing::warn!(waited = ?within, "shutdown: budget alerts still queued were not delivered");
        }
    }

    /// Queues a budget alert. Alerts go out one at a time, in the order they
    /// fired, from one background task (so thresholds arrive in order).
    fn alert(&self, hold: &Hold, spent: i64, threshold: u32) {
        let Some(url) = hold.budget.webhook.clone() else {
            return;
        };
        let queue = self.0.alerts.get_or_init(|| {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = tokio::sync::mpsc::channel(ALERT_QUEUE);
            let closing = Arc::new(tokio::sync::Notify::new());
            let task = handle.spawn(deliver_alerts(
                rx,
                closing.clone(),
                self.0.store.clone(),
                Arc::downgrade(&self.0),
            ));
            Some(AlertQueue {
                tx,
                task: std::sync::Mutex::new(Some(task)),
                closing,
            })
        });
        let marker = format!(
            "budget_alert|{}|{}|{}|{threshold}",
            hold.budget.label, hold.bucket, hold.start
        );
        let payload = serde_json::json!({
            "type": "budget.threshold_reached",
            "budget": &*hold.budget.label,
            "subject": &*hold.bucket,
            "threshold_percent": threshold,
            "spent_usd": config::usd(spent),
            "budget_usd": config::usd(hold.budget.micros),
            "spent_micros": spent,
            "budget_micros": hold.budget.micros,
            "period_start": crate::clock::rfc3339(hold.start),
            "period_end": hold.end.map(crate::clock::rfc3339),
        });
        let job = AlertJob {
            url,
            marker,
            payload,
        };
        if queue.as_ref().is_none_or(|q| q.tx.try_send(job).is_err()) {
            self.0
                .counters
                .alerts_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(threshold, "budget alert dropped: the alert queue is full");
        }
    }
}

/// Alerts waiting for delivery before new ones are dropped (and counted).
const ALERT_QUEUE: usize = 1024;
/// How long shutdown waits for queued alerts to be delivered.
pub const ALERT_SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Delays before the second and third delivery attempts.
const ALERT_RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

/// The HTTP client of alert webhooks: no redirects, and no link-local or
/// cloud-metadata addresses even when a name resolves to one.
fn alert_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(crate::proxy::ssrf::GuardedResolver::new(false)))
        .build()
        .ok()
}

async fn deliver_alerts(
    mut rx: tokio::sync::mpsc::Receiver<AlertJob>,
    closing: Arc<tokio::sync::Notify>,
    store: SharedStore,
    shared: std::sync::Weak<Shared>,
) {
    let Some(http) = alert_client() else {
        tracing::error!("budget alerts: no HTTP client could be built");
        return;
    };
    let count = |ok: bool| {
        if let Some(s) = shared.upgrade() {
            let c = if ok {
                &s.counters.alerts_sent
            } else {
                &s.counters.alerts_failed
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut closed = false;
    loop {
        let job = tokio::select! {
            biased;
            () = closing.notified(), if !closed => {
                // Shutdown: what is queued still goes out, nothing new comes in.
                rx.close();
                closed = true;
                continue;
            }
            job = rx.recv() => job,
        };
        let Some(job) = job else { break };
        // Once per threshold per period, across restarts too.
        match store.put_setting_if_absent(&job.marker, "sent").await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => tracing::warn!(error = %e, "budget alert: store unavailable; sending anyway"),
        }
        let (budget, subject) = (&job.payload["budget"], &job.payload["subject"]);
        let threshold = &job.payload["threshold_percent"];
        let mut delays = ALERT_RETRIES.iter();
        let sent = loop {
            let retry = match http.post(job.url.expose()).json(&job.payload).send().await {
                Ok(r) if r.status().is_success() => break true,
                Ok(r) => {
                    tracing::warn!(status = r.status().as_u16(), %budget, %subject, %threshold, "budget alert webhook refused the alert");
                    // A 4xx will not change on retry, except these.
                    r.status().is_server_error() || matches!(r.status().as_u16(), 408 | 429)
                }
                Err(e) => {
                    // Without the URL: it may carry a token.
                    tracing::warn!(error = %e.without_url(), %budget, %subject, %threshold, "budget alert webhook unreachable");
                    true
                }
            };
            match delays.next() {
                Some(d) if retry => tokio::time::sleep(*d).await,
                _ => break false,
            }
        };
        if sent {
            tracing::info!(%budget, %subject, %threshold, "budget alert sent");
        } else {
            tracing::error!(%budget, %subject, %threshold, "budget alert not delivered");
        }
        count(sent);
    }
}

struct Hold {
    state: Arc<BudgetState>,
    budget: Arc<BudgetConfig>,
    bucket: Arc<str>,
    start: i64,
    end: Option<i64>,
}

/// The `x-ratelimit-*` values of the tightest applicable limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Requests.
    pub requests: Option<RateHeader>,
    /// Tokens.
    pub tokens: Option<RateHeader>,
}

/// What a request holds between admission and its end: token and budget
/// reservations and concurrency slots. Settle it with the real usage; dropped
/// unsettled, it gives everything back.
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation {
    limiter: Limiter,
    requests: Vec<(Bucket, Spec)>,
    tokens: Vec<(Bucket, Spec)>,
    reserved_tokens: u64,
    concurrency: Vec<Arc<AtomicU64>>,
    budgets: Vec<Hold>,
    reserved_cost: i64,
    billable: bool,
    /// Header values for the response.
    pub headers: RateHeaders,
    done: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("tokens", &self.reserved_tokens)
            .field("cost_micros", &self.reserved_cost)
            .field("slots", &self.concurrency.len())
            .finish_non_exhaustive()
    }
}

/// How a request ended, for [`Reservation::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider reported usage: charge it.
    Reported {
        /// Prompt + completion tokens.
        tokens: u64,
        /// Its cost.
        cost_micros: i64,
    },
    /// The provider answered (or the client left) but reported nothing: charge the reservation.
    Unreported,
    /// Nothing was consumed upstream (refused, failed before an answer): give it all back.
    NotCharged,
}

impl Reservation {
    fn empty(limiter: Limiter) -> Self {
        Reservation {
            limiter,
            requests: Vec::new(),
            tokens: Vec::new(),
            reserved_tokens: 0,
            concurrency: Vec::new(),
            budgets: Vec::new(),
            reserved_cost: 0,
            billable: false,
            headers: RateHeaders::default(),
            done: false,
        }
    }

    /// The cost reserved against budgets, micro-dollars.
    pub fn reserved_cost(&self) -> i64 {
        self.reserved_cost
    }

    /// True for an endpoint group whose requests are charged (see [`BILLABLE_GROUPS`]).
    pub fn billable(&self) -> bool {
        self.billable
    }

    /// Counts a successful request whose provider reported no usage.
    pub fn count_unreported(&self) {
        self.limiter
            .0
            .counters
            .usage_unreported
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Settles with the real outcome, releases the concurrency slots; returns
    /// the cost charged against budgets.
    pub fn settle(mut self, outcome: Outcome) -> i64 {
        self.finish(outcome)
    }

    fn finish(&mut self, outcome: Outcome) -> i64 {
        if self.done {
            return 0;
        }
        self.done = true;
        for c in self.concurrency.drain(..) {
            let _ = c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
        for (b, spec) in self.requests.drain(..) {
            lock(&b).refund(spec, 1);
        }
        let (tokens, cost) = match outcome {
            Outcome::Reported {
                tokens,
                cost_micros,
            } => (tokens, cost_micros),
            Outcome::Unreported => (self.reserved_tokens, self.reserved_cost),
            Outcome::NotCharged => (0, 0),
        };
        if !self.tokens.is_empty() {
            let now = self.limiter.0.clock.now_ms();
            for (b, spec) in self.tokens.drain(..) {
                let mut g = lock(&b);
                if tokens <= self.reserved_tokens {
                    g.refund(spec, self.reserved_tokens - tokens);
                } else {
                    g.charge(spec, now, tokens - self.reserved_tokens);
                }
            }
        }
        let holds = std::mem::take(&mut self.budgets);
        for h in &holds {
            let spent = h.state.settle(self.reserved_cost, cost);
            for pct in &h.budget.alert_at_percent {
                let line = i128::from(h.budget.micros) * i128::from(*pct);
                if i128::from(spent) * 100 >= line && h.state.fire(*pct) {
                    self.limiter.alert(h, spent, *pct);
                }
            }
        }
        cost
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.finish(Outcome::NotCharged);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn a_spray_of_distinct_principals_stays_within_the_bound() {
        let env = |_: &str| None;
        let config = Config::from_yaml(
            "limits:\n  max_tracked_subjects: 1000\n  defaults:\n    key: {requests_per_minute: 1}\n",
            &env,
            crate::config::ConfigSource::Defaults,
        )
        .unwrap();
        let store: SharedStore = Arc::new(
            crate::store::SqliteStore::open("sqlite::memory:")
                .await
                .unwrap(),
        );
        let clock: SharedClock = Arc::new(crate::clock::ManualClock::new(0));
        let lim = Limiter::new(&config, store, clock);
        let spec = Spec {
            limit: 1,
            period_ms: 60_000,
        };
        for i in 0..200_000u32 {
            let key = StateKey {
                limit: Arc::from("l"),
                subject: Arc::from(format!("k{i}")),
            };
            let (_, took) = lim.take(RatePeriod::Minute, key, spec, 0, 1);
            assert!(matches!(took, Take::Admitted { .. }));
        }
        let cache = &lim.0.rates[period_index(RatePeriod::Minute)];
        cache.run_pending_tasks();
        assert!(
            cache.entry_count() <= 1000,
            "{} entries",
            cache.entry_count()
        );
        // A subject that keeps coming stays tracked (and limited).
        let hot = StateKey {
            limit: Arc::from("l"),
            subject: Arc::from("hot"),
        };
        let _ = lim.take(RatePeriod::Minute, hot.clone(), spec, 0, 1);
        for _ in 0..10 {
            let (_, took) = lim.take(RatePeriod::Minute, hot.clone(), spec, 0, 1);
            assert!(matches!(took, Take::Refused { .. }));
        }
    }

    #[test]
    fn reset_times_read_like_openai() {
        assert_eq!(reset_text(20), "20ms");
        assert_eq!(reset_text(1500), "1.5s");
        assert_eq!(reset_text(360_000), "6m0s");
        assert_eq!(reset_text(3_600_000), "1h0m0s");
    }
}
