//! The `limits`, `budgets` and `pricing` sections: file model and validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::authz::rules::Subject;
use crate::config::ConfigError;

/// The length of a rate period. `month` is 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RatePeriod {
    /// 1 s.
    Second,
    /// 60 s.
    Minute,
    /// 3600 s.
    Hour,
    /// 86 400 s.
    Day,
    /// 30 days.
    Month,
}

impl RatePeriod {
    /// Milliseconds.
    pub fn ms(self) -> i64 {
        match self {
            RatePeriod::Second => 1_000,
            RatePeriod::Minute => 60_000,
            RatePeriod::Hour => 3_600_000,
            RatePeriod::Day => 86_400_000,
            RatePeriod::Month => 30 * 86_400_000,
        }
    }

    /// `second`, `minute`, ...
    pub fn name(self) -> &'static str {
        match self {
            RatePeriod::Second => "second",
            RatePeriod::Minute => "minute",
            RatePeriod::Hour => "hour",
            RatePeriod::Day => "day",
            RatePeriod::Month => "month",
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Requests per period (GCRA).
    Requests(RatePeriod),
    /// Tokens (prompt + completion) per period, reserved before and settled after.
    Tokens(RatePeriod),
    /// Requests in flight at once.
    Concurrent,
}

impl Unit {
    /// The config key, e.g. `requests_per_minute`.
    pub fn key(self) -> &'static str {
        use RatePeriod::*;
        match self {
            Unit::Requests(Second) => "requests_per_second",
            Unit::Requests(Minute) => "requests_per_minute",
            Unit::Requests(Hour) => "requests_per_hour",
            Unit::Requests(Day) => "requests_per_day",
            Unit::Requests(Month) => "requests_per_month",
            Unit::Tokens(Second) => "tokens_per_second",
            Unit::Tokens(Minute) => "tokens_per_minute",
            Unit::Tokens(Hour) => "tokens_per_hour",
            Unit::Tokens(Day) => "tokens_per_day",
            Unit::Tokens(Month) => "tokens_per_month",
            Unit::Concurrent => "concurrent_requests",
        }
    }
}

/// Limits of one principal (or rule); every unit is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    /// Requests per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    /// Requests per 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_month: Option<u64>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_hour: Option<u64>,
    /// Tokens per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Tokens per 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_requests: Option<u64>,
}

impl LimitSet {
    /// The units that are set, with their values.
    pub fn units(&self) -> impl Iterator<Item = (Unit, u64)> + '_ {
        use RatePeriod::*;
        [
            (Unit::Requests(Second), self.requests_per_second),
            (Unit::Requests(Minute), self.requests_per_minute),
            (Unit::Requests(Hour), self.requests_per_hour),
            (Unit::Requests(Day), self.requests_per_day),
            (Unit::Requests(Month), self.requests_per_month),
            (Unit::Tokens(Minute), self.tokens_per_minute),
            (Unit::Tokens(Hour), self.tokens_per_hour),
            (Unit::Tokens(Day), self.tokens_per_day),
            (Unit::Tokens(Month), self.tokens_per_month),
            (Unit::Concurrent, self.concurrent_requests),
        ]
        .into_iter()
        .filter_map(|(u, v)| v.map(|v| (u, v)))
    }

    /// True when no unit is set. (Runs on every request: field checks, not
    /// [`LimitSet::units`]'s array; the destructuring names every field, so a
    /// new one cannot be forgotten here.)
    pub fn is_empty(&self) -> bool {
        let LimitSet {
            requests_per_second,
            requests_per_minute,
            requests_per_hour,
            requests_per_day,
            requests_per_month,
            tokens_per_minute,
            tokens_per_hour,
            tokens_per_day,
            tokens_per_month,
            concurrent_requests,
        } = self;
        requests_per_second.is_none()
            && requests_per_minute.is_none()
            && requests_per_hour.is_none()
            && requests_per_day.is_none()
            && requests_per_month.is_none()
            && tokens_per_minute.is_none()
            && tokens_per_hour.is_none()
            && tokens_per_day.is_none()
            && tokens_per_month.is_none()
            && concurrent_requests.is_none()
    }

    /// Problems with the values, as messages for `at`.
    pub fn check(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (u, v) in self.units() {
            if v == 0 {
                errors.push(ConfigError {
                    location: format!("{at}.{}", u.key()),
                    message: "must be greater than zero (leave it out for no limit)".into(),
                });
            }
        }
    }
}

