//! Access rules: which subjects may use which models and endpoint groups.
//!
//! ```yaml
//! rules:
//!   - subjects: ["team:mobile", "role:pro", "user:supabase:8f1c", "key:<key id>", "issuer:supabase", "*"]
//!     models: ["openai/gpt-4o-mini", "anthropic/*"]   # globs over provider/model
//!     endpoints: [chat, embeddings, files]            # optional; default: everything the provider allows
//! ```
//!
//! Deny by default: with a `rules` section, a request passes when at least one
//! rule matches its subject, its `provider/model` and its endpoint group (and
//! the key's own lists allow it too). A request without a model (files,
//! threads, ...) needs a rule whose model globs cover its provider. Without a
//! `rules` section, gateway and shared keys are governed by their own lists
//! and identity-provider users get nothing.

use serde::Deserialize;

use super::glob;
use crate::authn::{CredentialKind, Principal};
use crate::config::ConfigError;

/// One rule as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    subjects: Vec<String>,
    models: Vec<String>,
    endpoints: Option<Vec<String>>,
}

/// What a subject pattern names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `*`: anyone, authenticated or not.
    Any,
    /// `team:<glob>`.
    Team(String),
    /// `role:<glob>`.
    Role(String),
    /// `user:<glob>` (JWT users are `<issuer>:<sub>`).
    User(String),
    /// `key:<glob>` (gateway key id, or `static:<name>`).
    Key(String),
    /// `issuer:<glob>` (JWT issuer name).
    Issuer(String),
}

impl Subject {
    /// Parses `*` or `kind:glob`.
    pub fn parse(s: &str) -> Result<Subject, String> {
        if s == "*" {
            return Ok(Subject::Any);
        }
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not `*` or `kind:value`"))?;
        if value.is_empty() {
            return Err(format!("`{s}` has an empty value"));
        }
        let v = value.to_owned();
        Ok(match kind {
            "team" => Subject::Team(v),
            "role" => Subject::Role(v),
            "user" => Subject::User(v),
            "key" => Subject::Key(v),
            "issuer" => Subject::Issuer(v),
            _ => {
                return Err(format!(
                    "`{kind}` is not one of team, role, user, key, issuer"
                ));
            }
        })
    }

    /// True when this pattern names `p`.
    pub fn matches(&self, p: &Principal) -> bool {
        let m = |pat: &str, v: Option<&str>| v.is_some_and(|v| glob::matches(pat, v));
        match self {
            Subject::Any => true,
            Subject::Team(g) => m(g, p.team()),
            Subject::Role(g) => p.roles().iter().any(|r| glob::matches(g, r)),
            Subject::User(g) => m(g, p.user()),
            Subject::Key(g) => m(g, p.key_id()),
            Subject::Issuer(g) => m(g, p.issuer()),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its position in the file (0-based), for `explain`.
    pub index: usize,
    /// Who it grants.
    pub subjects: Vec<Subject>,
    /// The subject patterns as written.
    pub subject_text: Vec<String>,
    /// `provider/model` globs.
    pub models: Vec<String>,
    /// Endpoint groups; `None` = everything the provider allows.
    pub endpoints: Option<Vec<String>>,
}

impl Rule {
    fn grants_subject(&self, p: &Principal) -> bool {
        self.subjects.iter().any(|s| s.matches(p))
    }

    fn grants_model(&self, provider: &str, model: Option<&str>) -> bool {
        self.models.iter().any(|g| {
            let (gp, gm) = g.split_once('/').unwrap_or((g.as_str(), "*"));
            glob::matches(gp, provider) && model.is_none_or(|m| glob::matches(gm, m))
        })
    }

    fn grants_endpoint(&self, group: &str) -> bool {
        self.endpoints
            .as_ref()
            .is_none_or(|e| e.iter().any(|g| g == group))
    }

    /// One line describing the rule, for `explain` and logs.
    pub fn describe(&self) -> String {
        format!(
            "rules[{}]: subjects {:?}, models {:?}, endpoints {}",
            self.index,
            self.subject_text,
            self.models,
            self.endpoints.as_ref().map_or_else(
                || "(all the provider allows)".to_owned(),
                |e| format!("{e:?}")
            )
        )
    }
}

/// The rule set; `configured` is false when the file has no `rules` section.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Whether a `rules` section exists.
    pub configured: bool,
    /// The rules in file order.
    pub rules: Vec<Rule>,
}

/// Why the rules refused, or which rule allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleDecision {
    /// Allowed by this rule (index).
    Allowed(usize),
    /// No `rules` section and the principal is a key (governed by its own lists) or anonymous.
    NotConfigured,
    /// Refused: no rule grants this subject, model and endpoint group.
    Denied,
}

impl Rules {
    /// Validates the `rules` section.
    pub fn from_file(files: Option<Vec<RuleFile>>, errors: &mut Vec<ConfigError>) -> Rules {
        let Some(files) = files else {
            return Rules::default();
        };
        let mut rules = Vec::new();
        for (i, f) in files.into_iter().enumerate() {
            let mut subjects = Vec::new();
            for (j, s) in f.subjects.iter().enumerate() {
                match Subject::parse(s) {
                    Ok(s) => subjects.push(s),
                    Err(e) => errors.push(ConfigError {
                        location: format!("rules[{i}].subjects[{j}]"),
                        message: e,
                    }),
                }
            }
            if f.subjects.is_empty() {
                errors.push(ConfigError {
                    location: format!("rules[{i}].subjects"),
                    message: "must name at least one subject".into(),
                });
            }
            if f.models.is_empty() {
                errors.push(ConfigError {
                    location: format!("rules[{i}].models"),
                    message: "must name at least one `provider/model` glob".into(),
                });
            }
            for (j, m) in f.models.iter().enumerate() {
                if !m.contains('/') || m.contains(char::is_whitespace) {
                    errors.push(ConfigError {
                        location: format!("rules[{i}].models[{j}]"),
                        message: format!("`{m}` must be a `provider/model` glob such as `openai/gpt-4o*` or `anthropic/*`"),
                    });
                }
            }
            rules.push(Rule {
                index: i,
                subjects,
                subject_text: f.subjects,
                models: f.models,
                endpoints: f.endpoints,
            });
        }
        Rules {
            configured: true,
            rules,
        }
    }

    /// Decides for a principal, provider, model (if the request names one) and endpoint group.
    pub fn decide(
        &self,
        p: &Principal,
        provider: &str,
        model: Option<&str>,
        group: &str,
    ) -> RuleDecision {
        if !self.configured {
            return match p.kind() {
                CredentialKind::Jwt => RuleDecision::Denied,
                _ => RuleDecision::NotConfigured,
            };
        }
        self.rules
            .iter()
            .find(|r| {
                r.grants_subject(p) && r.grants_model(provider, model) && r.grants_endpoint(group)
            })
            .map_or(RuleDecision::Denied, |r| RuleDecision::Allowed(r.index))
    }

    /// True when some rule lets `p` use `provider/model` on any endpoint (for `GET /v1/models`).
    pub fn allows_model(&self, p: &Principal, provider: &str, model: &str) -> bool {
        if !self.configured {
            return p.kind() != CredentialKind::Jwt;
        }
        self.rules
            .iter()
            .any(|r| r.grants_subject(p) && r.grants_model(provider, Some(model)))
    }
}
