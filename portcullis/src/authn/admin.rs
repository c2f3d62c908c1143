//! Who may use the admin API, and for what.
//!
//! Three roles, none implied by another except that `admin` covers everything:
//!
//! | role | may |
//! |---|---|
//! | `admin` | every admin route |
//! | `team_admin` | keys, users and usage of their own team only (anything else of another team answers 404) |
//! | `viewer` | read usage, budgets and the audit log |
//!
//! Credentials that carry a role: the master key (`admin`), gateway keys
//! created with an `admin_role`, and identity-provider tokens whose roles map
//! through `admin.roles`. Which role a route needs is [`access`]: one table,
//! deny by default, so a new route is admin-only until it is listed.

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// An admin role.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Everything.
    Admin,
    /// Keys, users and usage of one team.
    TeamAdmin,
    /// Read-only usage and audit.
    Viewer,
}

impl AdminRole {
    /// The name used in configuration, the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::TeamAdmin => "team_admin",
            AdminRole::Viewer => "viewer",
        }
    }

    /// Parses a stored or configured name.
    pub fn parse(s: &str) -> Option<AdminRole> {
        match s {
            "admin" => Some(AdminRole::Admin),
            "team_admin" => Some(AdminRole::TeamAdmin),
            "viewer" => Some(AdminRole::Viewer),
            _ => None,
        }
    }
}

/// Proof that the request carried an admin credential, and what it may do.
#[derive(Debug, Clone)]
pub struct Admin {
    role: AdminRole,
    team: Option<String>,
    actor: String,
    client_ip: Option<std::net::IpAddr>,
    request_id: Option<std::sync::Arc<str>>,
}

impl Admin {
    /// The master key: `admin`.
    pub(crate) fn master() -> Self {
        Admin::new(AdminRole::Admin, None, "master_key".into())
    }

    /// An admin credential other than the master key. A `team_admin`
    /// without a team is refused by the caller.
    pub(crate) fn new(role: AdminRole, team: Option<String>, actor: String) -> Self {
        Admin {
            role,
            team,
            actor,
            client_ip: None,
            request_id: None,
        }
    }

    /// Notes where the request came from, for the audit log.
    pub(crate) fn at(mut self, ip: std::net::IpAddr, request_id: std::sync::Arc<str>) -> Self {
        self.client_ip = Some(ip);
        self.request_id = Some(request_id);
        self
    }

    /// The client's address, as the gateway determined it.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.client_ip
    }

    /// The request's id.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// An admin acting outside a request (SIGHUP).
    pub fn signal(actor: &str) -> Self {
        Admin::new(AdminRole::Admin, None, actor.to_owned())
    }

    /// The role.
    pub fn role(&self) -> AdminRole {
        self.role
    }

    /// Who acted, for the audit log: `master_key`, `key:<id>` or `user:<id>`.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// The one team a `team_admin` is confined to; `None` for the other roles.
    pub fn team_scope(&self) -> Option<&str> {
        match self.role {
            AdminRole::TeamAdmin => self.team.as_deref(),
            _ => None,
        }
    }

    /// True when this admin may see an object of `team`.
    pub fn sees_team(&self, team: Option<&str>) -> bool {
        match self.role {
            AdminRole::TeamAdmin => team.is_some() && team == self.team.as_deref(),
            _ => true,
        }
    }

    /// Refuses anything but `admin` (for writes that are not team-scoped).
    pub fn require_admin(&self, what: &'static str) -> Result<(), ApiError> {
        if self.role == AdminRole::Admin {
            Ok(())
        } else {
            Err(ApiError::AdminRoleInsufficient(what))
        }
    }
}

/// Which admin roles a route admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every admin role (`team_admin` sees only its team).
    Any,
    /// `admin` and `viewer`.
    Read,
    /// `admin` and `team_admin` (confined to its team).
    Team,
    /// `admin` only.
    AdminOnly,
}

impl Access {
    /// True when `role` may use a route with this access.
    pub fn admits(self, role: AdminRole) -> bool {
        match (self, role) {
            (_, AdminRole::Admin) | (Access::Any, _) => true,
            (Access::Read, r) => r == AdminRole::Viewer,
            (Access::Team, r) => r == AdminRole::TeamAdmin,
            (Access::AdminOnly, _) => false,
        }
    }
}