/// `limits.defaults`: per principal of that kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsFile {
    #[serde(default)]
    key: LimitSet,
    #[serde(default)]
    user: LimitSet,
    #[serde(default)]
    team: LimitSet,
}

/// One `limits.rules` entry as written: subjects, optional model globs and units inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRuleFile {
    subjects: Vec<String>,
    models: Option<Vec<String>>,
    requests_per_second: Option<u64>,
    requests_per_minute: Option<u64>,
    requests_per_hour: Option<u64>,
    requests_per_day: Option<u64>,
    requests_per_month: Option<u64>,
    tokens_per_minute: Option<u64>,
    tokens_per_hour: Option<u64>,
    tokens_per_day: Option<u64>,
    tokens_per_month: Option<u64>,
    concurrent_requests: Option<u64>,
}

/// The `limits:` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Larger request bodies get 413.
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    rules: Vec<LimitRuleFile>,
    default_max_tokens: Option<u64>,
    max_tracked_subjects: Option<u64>,
}

/// A validated `limits.rules` entry.
#[derive(Debug, Clone)]
pub struct LimitRule {
    /// Position in the file.
    pub index: usize,
    /// Who it applies to.
    pub subjects: Vec<Subject>,
    /// `provider/model` globs; `None` = every request.
    pub models: Option<Vec<String>>,
    /// The limits.
    pub limits: LimitSet,
}

/// Output tokens reserved for a request that names no maximum and with no `default_max_tokens`.
pub const FALLBACK_RESERVED_OUTPUT: u64 = 4096;
/// Default of `limits.max_tracked_subjects`.
pub const DEFAULT_MAX_TRACKED: u64 = 100_000;

/// Validated `limits`.
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// `limits.defaults.key`.
    pub key: LimitSet,
    /// `limits.defaults.user`.
    pub user: LimitSet,
    /// `limits.defaults.team`.
    pub team: LimitSet,
    /// `limits.rules`.
    pub rules: Vec<LimitRule>,
    /// Sent upstream (and reserved) when a request names no maximum.
    pub default_max_tokens: Option<u64>,
    /// Bound on the tracked buckets of each unit (and on tracked budgets).
    pub max_tracked_subjects: u64,
}

impl LimitsConfig {
    /// True when no limit of any kind is configured.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty() && self.user.is_empty() && self.team.is_empty() && self.rules.is_empty()
    }
}

fn parse_subjects(list: &[String], at: &str, errors: &mut Vec<ConfigError>) -> Vec<Subject> {
    if list.is_empty() {
        errors.push(ConfigError {
            location: format!("{at}.subjects"),
            message: "must name at least one subject".into(),
        });
    }
    let mut out = Vec::new();
    for (j, s) in list.iter().enumerate() {
        match Subject::parse(s) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(ConfigError {
                location: format!("{at}.subjects[{j}]"),
                message: e,
            }),
        }
    }
    out
}

