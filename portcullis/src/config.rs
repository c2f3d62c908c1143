//! Configuration: the YAML file model (`serde`, unknown fields refused), `${VAR}`
//! interpolation, and validation into a [`Config`] the rest of the gateway trusts.
//!
//! Loading order for `serve`: `--config FILE`, else `$PORTCULLIS_CONFIG`, else
//! `./portcullis.yaml` if present, else built-in defaults (listen
//! `127.0.0.1:8080`, store `sqlite://portcullis.db`, one provider per provider
//! key found in the environment).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::authz::endpoints::{self, ProviderKind};
use crate::secret::Secret;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default store.
pub const DEFAULT_DATABASE: &str = "sqlite://portcullis.db";
/// Default request body limit (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// OpenAI's API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Models the env-derived `openai` provider lists when no config file names them.
pub const OPENAI_DEFAULT_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o3",
    "o3-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "omni-moderation-latest",
];

// ---------------------------------------------------------------- file model

/// The YAML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    database: Option<String>,
    #[serde(default)]
    admin: AdminFile,
    default_provider: Option<String>,
    #[serde(default)]
    providers: Vec<ProviderFile>,
    #[serde(default)]
    limits: crate::limits::config::LimitsFile,
    #[serde(default)]
    budgets: Vec<crate::limits::config::BudgetFile>,
    #[serde(default)]
    budget_alerts: crate::limits::config::BudgetAlertsFile,
    #[serde(default)]
    pricing: std::collections::BTreeMap<String, crate::limits::config::PriceFile>,
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    ledger: LedgerFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default)]
    auth: AuthFile,
    ownership: Option<crate::authz::ownership::OwnershipFile>,
    forward_user_id: Option<crate::authz::ownership::ForwardUserId>,
    forward_user_id_salt: Option<Secret>,
    tls: Option<crate::tls::TlsFile>,
    rules: Option<Vec<crate::authz::rules::RuleFile>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    disabled: Option<bool>,
    public_paths: Option<Vec<String>>,
    #[serde(default)]
    static_keys: Vec<StaticKeyFile>,
    lockout: Option<LockoutFile>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    jwt: Vec<crate::authn::jwt::JwtIssuerFile>,
    app_check: Option<crate::authn::jwt::AppCheckFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticKeyFile {
    name: String,
    key: Option<Secret>,
    key_file: Option<PathBuf>,
    user: Option<String>,
    team: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockoutFile {
    enabled: Option<bool>,
    max_failed_attempts: Option<u32>,
    window_seconds: Option<u64>,
    block_seconds: Option<u64>,
    block_multiplier: Option<u32>,
    max_block_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    master_key: Option<Secret>,
    #[serde(default)]
    roles: crate::authn::admin::AdminRoleMap,
    #[serde(default)]
    allow_ips: Vec<String>,
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    name: String,
    kind: ProviderKind,
    base_url: Option<String>,
    api_key: Option<Secret>,
    models: Option<Vec<String>>,
    allowed_endpoints: Option<Vec<String>>,
    #[serde(default)]
    timeouts: TimeoutsFile,
    #[serde(default)]
    allow_link_local: bool,
    stream_usage: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsFile {
    #[serde(default, with = "humantime_serde")]
    connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    first_byte: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    idle: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[serde(default, with = "humantime_serde")]
    shutdown_grace: Option<Duration>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    queue_capacity: Option<usize>,
    batch_size: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    flush_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<String>,
    format: Option<LogFormat>,
}

/// Log output format.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

// ------------------------------------------------------------ validated model

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Store URL (`sqlite://path` or `sqlite::memory:`).
    pub database: String,
    /// The master key, when configured (else one is generated on first start).
    pub master_key: Option<Secret>,
    /// Admin API settings other than the master key.
    pub admin: AdminConfig,
    /// Providers in file order.
    pub providers: Vec<Arc<ProviderConfig>>,
    /// Index into `providers` for endpoints without a model.
    pub default_provider: Option<usize>,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Request, token and concurrency limits (`limits:`).
    pub limits: crate::limits::config::LimitsConfig,
    /// Budgets (`budgets:`).
    pub budgets: Vec<crate::limits::config::BudgetConfig>,
    /// Alert defaults for every budget, and the only alert target of own budgets (`budget_alerts:`).
    pub budget_alerts: crate::limits::config::BudgetAlerts,
    /// Model prices (`pricing:` over the built-in table).
    pub pricing: crate::limits::config::Pricing,
    /// Server settings.
    pub server: ServerConfig,
    /// Usage-ledger settings.
    pub ledger: LedgerConfig,
    /// Log settings.
    pub log: LogConfig,
    /// Authentication settings.
    pub auth: AuthConfig,
    /// Resource ownership (`ownership:`).
    pub ownership: crate::authz::ownership::OwnershipConfig,
    /// HTTPS and client certificates, when configured.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Access rules (reloadable).
    pub rules: crate::authz::rules::Rules,
    /// Where this configuration came from.
    pub source: ConfigSource,
}

/// Admin API settings (`admin:`).
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Identity-provider roles that grant admin roles.
    pub roles: crate::authn::admin::AdminRoleMap,
    /// When non-empty, the admin API answers 403 to every other address.
    pub allow_ips: Vec<ipnet::IpNet>,
    /// When set, the admin API is served on this address only (and not on `listen`).
    pub listen: Option<SocketAddr>,
}

