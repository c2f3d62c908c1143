//! [`Principal`]: who is calling, whatever the credential was.

use std::sync::Arc;

use serde::Serialize;

use crate::store::{ApiKeyRecord, KeyAuth};

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A gateway-issued key (`pcs_…`).
    ApiKey,
    /// A JWT from a configured identity provider.
    Jwt,
    /// A shared key from `auth.static_keys`.
    StaticKey,
    /// A verified TLS client certificate.
    ClientCert,
    /// No credential: `auth.disabled` or a public path.
    Anonymous,
}

impl CredentialKind {
    /// Lower-case name for logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Jwt => "jwt",
            CredentialKind::StaticKey => "static_key",
            CredentialKind::ClientCert => "client_cert",
            CredentialKind::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug)]
struct Data {
    kind: CredentialKind,
    key_id: Option<String>,
    user: Option<String>,
    team: Option<String>,
    roles: Vec<String>,
    issuer: Option<String>,
    models: Option<Vec<String>>,
    endpoints: Option<Vec<String>>,
}

/// Who is calling: built only by `authn`, required by everything after it.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Principal(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    kind: CredentialKind,
    roles: Vec<String>,
    issuer: Option<String>,
    models: Option<Vec<String>>,
    endpoints: Option<Vec<String>>,
    names: Names,
}

/// The principal's subjects as limits, budgets and ownership name them
/// (`key:<id>`, `user:<id>`, `team:<id>`), built once per principal rather
/// than formatted on every request. The key id, user and team are read out
/// of them (after the prefix) rather than kept a second time: one string
/// each, so a request from one of many cached keys touches fewer places.
#[derive(Debug, Default)]
struct Names {
    key: Option<Arc<str>>,
    user: Option<Arc<str>>,
    team: Option<Arc<str>>,
}

impl Principal {
    /// The principal of a gateway key.
    fn new(data: Data) -> Self {
        let name =
            |kind: &str, v: &Option<String>| v.as_ref().map(|v| Arc::from(format!("{kind}:{v}")));
        let names = Names {
            key: name(KEY, &data.key_id),
            user: name(USER, &data.user),
            team: name(TEAM, &data.team),
        };
        Principal(Arc::new(Inner {
            kind: data.kind,
            roles: data.roles,
            issuer: data.issuer,
            models: data.models,
            endpoints: data.endpoints,
            names,
        }))
    }

    /// `key:<key id>`, when the principal has a key.
    pub fn key_subject(&self) -> Option<&Arc<str>> {
        self.0.names.key.as_ref()
    }

    /// `user:<user>`, when the principal has a user.
    pub fn user_subject(&self) -> Option<&Arc<str>> {
        self.0.names.user.as_ref()
    }

    /// `team:<team>`, when the principal has a team.
    pub fn team_subject(&self) -> Option<&Arc<str>> {
        self.0.names.team.as_ref()
    }

    pub(crate) fn api_key(k: &KeyAuth) -> Self {
        Principal::new(Data {
            kind: CredentialKind::ApiKey,
            key_id: Some(k.id.clone()),
            user: k.user.clone(),
            team: k.team.clone(),
            roles: Vec::new(),
            issuer: None,
            models: k.models.clone(),
            endpoints: k.endpoints.clone(),
        })
    }

    /// The principal a gateway key record stands for (for `explain`).
    pub fn for_key(k: &ApiKeyRecord) -> Self {
        Self::api_key(&KeyAuth::from(k))
    }

    /// The principal of a shared key.
    pub(crate) fn static_key(name: &str, user: Option<String>, team: Option<String>) -> Self {
        Principal::new(Data {
            kind: CredentialKind::StaticKey,
            key_id: Some(format!("static:{name}")),
            user,
            team,
            roles: Vec::new(),
            issuer: None,
            models: None,
            endpoints: None,
        })
    }