impl LimitsFile {
    /// Validates everything but `max_body_bytes` (which `config` handles).
    pub fn validate(self, errors: &mut Vec<ConfigError>) -> LimitsConfig {
        let d = self.defaults;
        d.key.check("limits.defaults.key", errors);
        d.user.check("limits.defaults.user", errors);
        d.team.check("limits.defaults.team", errors);
        let mut rules = Vec::new();
        for (i, r) in self.rules.into_iter().enumerate() {
            let at = format!("limits.rules[{i}]");
            let subjects = parse_subjects(&r.subjects, &at, errors);
            if let Some(models) = &r.models {
                for (j, m) in models.iter().enumerate() {
                    if !m.contains('/') || m.contains(char::is_whitespace) {
                        errors.push(ConfigError {
                            location: format!("{at}.models[{j}]"),
                            message: format!(
                                "`{m}` must be a `provider/model` glob such as `openai/gpt-4o*`"
                            ),
                        });
                    }
                }
            }
            let limits = LimitSet {
                requests_per_second: r.requests_per_second,
                requests_per_minute: r.requests_per_minute,
                requests_per_hour: r.requests_per_hour,
                requests_per_day: r.requests_per_day,
                requests_per_month: r.requests_per_month,
                tokens_per_minute: r.tokens_per_minute,
                tokens_per_hour: r.tokens_per_hour,
                tokens_per_day: r.tokens_per_day,
                tokens_per_month: r.tokens_per_month,
                concurrent_requests: r.concurrent_requests,
            };
            if limits.is_empty() {
                errors.push(ConfigError {
                    location: at.clone(),
                    message: "names no limit (requests_per_*, tokens_per_* or concurrent_requests)"
                        .into(),
                });
            }
            limits.check(&at, errors);
            rules.push(LimitRule {
                index: i,
                subjects,
                models: r.models,
                limits,
            });
        }
        if self.default_max_tokens == Some(0) {
            errors.push(ConfigError {
                location: "limits.default_max_tokens".into(),
                message: "must be greater than zero".into(),
            });
        }
        let max_tracked_subjects = self.max_tracked_subjects.unwrap_or(DEFAULT_MAX_TRACKED);
        if max_tracked_subjects == 0 {
            errors.push(ConfigError {
                location: "limits.max_tracked_subjects".into(),
                message: "must be greater than zero".into(),
            });
        }
        LimitsConfig {
            key: d.key,
            user: d.user,
            team: d.team,
            rules,
            default_max_tokens: self.default_max_tokens,
            max_tracked_subjects,
        }
    }
}

// -------------------------------------------------------------------- money

/// An amount of US dollars, parsed from its decimal text into integer millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micros(pub i64);

impl Micros {
    /// Parses `12`, `0.15`, `1.000001`; at most 6 decimals, not negative.
    pub fn parse(s: &str) -> Option<Micros> {
        let s = s.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 6
        {
            return None;
        }
        let w: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut f: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        for _ in frac.len()..6 {
            f *= 10;
        }
        w.checked_mul(1_000_000)?.checked_add(f).map(Micros)
    }
}