/// Paths that need no credential unless `auth.public_paths` says otherwise.
pub const DEFAULT_PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz"];

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Every request is anonymous (development only).
    pub disabled: bool,
    /// Exact paths that need no credential.
    pub public_paths: Vec<String>,
    /// Shared keys, each an identity of its own.
    pub static_keys: Vec<StaticKey>,
    /// Per-address lockout after failed authentications; `None` = off.
    pub lockout: Option<LockoutConfig>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Identity providers whose JWTs are accepted.
    pub jwt: Vec<crate::authn::jwt::JwtIssuer>,
    /// Firebase App Check, when configured.
    pub app_check: Option<crate::authn::jwt::AppCheckConfig>,
}

/// A shared key from the configuration.
#[derive(Debug, Clone)]
pub struct StaticKey {
    /// Name; the principal's key id is `static:<name>`.
    pub name: String,
    /// The key.
    pub key: Secret,
    /// User it acts for.
    pub user: Option<String>,
    /// Team.
    pub team: Option<String>,
}

/// Lockout against guessing.
#[derive(Debug, Clone, Copy)]
pub struct LockoutConfig {
    /// Failures within `window` that trigger a block.
    pub max_failed_attempts: u32,
    /// Window over which failures are counted.
    pub window: Duration,
    /// First block.
    pub block: Duration,
    /// Each further block is this many times longer.
    pub block_multiplier: u32,
    /// Longest block.
    pub max_block: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failed_attempts: 5,
            window: Duration::from_secs(900),
            block: Duration::from_secs(30),
            block_multiplier: 2,
            max_block: Duration::from_secs(3600),
        }
    }
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A YAML file.
    File(PathBuf),
    /// Built-in defaults and the environment.
    Defaults,
}

/// One upstream provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Unique name; the `provider` in `provider/model` and `/providers/{name}`.
    pub name: String,
    /// Its API family.
    pub kind: ProviderKind,
    /// Base URL, without a trailing slash (e.g. `https://api.openai.com/v1`).
    pub base_url: String,
    /// The provider's own key; never leaves the gateway except upstream.
    pub api_key: Option<Secret>,
    /// Models it serves; `None` means only explicit `provider/model` names route here.
    pub models: Option<Vec<String>>,
    /// Endpoint groups callers may reach.
    pub allowed_endpoints: Vec<String>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Whether the base URL may resolve to link-local / cloud-metadata addresses.
    pub allow_link_local: bool,
    /// Whether streams that did not ask for usage are sent `stream_options.include_usage`
    /// (default true; turn off for a server that refuses the field).
    pub stream_usage: bool,
}

