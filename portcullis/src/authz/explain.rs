//! `explain`: what the pipeline would decide for a subject, a model and a
//! request line, stage by stage — so an operator can answer "why was this user
//! denied?" without reading logs. It runs the same checks, in the same order,
//! as [`super::authorize`].

use serde::Serialize;

use super::rules::{RuleDecision, Rules};
use super::{endpoints, glob, resolve_model};
use crate::authn::Principal;
use crate::config::Config;
use crate::error::ApiError;

/// One stage's verdict.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stage {
    /// Stage name.
    pub stage: &'static str,
    /// `pass`, `refuse` or `skipped`.
    pub result: &'static str,
    /// Why.
    pub detail: String,
}

/// The whole explanation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// HTTP status the request would get from the gateway (200 = forwarded).
    pub status: u16,
    /// Error code when denied.
    pub code: Option<&'static str>,
    /// The rule that allowed it, when rules are configured.
    pub rule: Option<String>,
    /// Every stage, in pipeline order.
    pub stages: Vec<Stage>,
}

/// Explains `method path` with `model` for `principal`.
pub fn explain(
    config: &Config,
    rules: &Rules,
    principal: &Principal,
    method: &str,
    path: &str,
    model: Option<&str>,
) -> Explanation {
    let mut stages = vec![Stage {
        stage: "authentication",
        result: "skipped",
        detail: "explain takes the subject as given; credentials are not checked".into(),
    }];
    let mut refusal: Option<ApiError> = None;
    let mut rule = None;
    let push = |stages: &mut Vec<Stage>,
                refusal: &mut Option<ApiError>,
                name,
                outcome: Result<String, ApiError>| match outcome {
        Ok(detail) => stages.push(Stage {
            stage: name,
            result: if refusal.is_some() { "skipped" } else { "pass" },
            detail,
        }),
        Err(e) => {
            let detail = e.public_message();
            stages.push(Stage {
                stage: name,
                result: if refusal.is_some() {
                    "skipped"
                } else {
                    "refuse"
                },
                detail,
            });
            if refusal.is_none() {
                *refusal = Some(e);
            }
        }
    };

    let (rest, native) = match path.strip_prefix("/v1") {
        Some(r) => (r, None),
        None => match path
            .strip_prefix("/providers/")
            .and_then(|a| a.find('/').map(|i| a.split_at(i)))
        {
            Some((p, r)) => (r, Some(p)),
            None => ("", None),
        },
    };
    let group = endpoints::check_path(rest).map(str::to_owned);
    push(
        &mut stages,
        &mut refusal,
        "path",
        group
            .as_ref()
            .map(|g| format!("{method} {path}: endpoint group `{g}`"))
            .map_err(clone_err),
    );
    let group = group.unwrap_or_default();

    let provider = match (native, model) {
        (Some(p), _) => config.provider(p).cloned().ok_or(ApiError::NotFound),
        (None, Some(m)) => resolve_model(config, m).map(|(p, _)| p.clone()),
        (None, None) => config.default_provider().cloned().ok_or(ApiError::NotFound),
    };
    let bare = model.map(|m| {
        m.split_once('/')
            .filter(|(p, _)| config.provider(p).is_some())
            .map_or(m, |(_, b)| b)
    });
    push(
        &mut stages,
        &mut refusal,
        "routing",
        provider
            .as_ref()
            .map(|p| match bare {
                Some(b) => format!("model `{b}` is served by provider `{}`", p.name),
                None => format!("no model: the request goes to provider `{}`", p.name),
            })
            .map_err(clone_err),
    );
    let Ok(provider) = provider else {
        return finish(refusal, rule, stages);
    };

    push(
        &mut stages,
        &mut refusal,
        "provider_allowlist",
        if provider.allows_endpoint(&group) {
            Ok(format!(
                "`{group}` is on provider `{}`'s allowlist",
                provider.name
            ))
        } else {
            Err(ApiError::EndpointNotAllowed(group.clone()))
        },
    );
    let key_endpoints = match principal.endpoints() {
        Some(list) if !list.contains(&group) => Err(ApiError::EndpointNotAllowed(group.clone())),
        Some(list) => Ok(format!("the key's endpoints {list:?} include `{group}`")),
        None => Ok("the key does not restrict endpoints".into()),
    };
    push(&mut stages, &mut refusal, "key_endpoints", key_endpoints);
    let key_models = match (principal.models(), bare) {
        (Some(globs), Some(m)) if !glob::model_allowed(globs, &provider.name, m) => Err(ApiError::ModelNotAllowed(m.to_owned())),
        (Some(globs), Some(_)) => Ok(format!("the key's models {globs:?} allow it")),
        (Some(_), None) if endpoints::MODEL_GROUPS.contains(&group.as_str()) => Err(ApiError::BadRequest {
            message: "This key is limited to certain models, so the request must name one in `model`.".into(),
            param: Some("model"),
        }),
        _ => Ok("the key does not restrict models here".into()),
    };
    push(&mut stages, &mut refusal, "key_models", key_models);
    let decision = match rules.decide(principal, &provider.name, bare, &group) {
        RuleDecision::Allowed(i) => {
            let text = rules.rules.get(i).map(|r| r.describe()).unwrap_or_default();
            rule = Some(text.clone());
            Ok(format!("allowed by {text}"))
        }
        RuleDecision::NotConfigured => {
            Ok("no `rules` section: keys are governed by their own lists".into())
        }
        RuleDecision::Denied => Err(match bare {
            Some(m) => ApiError::ModelNotAllowed(m.to_owned()),
            None => ApiError::EndpointNotAllowed(group.clone()),
        }),
    };
    let denied_detail = if rules.configured {
        "no rule grants this subject, model and endpoint group"
    } else {
        "no `rules` section: identity-provider users get nothing until a rule grants them"
    };
    match decision {
        Ok(d) => push(&mut stages, &mut refusal, "rules", Ok(d)),
        Err(e) => {
            let first = refusal.is_none();
            stages.push(Stage {
                stage: "rules",
                result: if first { "refuse" } else { "skipped" },
                detail: denied_detail.into(),
            });
            if first {
                refusal = Some(e);
            }
        }
    }
    finish(refusal, rule, stages)
}

fn clone_err(e: &ApiError) -> ApiError {
    match e {
        ApiError::InvalidPath(w) => ApiError::InvalidPath(w),
        ApiError::ModelNotFound(m) => ApiError::ModelNotFound(m.clone()),
        _ => ApiError::NotFound,
    }
}

fn finish(refusal: Option<ApiError>, rule: Option<String>, stages: Vec<Stage>) -> Explanation {
    match refusal {
        None => Explanation {
            decision: "allow",
            status: 200,
            code: None,
            rule,
            stages,
        },
        Some(e) => Explanation {
            decision: "deny",
            status: e.status().as_u16(),
            code: Some(e.code()),
            rule: None,
            stages,
        },
    }
}
