//! Authorization: a [`Principal`] plus the resolved route (provider, endpoint
//! group, model) becomes a [`Permit`], or a 403/404.
//!
//! Deny by default: the endpoint group must be on the provider's allowlist and
//! on the key's own list (if it has one); the model must be served by a
//! configured provider and match the key's model globs (if it has any).

pub mod endpoints;
pub mod explain;
pub mod glob;
pub mod ownership;
pub mod rules;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::authn::Principal;
use crate::config::{Config, ProviderConfig};
use crate::error::ApiError;

/// Which client surface a request came in on.
#[derive(Debug, Clone, Copy)]
pub enum Surface<'a> {
    /// `/v1/{rest}`: the body's `model` picks the provider.
    V1 {
        /// Raw path after `/v1`, starting with `/`.
        rest: &'a str,
    },
    /// `/providers/{provider}/{rest}`: native pass-through.
    Native {
        /// Provider name from the path.
        provider: &'a str,
        /// Raw path after the provider name, starting with `/`.
        rest: &'a str,
    },
}

/// The request as authorization sees it.
#[derive(Debug)]
pub struct RouteRequest<'a> {
    /// Surface and path.
    pub surface: Surface<'a>,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// `content-type` header.
    pub content_type: Option<&'a str>,
    /// The whole request body (already size-limited).
    pub body: Bytes,
}

/// Permission to forward one request: only [`authorize`] builds it.
#[derive(Debug)]
pub struct Permit {
    principal: Principal,
    provider: Arc<ProviderConfig>,
    group: String,
    model: Option<String>,
    upstream_path: String,
    body: Bytes,
}

impl Permit {
    /// Who is calling.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// Where the request goes.
    pub fn provider(&self) -> &Arc<ProviderConfig> {
        &self.provider
    }
    /// Endpoint group.
    pub fn group(&self) -> &str {
        &self.group
    }
    /// Model as sent upstream (bare).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    /// Path and query to append to the provider's base URL.
    pub fn upstream_path(&self) -> &str {
        &self.upstream_path
    }
    /// Body to send upstream.
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    /// Replaces the body sent upstream (limits add `default_max_tokens` and
    /// ask for stream usage; the model and endpoint were decided on the original).
    pub(crate) fn set_body(&mut self, body: Bytes) {
        self.body = body;
    }
}

/// What authorization learnt before refusing: for the ledger.
#[derive(Debug, Default, Clone)]
pub struct RouteFacts {
    /// Provider name, once known.
    pub provider: Option<String>,
    /// Endpoint group, once known.
    pub group: Option<String>,
    /// Model, once known.
    pub model: Option<String>,
}

/// Decides whether `principal` may make this request.
pub async fn authorize(
    config: &Config,
    rules: &rules::Rules,
    principal: Principal,
    req: RouteRequest<'_>,
    facts: &mut RouteFacts,
) -> Result<Permit, ApiError> {
    let rest = match req.surface {
        Surface::V1 { rest } | Surface::Native { rest, .. } => rest,
    };
    let group = endpoints::check_path(rest)?.to_owned();
    facts.group = Some(group.clone());

    let requested = requested_model(req.content_type, &req.body).await?;
    let native = match req.surface {
        Surface::Native { provider, .. } => Some(provider),
        Surface::V1 { .. } => None,
    };
    let mut stop = Stop { facts };
    let (provider, model) = check(
        config,
        rules,
        &principal,
        native,
        &group,
        requested.as_deref(),
        &mut stop,
    )?
    .ok_or(ApiError::NotFound)?;

    let body = match (&model, &requested) {
        (Some(bare), Some(sent)) if bare != sent && !is_multipart(req.content_type) => {
            rewrite_model(&req.body, bare)?
        }
        _ => req.body,
    };
    let mut upstream_path =
        String::with_capacity(rest.len() + req.query.map_or(0, |q| q.len() + 1));
    upstream_path.push_str(rest);
    if let Some(q) = req.query {
        upstream_path.push('?');
        upstream_path.push_str(q);
    }
    Ok(Permit {
        principal,
        provider,
        group,
        model,
        upstream_path,
        body,
    })
}

/// Where the checks of [`check`] report. [`authorize`] stops at the first
/// refusal ([`Stop`]); `explain` records every stage and carries on. The
/// detail closures run only for a recorder, so the request path builds no
/// strings.
pub(crate) trait Trace {
    /// The route is known: provider and the model as sent upstream.
    fn routed(&mut self, provider: &str, model: Option<&str>);
    /// A stage passed.
    fn pass(&mut self, stage: &'static str, detail: impl FnOnce() -> String);
    /// A stage refused; `Err` ends the checks with that error. `detail`
    /// replaces the error's message in a recorder.
    fn refuse(
        &mut self,
        stage: &'static str,
        error: ApiError,
        detail: Option<&'static str>,
    ) -> Result<(), ApiError>;
    /// The rule (by index) that granted the request.
    fn rule(&mut self, index: usize);
}

/// The request path's [`Trace`]: notes the route for the ledger, and the
/// first refusal is the answer.
struct Stop<'f> {
    facts: &'f mut RouteFacts,
}

