//! Resource ownership: a principal reaches only the provider resources it
//! created through the gateway.
//!
//! ```text
//! request ─► guard ──────────────► forward ─► record ─► client
//!            IDs in path, body,             IDs in the response are stored
//!            query owned? (else 404)        before the client sees them
//!            redirecting body fields
//!            stripped; own lists
//!            answered from the store
//! ```
//!
//! - **Owner.** `ownership.scope` picks the attribute a new resource is recorded
//!   under: `team:<team>`, `user:<user>` or `key:<key id>`; without a scope,
//!   identity-provider users own as `user:` and keys (gateway, shared, client
//!   certificate) as `key:`. A principal without the scope's attribute falls
//!   back to the next narrower one (team → user → key; `key` falls back to
//!   `user`). Anonymous principals (`auth.disabled`, public paths) all share
//!   the owner `anonymous`. A principal may use what is recorded under any of
//!   its identities from the scope's attribute down (with `team` scope: its
//!   team's, its user's and its key's resources), so widening the scope keeps
//!   old resources reachable and narrowing it never opens a team's.
//! - **Checks.** Every ID in the path (at any depth), in the body (see
//!   [`families::BODY_FIELDS`]) and in list cursors must be recorded under one of
//!   the caller's identities. Anything else — another principal's ID, an ID the
//!   gateway never issued, a deleted one — answers `404 not_found` with the same
//!   body, and nothing is forwarded. `allow_unmanaged_ids: true` forwards IDs
//!   the gateway never recorded (then a foreign ID's 404 comes from the gateway
//!   and an unknown one's from the provider, which tells them apart).
//! - **Recording.** IDs in successful responses of the endpoints in
//!   [`families::ENDPOINTS`] are recorded before the response leaves: JSON
//!   bodies are read whole (up to [`MAX_READ`]), event streams are tapped event
//!   by event and an event carrying a new ID is held until it is stored.
//!   Deleting a resource removes its record and those under it.
//! - **Lists.** Top-level lists (`GET /files`, `/assistants`, `/batches`, …) are
//!   answered from the store: the caller's IDs in creation order, each object
//!   fetched fresh from the provider ([`list`]).
//! - **Mass assignment.** [`families::STRIPPED_FIELDS`] are removed from every
//!   JSON body, whatever the scope.

pub mod admin;
pub mod batch;
pub mod body;
pub mod extract;
pub mod families;
pub mod list;

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Deserialize;

use self::extract::{Reading, Sink, SseRegistrar};
use self::families::{Endpoint, Family, List};
use super::Permit;
use crate::AppState;
use crate::accounting::usage::TapKind;
use crate::authn::{CredentialKind, Principal};
use crate::config::ConfigError;
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::{ResourceRecord, StoreError};

/// Largest JSON response read whole for IDs; larger ones pass unread (and a warning is logged).
pub const MAX_READ: usize = 4 * 1024 * 1024;

// -------------------------------------------------------------- configuration

/// Which attribute new resources are recorded under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The principal's user.
    User,
    /// The principal's team: shared by the whole team.
    Team,
    /// The principal's key.
    Key,
    /// No ownership checks at all.
    Off,
}

/// `ownership:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipFile {
    scope: Option<Scope>,
    allow_unmanaged_ids: Option<bool>,
}

/// Top-level `forward_user_id:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardUserId {
    /// Send a salted hash of the principal as `safety_identifier`.
    Hashed,
    /// Send nothing (the default); the client's own `safety_identifier`/`user` go along.
    Off,
}

/// Validated `ownership:` settings (and the top-level `forward_user_id`).
#[derive(Debug, Clone, Default)]
pub struct OwnershipConfig {
    /// `None`: `user` for identity-provider users, `key` for keys.
    pub scope: Option<Scope>,
    /// Forward IDs the gateway never recorded.
    pub allow_unmanaged_ids: bool,
    /// With `forward_user_id: hashed`, the salt of the end-user hash.
    pub user_id_salt: Option<Secret>,
}

