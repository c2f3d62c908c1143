//! Admin roles through the real gateway: the master key, gateway keys created
//! with an `admin_role`, and identity tokens whose roles map through
//! `admin.roles`; every admin route with each role and with a client key;
//! team admins confined to their team (others' objects answer 404); the
//! address allowlist; the separate admin listener; audit events with actor,
//! target, before and after for every admin change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

const HS_SECRET: &str = "an-hs256-secret-of-at-least-thirty-two-bytes!";
const ISSUER: &str = "https://idp.example.test";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(sub: &str, team: Option<&str>, roles: &[&str]) -> String {
    let mut claims = json!({"iss": ISSUER, "aud": "gw", "sub": sub, "exp": now() + 600, "iat": now(), "roles": roles});
    if let Some(t) = team {
        claims["team"] = json!(t);
    }
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

fn idp_yaml(admin_extra: &str) -> String {
    format!(
        "auth:\n  lockout: {{enabled: false}}\n  jwt:\n    - name: idp\n      issuer: {ISSUER}\n      hs256_secret: {HS_SECRET}\n      audiences: [gw]\n      algorithms: [HS256]\n      team_claim: team\n      roles_claim: roles\nrules:\n  - subjects: [\"*\"]\n    models: [\"openai/*\"]\n{admin_extra}"
    )
}

/// A harness gateway with more `admin:` settings (indented two spaces) and
/// top-level YAML.
async fn start(admin_extra: &str, top: &str) -> Harness {
    Harness::start_with(Opts {
        admin_extra: admin_extra.to_owned(),
        top_extra: top.to_owned(),
        ..Opts::default()
    })
    .await
}

async fn call(
    h: &Harness,
    cred: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = h
        .http
        .request(method, format!("{}{path}", h.url))
        .bearer_auth(cred);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

async fn admin_key(h: &Harness, role: &str, team: Option<&str>) -> (String, String) {
    let mut body = json!({"name": format!("{role}-key"), "admin_role": role});
    if let Some(t) = team {
        body["team"] = json!(t);
    }
    h.create_key(body).await
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(v["error"]["type"].is_string());
}

/// Every admin route with every kind of credential: the role table is
/// enforced before any handler runs, and a client key never opens it.
#[tokio::test]
async fn every_admin_route_with_every_role() {
    let h = start("", "").await;
    let (_, admin) = admin_key(&h, "admin", None).await;
    let (_, team_admin) = admin_key(&h, "team_admin", Some("red")).await;
    let (_, viewer) = admin_key(&h, "viewer", None).await;
    let (client_id, client) = h.create_key(json!({"name": "client", "team": "red"})).await;
    let routes: &[(Method, String, Option<Value>, [bool; 4])] = &[
        // [master/admin, team_admin, viewer, client] → allowed?
        (
            Method::GET,
            "/admin/openapi.json".into(),
            None,
            [true, true, true, false],
        ),
        (
            Method::GET,
            "/admin/usage".into(),
            None,
            [true, true, true, false],
        ),
        (
            Method::GET,
            "/admin/audit".into(),
            None,
            [true, false, true, false],
        ),
        (
            Method::GET,
            "/admin/keys".into(),
            None,
            [true, true, false, false],
        ),
        (
            Method::GET,
            format!("/admin/keys/{client_id}"),
            None,
            [true, true, false, false],
        ),
        (
            Method::PATCH,
            format!("/admin/keys/{client_id}"),
            Some(json!({"name": "renamed"})),
            [true, true, false, false],
        ),
        (
            Method::POST,
            "/admin/keys".into(),
            Some(json!({"name": "new"})),
            [true, true, false, false],
        ),
        (
            Method::GET,
            "/admin/users".into(),
            None,
            [true, true, false, false],
        ),
        (
            Method::GET,
            "/admin/resources".into(),
            None,
            [true, false, false, false],
        ),
        (
            Method::POST,
            "/admin/explain".into(),
            Some(
                json!({"subjects": ["team:red"], "model": "gpt-4o", "request": "POST /v1/chat/completions"}),
            ),
            [true, false, false, false],
        ),
        (
            Method::POST,
            "/admin/reload".into(),
            None,
            [false, false, false, false],
        ),
    ];
    for (method, path, body, allowed) in routes {
        for (i, cred) in [MASTER, &admin, &team_admin, &viewer, &client]
            .iter()
            .enumerate()
        {
            let slot = i.saturating_sub(1);
            let (status, v) = call(&h, cred, method.clone(), path, body.clone()).await;
            let who = ["master", "admin key", "team_admin", "viewer", "client key"][i];
            if slot == 3 {
                assert_eq!(status, 401, "{who} {method} {path}: {v}");
                assert_error(&v, "invalid_api_key");
            } else if allowed[slot] {
                assert!(status < 300, "{who} {method} {path}: {status} {v}");
            } else if *path == "/admin/reload" && slot == 0 {
                // Allowed, but the harness runs on built-in defaults: nothing to reload.
                assert_eq!(status, 400, "{who} {method} {path}: {v}");
            } else {
                assert_eq!(status, 403, "{who} {method} {path}: {v}");
                assert_error(&v, "admin_role_insufficient");
            }
        }
    }
    // An admin key is not a client key: it never calls a model.
    let before = h.mock.request_count();
    let resp = h
        .chat(
            &admin,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 401);
    assert_error(&resp.json().await.unwrap(), "invalid_api_key");
    assert_eq!(
        h.mock.request_count(),
        before,
        "nothing reached the provider"
    );
    // The client key still works on /v1.
    let resp = h
        .chat(
            &client,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 200);
}

/// A team admin sees and changes only its own team's client keys, users and
/// usage; another team's key answers 404 exactly like a missing one.
#[tokio::test]
async fn team_admins_are_confined_to_their_team() {
    let h = start("", "").await;
    let (_, red_admin) = admin_key(&h, "team_admin", Some("red")).await;
    let (red_id, red_key) = h.create_key(json!({"name": "r", "team": "red"})).await;
    let (blue_id, blue_key) = h.create_key(json!({"name": "b", "team": "blue"})).await;
    let (viewer_id, _) = admin_key(&h, "viewer", Some("red")).await;
    for key in [&red_key, &blue_key] {
        let r = h
            .chat(
                key,
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }

    // Listing: only red's client keys (not red's admin keys, not blue's).
    let (s, v) = call(&h, &red_admin, Method::GET, "/admin/keys", None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![red_id.as_str()], "{v}");

    // Another team's key, or an admin key of its own team, is "not found".
    let (s_missing, v_missing) = call(
        &h,
        &red_admin,
        Method::GET,
        "/admin/keys/AAAAAAAAAAAA",
        None,
    )
    .await;
    assert_eq!(s_missing, 404);
    for id in [&blue_id, &viewer_id] {
        for (m, body) in [
            (Method::GET, None),
            (Method::PATCH, Some(json!({"name": "x"}))),
            (Method::DELETE, None),
        ] {
            let (s, v) = call(
                &h,
                &red_admin,
                m.clone(),
                &format!("/admin/keys/{id}"),
                body,
            )
            .await;
            assert_eq!((s, &v), (404, &v_missing), "{m} {id}");
        }
        let (s, _) = call(
            &h,
            &red_admin,
            Method::POST,
            &format!("/admin/keys/{id}/rotate"),
            None,
        )
        .await;
        assert_eq!(s, 404);
    }
    // Blue's key still works: nothing was revoked.
    let r = h
        .chat(
            &blue_key,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);

    // Creating: the key lands in red; naming another team or an admin role is refused.
    let (s, v) = call(
        &h,
        &red_admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "n"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(v["team"], "red");
    let (s, v) = call(
        &h,
        &red_admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"team": "blue"})),
    )
    .await;
    assert_eq!(s, 403);
    assert_error(&v, "admin_role_insufficient");
    let (s, v) = call(
        &h,
        &red_admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"admin_role": "viewer"})),
    )
    .await;
    assert_eq!(s, 403);
    assert_error(&v, "admin_role_insufficient");
    // Moving its own key to another team, or promoting it, is refused too.
    for patch in [
        json!({"team": "blue"}),
        json!({"team": null}),
        json!({"admin_role": "admin"}),
    ] {
        let (s, _) = call(
            &h,
            &red_admin,
            Method::PATCH,
            &format!("/admin/keys/{red_id}"),
            Some(patch.clone()),
        )
        .await;
        assert_eq!(s, 403, "{patch}");
    }

    // Usage: only red's requests (once the ledger writer has stored both).
    for _ in 0..200 {
        let (_, all) = call(&h, MASTER, Method::GET, "/admin/usage?group_by=team", None).await;
        if all["data"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (s, v) = call(
        &h,
        &red_admin,
        Method::GET,
        "/admin/usage?group_by=team",
        None,
    )
    .await;
    assert_eq!(s, 200);
    let teams: Vec<&Value> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["group"])
        .collect();
    assert_eq!(teams, vec![&json!("red")], "{v}");
    let (_, all) = call(&h, MASTER, Method::GET, "/admin/usage?group_by=team", None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
}

/// Identity-provider tokens whose roles map through `admin.roles` open the
/// admin API with that role; a token without a mapped role is refused (401);
/// team admins by token see only their team's users.
#[tokio::test]
async fn identity_tokens_carry_admin_roles() {
    let h = start(
        "  roles:\n    admin: [portcullis-admin]\n    team_admin: [team-lead]\n    viewer: [finance]\n",
        &idp_yaml(""),
    )
    .await;
    // Two ordinary users become user records by calling a model.
    for (sub, team) in [("alice", "red"), ("bob", "blue")] {
        let r = h
            .chat(
                &token(sub, Some(team), &["user"]),
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let ops = token("ops", None, &["portcullis-admin"]);
    let (s, v) = call(&h, &ops, Method::GET, "/admin/users", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"].as_array().unwrap().len() >= 2);
    let (s, _) = call(
        &h,
        &ops,
        Method::POST,
        "/admin/explain",
        Some(json!({"subjects": ["team:red"], "request": "GET /v1/models"})),
    )
    .await;
    assert_eq!(s, 200);

    let lead = token("lead", Some("red"), &["team-lead"]);
    let (s, v) = call(&h, &lead, Method::GET, "/admin/users", None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"idp:alice") && !ids.contains(&"idp:bob"),
        "{ids:?}"
    );
    let (s, _) = call(
        &h,
        &lead,
        Method::PATCH,
        "/admin/users/idp:bob",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(s, 404, "another team's user is not found");
    let (s, v) = call(
        &h,
        &lead,
        Method::PATCH,
        "/admin/users/idp:alice",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["disabled"], true);
    let (s, _) = call(&h, &lead, Method::GET, "/admin/audit", None).await;
    assert_eq!(s, 403);

    let finance = token("fin", None, &["finance"]);
    assert_eq!(
        call(&h, &finance, Method::GET, "/admin/audit", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&h, &finance, Method::GET, "/admin/usage", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&h, &finance, Method::GET, "/admin/keys", None).await.0,
        403
    );

    // A plain user's token, a lead without a team, and a forged token: 401.
    for cred in [
        token("alice2", Some("red"), &["user"]),
        token("lead2", None, &["team-lead"]),
        format!("{}x", &ops[..ops.len() - 1]),
    ] {
        let (s, v) = call(&h, &cred, Method::GET, "/admin/usage", None).await;
        assert_eq!(s, 401, "{v}");
        assert_error(&v, "invalid_api_key");
    }

    // The audit event names the token user as the actor.
    let (_, audit) = call(&h, MASTER, Method::GET, "/admin/audit", None).await;
    let ev = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "user_updated")
        .unwrap()
        .clone();
    assert_eq!(ev["actor"], "user:idp:lead");
    assert_eq!(ev["target"], "user:idp:alice");
    assert_eq!(ev["before"]["disabled"], false);
    assert_eq!(ev["after"]["disabled"], true);
}

/// Every admin change is an audit event with actor, target, before and after;
/// no secret appears in it.
#[tokio::test]
async fn admin_changes_are_audited() {
    let h = start("", "").await;
    let (admin_id, admin) = admin_key(&h, "admin", None).await;
    let (s, created) = call(
        &h,
        &admin,
        Method::POST,
        "/admin/keys",
        Some(json!({"name": "svc", "team": "red"})),
    )
    .await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    call(
        &h,
        &admin,
        Method::PATCH,
        &format!("/admin/keys/{id}"),
        Some(json!({"name": "svc2"})),
    )
    .await;
    let (_, rotated) = call(
        &h,
        MASTER,
        Method::POST,
        &format!("/admin/keys/{id}/rotate"),
        Some(json!({"grace_seconds": 60})),
    )
    .await;
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    call(
        &h,
        MASTER,
        Method::DELETE,
        &format!("/admin/keys/{new_id}"),
        None,
    )
    .await;

    let (s, audit) = call(&h, MASTER, Method::GET, "/admin/audit", None).await;
    assert_eq!(s, 200);
    let text = audit.to_string();
    for secret in [&secret, &new_secret, &admin] {
        assert!(
            !text.contains(secret.as_str()),
            "a key leaked into the audit log"
        );
    }
    assert!(!text.contains(MASTER));
    let events = audit["data"].as_array().unwrap();
    let find = |kind: &str, target: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["target"] == target)
            .unwrap_or_else(|| panic!("no {kind} for {target} in {audit}"))
            .clone()
    };
    let e = find("key_created", &format!("key:{id}"));
    assert_eq!(e["actor"], format!("key:{admin_id}"));
    assert!(e["before"].is_null());
    assert_eq!(e["after"]["name"], "svc");
    assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(e["client_ip"], "127.0.0.1");
    let e = find("key_updated", &format!("key:{id}"));
    assert_eq!(
        (e["before"]["name"].clone(), e["after"]["name"].clone()),
        (json!("svc"), json!("svc2"))
    );
    let e = find("key_rotated", &format!("key:{id}"));
    assert_eq!(e["actor"], "master_key");
    assert_eq!(e["after"]["new"]["id"], new_id);
    assert_eq!(e["after"]["new"]["rotated_from"], id);
    let e = find("key_revoked", &format!("key:{new_id}"));
    assert_eq!(e["before"]["status"], "active");
    assert_eq!(e["after"]["status"], "revoked");
    // The creation of the admin key itself, by the master key.
    assert_eq!(
        find("key_created", &format!("key:{admin_id}"))["after"]["admin_role"],
        "admin"
    );
}

/// `admin.allow_ips`: the admin API answers 403 from any other address, before
/// looking at the credential; the client API is unaffected.
#[tokio::test]
async fn admin_api_only_from_allowed_addresses() {
    let h = start("  allow_ips: [10.0.0.0/8]\n", "").await;
    let (s, v) = call(&h, MASTER, Method::GET, "/admin/keys", None).await;
    assert_eq!(s, 403);
    assert_error(&v, "admin_address_not_allowed");
    let (s, v) = call(&h, "nonsense", Method::GET, "/admin/keys", None).await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("admin_address_not_allowed"))
    );
    // Keys made outside the API still work on /v1 from here.
    let key = portcullis::authn::keys::generate();
    let record = portcullis::store::ApiKeyRecord::new(
        key.0.clone(),
        portcullis::authn::keys::digest(key.1.expose()).to_vec(),
    );
    h.gw.state.store.insert_key(&record).await.unwrap();
    let r = h
        .chat(
            key.1.expose(),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let h = start("  allow_ips: [127.0.0.0/8, \"::1\"]\n", "").await;
    assert_eq!(
        call(&h, MASTER, Method::GET, "/admin/keys", None).await.0,
        200
    );
}

