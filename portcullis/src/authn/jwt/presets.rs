//! Identity-provider presets: a few parameters expand to the issuer, key-set URL,
//! audience and algorithms each provider documents. Every expanded value can be
//! overridden by the explicit fields of the issuer entry.
//!
//! | preset | parameters | issuer | key set | audience | algorithms |
//! |---|---|---|---|---|---|
//! | `supabase` | `project_ref` | `https://<ref>.supabase.co/auth/v1` | `<issuer>/.well-known/jwks.json` | `authenticated` | RS256, ES256 |
//! | `firebase` | `project_id` | `https://securetoken.google.com/<id>` | `https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com` | `<id>` | RS256 |
//! | `auth0` | `domain`, `audience` | `https://<domain>/` | `https://<domain>/.well-known/jwks.json` | `audience` | RS256 |
//! | `clerk` | `domain`, `audience` | `https://<domain>` | `https://<domain>/.well-known/jwks.json` | `audience` (Clerk session tokens carry none: add one with a JWT template) | RS256 |
//! | `cognito` | `region`, `user_pool_id`, `audience` (app client id) | `https://cognito-idp.<region>.amazonaws.com/<pool>` | `<issuer>/.well-known/jwks.json` | `audience` (ID tokens; access tokens carry `client_id`, not `aud`) | RS256 |
//! | `entra` | `tenant_id`, `audience` | `https://login.microsoftonline.com/<tenant>/v2.0` | `https://login.microsoftonline.com/<tenant>/discovery/v2.0/keys` | `audience` | RS256 |
//! | `google` | `audience` (OAuth client id) | `https://accounts.google.com` | `https://www.googleapis.com/oauth2/v3/certs` | `audience` | RS256 |
//! | `okta` | `domain`, `audience`, `authorization_server` (default `default`) | `https://<domain>/oauth2/<server>` | `<issuer>/v1/keys` | `audience` | RS256 |

use serde::Deserialize;

use super::algorithm::Algorithm;

/// A known identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Supabase Auth.
    Supabase,
    /// Firebase Authentication.
    Firebase,
    /// Auth0.
    Auth0,
    /// Clerk.
    Clerk,
    /// Amazon Cognito user pools.
    Cognito,
    /// Microsoft Entra ID (v2.0 tokens, one tenant).
    Entra,
    /// Google Sign-In (ID tokens).
    Google,
    /// Okta custom authorization servers.
    Okta,
}

/// The preset parameters given in an issuer entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct PresetParams<'a> {
    pub project_ref: Option<&'a str>,
    pub project_id: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub region: Option<&'a str>,
    pub user_pool_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub authorization_server: Option<&'a str>,
}

/// What a preset expands to. `audience` is `None` when the entry must supply it.
#[derive(Debug, Clone)]
pub(crate) struct Expanded {
    pub issuer: String,
    pub jwks_url: String,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
}