/// Formats micro-dollars as a decimal string with six places (`"12.500000"`).
pub fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative amount of US dollars with at most 6 decimals")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Micros, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Micros, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Micros, E> {
                // Only to recover the decimal text the file holds; no arithmetic on floats.
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Micros, E> {
                Micros::parse(v).ok_or_else(|| {
                    E::custom(format!(
                        "`{v}` is not a non-negative amount with at most 6 decimals"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

// ------------------------------------------------------------------ budgets

/// A budget's period, calendar-aligned in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    /// From 00:00 UTC.
    Daily,
    /// From Monday 00:00 UTC.
    Weekly,
    /// From the 1st, 00:00 UTC.
    Monthly,
    /// Never resets.
    Total,
}

/// One `budgets` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    subjects: Vec<String>,
    usd: Micros,
    period: BudgetPeriod,
    #[serde(default)]
    alert_at_percent: Vec<u32>,
    webhook: Option<crate::secret::Secret>,
}

/// A validated budget.
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Position in the file (`budgets[i]`); `usize::MAX` for a key's, user's or team's own budget.
    pub index: usize,
    /// How messages and `GET /admin/budgets` name it: `budgets[i]`, or `own budget of team:red`.
    pub label: std::sync::Arc<str>,
    /// Who it applies to (one budget per matching team / user / key).
    pub subjects: Vec<Subject>,
    /// The subjects as written.
    pub subject_text: Vec<String>,
    /// The amount, micro-dollars.
    pub micros: i64,
    /// Period.
    pub period: BudgetPeriod,
    /// Thresholds (percent of `micros`), ascending.
    pub alert_at_percent: Vec<u32>,
    /// Where alerts are POSTed (webhook URLs often embed a token: redacted like a key).
    pub webhook: Option<crate::secret::Secret>,
}

/// `budget_alerts` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetAlertsFile {
    #[serde(default)]
    alert_at_percent: Vec<u32>,
    webhook: Option<crate::secret::Secret>,
}

/// Alert defaults: the thresholds and webhook of every budget that names none,
/// and the only webhook own budgets (admin API) alert to — an admin API caller
/// can choose thresholds, never where the gateway sends requests.
#[derive(Debug, Clone, Default)]
pub struct BudgetAlerts {
    /// Thresholds, ascending.
    pub alert_at_percent: Vec<u32>,
    /// Where alerts are POSTed.
    pub webhook: Option<crate::secret::Secret>,
}

impl BudgetAlertsFile {
    /// Validates `budget_alerts`.
    pub fn validate(self, errors: &mut Vec<ConfigError>) -> BudgetAlerts {
        let alert_at_percent = thresholds(&self.alert_at_percent, "budget_alerts", errors);
        if let Some(w) = &self.webhook {
            check_webhook(w, "budget_alerts", errors);
        }
        if !alert_at_percent.is_empty() && self.webhook.is_none() {
            errors.push(ConfigError {
                location: "budget_alerts.webhook".into(),
                message: "required with alert_at_percent".into(),
            });
        }
        BudgetAlerts {
            alert_at_percent,
            webhook: self.webhook,
        }
    }
}

/// Sorted, deduplicated thresholds; at most 16, each 1..=1000.
fn thresholds(list: &[u32], at: &str, errors: &mut Vec<ConfigError>) -> Vec<u32> {
    let mut alerts = list.to_vec();
    alerts.sort_unstable();
    alerts.dedup();
    if let Err(m) = check_thresholds(&alerts) {
        errors.push(ConfigError {
            location: format!("{at}.alert_at_percent"),
            message: m.into(),
        });
    }
    alerts
}

fn check_thresholds(list: &[u32]) -> Result<(), &'static str> {
    if list.len() > 16 || list.iter().any(|p| *p == 0 || *p > 1000) {
        return Err("at most 16 thresholds, each from 1 to 1000");
    }
    Ok(())
}

/// A webhook is an http(s) URL whose host is not link-local or cloud metadata
/// (the gateway would POST there from inside the network).
fn check_webhook(w: &crate::secret::Secret, at: &str, errors: &mut Vec<ConfigError>) {
    let message = match w.expose().parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
            match crate::proxy::ssrf::check_host(u.host().unwrap_or("")) {
                Ok(()) => return,
                // The host only, never the URL (it may carry a token).
                Err(why) => format!("refused: {why}"),
            }
        }
        _ => "is not an http(s) URL".to_owned(),
    };
    errors.push(ConfigError {
        location: format!("{at}.webhook"),
        message,
    });
}

/// Validates `budgets`; thresholds and webhook default to `defaults`.
pub fn validate_budgets(
    files: Vec<BudgetFile>,
    defaults: &BudgetAlerts,
    errors: &mut Vec<ConfigError>,
) -> Vec<BudgetConfig> {
    let mut out = Vec::new();
    for (i, b) in files.into_iter().enumerate() {
        let at = format!("budgets[{i}]");
        let subjects = parse_subjects(&b.subjects, &at, errors);
        if b.usd.0 <= 0 {
            errors.push(ConfigError {
                location: format!("{at}.usd"),
                message: "must be greater than zero".into(),
            });
        }
        let mut alerts = thresholds(&b.alert_at_percent, &at, errors);
        if alerts.is_empty() {
            alerts.clone_from(&defaults.alert_at_percent);
        }
        if let Some(w) = &b.webhook {
            check_webhook(w, &at, errors);
        }
        let webhook = b.webhook.or_else(|| defaults.webhook.clone());
        if !alerts.is_empty() && webhook.is_none() {
            errors.push(ConfigError {
                location: format!("{at}.webhook"),
                message: "required with alert_at_percent (or set budget_alerts.webhook)".into(),
            });
        }
        out.push(BudgetConfig {
            index: i,
            label: at.as_str().into(),
            subjects,
            subject_text: b.subjects,
            micros: b.usd.0,
            period: b.period,
            alert_at_percent: alerts,
            webhook,
        });
    }
    out
}