impl Trace for Stop<'_> {
    fn routed(&mut self, provider: &str, model: Option<&str>) {
        self.facts.provider = Some(provider.to_owned());
        self.facts.model = model.map(str::to_owned);
    }
    fn pass(&mut self, _: &'static str, _: impl FnOnce() -> String) {}
    fn refuse(
        &mut self,
        _: &'static str,
        error: ApiError,
        _: Option<&'static str>,
    ) -> Result<(), ApiError> {
        Err(error)
    }
    fn rule(&mut self, _: usize) {}
}

/// Where a request goes: the provider and the model as sent upstream.
pub(crate) type Routed = (Arc<ProviderConfig>, Option<String>);

/// Every check after the path, in pipeline order: routing, the provider's
/// allowlist, the key's endpoints and models, the access rules, and a
/// model-limited key naming a model. `native` is the provider named by a
/// `/providers/{name}` path. `None` when routing refused and the trace
/// carried on (there is nothing left to check without a provider).
///
/// `authorize` and `explain` both run exactly this, so they cannot drift.
pub(crate) fn check<T: Trace>(
    config: &Config,
    rules: &rules::Rules,
    principal: &Principal,
    native: Option<&str>,
    group: &str,
    requested: Option<&str>,
    t: &mut T,
) -> Result<Option<Routed>, ApiError> {
    let routed = match (native, requested) {
        (None, Some(m)) => {
            resolve_model(config, m).map(|(p, bare)| (p.clone(), Some(bare.to_owned())))
        }
        (None, None) => config
            .default_provider()
            .cloned()
            .map(|p| (p, None))
            .ok_or(ApiError::NotFound),
        (Some(name), m) => match config.provider(name) {
            None => Err(ApiError::NotFound),
            Some(p) => {
                let bare = m.map(|m| {
                    m.strip_prefix(p.name.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .unwrap_or(m)
                });
                match bare {
                    Some(b) if !p.serves(b) => {
                        Err(ApiError::ModelNotFound(m.unwrap_or(b).to_owned()))
                    }
                    _ => Ok((p.clone(), bare.map(str::to_owned))),
                }
            }
        },
    };
    let (provider, model) = match routed {
        Ok(r) => r,
        Err(e) => {
            t.refuse("routing", e, None)?;
            return Ok(None);
        }
    };
    t.routed(&provider.name, model.as_deref());
    t.pass("routing", || match &model {
        Some(b) => format!("model `{b}` is served by provider `{}`", provider.name),
        None => format!("no model: the request goes to provider `{}`", provider.name),
    });

    if provider.allows_endpoint(group) {
        t.pass("provider_allowlist", || {
            format!("`{group}` is on provider `{}`'s allowlist", provider.name)
        });
    } else {
        t.refuse(
            "provider_allowlist",
            ApiError::EndpointNotAllowed(group.to_owned()),
            None,
        )?;
    }
    match principal.endpoints() {
        Some(list) if !list.iter().any(|g| g == group) => t.refuse(
            "key_endpoints",
            ApiError::EndpointNotAllowed(group.to_owned()),
            None,
        )?,
        Some(list) => t.pass("key_endpoints", || {
            format!("the key's endpoints {list:?} include `{group}`")
        }),
        None => t.pass("key_endpoints", || {
            "the key does not restrict endpoints".into()
        }),
    }
    match (principal.models(), model.as_deref()) {
        (Some(globs), Some(m)) if !glob::model_allowed(globs, &provider.name, m) => {
            t.refuse("key_models", ApiError::ModelNotAllowed(m.to_owned()), None)?
        }
        (Some(globs), Some(_)) => t.pass("key_models", || {
            format!("the key's models {globs:?} allow it")
        }),
        _ => t.pass("key_models", || {
            "the key does not restrict models here".into()
        }),
    }
    match rules.decide(principal, &provider.name, model.as_deref(), group) {
        rules::RuleDecision::Allowed(i) => {
            t.rule(i);
            t.pass("rules", || {
                let text = rules.rules.get(i).map(|r| r.describe()).unwrap_or_default();
                format!("allowed by {text}")
            });
        }
        rules::RuleDecision::NotConfigured => t.pass("rules", || {
            "no `rules` section: keys are governed by their own lists".into()
        }),
        rules::RuleDecision::Denied => t.refuse(
            "rules",
            match model.as_deref() {
                Some(m) => ApiError::ModelNotAllowed(m.to_owned()),
                None => ApiError::EndpointNotAllowed(group.to_owned()),
            },
            Some(if rules.configured {
                "no rule grants this subject, model and endpoint group"
            } else {
                "no `rules` section: identity-provider users get nothing until a rule grants them"
            }),
        )?,
    }
    // A key limited to some models may not leave the choice to the provider's default.
    if model.is_none() && principal.models().is_some() && endpoints::MODEL_GROUPS.contains(&group) {
        t.refuse(
            "model_required",
            ApiError::BadRequest {
                message:
                    "This key is limited to certain models, so the request must name one in `model`."
                        .into(),
                param: Some("model"),
            },
            None,
        )?;
    } else {
        t.pass("model_required", || match model.as_deref() {
            Some(m) => format!("the request names `{m}`"),
            None => "no model needed here".into(),
        });
    }
    Ok(Some((provider, model)))
}

/// `provider/model` names the provider; a bare name goes to the first provider listing it.
pub fn resolve_model<'c, 'm>(
    config: &'c Config,
    model: &'m str,
) -> Result<(&'c Arc<ProviderConfig>, &'m str), ApiError> {
    if let Some((prefix, bare)) = model.split_once('/')
        && let Some(p) = config.provider(prefix)
    {
        return if p.serves(bare) && !bare.is_empty() {
            Ok((p, bare))
        } else {
            Err(ApiError::ModelNotFound(model.to_owned()))
        };
    }
    config
        .providers
        .iter()
        .find(|p| {
            p.models
                .as_ref()
                .is_some_and(|l| l.iter().any(|m| m == model))
        })
        .map(|p| (p, model))
        .ok_or_else(|| ApiError::ModelNotFound(model.to_owned()))
}

/// The models a principal may use, as `(id, provider)` for `GET /v1/models`.
/// The id is the bare name where a bare name routes to that provider, else `provider/model`.
pub fn visible_models(
    config: &Config,
    rules: &rules::Rules,
    principal: &Principal,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in &config.providers {
        let Some(models) = &p.models else { continue };
        for m in models {
            if principal
                .models()
                .is_some_and(|globs| !glob::model_allowed(globs, &p.name, m))
                || !rules.allows_model(principal, &p.name, m)
            {
                continue;
            }
            let routes_here = matches!(resolve_model(config, m), Ok((rp, _)) if Arc::ptr_eq(rp, p));
            let id = if routes_here {
                m.clone()
            } else {
                format!("{}/{m}", p.name)
            };
            out.push((id, p.name.clone()));
        }
    }
    out
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_none_or(json_media_type)
}

/// True for `application/json` and any `…+json` media type, parameters and
/// case aside (compared in place: this runs on every request).
pub(crate) fn json_media_type(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    ct.eq_ignore_ascii_case("application/json")
        || ct
            .len()
            .checked_sub(5)
            .and_then(|at| ct.as_bytes().get(at..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"+json"))
}

fn is_multipart(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.get(..19)
            .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
    })
}