impl ProviderConfig {
    /// True if the provider lists `model` (or lists nothing and so takes any explicit name).
    pub fn serves(&self, model: &str) -> bool {
        match &self.models {
            Some(list) => list.iter().any(|m| m == model),
            None => true,
        }
    }

    /// True if `group` is on this provider's allowlist.
    pub fn allows_endpoint(&self, group: &str) -> bool {
        self.allowed_endpoints.iter().any(|g| g == group)
    }
}

/// Upstream timeouts of one provider.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// Longest silence between two body chunks.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(300),
        }
    }
}

/// Listener settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
}

/// Usage-ledger settings.
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Records buffered between the request path and the writer.
    pub queue_capacity: usize,
    /// Records taken from the queue per store transaction.
    pub batch_size: usize,
    /// How long the writer gathers records before writing a smaller batch.
    pub flush_interval: Duration,
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `tracing` filter directive (`info`, `portcullis=debug`, ...); `$RUST_LOG` wins.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

// --------------------------------------------------------------------- errors

/// One configuration problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A line (`line 12`) or a field path (`providers[0].base_url`).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file, if any.
    pub source: Option<PathBuf>,
    /// The problems.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.source {
            Some(p) => writeln!(f, "{} has {n} error(s):", p.display())?,
            None => writeln!(f, "configuration has {n} error(s):")?,
        }
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn err(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        location: location.into(),
        message: message.into(),
    }
}

// --------------------------------------------------------------- interpolation

/// Replaces `${VAR}` and `${VAR:-default}` in YAML text. `$${` is a literal `${`.
///
/// Values are inserted so they cannot change the document's structure: inside
/// double quotes they are JSON-escaped, inside single quotes `'` is doubled, and a
/// plain scalar that is exactly one reference becomes a quoted string when the
/// value holds YAML syntax. Comments are left alone. Line numbers are preserved.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let lineno = idx + 1;
        interpolate_line(line, lineno, lookup, &mut out, &mut errors);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn interpolate_line(
    line: &str,
    lineno: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    errors: &mut Vec<ConfigError>,
) {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_double = false;
    let mut in_single = false;
    let mut scalar_start = 0; // byte index where the current plain scalar started
    while i < bytes.len() {
        let c = bytes[i];
        if !in_double && !in_single {
            if c == b'#' && (i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
                out.push_str(&line[i..]);
                return;
            }
            if c == b'"' {
                in_double = true;
            } else if c == b'\'' {
                in_single = true;
            } else if (c == b':' || c == b'-')
                && bytes.get(i + 1).is_none_or(|n| *n == b' ' || *n == b'\n')
            {
                scalar_start = i + 1;
            }
        } else if in_double {
            if c == b'\\' && i + 1 < bytes.len() {
                out.push_str(&line[i..i + 2]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_double = false;
            }
        } else if in_single && c == b'\'' {
            in_single = false;
        }
        if c == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            out.push_str("${");
            i += 3;
            continue;
        }
        if c == b'$' && bytes.get(i + 1) == Some(&b'{') {
            let Some(close) = line[i..].find('}') else {
                errors.push(err(format!("line {lineno}"), "unterminated `${` reference"));
                out.push_str(&line[i..]);
                return;
            };
            let inner = &line[i + 2..i + close];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            let valid_name = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid_name {
                errors.push(err(
                    format!("line {lineno}"),
                    format!("`${{{inner}}}` is not a valid variable reference"),
                ));
                i += close + 1;
                continue;
            }
            let value = match lookup(name).or_else(|| default.map(str::to_owned)) {
                Some(v) => v,
                None => {
                    errors.push(err(
                        format!("line {lineno}"),
                        format!("environment variable `{name}` is not set (referenced as `${{{inner}}}`)"),
                    ));
                    i += close + 1;
                    continue;
                }
            };
            let end = i + close + 1;
            if in_double {
                let quoted = serde_json::to_string(&value).unwrap_or_default();
                out.push_str(&quoted[1..quoted.len().saturating_sub(1)]);
            } else if in_single {
                if value.contains('\n') {
                    errors.push(err(
                        format!("line {lineno}"),
                        format!("`{name}` holds a newline; use double quotes around it"),
                    ));
                }
                out.push_str(&value.replace('\'', "''"));
            } else {
                let before = line[scalar_start..i].trim();
                let after = line[end..].trim_start();
                let whole = before.is_empty() && (after.is_empty() || after.starts_with('#'));
                if plain_safe(&value) {
                    out.push_str(&value);
                } else if whole {
                    out.push_str(&serde_json::to_string(&value).unwrap_or_default());
                } else {
                    errors.push(err(
                        format!("line {lineno}"),
                        format!("the value of `{name}` contains YAML syntax; put the whole value in double quotes"),
                    ));
                }
            }
            i = end;
            continue;
        }
        // Copy one UTF-8 character.
        let ch_len = line[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&line[i..i + ch_len]);
        i += ch_len;
    }
}