impl Preset {
    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Supabase => "supabase",
            Preset::Firebase => "firebase",
            Preset::Auth0 => "auth0",
            Preset::Clerk => "clerk",
            Preset::Cognito => "cognito",
            Preset::Entra => "entra",
            Preset::Google => "google",
            Preset::Okta => "okta",
        }
    }

    /// The parameters this preset takes (`audience` overrides Supabase's and
    /// Firebase's default audience and is required by the others).
    pub(crate) fn parameters(self) -> &'static [&'static str] {
        match self {
            Preset::Supabase => &["project_ref", "audience"],
            Preset::Firebase => &["project_id", "audience"],
            Preset::Auth0 | Preset::Clerk => &["domain", "audience"],
            Preset::Cognito => &["region", "user_pool_id", "audience"],
            Preset::Entra => &["tenant_id", "audience"],
            Preset::Google => &["audience"],
            Preset::Okta => &["domain", "audience", "authorization_server"],
        }
    }

    /// Expands the preset. Errors are `(field, message)`.
    pub(crate) fn expand(self, p: &PresetParams<'_>) -> Result<Expanded, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut need =
            |field: &str, value: Option<&str>, check: fn(&str) -> bool, what: &str| match value {
                Some(v) if check(v) => v.to_owned(),
                Some(_) => {
                    errors.push((field.to_owned(), format!("must be {what}")));
                    String::new()
                }
                None => {
                    errors.push((
                        field.to_owned(),
                        format!("required by preset {}", self.name()),
                    ));
                    String::new()
                }
            };
        let audience = p.audience.map(str::to_owned);
        let rs256 = vec![Algorithm::RS256];
        let expanded = match self {
            Preset::Supabase => {
                let r = need(
                    "project_ref",
                    p.project_ref,
                    is_label,
                    "a project reference ([a-z0-9-])",
                );
                let issuer = format!("https://{r}.supabase.co/auth/v1");
                Expanded {
                    jwks_url: format!("{issuer}/.well-known/jwks.json"),
                    issuer,
                    audience: Some(audience.unwrap_or_else(|| "authenticated".to_owned())),
                    algorithms: vec![Algorithm::RS256, Algorithm::ES256],
                }
            }
            Preset::Firebase => {
                let id = need(
                    "project_id",
                    p.project_id,
                    is_label,
                    "a Firebase project id ([a-z0-9-])",
                );
                Expanded {
                    issuer: format!("https://securetoken.google.com/{id}"),
                    jwks_url: "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com".to_owned(),
                    audience: Some(audience.unwrap_or(id)),
                    algorithms: rs256,
                }
            }
            Preset::Auth0 => {
                let d = need("domain", p.domain, is_host, "a host name");
                Expanded {
                    issuer: format!("https://{d}/"),
                    jwks_url: format!("https://{d}/.well-known/jwks.json"),
                    audience,
                    algorithms: rs256,
                }
            }
            Preset::Clerk => {
                let d = need(
                    "domain",
                    p.domain,
                    is_host,
                    "a host name (the Frontend API host)",
                );
                Expanded {
                    issuer: format!("https://{d}"),
                    jwks_url: format!("https://{d}/.well-known/jwks.json"),
                    audience,
                    algorithms: rs256,
                }
            }
            Preset::Cognito => {
                let region = need(
                    "region",
                    p.region,
                    is_label,
                    "an AWS region (e.g. eu-west-1)",
                );
                let pool = need(
                    "user_pool_id",
                    p.user_pool_id,
                    is_pool_id,
                    "a user pool id (e.g. eu-west-1_AbCdEf123)",
                );
                let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{pool}");
                Expanded {
                    jwks_url: format!("{issuer}/.well-known/jwks.json"),
                    issuer,
                    audience,
                    algorithms: rs256,
                }
            }
            Preset::Entra => {
                let t = need(
                    "tenant_id",
                    p.tenant_id,
                    is_tenant,
                    "one tenant's id or domain (not common/organizations/consumers)",
                );
                Expanded {
                    issuer: format!("https://login.microsoftonline.com/{t}/v2.0"),
                    jwks_url: format!("https://login.microsoftonline.com/{t}/discovery/v2.0/keys"),
                    audience,
                    algorithms: rs256,
                }
            }
            Preset::Google => Expanded {
                issuer: "https://accounts.google.com".to_owned(),
                jwks_url: "https://www.googleapis.com/oauth2/v3/certs".to_owned(),
                audience,
                algorithms: rs256,
            },
            Preset::Okta => {
                let d = need("domain", p.domain, is_host, "a host name");
                let server = need(
                    "authorization_server",
                    Some(p.authorization_server.unwrap_or("default")),
                    is_label_any_case,
                    "an authorization server id",
                );
                let issuer = format!("https://{d}/oauth2/{server}");
                Expanded {
                    jwks_url: format!("{issuer}/v1/keys"),
                    issuer,
                    audience,
                    algorithms: rs256,
                }
            }
        };
        if errors.is_empty() {
            Ok(expanded)
        } else {
            Err(errors)
        }
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_label_any_case(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn is_pool_id(s: &str) -> bool {
    s.split_once('_').is_some_and(|(region, id)| {
        is_label(region)
            && !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

fn is_tenant(s: &str) -> bool {
    is_host(s)
        && !["common", "organizations", "consumers"]
            .iter()
            .any(|t| s.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn presets_expand_to_documented_urls() {
        let e = Preset::Supabase
            .expand(&PresetParams {
                project_ref: Some("abc"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(e.issuer, "https://abc.supabase.co/auth/v1");
        assert_eq!(
            e.jwks_url,
            "https://abc.supabase.co/auth/v1/.well-known/jwks.json"
        );
        assert_eq!(e.audience.as_deref(), Some("authenticated"));

        let e = Preset::Okta
            .expand(&PresetParams {
                domain: Some("dev-1.okta.com"),
                audience: Some("api://default"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(e.issuer, "https://dev-1.okta.com/oauth2/default");
        assert_eq!(e.jwks_url, "https://dev-1.okta.com/oauth2/default/v1/keys");

        let e = Preset::Cognito
            .expand(&PresetParams {
                region: Some("eu-west-1"),
                user_pool_id: Some("eu-west-1_AbC123"),
                audience: Some("client"),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            e.jwks_url,
            "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123/.well-known/jwks.json"
        );
    }

    #[test]
    fn parameters_cannot_inject_into_urls() {
        for bad in ["evil.com/x", "a@b", "x?y", "", "a..b", "common"] {
            assert!(
                Preset::Entra
                    .expand(&PresetParams {
                        tenant_id: Some(bad),
                        audience: Some("a"),
                        ..Default::default()
                    })
                    .is_err(),
                "{bad}"
            );
        }
        assert!(Preset::Auth0.expand(&PresetParams::default()).is_err());
    }
}