#[derive(serde::Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

/// Reads the `model` a request names: the JSON body's `model`, or a multipart
/// form's `model` field. Invalid JSON is refused here (400).
///
/// A body that looks like a JSON object is read (strictly) as JSON whatever
/// its declared `content-type`: providers parse it regardless, so a
/// `text/plain` label must not carry a model past the key's globs.
pub async fn requested_model(
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Option<String>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    if is_multipart(content_type) {
        return multipart_model(content_type.unwrap_or(""), body.clone()).await;
    }
    let looks_like_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !is_json(content_type) && !looks_like_object {
        return Ok(None);
    }
    match serde_json::from_slice::<ModelOnly<'_>>(body) {
        Ok(m) => Ok(m.model.map(Cow::into_owned)),
        Err(e) if e.classify() == serde_json::error::Category::Data => Err(ApiError::BadRequest {
            message: "The request body must be a JSON object whose `model` is a string.".into(),
            param: Some("model"),
        }),
        Err(e) => Err(ApiError::InvalidJson(e.to_string())),
    }
}

async fn multipart_model(content_type: &str, body: Bytes) -> Result<Option<String>, ApiError> {
    let bad = |why: &str| ApiError::BadRequest {
        message: format!("Malformed multipart body: {why}."),
        param: None,
    };
    let boundary = multer::parse_boundary(content_type).map_err(|_| bad("no boundary"))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    // Read the whole form: a second `model` field could be the one the provider uses.
    let mut model = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("model") => {
                if model.is_some() {
                    return Err(bad("more than one `model` field"));
                }
                model = Some(
                    field
                        .text()
                        .await
                        .map_err(|_| bad("unreadable model field"))?,
                );
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(model),
            Err(_) => return Err(bad("cannot parse form")),
        }
    }
}

fn rewrite_model(body: &Bytes, bare: &str) -> Result<Bytes, ApiError> {
    let mut map: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let value = RawValue::from_string(
        serde_json::to_string(bare).map_err(|e| ApiError::Internal(e.to_string()))?,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    map.insert("model".to_owned(), value);
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()))
}