/// True when `v` can stand in a plain YAML scalar without changing structure.
fn plain_safe(v: &str) -> bool {
    if v.is_empty() {
        return false;
    }
    let first = v.as_bytes()[0];
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first) {
        return false;
    }
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-/:@+=~%".contains(&b))
        && !v.contains(": ")
        && !v.ends_with(':')
}

// ------------------------------------------------------------------- loading

impl Config {
    /// Resolves the file to load from `--config`, `$PORTCULLIS_CONFIG` or `./portcullis.yaml`.
    pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        if let Ok(p) = std::env::var("PORTCULLIS_CONFIG")
            && !p.is_empty()
        {
            return Some(PathBuf::from(p));
        }
        let local = PathBuf::from("portcullis.yaml");
        local.exists().then_some(local)
    }

    /// Loads and validates the configuration for `serve` and `check-config`.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigErrors> {
        let env = |k: &str| std::env::var(k).ok();
        match Self::resolve_path(explicit) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigErrors {
                    source: Some(path.clone()),
                    errors: vec![err(path.display().to_string(), format!("cannot read: {e}"))],
                })?;
                Self::from_yaml(&text, &env, ConfigSource::File(path))
            }
            None => Self::from_env(&env),
        }
    }

    /// Built-in defaults plus providers found in the environment.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut file = FileConfig::default();
        if let Some(key) = env("OPENAI_API_KEY").filter(|k| !k.is_empty()) {
            file.providers.push(ProviderFile {
                name: "openai".into(),
                kind: ProviderKind::Openai,
                base_url: env("OPENAI_BASE_URL").filter(|u| !u.is_empty()),
                api_key: Some(Secret::new(key)),
                models: Some(
                    OPENAI_DEFAULT_MODELS
                        .iter()
                        .map(|m| (*m).to_owned())
                        .collect(),
                ),
                allowed_endpoints: None,
                timeouts: TimeoutsFile::default(),
                allow_link_local: false,
                stream_usage: None,
            });
        }
        validate(file, env, ConfigSource::Defaults)
    }

    /// Parses YAML text (with interpolation) and validates it.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        source: ConfigSource,
    ) -> Result<Config, ConfigErrors> {
        let path = match &source {
            ConfigSource::File(p) => Some(p.clone()),
            ConfigSource::Defaults => None,
        };
        let wrap = |errors| ConfigErrors {
            source: path.clone(),
            errors,
        };
        let text = interpolate(text, env).map_err(wrap)?;
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml_ng::from_str(&text).map_err(|e| {
                let location = e
                    .location()
                    .map(|l| format!("line {} column {}", l.line(), l.column()))
                    .unwrap_or_else(|| "document".into());
                let message = e.to_string();
                // serde_yaml puts " at line X column Y" in the message too; keep it once.
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                wrap(vec![err(location, message)])
            })?
        };
        validate(file, env, source)
    }
}