/// `admin.listen`: the admin API is served on its own address only; the main
/// address answers 404 there, and the admin address serves nothing else.
#[tokio::test]
async fn separate_admin_listener() {
    let h = start("  listen: 127.0.0.1:0\n", "").await;
    let admin_url = format!("http://{}", h.gw.admin_addr.unwrap());
    let (s, v) = call(&h, MASTER, Method::GET, "/admin/keys", None).await;
    assert_eq!(s, 404, "{v}");
    assert_error(&v, "not_found");
    let resp = h
        .http
        .post(format!("{admin_url}/admin/keys"))
        .bearer_auth(MASTER)
        .json(&json!({"name": "via-admin-port"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let key = resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The key works on the main address, and the admin address proxies nothing.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.chat(&key, body.clone()).await.status(), 200);
    let before = h.mock.request_count();
    let resp = h
        .http
        .post(format!("{admin_url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(h.mock.request_count(), before);
    let health = h
        .http
        .get(format!("{admin_url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Reloading swaps in new admin roles and allowed addresses, and is an audit
/// event naming who reloaded and what is now in force.
#[tokio::test]
async fn reload_applies_admin_settings_and_is_audited() {
    let fg = FileGateway::start("", "").await;
    let get = |cred: &str| {
        fg.http
            .get(format!("{}/admin/keys", fg.url))
            .bearer_auth(cred.to_owned())
            .send()
    };
    let (admin_id, admin) = fg.create_key(json!({"admin_role": "admin"})).await;
    assert_eq!(get(&admin).await.unwrap().status(), 200);

    // Only 10.0.0.0/8 may reach the admin API now: the reload answers, then
    // the next admin call from 127.0.0.1 is refused.
    fg.rewrite("  allow_ips: [10.0.0.0/8]\n", "");
    assert_eq!(fg.reload(&admin).await.status(), 200);
    assert_eq!(get(MASTER).await.unwrap().status(), 403);
    // The event is in the store; read it there, the API being closed to us.
    let events = fg
        .gw
        .state
        .store
        .list_audit(None, None, None, 10)
        .await
        .unwrap();
    let e = events
        .iter()
        .find(|e| e.kind == "config_reloaded")
        .expect("a config_reloaded event");
    assert_eq!(e.actor.as_deref(), Some(format!("key:{admin_id}").as_str()));
    assert_eq!(e.target.as_deref(), Some("config"));
    assert_eq!(e.after.as_ref().unwrap()["reloaded"], true);
    fg.gw.shutdown().await.unwrap();
}