/// The access an admin route needs; `path` is the full path (`/admin/...`).
/// Routes not listed here are `admin` only.
pub fn access(method: &Method, path: &str) -> Access {
    let rest = path.strip_prefix("/admin").unwrap_or(path);
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let first = segs.next().unwrap_or("");
    let read = *method == Method::GET || *method == Method::HEAD;
    match first {
        "openapi.json" if read => Access::Any,
        "usage" if read => Access::Any,
        "audit" | "budgets" if read => Access::Read,
        "keys" | "users" => Access::Team,
        _ => Access::AdminOnly,
    }
}

/// `admin.roles`: identity-provider role names that grant each admin role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRoleMap {
    /// Roles granting `admin`.
    #[serde(default)]
    pub admin: Vec<String>,
    /// Roles granting `team_admin`.
    #[serde(default)]
    pub team_admin: Vec<String>,
    /// Roles granting `viewer`.
    #[serde(default)]
    pub viewer: Vec<String>,
}

impl AdminRoleMap {
    /// True when no role is mapped (identity tokens never open the admin API).
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.team_admin.is_empty() && self.viewer.is_empty()
    }

    /// The admin role a token's roles grant: `admin` first, then
    /// `team_admin`, then `viewer`.
    pub fn role_of(&self, roles: &[String]) -> Option<AdminRole> {
        let has = |list: &[String]| roles.iter().any(|r| list.contains(r));
        if has(&self.admin) {
            Some(AdminRole::Admin)
        } else if has(&self.team_admin) {
            Some(AdminRole::TeamAdmin)
        } else if has(&self.viewer) {
            Some(AdminRole::Viewer)
        } else {
            None
        }
    }

    /// Every mapped role name, for validation messages.
    pub fn entries(&self) -> BTreeMap<&'static str, &[String]> {
        BTreeMap::from([
            ("admin", self.admin.as_slice()),
            ("team_admin", self.team_admin.as_slice()),
            ("viewer", self.viewer.as_slice()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_is_deny_by_default() {
        use AdminRole::*;
        let cases: &[(Method, &str, &[AdminRole])] = &[
            (
                Method::GET,
                "/admin/openapi.json",
                &[Admin, TeamAdmin, Viewer],
            ),
            (Method::GET, "/admin/usage", &[Admin, TeamAdmin, Viewer]),
            (Method::GET, "/admin/audit", &[Admin, Viewer]),
            (Method::GET, "/admin/keys", &[Admin, TeamAdmin]),
            (Method::POST, "/admin/keys", &[Admin, TeamAdmin]),
            (Method::POST, "/admin/keys/abc/rotate", &[Admin, TeamAdmin]),
            (Method::PATCH, "/admin/users/x:y", &[Admin, TeamAdmin]),
            (Method::POST, "/admin/reload", &[Admin]),
            (Method::POST, "/admin/explain", &[Admin]),
            (Method::GET, "/admin/resources", &[Admin]),
            (Method::GET, "/admin/budgets", &[Admin, Viewer]),
            (Method::GET, "/admin/teams", &[Admin]),
            (Method::PATCH, "/admin/teams/red", &[Admin]),
            (Method::GET, "/admin/limits", &[Admin]),
            (Method::POST, "/admin/usage", &[Admin]),
            (Method::GET, "/admin/something-new", &[Admin]),
        ];
        for (m, p, who) in cases {
            for r in [Admin, TeamAdmin, Viewer] {
                assert_eq!(
                    access(m, p).admits(r),
                    who.contains(&r),
                    "{m} {p} for {r:?}"
                );
            }
        }
    }

    #[test]
    fn role_map_prefers_the_strongest_role() {
        let m = AdminRoleMap {
            admin: vec!["ops".into()],
            team_admin: vec!["lead".into()],
            viewer: vec!["finance".into()],
        };
        let r = |v: &[&str]| m.role_of(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(r(&["finance", "ops"]), Some(AdminRole::Admin));
        assert_eq!(r(&["finance", "lead"]), Some(AdminRole::TeamAdmin));
        assert_eq!(r(&["finance"]), Some(AdminRole::Viewer));
        assert_eq!(r(&["user"]), None);
    }

    #[test]
    fn team_admins_see_only_their_team() {
        let a = Admin::new(AdminRole::TeamAdmin, Some("red".into()), "key:x".into());
        assert!(a.sees_team(Some("red")));
        assert!(!a.sees_team(Some("blue")));
        assert!(!a.sees_team(None));
        assert!(Admin::master().sees_team(None));
    }
}