fn validate(
    file: FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
    source: ConfigSource,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();

    let listen_text = file.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            errors.push(err(
                "listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };

    let database = file.database.unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    if !database.starts_with("sqlite:") {
        errors.push(err(
            "database",
            format!("unsupported store `{database}`; use sqlite://PATH (Postgres arrives in a later release)"),
        ));
    }

    let mut admin_file = file.admin;
    let master_key = admin_file
        .master_key
        .take()
        .filter(|k| !k.is_empty())
        .or_else(|| {
            env("PORTCULLIS_MASTER_KEY")
                .filter(|k| !k.is_empty())
                .map(Secret::new)
        });
    if let Some(k) = &master_key
        && k.expose().len() < 16
    {
        errors.push(err("admin.master_key", "must be at least 16 characters"));
    }
    let admin = validate_admin(admin_file, listen, &mut errors);

    let mut providers = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in file.providers.into_iter().enumerate() {
        let at = |field: &str| format!("providers[{i}].{field}");
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            errors.push(err(
                at("name"),
                format!(
                    "`{}` must be lower-case letters, digits, `-` or `_`",
                    p.name
                ),
            ));
        }
        if !names.insert(p.name.clone()) {
            errors.push(err(
                at("name"),
                format!("provider `{}` is defined twice", p.name),
            ));
        }
        let base_url = match (p.base_url, p.kind) {
            (Some(u), _) => u,
            (None, ProviderKind::Openai) => OPENAI_BASE_URL.to_owned(),
            (None, _) => {
                errors.push(err(at("base_url"), "required for this provider kind"));
                String::new()
            }
        };
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !base_url.is_empty() {
            match base_url.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some()
                        && u.query().is_none() =>
                {
                    if !p.allow_link_local
                        && let Err(why) = crate::proxy::ssrf::check_host(u.host().unwrap_or(""))
                    {
                        errors.push(err(
                            at("base_url"),
                            format!("{why}; set `allow_link_local: true` on this provider if that is really intended"),
                        ));
                    }
                }
                _ => errors.push(err(
                    at("base_url"),
                    format!("`{base_url}` is not an http(s) URL without a query"),
                )),
            }
        }
        let api_key = p.api_key.filter(|k| !k.is_empty());
        if api_key.is_none() && p.kind == ProviderKind::Openai {
            errors.push(err(at("api_key"), "required for kind `openai`"));
        }
        if let Some(models) = &p.models {
            for (j, m) in models.iter().enumerate() {
                if m.is_empty() || m.contains(char::is_whitespace) {
                    errors.push(err(
                        format!("providers[{i}].models[{j}]"),
                        format!("`{m}` is not a model name"),
                    ));
                }
            }
        }
        let allowed_endpoints = match p.allowed_endpoints {
            Some(list) => {
                for (j, g) in list.iter().enumerate() {
                    if let Err(why) = endpoints::check_configurable(p.kind, g) {
                        errors.push(err(format!("providers[{i}].allowed_endpoints[{j}]"), why));
                    }
                }
                list
            }
            None => endpoints::default_allowlist(p.kind)
                .iter()
                .map(|g| (*g).to_owned())
                .collect(),
        };
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: p.timeouts.connect.unwrap_or(d.connect),
            first_byte: p.timeouts.first_byte.unwrap_or(d.first_byte),
            idle: p.timeouts.idle.unwrap_or(d.idle),
        };
        for (field, v) in [
            ("connect", timeouts.connect),
            ("first_byte", timeouts.first_byte),
            ("idle", timeouts.idle),
        ] {
            if v.is_zero() {
                errors.push(err(
                    at(&format!("timeouts.{field}")),
                    "must be greater than zero",
                ));
            }
        }
        providers.push(Arc::new(ProviderConfig {
            name: p.name,
            kind: p.kind,
            base_url,
            api_key,
            models: p.models,
            allowed_endpoints,
            timeouts,
            allow_link_local: p.allow_link_local,
            stream_usage: p.stream_usage.unwrap_or(true),
        }));
    }

    let default_provider = match file.default_provider {
        Some(name) => match providers.iter().position(|p| p.name == name) {
            Some(i) => Some(i),
            None => {
                errors.push(err(
                    "default_provider",
                    format!("no provider is named `{name}`"),
                ));
                None
            }
        },
        None => (!providers.is_empty()).then_some(0),
    };

    let max_body_bytes = file.limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        errors.push(err("limits.max_body_bytes", "must be greater than zero"));
    }
    let max_body_bytes = usize::try_from(max_body_bytes).unwrap_or(usize::MAX);
    let limits = file.limits.validate(&mut errors);
    let budget_alerts = file.budget_alerts.validate(&mut errors);
    let budgets =
        crate::limits::config::validate_budgets(file.budgets, &budget_alerts, &mut errors);
    let pricing = crate::limits::config::Pricing::new(file.pricing, &mut errors);

    let server = ServerConfig {
        shutdown_grace: file
            .server
            .shutdown_grace
            .unwrap_or(Duration::from_secs(30)),
        max_connections: file.server.max_connections.unwrap_or(10_000),
    };
    if server.max_connections == 0 {
        errors.push(err("server.max_connections", "must be greater than zero"));
    }
    let ledger = LedgerConfig {
        queue_capacity: file.ledger.queue_capacity.unwrap_or(16_384),
        batch_size: file.ledger.batch_size.unwrap_or(512),
        flush_interval: file
            .ledger
            .flush_interval
            .unwrap_or(Duration::from_millis(50)),
    };
    if ledger.flush_interval.is_zero() || ledger.flush_interval > Duration::from_secs(10) {
        errors.push(err(
            "ledger.flush_interval",
            "must be more than 0 and at most 10s",
        ));
    }
    if ledger.queue_capacity == 0 || ledger.batch_size == 0 {
        errors.push(err(
            "ledger",
            "queue_capacity and batch_size must be greater than zero",
        ));
    }
    let log = LogConfig {
        level: file.log.level.unwrap_or_else(|| "info".into()),
        format: file.log.format.unwrap_or_default(),
    };
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
        errors.push(err(
            "log.level",
            format!("`{}` is not a log filter: {e}", log.level),
        ));
    }

    let auth = validate_auth(file.auth, env, &mut errors);
    let ownership = crate::authz::ownership::OwnershipConfig::from_file(
        file.ownership,
        (file.forward_user_id, file.forward_user_id_salt),
        &mut errors,
    );
    let tls = crate::tls::validate(file.tls, &mut errors);
    let rules = crate::authz::rules::Rules::from_file(file.rules, &mut errors);

    if !errors.is_empty() {
        return Err(ConfigErrors {
            source: match source {
                ConfigSource::File(p) => Some(p),
                ConfigSource::Defaults => None,
            },
            errors,
        });
    }
    Ok(Config {
        listen,
        database,
        master_key,
        admin,
        providers,
        default_provider,
        max_body_bytes,
        limits,
        budgets,
        budget_alerts,
        pricing,
        server,
        ledger,
        log,
        auth,
        ownership,
        tls,
        rules,
        source,
    })
}