// ------------------------------------------------------------------ pricing

/// One model's price as written: USD per million tokens, and per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    #[serde(default)]
    input: Option<Micros>,
    #[serde(default)]
    output: Option<Micros>,
    #[serde(default)]
    cached_input: Option<Micros>,
    #[serde(default)]
    per_request: Option<Micros>,
}

/// A price in micro-dollars: per million tokens, and per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: i64,
    /// Per million completion tokens.
    pub output: i64,
    /// Per million cached prompt tokens.
    pub cached_input: i64,
    /// Per request (images, audio, ...).
    pub per_request: i64,
}

impl Price {
    /// The cost of one request, rounded up to a whole micro-dollar.
    pub fn cost(&self, prompt: u64, cached: u64, completion: u64) -> i64 {
        let cached = cached.min(prompt);
        let per_m = i128::from(prompt - cached) * i128::from(self.input)
            + i128::from(cached) * i128::from(self.cached_input)
            + i128::from(completion) * i128::from(self.output);
        let tokens = (per_m + 999_999) / 1_000_000;
        i64::try_from(tokens)
            .unwrap_or(i64::MAX)
            .saturating_add(self.per_request)
    }
}

/// Built-in prices (USD per million tokens: input, output, cached input) of well-known models.
pub const BUILT_IN_PRICES: &[(&str, &str, &str, &str)] = &[
    ("gpt-4o", "2.50", "10.00", "1.25"),
    ("gpt-4o-mini", "0.15", "0.60", "0.075"),
    ("gpt-4.1", "2.00", "8.00", "0.50"),
    ("gpt-4.1-mini", "0.40", "1.60", "0.10"),
    ("gpt-4.1-nano", "0.10", "0.40", "0.025"),
    ("o3", "2.00", "8.00", "0.50"),
    ("o3-mini", "1.10", "4.40", "0.55"),
    ("o4-mini", "1.10", "4.40", "0.275"),
    ("text-embedding-3-small", "0.02", "0", "0"),
    ("text-embedding-3-large", "0.13", "0", "0"),
    ("claude-sonnet-4-0", "3.00", "15.00", "0.30"),
    ("claude-3-5-haiku-latest", "0.80", "4.00", "0.08"),
    ("claude-opus-4-0", "15.00", "75.00", "1.50"),
];

/// Validated `pricing`: the file's entries over the built-in table.
#[derive(Debug, Clone, Default)]
pub struct Pricing {
    /// By bare model name.
    table: BTreeMap<String, Price>,
    /// By provider, then model (`provider/model` entries).
    qualified: BTreeMap<String, BTreeMap<String, Price>>,
}

impl Pricing {
    /// The built-in table plus `files` (which win).
    pub fn new(files: BTreeMap<String, PriceFile>, errors: &mut Vec<ConfigError>) -> Pricing {
        let mut table = BTreeMap::new();
        let mut qualified: BTreeMap<String, BTreeMap<String, Price>> = BTreeMap::new();
        for (m, i, o, c) in BUILT_IN_PRICES {
            let p = |s: &str| Micros::parse(s).map_or(0, |m| m.0);
            table.insert(
                (*m).to_owned(),
                Price {
                    input: p(i),
                    output: p(o),
                    cached_input: p(c),
                    per_request: 0,
                },
            );
        }
        for (model, f) in files {
            if model.is_empty() || model.contains(char::is_whitespace) {
                errors.push(ConfigError {
                    location: format!("pricing.{model}"),
                    message: "is not a model name".into(),
                });
                continue;
            }
            let input = f.input.map_or(0, |m| m.0);
            let price = Price {
                input,
                output: f.output.map_or(0, |m| m.0),
                cached_input: f.cached_input.map_or(input, |m| m.0),
                per_request: f.per_request.map_or(0, |m| m.0),
            };
            match model.split_once('/') {
                Some((p, m)) => {
                    qualified
                        .entry(p.to_owned())
                        .or_default()
                        .insert(m.to_owned(), price);
                }
                None => {
                    table.insert(model, price);
                }
            }
        }
        Pricing { table, qualified }
    }

