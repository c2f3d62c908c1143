//! Firebase App Check: the `X-Firebase-AppCheck` token proves the request comes
//! from a registered app. It is a JWT verified with the same machinery as user
//! tokens: issuer `https://firebaseappcheck.googleapis.com/<project_number>`,
//! audience `projects/<project_number>` (the token's `aud` array also names the
//! project id), RS256, keys from App Check's public JWK set.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{
    Algorithm, CacheSettings, DEFAULT_LEEWAY_SECONDS, JwtError, JwtIssuer, JwtVerifier, KeySource,
    cfg_err, jwks,
};
use crate::clock::SharedClock;
use crate::config::ConfigError;

/// App Check's public JWK set.
pub const APP_CHECK_JWKS_URL: &str = "https://firebaseappcheck.googleapis.com/v1/jwks";

/// `auth.app_check` as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCheckFile {
    /// The Firebase project *number* (digits, not the project id).
    pub project_number: String,
    /// App Check's key set (default [`APP_CHECK_JWKS_URL`]); tests point it at a local server.
    pub jwks_url: Option<String>,
    /// `false`: a missing or bad token is only logged and counted (default `true`).
    pub required: Option<bool>,
}

/// Validated App Check settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AppCheckConfig {
    /// The Firebase project number.
    pub project_number: String,
    /// Where the keys come from.
    pub jwks_url: String,
    /// Whether requests without a valid token are refused.
    pub required: bool,
}

impl AppCheckFile {
    /// Validates the section; `at` is its location (e.g. `auth.app_check`).
    pub fn validate(self, at: &str) -> Result<AppCheckConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.project_number.is_empty()
            || self.project_number.len() > 20
            || !self.project_number.bytes().all(|b| b.is_ascii_digit())
        {
            errors.push(cfg_err(
                at,
                "project_number",
                "must be the Firebase project number (digits)",
            ));
        }
        let jwks_url = self
            .jwks_url
            .unwrap_or_else(|| APP_CHECK_JWKS_URL.to_owned());
        if let Err(e) = jwks::check_fetch_url(&jwks_url) {
            errors.push(cfg_err(at, "jwks_url", e));
        }
        if errors.is_empty() {
            Ok(AppCheckConfig {
                project_number: self.project_number,
                jwks_url,
                required: self.required.unwrap_or(true),
            })
        } else {
            Err(errors)
        }
    }
}

impl AppCheckConfig {
    /// The `iss` App Check tokens carry.
    pub fn issuer(&self) -> String {
        format!(
            "https://firebaseappcheck.googleapis.com/{}",
            self.project_number
        )
    }

    /// The audience every App Check token of the project names.
    pub fn audience(&self) -> String {
        format!("projects/{}", self.project_number)
    }

    fn jwt_issuer(&self) -> JwtIssuer {
        JwtIssuer {
            name: "firebase-app-check".to_owned(),
            issuer: self.issuer(),
            key_source: KeySource::Jwks(self.jwks_url.clone()),
            audiences: vec![self.audience()],
            algorithms: vec![Algorithm::RS256],
            user_claim: "sub".to_owned(),
            team_claim: None,
            roles_claim: None,
            required_claims: BTreeMap::new(),
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECONDS),
        }
    }
}

/// What a verified App Check token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCheckClaims {
    /// The Firebase app id (the token's `sub`).
    pub app_id: String,
}

/// Verifies `X-Firebase-AppCheck` tokens. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppCheckVerifier {
    verifier: JwtVerifier,
    required: bool,
}

impl AppCheckVerifier {
    /// A verifier with the production cache settings.
    pub fn new(config: AppCheckConfig, clock: SharedClock) -> Self {
        Self::with_settings(config, clock, CacheSettings::default())
    }

    /// A verifier with explicit key-set cache settings.
    pub fn with_settings(
        config: AppCheckConfig,
        clock: SharedClock,
        settings: CacheSettings,
    ) -> Self {
        AppCheckVerifier {
            verifier: JwtVerifier::with_settings(vec![config.jwt_issuer()], clock, settings),
            required: config.required,
        }
    }

    /// Whether a missing or invalid token refuses the request.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Verifies one App Check token.
    pub async fn verify(&self, token: &str) -> Result<AppCheckClaims, JwtError> {
        let identity = self.verifier.verify(token).await?;
        Ok(AppCheckClaims {
            app_id: identity.subject,
        })
    }

    /// Warms the key set (errors logged, not fatal).
    pub async fn prefetch(&self) {
        self.verifier.prefetch().await;
    }
}