/// Parses CIDR blocks or single addresses, reporting bad ones at `at[i]`.
fn parse_nets(list: &[String], at: &str, errors: &mut Vec<ConfigError>) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let parsed = p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => errors.push(err(
                format!("{at}[{i}]"),
                format!("`{p}` is not an address or CIDR block"),
            )),
        }
    }
    out
}

fn validate_admin(
    file: AdminFile,
    listen: SocketAddr,
    errors: &mut Vec<ConfigError>,
) -> AdminConfig {
    for (role, names) in file.roles.entries() {
        if names.iter().any(|n| n.trim().is_empty()) {
            errors.push(err(
                format!("admin.roles.{role}"),
                "role names must not be empty",
            ));
        }
    }
    let allow_ips = parse_nets(&file.allow_ips, "admin.allow_ips", errors);
    let admin_listen = file.listen.and_then(|l| match l.parse::<SocketAddr>() {
        Ok(a) if a == listen && a.port() != 0 => {
            errors.push(err(
                "admin.listen",
                format!("`{l}` is the same address as `listen`; leave admin.listen out to serve the admin API there"),
            ));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(err(
                "admin.listen",
                format!("`{l}` is not an address like 127.0.0.1:8081"),
            ));
            None
        }
    });
    AdminConfig {
        roles: file.roles,
        allow_ips,
        listen: admin_listen,
    }
}