    /// The price of `model` at `provider`: `provider/model`, else the bare name.
    pub fn get(&self, provider: &str, model: &str) -> Option<Price> {
        self.qualified
            .get(provider)
            .and_then(|m| m.get(model))
            .or_else(|| self.table.get(model))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_parsed_exactly() {
        assert_eq!(Micros::parse("500"), Some(Micros(500_000_000)));
        assert_eq!(Micros::parse("0.15"), Some(Micros(150_000)));
        assert_eq!(Micros::parse("0.075"), Some(Micros(75_000)));
        assert_eq!(Micros::parse("1.000001"), Some(Micros(1_000_001)));
        assert_eq!(Micros::parse("1.0000001"), None);
        assert_eq!(Micros::parse("-1"), None);
        assert_eq!(Micros::parse("abc"), None);
        assert_eq!(usd(12_500_000), "12.500000");
    }

    #[test]
    fn budget_alerts_fill_in_budgets_and_webhooks_are_checked() {
        let env = |_: &str| None;
        let load = |y: &str| {
            crate::config::Config::from_yaml(y, &env, crate::config::ConfigSource::Defaults)
        };
        let c = load("budget_alerts:\n  webhook: https://hooks.example.com/T0K3N\n  alert_at_percent: [100, 80]\nbudgets:\n  - subjects: [\"team:*\"]\n    usd: 5\n    period: daily\n  - subjects: [\"user:*\"]\n    usd: 1\n    period: daily\n    alert_at_percent: [50]\n")
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.budgets[0].alert_at_percent, vec![80, 100]);
        assert_eq!(c.budgets[1].alert_at_percent, vec![50]);
        assert!(c.budgets.iter().all(|b| b.webhook.is_some()));
        assert!(
            !format!("{:?}", c.budgets).contains("T0K3N"),
            "the webhook URL is redacted"
        );
        for (yaml, location, says) in [
            (
                "budget_alerts:\n  webhook: http://169.254.169.254/latest\n",
                "budget_alerts.webhook",
                "link-local",
            ),
            (
                "budgets:\n  - subjects: [\"*\"]\n    usd: 1\n    period: daily\n    alert_at_percent: [50]\n    webhook: http://metadata.google.internal/x\n",
                "budgets[0].webhook",
                "metadata",
            ),
            (
                "budget_alerts:\n  alert_at_percent: [50]\n",
                "budget_alerts.webhook",
                "required",
            ),
            (
                "budgets:\n  - subjects: [\"*\"]\n    usd: 1\n    period: daily\n    alert_at_percent: [50]\n",
                "budgets[0].webhook",
                "budget_alerts.webhook",
            ),
            (
                "budget_alerts:\n  webhook: ftp://x/\n",
                "budget_alerts.webhook",
                "http(s)",
            ),
        ] {
            let e = load(yaml).err().unwrap_or_else(|| unreachable!("{yaml}"));
            let e = e
                .errors
                .iter()
                .find(|e| e.location == location)
                .unwrap_or_else(|| unreachable!("{yaml}: {e}"));
            assert!(e.message.contains(says), "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn cost_rounds_up_to_a_micro_dollar() {
        let p = Price {
            input: 150_000,
            output: 600_000,
            cached_input: 75_000,
            per_request: 0,
        };
        // 1000 prompt tokens at $0.15/M = 150 µ$; 100 completion at $0.60/M = 60 µ$.
        assert_eq!(p.cost(1000, 0, 100), 210);
        assert_eq!(p.cost(1, 0, 0), 1);
        assert_eq!(p.cost(1000, 1000, 0), 75);
    }
}

// ------------------------------------------------------------ own limits

/// A key's, user's or team's own budget (admin API).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnBudget {
    /// US dollars: a number or a decimal string, at most 6 decimals.
    #[schema(value_type = String)]
    #[serde(serialize_with = "ser_usd")]
    pub usd: Micros,
    /// `daily`, `weekly`, `monthly` or `total`.
    pub period: BudgetPeriod,
    /// Alert thresholds, percent of `usd` (default: `budget_alerts.alert_at_percent`).
    /// Alerts go to `budget_alerts.webhook` of the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_at_percent: Option<Vec<u32>>,
}

fn ser_usd<S: serde::Serializer>(m: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&usd(m.0))
}

