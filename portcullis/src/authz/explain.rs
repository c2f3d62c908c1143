//! `explain`: what the pipeline would decide for a subject, a model and a
//! request line, stage by stage — so an operator can answer "why was this user
//! denied?" without reading logs. It runs the very checks of
//! [`super::authorize`] (one function, [`super::check`]) with a recorder that
//! notes every stage instead of stopping at the first refusal.

use serde::Serialize;

use super::rules::Rules;
use super::{Trace, check, endpoints};
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

/// Records every stage; the first refusal decides.
struct Recorder {
    stages: Vec<Stage>,
    refusal: Option<ApiError>,
    rule: Option<usize>,
}

impl Recorder {
    fn push(&mut self, stage: &'static str, ok: bool, detail: String) {
        let result = match (self.refusal.is_some(), ok) {
            (true, _) => "skipped",
            (false, true) => "pass",
            (false, false) => "refuse",
        };
        self.stages.push(Stage {
            stage,
            result,
            detail,
        });
    }
}

impl Trace for Recorder {
    fn routed(&mut self, _: &str, _: Option<&str>) {}
    fn pass(&mut self, stage: &'static str, detail: impl FnOnce() -> String) {
        self.push(stage, true, detail());
    }
    fn refuse(
        &mut self,
        stage: &'static str,
        error: ApiError,
        detail: Option<&'static str>,
    ) -> Result<(), ApiError> {
        let text = detail.map_or_else(|| error.public_message(), str::to_owned);
        self.push(stage, false, text);
        if self.refusal.is_none() {
            self.refusal = Some(error);
        }
        Ok(())
    }
    fn rule(&mut self, index: usize) {
        self.rule = Some(index);
    }
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
    let mut r = Recorder {
        stages: vec![Stage {
            stage: "authentication",
            result: "skipped",
            detail: "explain takes the subject as given; credentials are not checked".into(),
        }],
        refusal: None,
        rule: None,
    };
    let (rest, native) = match path.strip_prefix("/v1") {
        Some(rest) => (rest, None),
        None => match path
            .strip_prefix("/providers/")
            .and_then(|a| a.find('/').map(|i| a.split_at(i)))
        {
            Some((p, rest)) => (rest, Some(p)),
            None => ("", None),
        },
    };
    let group = match endpoints::check_path(rest) {
        Ok(g) => {
            r.push(
                "path",
                true,
                format!("{method} {path}: endpoint group `{g}`"),
            );
            g.to_owned()
        }
        Err(e) => {
            let _ = r.refuse("path", e, None);
            String::new()
        }
    };
    // The checks return `Ok` under a recorder: it never stops them.
    let _ = check(config, rules, principal, native, &group, model, &mut r);
    let rule = r
        .rule
        .and_then(|i| rules.rules.get(i))
        .map(|rule| rule.describe());
    match r.refusal {
        None => Explanation {
            decision: "allow",
            status: 200,
            code: None,
            rule,
            stages: r.stages,
        },
        Some(e) => Explanation {
            decision: "deny",
            status: e.status().as_u16(),
            code: Some(e.code()),
            rule: None,
            stages: r.stages,
        },
    }
}