fn env_true(v: Option<String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn validate_auth(
    file: AuthFile,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> AuthConfig {
    let disabled = file.disabled.unwrap_or(false) || env_true(env("PORTCULLIS_DISABLE_AUTH"));
    let public_paths = file.public_paths.unwrap_or_else(|| {
        DEFAULT_PUBLIC_PATHS
            .iter()
            .map(|p| (*p).to_owned())
            .collect()
    });
    for (i, p) in public_paths.iter().enumerate() {
        if !p.starts_with('/') || p.starts_with("/admin") {
            errors.push(err(
                format!("auth.public_paths[{i}]"),
                format!("`{p}` must be an absolute path outside /admin"),
            ));
        }
    }
    let mut static_keys = Vec::new();
    let mut names = HashSet::new();
    for (i, k) in file.static_keys.into_iter().enumerate() {
        let at = |f: &str| format!("auth.static_keys[{i}].{f}");
        if k.name.is_empty() || !names.insert(k.name.clone()) {
            errors.push(err(
                at("name"),
                format!("`{}` must be a unique, non-empty name", k.name),
            ));
        }
        let key = match (k.key.filter(|k| !k.is_empty()), k.key_file) {
            (Some(key), None) => Some(key),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(text) => Some(Secret::new(text.trim().to_owned())),
                Err(e) => {
                    errors.push(err(
                        at("key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    None
                }
            },
            _ => {
                errors.push(err(at("key"), "set exactly one of `key` and `key_file`"));
                None
            }
        };
        if let Some(key) = key {
            let v = key.expose();
            if v.len() < 16 {
                errors.push(err(at("key"), "must be at least 16 characters"));
            } else if v.starts_with(crate::authn::keys::KEY_PREFIX)
                || v.starts_with(crate::authn::keys::MASTER_PREFIX)
                || v.matches('.').count() == 2
                || v.contains(char::is_whitespace)
            {
                errors.push(err(
                    at("key"),
                    "must not look like a gateway key, a master key or a JWT, nor contain spaces",
                ));
            } else {
                static_keys.push(StaticKey {
                    name: k.name,
                    key,
                    user: k.user,
                    team: k.team,
                });
            }
        }
    }
    let lockout = match file.lockout {
        Some(LockoutFile {
            enabled: Some(false),
            ..
        }) => None,
        Some(l) => {
            let d = LockoutConfig::default();
            let c = LockoutConfig {
                max_failed_attempts: l.max_failed_attempts.unwrap_or(d.max_failed_attempts),
                window: l.window_seconds.map_or(d.window, Duration::from_secs),
                block: l.block_seconds.map_or(d.block, Duration::from_secs),
                block_multiplier: l.block_multiplier.unwrap_or(d.block_multiplier),
                max_block: l.max_block_seconds.map_or(d.max_block, Duration::from_secs),
            };
            if c.max_failed_attempts == 0
                || c.window.is_zero()
                || c.block.is_zero()
                || c.block_multiplier == 0
            {
                errors.push(err(
                    "auth.lockout",
                    "max_failed_attempts, window_seconds, block_seconds and block_multiplier must be greater than zero (use enabled: false to turn it off)",
                ));
            }
            if c.max_block < c.block {
                errors.push(err(
                    "auth.lockout.max_block_seconds",
                    "must be at least block_seconds",
                ));
            }
            Some(c)
        }
        None => Some(LockoutConfig::default()),
    };
    let trusted_proxies = parse_nets(&file.trusted_proxies, "auth.trusted_proxies", errors);
    let jwt = crate::authn::jwt::validate_issuers(file.jwt, "auth.jwt").unwrap_or_else(|e| {
        errors.extend(e);
        Vec::new()
    });
    let app_check = file
        .app_check
        .and_then(|a| match a.validate("auth.app_check") {
            Ok(c) => Some(c),
            Err(e) => {
                errors.extend(e);
                None
            }
        });
    AuthConfig {
        disabled,
        public_paths,
        static_keys,
        lockout,
        trusted_proxies,
        jwt,
        app_check,
    }
}

impl Config {
    /// With authentication disabled, listening beyond loopback needs an explicit opt-in.
    pub fn check_insecure_listen(&self, allow_insecure_public: bool) -> Result<(), String> {
        if self.auth.disabled && !self.listen.ip().is_loopback() && !allow_insecure_public {
            return Err(format!(
                "authentication is disabled and `listen` is {}, which is not a loopback address: refusing to serve. \
                 Listen on 127.0.0.1, enable authentication, or pass --allow-insecure-public.",
                self.listen
            ));
        }
        Ok(())
    }
}

impl Config {
    /// A provider by name.
    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The provider for endpoints without a model.
    pub fn default_provider(&self) -> Option<&Arc<ProviderConfig>> {
        self.default_provider.and_then(|i| self.providers.get(i))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "KEY" => Some("sk-abc".into()),
            "WEIRD" => Some("a: b # c".into()),
            "QUOTE" => Some("it's \"x\"".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolates_in_every_context() {
        let text = "a: ${KEY}\nb: \"x-${KEY}\"\nc: ${MISSING:-dflt}\nd: ${WEIRD}\ne: '${QUOTE}'\nf: \"${QUOTE}\"\n# ${NOPE}\ng: $${KEY}\n";
        let out = interpolate(text, &env).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(v["a"].as_str(), Some("sk-abc"));
        assert_eq!(v["b"].as_str(), Some("x-sk-abc"));
        assert_eq!(v["c"].as_str(), Some("dflt"));
        assert_eq!(v["d"].as_str(), Some("a: b # c"));
        assert_eq!(v["e"].as_str(), Some("it's \"x\""));
        assert_eq!(v["f"].as_str(), Some("it's \"x\""));
        assert_eq!(v["g"].as_str(), Some("${KEY}"));
    }

    #[test]
    fn missing_variables_are_named_with_their_line() {
        let errs = interpolate("a: 1\nb: ${NOPE}\nc: ${ALSO_NOPE}\n", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].location, "line 2");
        assert!(errs[0].message.contains("NOPE"));
        assert_eq!(errs[1].location, "line 3");
    }

    #[test]
    fn unknown_fields_name_field_and_line() {
        let e = Config::from_yaml(
            "listen: 127.0.0.1:1\nlistne: x\n",
            &env,
            ConfigSource::Defaults,
        )
        .unwrap_err();
        assert_eq!(e.errors[0].location, "line 2 column 1");
        assert!(
            e.errors[0].message.contains("listne"),
            "{}",
            e.errors[0].message
        );
    }

    #[test]
    fn every_semantic_error_is_reported() {
        let y = "listen: nope\nproviders:\n  - name: Bad Name\n    kind: openai_compatible\n  - name: x\n    kind: openai\n    allowed_endpoints: [chat, organization]\ndefault_provider: zzz\n";
        let e = Config::from_yaml(y, &env, ConfigSource::Defaults).unwrap_err();
        let locs: Vec<_> = e.errors.iter().map(|e| e.location.as_str()).collect();
        for want in [
            "listen",
            "providers[0].name",
            "providers[0].base_url",
            "providers[1].api_key",
            "providers[1].allowed_endpoints[1]",
            "default_provider",
        ] {
            assert!(locs.contains(&want), "{want} missing from {locs:?}");
        }
    }
}