/// A subject's own limits and budget, as the admin API sets them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OwnLimits {
    /// Limits that replace the matching `limits.defaults` units for this subject.
    pub limits: Option<LimitSet>,
    /// A budget of its own, on top of any configured `budgets`.
    pub budget: Option<OwnBudget>,
}

impl OwnLimits {
    /// 400-worthy problems, as `field: message`.
    pub fn check(&self, alerts: &BudgetAlerts) -> Result<(), String> {
        if let Some(l) = &self.limits {
            let mut errors = Vec::new();
            l.check("limits", &mut errors);
            if let Some(e) = errors.first() {
                return Err(e.to_string());
            }
        }
        if let Some(b) = &self.budget {
            if b.usd.0 <= 0 {
                return Err("budget.usd: must be greater than zero".into());
            }
            if let Some(list) = &b.alert_at_percent {
                check_thresholds(list).map_err(|m| format!("budget.alert_at_percent: {m}"))?;
                if !list.is_empty() && alerts.webhook.is_none() {
                    return Err("budget.alert_at_percent: alerts need `budget_alerts.webhook` in the gateway's configuration".into());
                }
            }
        }
        Ok(())
    }

    /// The `BudgetConfig` the limiter applies for `subject`.
    pub fn budget_config(&self, subject: &str, alerts: &BudgetAlerts) -> Option<BudgetConfig> {
        self.budget.as_ref().map(|b| {
            let mut list = b
                .alert_at_percent
                .clone()
                .unwrap_or_else(|| alerts.alert_at_percent.clone());
            list.sort_unstable();
            list.dedup();
            BudgetConfig {
                index: usize::MAX,
                label: format!("own budget of {subject}").into(),
                subjects: Vec::new(),
                subject_text: vec![subject.to_owned()],
                micros: b.usd.0,
                period: b.period,
                webhook: alerts.webhook.clone().filter(|_| !list.is_empty()),
                alert_at_percent: list,
            }
        })
    }
}

impl LimitSet {
    /// `self`'s units where set, else `base`'s.
    pub fn over(&self, base: &LimitSet) -> LimitSet {
        LimitSet {
            requests_per_second: self.requests_per_second.or(base.requests_per_second),
            requests_per_minute: self.requests_per_minute.or(base.requests_per_minute),
            requests_per_hour: self.requests_per_hour.or(base.requests_per_hour),
            requests_per_day: self.requests_per_day.or(base.requests_per_day),
            requests_per_month: self.requests_per_month.or(base.requests_per_month),
            tokens_per_minute: self.tokens_per_minute.or(base.tokens_per_minute),
            tokens_per_hour: self.tokens_per_hour.or(base.tokens_per_hour),
            tokens_per_day: self.tokens_per_day.or(base.tokens_per_day),
            tokens_per_month: self.tokens_per_month.or(base.tokens_per_month),
            concurrent_requests: self.concurrent_requests.or(base.concurrent_requests),
        }
    }
}