impl OwnershipConfig {
    /// Validates `ownership:` and the top-level `forward_user_id` / `forward_user_id_salt`.
    pub fn from_file(
        file: Option<OwnershipFile>,
        (forward, salt): (Option<ForwardUserId>, Option<Secret>),
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let file = file.unwrap_or_default();
        let user_id_salt = match (forward, salt) {
            (Some(ForwardUserId::Hashed), Some(s)) if s.expose().len() >= 16 => Some(s),
            (Some(ForwardUserId::Hashed), _) => {
                errors.push(ConfigError {
                    location: "forward_user_id_salt".into(),
                    message:
                        "`forward_user_id: hashed` needs a secret salt of at least 16 characters"
                            .into(),
                });
                None
            }
            _ => None,
        };
        OwnershipConfig {
            scope: file.scope,
            allow_unmanaged_ids: file.allow_unmanaged_ids.unwrap_or(false),
            user_id_salt,
        }
    }
}

/// The end-user identifier the gateway sends as `safety_identifier`: the
/// principal's user (else key, else `anonymous`), hashed with the salt, so the
/// provider can tell end users apart without learning who they are.
pub fn safety_identifier(salt: &Secret, p: &Principal) -> String {
    use sha2::{Digest, Sha256};
    let who = match (p.user(), p.key_id()) {
        (Some(u), _) => format!("user:{u}"),
        (None, Some(k)) => format!("key:{k}"),
        (None, None) => "anonymous".to_owned(),
    };
    let salt = salt.expose().as_bytes();
    let mut h = Sha256::new();
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(who.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("pc-");
    for b in &digest[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Who a request acts as, for ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The owner new resources are recorded under.
    pub owner: Arc<str>,
    /// Every owner whose resources the caller may use (`owner` first): the
    /// principal's own subject names, shared rather than formatted anew.
    pub identities: Vec<Arc<str>>,
}

impl Caller {
    /// The caller a principal is, or `None` when ownership is off.
    pub fn of(cfg: &OwnershipConfig, p: &Principal) -> Option<Caller> {
        #[derive(Clone, Copy)]
        enum A {
            Team,
            User,
            Key,
        }
        let chain: &[A] = match cfg.scope {
            Some(Scope::Off) => return None,
            Some(Scope::Team) => &[A::Team, A::User, A::Key],
            Some(Scope::User) => &[A::User, A::Key],
            Some(Scope::Key) => &[A::Key, A::User],
            None if p.kind() == CredentialKind::Jwt => &[A::User, A::Key],
            None => &[A::Key, A::User],
        };
        let identities: Vec<Arc<str>> = chain
            .iter()
            .filter_map(|a| match a {
                A::Team => p.team_subject(),
                A::User => p.user_subject(),
                A::Key => p.key_subject(),
            })
            .cloned()
            .collect();
        let identities = if identities.is_empty() {
            vec![Arc::from("anonymous")]
        } else {
            identities
        };
        Some(Caller {
            owner: identities[0].clone(),
            identities,
        })
    }

    /// True if a resource recorded under `owner` is the caller's.
    pub fn owns(&self, owner: &str) -> bool {
        self.identities.iter().any(|i| &**i == owner)
    }
}

// ------------------------------------------------------------------- request

/// What ownership decided about a request that may go on.
#[derive(Debug)]
pub struct Plan {
    active: bool,
    provider: String,
    /// Whom new resources are recorded under; `None` when ownership is off.
    owner: Option<Arc<str>>,
    endpoint: Option<&'static Endpoint>,
    reading: Reading,
    register: bool,
    delete: Option<(Family, String)>,
    list: Option<list::ListPlan>,
}

impl Plan {
    /// A request ownership does not look at.
    fn inactive(provider: &str) -> Plan {
        Plan {
            active: false,
            provider: provider.to_owned(),
            owner: None,
            endpoint: None,
            reading: Reading {
                creates: None,
                children: None,
                parent: None,
                stored: false,
            },
            register: false,
            delete: None,
            list: None,
        }
    }

    /// A top-level list the gateway answers from the store.
    pub fn owned_list(&self) -> Option<&list::ListPlan> {
        self.list.as_ref()
    }
}

fn is_multipart(ct: Option<&str>) -> bool {
    ct.and_then(|c| c.get(..19))
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/form-data"))
}

fn is_urlencoded(ct: Option<&str>) -> bool {
    ct.and_then(|c| c.split(';').next()).is_some_and(|c| {
        c.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn is_json(ct: Option<&str>, body: &[u8]) -> bool {
    ct.is_none_or(crate::authz::json_media_type)
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn store_down(e: StoreError) -> ApiError {
    ApiError::StoreUnavailable(e.to_string())
}

/// Checks every resource ID a permitted request names and strips redirecting
/// body fields. A refusal is `404 not_found` and nothing is forwarded.
pub async fn guard(
    state: &AppState,
    permit: &mut Permit,
    method: &Method,
    content_type: Option<&str>,
) -> Result<Plan, ApiError> {
    let (body_ids, store_flag, audio) = if permit.body.is_empty() {
        (Vec::new(), None, false)
    } else if is_multipart(content_type) {
        let ids = body::form_ids(content_type.unwrap_or(""), permit.body.clone()).await?;
        (ids, None, false)
    } else if is_json(content_type, &permit.body) {
        let facts = body::json_facts(&permit.body, &permit.group)?;
        if let Some(b) = facts.rewritten {
            tracing::info!(fields = ?facts.stripped, "removed redirecting fields from the request body");
            permit.body = b;
        }
        (facts.ids, facts.store, facts.audio)
    } else if is_urlencoded(content_type) {
        (body::urlencoded_ids(&permit.body), None, false)
    } else {
        (Vec::new(), None, false)
    };

    let settings = state.ownership.load();
    if let Some(salt) = &settings.user_id_salt
        && method == Method::POST
        && matches!(
            permit.upstream_path.split('?').next(),
            Some("/chat/completions" | "/responses")
        )
        && is_json(content_type, &permit.body)
    {
        let id = safety_identifier(salt, &permit.principal);
        permit.body = body::set_user_id(&permit.body, &id)?;
    }

    let Some(caller) = Caller::of(&settings, &permit.principal) else {
        return Ok(Plan::inactive(&permit.provider.name));
    };
    let provider = permit.provider.name.clone();
    let group = permit.group.clone();
    let (path, query) = match permit.upstream_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (permit.upstream_path.as_str(), None),
    };
    let covered = families::covers_group(&group);
    let matched = covered.then(|| families::match_path(path)).flatten();
    if matched.is_none() && covered {
        tracing::info!(path, "ownership: no such endpoint in an ID-bearing group");
        return Err(ApiError::NotFound);
    }
    let endpoint = matched.as_ref().map(|m| m.endpoint);
    let path_ids = matched.map(|m| m.ids).unwrap_or_default();

    // Everything to check: path, body, query.
    let mut wanted: Vec<(Family, String)> = path_ids.clone();
    wanted.extend(body_ids);
    // A query that does not decode cannot be checked, so it is not forwarded.
    let params: Vec<(String, String)> = match query {
        None => Vec::new(),
        Some(q) => serde_urlencoded::from_str(q).map_err(|_| ApiError::BadRequest {
            message: "The query string is not valid URL encoding.".into(),
            param: None,
        })?,
    };
    let list_kind = endpoint.filter(|_| method == Method::GET).map(|e| e.list);
    let cursor_family = match list_kind {
        Some(List::Owned(f, _) | List::Children(f) | List::Passthrough(Some(f))) => Some(f),
        _ => None,
    };
    for (k, v) in &params {
        if let Some(f) = cursor_family
            && (k == "after" || k == "before")
            && !v.is_empty()
        {
            wanted.push((f, v.clone()));
        }
        if let Some((_, f)) = families::QUERY_FIELDS.iter().find(|(n, _)| n == k)
            && !v.is_empty()
        {
            wanted.push((*f, v.clone()));
        }
    }
    let found = check(state, &caller, &provider, &wanted).await?;
    // A batch runs the requests of its input file: their bodies are checked too.
    if method == Method::POST
        && endpoint.is_some_and(|e| e.path == "/batches")
        && let Some(input) = batch::input_file(&permit.body)
    {
        let inner = batch::input_ids(state, permit, &input).await?;
        check(state, &caller, &provider, &inner).await?;
    }

    // New resources belong to the owner of the resource they live under.
    let owner = path_ids
        .last()
        .and_then(|(f, id)| found.get(&(*f, id.clone())))
        .map_or_else(|| caller.owner.clone(), |r| Arc::from(r.owner.as_str()));
    let parent = path_ids.last().map(|(_, id)| id.clone());
    let list = match list_kind {
        Some(List::Owned(family, filters)) => Some(list::ListPlan::new(
            family,
            filters,
            endpoint.map_or("", |e| e.path),
            &params,
            &found,
            caller.identities.iter().map(|i| i.to_string()).collect(),
        )?),
        _ => None,
    };
    let delete = endpoint
        .filter(|e| e.deletes && method == Method::DELETE)
        .and_then(|_| path_ids.last().cloned());
    let chat = endpoint.is_some_and(|e| e.path.starts_with("/chat/completions"));
    let chat_create = chat
        && method == Method::POST
        && endpoint.is_some_and(|e| e.path == "/chat/completions")
        && (store_flag == Some(true) || audio);
    let register =
        endpoint.is_some_and(|e| !e.opaque) && method != Method::DELETE && (!chat || chat_create);
    Ok(Plan {
        active: true,
        provider,
        owner: Some(owner),
        endpoint,
        reading: Reading {
            creates: endpoint
                .filter(|_| method == Method::POST)
                .and_then(|e| e.creates),
            children: match endpoint.map(|e| e.list) {
                Some(List::Children(f)) => Some(f),
                _ => None,
            },
            parent,
            stored: store_flag == Some(true),
        },
        register,
        delete,
        list,
    })
}

/// Looks the IDs up; every one must be the caller's (or unmanaged, when allowed).
async fn check(
    state: &AppState,
    caller: &Caller,
    provider: &str,
    wanted: &[(Family, String)],
) -> Result<HashMap<(Family, String), ResourceRecord>, ApiError> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let keys: Vec<(String, String)> = wanted
        .iter()
        .map(|(f, id)| (f.as_str().to_owned(), id.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = state
        .store
        .find_resources(provider, &keys)
        .await
        .map_err(store_down)?;
    let mut found = HashMap::new();
    for r in rows {
        if let Some(f) = Family::parse(&r.family) {
            found.insert((f, r.id.clone()), r);
        }
    }
    let allow_unmanaged = state.ownership.load().allow_unmanaged_ids;
    for (f, id) in wanted {
        match found.get(&(*f, id.clone())) {
            Some(r) if caller.owns(&r.owner) => {}
            Some(_) => {
                tracing::info!(
                    family = f.as_str(),
                    id,
                    "ownership: another principal's resource"
                );
                return Err(ApiError::NotFound);
            }
            None if allow_unmanaged => {}
            None => {
                tracing::info!(
                    family = f.as_str(),
                    id,
                    "ownership: an ID the gateway never issued"
                );
                return Err(ApiError::NotFound);
            }
        }
    }
    Ok(found)
}

// ------------------------------------------------------------------ response

pin_project_lite::pin_project! {
    /// A successful response body after ownership has read what it needs.
    #[project = RecordedProj]
    pub enum Recorded<B> {
        /// Passed through untouched.
        Plain { #[pin] body: B },
        /// Read whole, IDs recorded.
        Whole { bytes: Option<Bytes> },
        /// Too large to read whole: what was read, then the rest.
        Chained { head: VecDeque<Bytes>, #[pin] rest: B },
        /// An event stream whose IDs are recorded as they pass.
        Stream { #[pin] body: SseRegistrar<B> },
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for Recorded<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            RecordedProj::Plain { body } => body
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(Into::into))),
            RecordedProj::Whole { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RecordedProj::Chained { head, rest } => match head.pop_front() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => rest
                    .poll_frame(cx)
                    .map(|o| o.map(|r| r.map_err(Into::into))),
            },
            RecordedProj::Stream { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Recorded::Plain { body } => body.is_end_stream(),
            Recorded::Whole { bytes } => bytes.is_none(),
            Recorded::Chained { head, rest } => head.is_empty() && rest.is_end_stream(),
            Recorded::Stream { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Recorded::Plain { body } => body.size_hint(),
            Recorded::Whole { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Recorded::Chained { .. } => SizeHint::default(),
            Recorded::Stream { body } => body.size_hint(),
        }
    }
}

/// After a successful upstream response: forgets deleted resources and records
/// the IDs the response carries, before any of it reaches the client.
pub async fn record<B>(
    state: &AppState,
    plan: &Plan,
    status: http::StatusCode,
    content_type: Option<&str>,
    body: B,
    idle: Duration,
) -> Result<Recorded<B>, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if !plan.active || !status.is_success() {
        return Ok(Recorded::Plain { body });
    }
    if let Some((family, id)) = &plan.delete {
        let n = state
            .store
            .delete_resource(&plan.provider, family.as_str(), id)
            .await
            .map_err(store_down)?;
        tracing::debug!(
            family = family.as_str(),
            id,
            records = n,
            "ownership: resource deleted"
        );
    }
    if !plan.register {
        return Ok(Recorded::Plain { body });
    }
    match TapKind::of(content_type) {
        TapKind::Sse => Ok(Recorded::Stream {
            body: SseRegistrar::new(
                body,
                Sink {
                    store: state.store.clone(),
                    provider: plan.provider.clone(),
                    owner: plan.owner.as_deref().unwrap_or_default().to_owned(),
                    reading: plan.reading.clone(),
                    now_ms: state.clock.now_ms(),
                },
            ),
        }),
        TapKind::Json => read_and_record(state, plan, body, idle).await,
        TapKind::None => Ok(Recorded::Plain { body }),
    }
}

async fn read_and_record<B>(
    state: &AppState,
    plan: &Plan,
    mut body: B,
    idle: Duration,
) -> Result<Recorded<B>, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut frames = VecDeque::new();
    let mut size = 0usize;
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ApiError::UpstreamTimeout("idle")),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e: BoxError = e.into();
                return Err(ApiError::UpstreamUnavailable(e.to_string()));
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    frames.push_back(data);
                }
                if size > MAX_READ {
                    tracing::warn!(
                        endpoint = plan.endpoint.map_or("", |e| e.path),
                        "ownership: response too large to read for resource ids; passed on unread"
                    );
                    return Ok(Recorded::Chained {
                        head: frames,
                        rest: body,
                    });
                }
            }
        }
    }
    let bytes = if frames.len() == 1 {
        frames.pop_front().unwrap_or_default()
    } else {
        let mut all = Vec::with_capacity(size);
        for f in &frames {
            all.extend_from_slice(f);
        }
        Bytes::from(all)
    };
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        let mut found = Vec::new();
        extract::extract(&v, &plan.reading, &mut None, &mut found);
        let recs = extract::records(
            found,
            &plan.provider,
            plan.owner.as_deref().unwrap_or_default(),
            state.clock.now_ms(),
            &mut HashSet::new(),
        );
        state
            .store
            .insert_resources(&recs)
            .await
            .map_err(store_down)?;
    }
    Ok(Recorded::Whole { bytes: Some(bytes) })
}