    /// The principal of a verified identity-provider token.
    pub(crate) fn jwt(
        issuer: String,
        user: String,
        team: Option<String>,
        roles: Vec<String>,
    ) -> Self {
        Principal::new(Data {
            kind: CredentialKind::Jwt,
            key_id: None,
            user: Some(user),
            team,
            roles,
            issuer: Some(issuer),
            models: None,
            endpoints: None,
        })
    }

    /// The principal of a verified TLS client certificate: key id
    /// `cert:<first 16 hex digits of the certificate's SHA-256>`, user from the
    /// field `tls.client_identity` names.
    pub(crate) fn client_cert(fingerprint: &str, user: String) -> Self {
        Principal::new(Data {
            kind: CredentialKind::ClientCert,
            key_id: Some(format!(
                "cert:{}",
                fingerprint.get(..16).unwrap_or(fingerprint)
            )),
            user: Some(user),
            team: None,
            roles: Vec::new(),
            issuer: None,
            models: None,
            endpoints: None,
        })
    }

    /// The principal of an unauthenticated request (auth disabled, public path).
    pub(crate) fn anonymous() -> Self {
        Principal::new(Data {
            kind: CredentialKind::Anonymous,
            key_id: None,
            user: None,
            team: None,
            roles: Vec::new(),
            issuer: None,
            models: None,
            endpoints: None,
        })
    }

    /// A principal described by subject patterns (`user:…`, `team:…`, `role:…`,
    /// `key:…`, `issuer:…`), for `explain`. With an `issuer:` or a `user:`
    /// containing `:` it is a JWT principal; with `key:` a key principal.
    pub fn synthetic(
        subjects: &[String],
        models: Option<Vec<String>>,
        endpoints: Option<Vec<String>>,
    ) -> Self {
        let mut d = Data {
            kind: CredentialKind::Anonymous,
            key_id: None,
            user: None,
            team: None,
            roles: Vec::new(),
            issuer: None,
            models,
            endpoints,
        };
        for s in subjects {
            let Some((kind, value)) = s.split_once(':') else {
                continue;
            };
            let v = Some(value.to_owned());
            match kind {
                "user" => {
                    if value.contains(':') && d.issuer.is_none() {
                        d.issuer = value.split(':').next().map(str::to_owned);
                        d.kind = CredentialKind::Jwt;
                    }
                    d.user = v;
                }
                "team" => d.team = v,
                "role" => d.roles.push(value.to_owned()),
                "key" => {
                    d.key_id = v;
                    d.kind = CredentialKind::ApiKey;
                }
                "issuer" => {
                    d.issuer = v;
                    d.kind = CredentialKind::Jwt;
                }
                _ => {}
            }
        }
        Principal::new(d)
    }

    /// How the caller authenticated.
    pub fn kind(&self) -> CredentialKind {
        self.0.kind
    }
    /// Gateway key id (`static:<name>` for shared keys).
    pub fn key_id(&self) -> Option<&str> {
        unprefixed(&self.0.names.key, KEY)
    }
    /// The user.
    pub fn user(&self) -> Option<&str> {
        unprefixed(&self.0.names.user, USER)
    }
    /// The team.
    pub fn team(&self) -> Option<&str> {
        unprefixed(&self.0.names.team, TEAM)
    }
    /// Roles from the identity provider.
    pub fn roles(&self) -> &[String] {
        &self.0.roles
    }
    /// Issuer name for JWT principals.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }
    /// The key's model globs, if restricted.
    pub fn models(&self) -> Option<&[String]> {
        self.0.models.as_deref()
    }
    /// The key's endpoint groups, if restricted.
    pub fn endpoints(&self) -> Option<&[String]> {
        self.0.endpoints.as_deref()
    }
}

const KEY: &str = "key";
const USER: &str = "user";
const TEAM: &str = "team";

/// `<kind>:<value>` → `<value>`.
fn unprefixed<'a>(name: &'a Option<Arc<str>>, kind: &str) -> Option<&'a str> {
    name.as_deref()
        .map(|n| n.get(kind.len() + 1..).unwrap_or(""))
}
