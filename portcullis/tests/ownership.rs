//! Resource ownership, black-box: two principals through the real gateway and
//! the mock provider. Another principal's IDs — in the path at any depth, in
//! the body, in list cursors — answer exactly like IDs that do not exist, and
//! nothing is forwarded; lists show only the caller's own objects; team scope
//! shares within a team; redirecting body fields are stripped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use portcullis::authn::Principal;
use portcullis::authz::ownership::{Caller, OwnershipConfig, Scope};
use serde_json::{Value, json};

/// The one body every hidden resource answers with.
fn not_found() -> Value {
    json!({"error": {"message": "Not found.", "type": "invalid_request_error", "param": null, "code": "not_found"}})
}

fn opts(top: &str) -> Opts {
    Opts {
        top_extra: top.to_owned(),
        ..Default::default()
    }
}

async fn call(
    h: &Harness,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = h
        .http
        .request(m, format!("{}{path}", h.url))
        .bearer_auth(key)
        .header("OpenAI-Beta", "assistants=v2");
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// 200 and the JSON body.
async fn ok(h: &Harness, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = call(h, key, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

/// 404 `not_found` with the canonical body, and the mock saw nothing.
async fn hidden(h: &Harness, key: &str, method: &str, path: &str, body: Option<Value>) {
    let before = h.mock.request_count();
    let (status, v) = call(h, key, method, path, body).await;
    assert_eq!(status, 404, "{method} {path}: {v}");
    assert_eq!(v, not_found(), "{method} {path}");
    assert_eq!(
        h.mock.request_count(),
        before,
        "{method} {path} was forwarded"
    );
}

async fn upload(h: &Harness, key: &str, name: &str, content: &[u8], purpose: &str) -> String {
    let form = reqwest::multipart::Form::new()
        .text("purpose", purpose.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(content.to_vec()).file_name(name.to_owned()),
        );
    let resp = h
        .http
        .post(format!("{}/v1/files", h.url))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

async fn two_keys(h: &Harness) -> (String, String) {
    let (_, a) = h
        .create_key(json!({"name": "a", "user": "alice", "team": "red"}))
        .await;
    let (_, b) = h
        .create_key(json!({"name": "b", "user": "bob", "team": "blue"}))
        .await;
    (a, b)
}

async fn records(h: &Harness, family: &str, id: &str) -> Vec<portcullis::store::ResourceRecord> {
    h.gw.state
        .store
        .find_resources("openai", &[(family.to_owned(), id.to_owned())])
        .await
        .unwrap()
}

#[tokio::test]
async fn files_of_another_key_do_not_exist_for_it() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let f = upload(&h, &a, "notes.txt", b"secret notes", "assistants").await;

    // The same answer as an ID nobody ever created, and nothing forwarded.
    hidden(&h, &b, "GET", "/v1/files/file-doesnotexist", None).await;
    for (method, path) in [
        ("GET", format!("/v1/files/{f}")),
        ("GET", format!("/v1/files/{f}/content")),
        ("DELETE", format!("/v1/files/{f}")),
        ("GET", format!("/providers/openai/files/{f}")),
        // The provider decodes the path; so does the gateway.
        ("GET", format!("/v1/files/{}", f.replacen('-', "%2D", 1))),
        // Unknown shapes inside an ID-bearing group are refused too.
        ("GET", format!("/v1/files/{f}/content/extra")),
    ] {
        hidden(&h, &b, method, &path, None).await;
    }

    // The owner reaches it on both surfaces.
    assert_eq!(
        ok(&h, &a, "GET", &format!("/v1/files/{f}"), None).await["id"],
        f.as_str()
    );
    ok(&h, &a, "GET", &format!("/providers/openai/files/{f}"), None).await;
    let content = h
        .http
        .get(format!("{}/v1/files/{f}/content", h.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 200);
    assert_eq!(&content.bytes().await.unwrap()[..], b"secret notes");

    // Deleted resources stay gone, and their record goes.
    let rec = records(&h, "file", &f).await;
    assert_eq!(rec.len(), 1);
    assert!(rec[0].owner.starts_with("key:"), "{rec:?}");
    ok(&h, &a, "DELETE", &format!("/v1/files/{f}"), None).await;
    assert!(records(&h, "file", &f).await.is_empty());
    hidden(&h, &a, "GET", &format!("/v1/files/{f}"), None).await;
    h.stop().await;
}

#[tokio::test]
async fn assistants_threads_messages_runs_and_steps_at_every_depth() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let f = upload(&h, &a, "doc.txt", b"abc", "assistants").await;
    let asst = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/assistants",
        Some(json!({"model": "gpt-4o-mini", "name": "A's"})),
    )
    .await);
    let thread = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/threads",
        Some(json!({"messages": [{"role": "user", "content": "hi", "attachments": [{"file_id": f, "tools": [{"type": "file_search"}]}]}]})),
    )
    .await);
    let run = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/threads/{thread}/runs"),
        Some(json!({"assistant_id": asst})),
    )
    .await);
    // Children the provider made are learnt from lists of an owned parent.
    let msgs = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{thread}/messages"),
        None,
    )
    .await;
    let msg = id(&msgs["data"][0]);
    let steps = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{thread}/runs/{run}/steps"),
        None,
    )
    .await;
    let step = id(&steps["data"][0]);
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{thread}/runs/{run}/steps/{step}"),
        None,
    )
    .await;
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{thread}/messages/{msg}"),
        None,
    )
    .await;

    let t = &thread;
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/assistants/{asst}"), None),
        (
            "POST",
            format!("/v1/assistants/{asst}"),
            Some(json!({"name": "mine now"})),
        ),
        ("DELETE", format!("/v1/assistants/{asst}"), None),
        ("GET", format!("/v1/threads/{t}"), None),
        (
            "POST",
            format!("/v1/threads/{t}"),
            Some(json!({"metadata": {"x": "y"}})),
        ),
        ("DELETE", format!("/v1/threads/{t}"), None),
        ("GET", format!("/v1/threads/{t}/messages"), None),
        (
            "POST",
            format!("/v1/threads/{t}/messages"),
            Some(json!({"role": "user", "content": "x"})),
        ),
        ("GET", format!("/v1/threads/{t}/messages/{msg}"), None),
        (
            "POST",
            format!("/v1/threads/{t}/messages/{msg}"),
            Some(json!({"metadata": {}})),
        ),
        ("DELETE", format!("/v1/threads/{t}/messages/{msg}"), None),
        ("GET", format!("/v1/threads/{t}/runs"), None),
        (
            "POST",
            format!("/v1/threads/{t}/runs"),
            Some(json!({"assistant_id": asst})),
        ),
        ("GET", format!("/v1/threads/{t}/runs/{run}"), None),
        (
            "POST",
            format!("/v1/threads/{t}/runs/{run}"),
            Some(json!({"metadata": {}})),
        ),
        ("POST", format!("/v1/threads/{t}/runs/{run}/cancel"), None),
        ("GET", format!("/v1/threads/{t}/runs/{run}/steps"), None),
        (
            "GET",
            format!("/v1/threads/{t}/runs/{run}/steps/{step}"),
            None,
        ),
        (
            "POST",
            format!("/v1/threads/{t}/runs/{run}/submit_tool_outputs"),
            Some(json!({"tool_outputs": []})),
        ),
        (
            "GET",
            format!("/providers/openai/threads/{t}/runs/{run}/steps/{step}"),
            None,
        ),
    ];
    for (m, p, body) in cases {
        hidden(&h, &b, m, &p, body).await;
    }

    // B's own thread does not make A's children reachable.
    let b_thread = id(&ok(&h, &b, "POST", "/v1/threads", Some(json!({}))).await);
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/threads/{b_thread}/runs/{run}"),
        None,
    )
    .await;
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/threads/{b_thread}/messages/{msg}"),
        None,
    )
    .await;
    // A foreign list cursor is refused like a foreign ID.
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/threads/{b_thread}/messages?after={msg}"),
        None,
    )
    .await;
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/threads/{b_thread}/messages?run_id={run}"),
        None,
    )
    .await;

    // A's IDs inside B's bodies.
    let b_asst = id(&ok(
        &h,
        &b,
        "POST",
        "/v1/assistants",
        Some(json!({"model": "gpt-4o-mini"})),
    )
    .await);
    for (p, body) in [
        (
            format!("/v1/threads/{b_thread}/runs"),
            json!({"assistant_id": asst}),
        ),
        ("/v1/threads/runs".to_owned(), json!({"assistant_id": asst})),
        (
            "/v1/threads/runs".to_owned(),
            json!({"assistant_id": b_asst, "thread": {"messages": [{"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": f}}]}]}}),
        ),
        (
            format!("/v1/threads/{b_thread}/messages"),
            json!({"role": "user", "content": "x", "attachments": [{"file_id": f}]}),
        ),
        (
            "/v1/assistants".to_owned(),
            json!({"model": "gpt-4o-mini", "tool_resources": {"code_interpreter": {"file_ids": [f]}}}),
        ),
        (
            format!("/v1/assistants/{b_asst}"),
            json!({"tool_resources": {"code_interpreter": {"file_ids": ["file-nobody-made"]}}}),
        ),
        (
            "/v1/threads".to_owned(),
            json!({"messages": [{"role": "user", "content": "x", "attachments": [{"file_id": f}]}]}),
        ),
    ] {
        hidden(&h, &b, "POST", &p, Some(body)).await;
    }

    // The owner does all of it; a streamed run registers what it creates.
    let resp = h
        .http
        .post(format!("{}/v1/threads/runs", h.url))
        .bearer_auth(&a)
        .json(&json!({"assistant_id": asst, "stream": true, "thread": {"messages": [{"role": "user", "content": "go"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let mut created = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && matches!(
                v["object"].as_str(),
                Some("thread.run" | "thread.message" | "thread.run.step" | "thread")
            )
        {
            created.push((
                v["object"].as_str().unwrap().to_owned(),
                id(&v),
                v["thread_id"].as_str().map(str::to_owned),
            ));
        }
    }
    let new_run = created
        .iter()
        .find(|c| c.0 == "thread.run")
        .unwrap()
        .clone();
    let new_thread = new_run.2.clone().unwrap();
    ok(&h, &a, "GET", &format!("/v1/threads/{new_thread}"), None).await;
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{new_thread}/runs/{}", new_run.1),
        None,
    )
    .await;
    hidden(&h, &b, "GET", &format!("/v1/threads/{new_thread}"), None).await;
    let new_msg = created
        .iter()
        .find(|c| c.0 == "thread.message")
        .unwrap()
        .1
        .clone();
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{new_thread}/messages/{new_msg}"),
        None,
    )
    .await;

    // Deleting a thread forgets it and everything recorded under it.
    assert_eq!(records(&h, "run", &run).await.len(), 1);
    ok(&h, &a, "DELETE", &format!("/v1/threads/{thread}"), None).await;
    assert!(records(&h, "thread", &thread).await.is_empty());
    assert!(records(&h, "run", &run).await.is_empty());
    assert!(records(&h, "run_step", &step).await.is_empty());
    assert!(records(&h, "thread_message", &msg).await.is_empty());
    hidden(
        &h,
        &a,
        "GET",
        &format!("/v1/threads/{thread}/runs/{run}"),
        None,
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn vector_stores_their_files_and_file_batches() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let f1 = upload(&h, &a, "1.txt", b"one", "assistants").await;
    let f2 = upload(&h, &a, "2.txt", b"two", "assistants").await;
    let vs = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/vector_stores",
        Some(json!({"name": "A", "file_ids": [f1]})),
    )
    .await);
    ok(
        &h,
        &a,
        "POST",
        &format!("/v1/vector_stores/{vs}/files"),
        Some(json!({"file_id": f2})),
    )
    .await;
    let fb = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/vector_stores/{vs}/file_batches"),
        Some(json!({"file_ids": [f1, f2]})),
    )
    .await);
    let listed = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/vector_stores/{vs}/files?limit=1"),
        None,
    )
    .await;
    let after = id(&listed["data"][0]);
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/vector_stores/{vs}/files?after={after}"),
        None,
    )
    .await;
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/vector_stores/{vs}/file_batches/{fb}/files"),
        None,
    )
    .await;

    for (m, p) in [
        ("GET", format!("/v1/vector_stores/{vs}")),
        ("POST", format!("/v1/vector_stores/{vs}")),
        ("DELETE", format!("/v1/vector_stores/{vs}")),
        ("GET", format!("/v1/vector_stores/{vs}/files")),
        ("GET", format!("/v1/vector_stores/{vs}/files/{f1}")),
        ("POST", format!("/v1/vector_stores/{vs}/files/{f1}")),
        ("DELETE", format!("/v1/vector_stores/{vs}/files/{f1}")),
        ("GET", format!("/v1/vector_stores/{vs}/file_batches/{fb}")),
        (
            "POST",
            format!("/v1/vector_stores/{vs}/file_batches/{fb}/cancel"),
        ),
        (
            "GET",
            format!("/v1/vector_stores/{vs}/file_batches/{fb}/files"),
        ),
    ] {
        let body = (m == "POST").then(|| json!({"metadata": {}}));
        hidden(&h, &b, m, &p, body).await;
    }
    // A's file under B's own vector store, or attached by B.
    let b_vs = id(&ok(
        &h,
        &b,
        "POST",
        "/v1/vector_stores",
        Some(json!({"name": "B"})),
    )
    .await);
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/vector_stores/{b_vs}/files/{f1}"),
        None,
    )
    .await;
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/vector_stores/{b_vs}/files?after={f1}"),
        None,
    )
    .await;
    hidden(
        &h,
        &b,
        "POST",
        &format!("/v1/vector_stores/{b_vs}/files"),
        Some(json!({"file_id": f1})),
    )
    .await;
    hidden(
        &h,
        &b,
        "POST",
        &format!("/v1/vector_stores/{b_vs}/file_batches"),
        Some(json!({"file_ids": [f2]})),
    )
    .await;
    hidden(
        &h,
        &b,
        "POST",
        &format!("/v1/vector_stores/{b_vs}/file_batches"),
        Some(json!({"files": [{"file_id": f2}]})),
    )
    .await;
    hidden(
        &h,
        &b,
        "POST",
        "/v1/vector_stores",
        Some(json!({"file_ids": [f1]})),
    )
    .await;
    hidden(&h, &b, "POST", "/v1/assistants", Some(json!({"model": "gpt-4o-mini", "tool_resources": {"file_search": {"vector_store_ids": [vs]}}}))).await;
    hidden(&h, &b, "POST", "/v1/responses", Some(json!({"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": [vs]}]}))).await;

    // Detaching a file from a store leaves the file itself the owner's.
    ok(
        &h,
        &a,
        "DELETE",
        &format!("/v1/vector_stores/{vs}/files/{f1}"),
        None,
    )
    .await;
    assert_eq!(records(&h, "file", &f1).await.len(), 1);
    ok(&h, &a, "DELETE", &format!("/v1/vector_stores/{vs}"), None).await;
    assert!(records(&h, "vector_store", &vs).await.is_empty());
    assert!(records(&h, "vector_store_file_batch", &fb).await.is_empty());
    hidden(&h, &a, "GET", &format!("/v1/vector_stores/{vs}"), None).await;
    h.stop().await;
}

#[tokio::test]
async fn batches_and_their_derived_output_files_belong_to_the_creator() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let line = json!({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": chat_body("gpt-4o-mini")});
    let input = upload(&h, &a, "in.jsonl", format!("{line}\n").as_bytes(), "batch").await;
    let batch = ok(
        &h,
        &a,
        "POST",
        "/v1/batches",
        Some(json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"})),
    )
    .await;
    let batch_id = id(&batch);
    let output = batch["output_file_id"].as_str().unwrap().to_owned();
    // The derived output file was recorded as A's before A saw its id.
    let rec = records(&h, "file", &output).await;
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].owner, records(&h, "batch", &batch_id).await[0].owner);
    ok(&h, &a, "GET", &format!("/v1/files/{output}"), None).await;
    let content = h
        .http
        .get(format!("{}/v1/files/{output}/content", h.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(content.status(), 200);

    for (m, p) in [
        ("GET", format!("/v1/batches/{batch_id}")),
        ("POST", format!("/v1/batches/{batch_id}/cancel")),
        ("GET", format!("/v1/files/{output}")),
        ("GET", format!("/v1/files/{output}/content")),
        ("DELETE", format!("/v1/files/{output}")),
    ] {
        hidden(&h, &b, m, &p, None).await;
    }
    hidden(
        &h,
        &b,
        "POST",
        "/v1/batches",
        Some(json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"})),
    )
    .await;
    // A batch runs the requests in its input file: A's IDs in there are
    // refused like A's IDs in a request, and the batch is never created.
    let evil = json!({"custom_id": "x", "method": "POST", "url": "/v1/responses",
        "body": {"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": input}]}]}});
    let sneaky = upload(
        &h,
        &b,
        "evil.jsonl",
        format!("{line}\n{evil}\n").as_bytes(),
        "batch",
    )
    .await;
    let batch_body = |f: &str| json!({"input_file_id": f, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, v) = call(&h, &b, "POST", "/v1/batches", Some(batch_body(&sneaky))).await;
    assert_eq!((status, v), (404, not_found()));
    let dup = "{\"custom_id\":\"d\",\"url\":\"/v1/responses\",\"body\":{\"model\":\"m\",\"previous_response_id\":\"resp_x\",\"previous_response_id\":\"resp_y\"}}\n";
    let ambiguous = upload(&h, &b, "dup.jsonl", dup.as_bytes(), "batch").await;
    let (status, _) = call(&h, &b, "POST", "/v1/batches", Some(batch_body(&ambiguous))).await;
    assert_eq!(status, 400);
    let creations = |h: &Harness| {
        h.mock
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/v1/batches")
            .count()
    };
    assert_eq!(creations(&h), 1, "only A's batch reached the provider");
    let clean = upload(&h, &b, "ok.jsonl", format!("{line}\n").as_bytes(), "batch").await;
    ok(&h, &b, "POST", "/v1/batches", Some(batch_body(&clean))).await;
    assert_eq!(creations(&h), 2);

    // Lists: A sees its batch, B only its own.
    let listed = ok(&h, &a, "GET", "/v1/batches", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["output_file_id"], output.as_str());
    let b_batches = ok(&h, &b, "GET", "/v1/batches", None).await;
    assert_eq!(b_batches["data"].as_array().unwrap().len(), 1);
    assert_ne!(b_batches["data"][0]["id"], batch_id.as_str());
    // Administrators see everything.
    let resp = h
        .http
        .get(format!("{}/admin/resources?family=file", h.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let all: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&input.as_str()) && ids.contains(&output.as_str()),
        "{all}"
    );
    let resp = h
        .http
        .get(format!("{}/admin/resources", h.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    h.stop().await;
}

#[tokio::test]
async fn responses_previous_response_ids_and_item_references() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let r1 = ok(
        &h,
        &a,
        "POST",
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "hello"})),
    )
    .await;
    let r1_id = id(&r1);
    let item = id(&r1["output"][0]);
    // A continues its own conversation, by id and by item reference.
    ok(
        &h,
        &a,
        "POST",
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "more", "previous_response_id": r1_id})),
    )
    .await;
    ok(
        &h,
        &a,
        "POST",
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": item}, {"role": "user", "content": "and?"}]})),
    )
    .await;
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/responses/{r1_id}/input_items"),
        None,
    )
    .await;

    for (m, p) in [
        ("GET", format!("/v1/responses/{r1_id}")),
        ("GET", format!("/v1/responses/{r1_id}?beta=true")),
        ("DELETE", format!("/v1/responses/{r1_id}")),
        ("POST", format!("/v1/responses/{r1_id}/cancel")),
        ("GET", format!("/v1/responses/{r1_id}/input_items")),
    ] {
        hidden(&h, &b, m, &p, None).await;
    }
    for body in [
        json!({"model": "gpt-4o-mini", "input": "x", "previous_response_id": r1_id}),
        json!({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": item}]}),
        json!({"model": "gpt-4o-mini", "input": [{"type": "message", "id": item, "role": "assistant", "content": "replayed"}]}),
        json!({"model": "gpt-4o-mini", "input": "x", "conversation": "conv_nobody"}),
        json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-nobody"}]}]}),
    ] {
        hidden(&h, &b, "POST", "/v1/responses", Some(body)).await;
    }
    // Two values for one field: refused, never guessed.
    let before = h.mock.request_count();
    let resp = h
        .http
        .post(format!("{}/v1/responses", h.url))
        .bearer_auth(&b)
        .header("content-type", "application/json")
        .body(format!(r#"{{"model":"gpt-4o-mini","input":"x","previous_response_id":null,"previous_response_id":"{r1_id}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(h.mock.request_count(), before);

    // A streamed creation is registered as its events pass.
    let resp = h
        .http
        .post(format!("{}/v1/responses", h.url))
        .bearer_auth(&a)
        .json(&json!({"model": "gpt-4o-mini", "input": "stream it", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let streamed = loop {
        let chunk = stream.next().await.unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(line) = buf
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .find(|l| l.contains("response.created"))
        {
            let v: Value = serde_json::from_str(line).unwrap();
            break v["response"]["id"].as_str().unwrap().to_owned();
        }
    };
    // Usable at once, even before the stream ends.
    ok(&h, &a, "GET", &format!("/v1/responses/{streamed}"), None).await;
    while stream.next().await.is_some() {}
    hidden(&h, &b, "GET", &format!("/v1/responses/{streamed}"), None).await;

    ok(&h, &a, "DELETE", &format!("/v1/responses/{r1_id}"), None).await;
    hidden(&h, &a, "GET", &format!("/v1/responses/{r1_id}"), None).await;
    assert!(records(&h, "item", &item).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn lists_show_only_the_callers_objects_across_pages() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(id(&ok(
            &h,
            &a,
            "POST",
            "/v1/assistants",
            Some(json!({"model": "gpt-4o-mini", "name": format!("a{i}")})),
        )
        .await));
        // Interleave B's objects, so A's pages must skip them.
        ok(
            &h,
            &b,
            "POST",
            "/v1/assistants",
            Some(json!({"model": "gpt-4o-mini", "name": format!("b{i}")})),
        )
        .await;
    }
    let newest_first: Vec<String> = mine.iter().rev().cloned().collect();

    // Page through A's list two at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/assistants?limit=2&after={c}"),
            None => "/v1/assistants?limit=2".to_owned(),
        };
        let page = ok(&h, &a, "GET", &path, None).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(id));
        assert_eq!(
            page["last_id"],
            data.last().map_or(Value::Null, |d| d["id"].clone())
        );
        if page["has_more"] != true {
            break;
        }
        after = Some(page["last_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, newest_first);
    // Objects are fetched fresh from the provider.
    let full = ok(&h, &a, "GET", "/v1/assistants?order=asc", None).await;
    let asc: Vec<String> = full["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(asc, mine);
    assert_eq!(full["data"][0]["name"], "a0");
    assert_eq!(full["has_more"], false);
    // `before` pages backwards, closest to the cursor.
    let page = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/assistants?limit=2&before={}", mine[1]),
        None,
    )
    .await;
    let ids: Vec<String> = page["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![mine[3].clone(), mine[2].clone()]);
    let page = ok(
        &h,
        &a,
        "GET",
        &format!(
            "/v1/assistants?order=asc&after={}&before={}",
            mine[0], mine[3]
        ),
        None,
    )
    .await;
    let ids: Vec<String> = page["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![mine[1].clone(), mine[2].clone()]);

    // B sees only its own five, never A's — not even through a cursor.
    let b_list = ok(&h, &b, "GET", "/v1/assistants?limit=100", None).await;
    let b_ids: Vec<String> = b_list["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(b_ids.len(), 5);
    assert!(b_ids.iter().all(|i| !mine.contains(i)));
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/assistants?after={}", mine[2]),
        None,
    )
    .await;
    hidden(
        &h,
        &b,
        "GET",
        &format!("/v1/assistants?before={}", mine[2]),
        None,
    )
    .await;
    let (status, v) = call(&h, &a, "GET", "/v1/assistants?limit=many", None).await;
    assert_eq!(status, 400, "{v}");

    // Deleted objects leave the list; objects gone at the provider too.
    ok(
        &h,
        &a,
        "DELETE",
        &format!("/v1/assistants/{}", mine[4]),
        None,
    )
    .await;
    let gone = h
        .http
        .delete(format!("{}/assistants/{}", h.mock.base_url(), mine[3]))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);
    let left = ok(&h, &a, "GET", "/v1/assistants", None).await;
    let left: Vec<String> = left["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(
        left,
        vec![mine[2].clone(), mine[1].clone(), mine[0].clone()]
    );
    assert!(records(&h, "assistant", &mine[3]).await.is_empty());

    // Filters compare the fresh object.
    upload(&h, &a, "x.jsonl", b"{}\n", "batch").await;
    let fa = upload(&h, &a, "y.txt", b"y", "assistants").await;
    upload(&h, &b, "z.txt", b"z", "assistants").await;
    let files = ok(&h, &a, "GET", "/v1/files?purpose=assistants", None).await;
    let ids: Vec<String> = files["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![fa]);
    h.stop().await;
}

#[tokio::test]
async fn team_scope_shares_within_a_team_only() {
    let h = Harness::start_with(opts("ownership:\n  scope: team\n")).await;
    let (_, red1) = h.create_key(json!({"name": "r1", "team": "red"})).await;
    let (_, red2) = h.create_key(json!({"name": "r2", "team": "red"})).await;
    let (_, blue) = h.create_key(json!({"name": "b", "team": "blue"})).await;
    let (_, loner) = h.create_key(json!({"name": "l"})).await;
    let f = upload(&h, &red1, "team.txt", b"team", "assistants").await;
    assert_eq!(records(&h, "file", &f).await[0].owner, "team:red");
    let asst = id(&ok(
        &h,
        &red1,
        "POST",
        "/v1/assistants",
        Some(json!({"model": "gpt-4o-mini"})),
    )
    .await);

    ok(&h, &red2, "GET", &format!("/v1/files/{f}"), None).await;
    ok(
        &h,
        &red2,
        "POST",
        &format!("/v1/assistants/{asst}"),
        Some(json!({"name": "ours"})),
    )
    .await;
    let listed = ok(&h, &red2, "GET", "/v1/files", None).await;
    assert_eq!(listed["data"][0]["id"], f.as_str());
    for key in [&blue, &loner] {
        hidden(&h, key, "GET", &format!("/v1/files/{f}"), None).await;
        hidden(&h, key, "GET", &format!("/v1/assistants/{asst}"), None).await;
        assert_eq!(
            ok(&h, key, "GET", "/v1/files", None).await["data"],
            json!([])
        );
    }
    // A key without a team falls back to its own key.
    let lf = upload(&h, &loner, "mine.txt", b"m", "assistants").await;
    assert!(records(&h, "file", &lf).await[0].owner.starts_with("key:"));
    hidden(&h, &red1, "GET", &format!("/v1/files/{lf}"), None).await;
    h.stop().await;
}

#[tokio::test]
async fn unmanaged_ids_are_refused_unless_allowed() {
    let h = Harness::start().await;
    let key = h.key().await;
    // Made at the provider behind the gateway's back.
    let direct = reqwest::Client::new()
        .post(format!("{}/assistants", h.mock.base_url()))
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    let unmanaged = id(&direct.json::<Value>().await.unwrap());
    hidden(
        &h,
        &key,
        "GET",
        &format!("/v1/assistants/{unmanaged}"),
        None,
    )
    .await;
    // Unmanaged objects are not in the caller's list either.
    assert_eq!(
        ok(&h, &key, "GET", "/v1/assistants", None).await["data"],
        json!([])
    );
    h.stop().await;

    let h = Harness::start_with(opts("ownership:\n  allow_unmanaged_ids: true\n")).await;
    let (a, b) = two_keys(&h).await;
    let direct = reqwest::Client::new()
        .post(format!("{}/assistants", h.mock.base_url()))
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    let unmanaged = id(&direct.json::<Value>().await.unwrap());
    let before = h.mock.request_count();
    ok(&h, &b, "GET", &format!("/v1/assistants/{unmanaged}"), None).await;
    let (status, v) = call(&h, &b, "GET", "/v1/files/file-nobody", None).await;
    assert_eq!(status, 404);
    assert_ne!(v, not_found(), "the provider's own 404 comes through");
    assert_eq!(h.mock.request_count(), before + 2);
    // Another principal's managed IDs stay hidden.
    let f = upload(&h, &a, "a.txt", b"a", "assistants").await;
    hidden(&h, &b, "GET", &format!("/v1/files/{f}"), None).await;
    h.stop().await;
}

#[tokio::test]
async fn stored_chat_completions_are_owned_and_unstored_ones_cost_nothing() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    let mut body = chat_body("gpt-4o-mini");
    body["store"] = json!(true);
    let c = id(&ok(&h, &a, "POST", "/v1/chat/completions", Some(body)).await);
    assert_eq!(records(&h, "chat_completion", &c).await.len(), 1);
    for (m, p) in [
        ("GET", format!("/v1/chat/completions/{c}")),
        ("POST", format!("/v1/chat/completions/{c}")),
        ("DELETE", format!("/v1/chat/completions/{c}")),
        ("GET", format!("/v1/chat/completions/{c}/messages")),
    ] {
        hidden(&h, &b, m, &p, None).await;
    }
    // The owner's requests go through (this mock does not keep completions).
    let before = h.mock.request_count();
    let (status, _) = call(&h, &a, "GET", &format!("/v1/chat/completions/{c}"), None).await;
    assert_eq!(status, 404);
    assert_eq!(h.mock.request_count(), before + 1);
    let plain = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/chat/completions",
        Some(chat_body("gpt-4o-mini")),
    )
    .await);
    assert!(records(&h, "chat_completion", &plain).await.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn redirecting_body_fields_are_stripped_before_forwarding() {
    for top in ["", "ownership:\n  scope: off\n"] {
        let h = Harness::start_with(opts(top)).await;
        let key = h.key().await;
        let mut body = chat_body("gpt-4o-mini");
        for (k, v) in [
            ("api_base", json!("http://169.254.169.254/latest")),
            ("base_url", json!("http://evil.example")),
            ("api_key", json!("sk-attacker-0123456789")),
            ("organization", json!("org-other")),
            ("extra_headers", json!({"Authorization": "Bearer sk-x"})),
            ("extra_body", json!({"x": 1})),
            ("custom_llm_provider", json!("azure")),
            ("api_version", json!("2024-01-01")),
            ("litellm_params", json!({"api_base": "http://evil"})),
        ] {
            body[k] = v;
        }
        let resp = h.chat(&key, body).await;
        assert_eq!(resp.status(), 200);
        let seen = h.mock.requests();
        assert_eq!(seen.len(), 1);
        let sent = seen[0].json().unwrap();
        let keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["messages", "model"], "{sent}");
        assert_eq!(sent["model"], "gpt-4o-mini");
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );
        h.stop().await;
    }
}

#[test]
fn owners_follow_scope_and_fall_back_to_narrower_attributes() {
    let p = |s: &[&str]| {
        Principal::synthetic(
            &s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            None,
            None,
        )
    };
    let cfg = |scope| OwnershipConfig {
        scope,
        allow_unmanaged_ids: false,
        user_id_salt: None,
    };
    let jwt = p(&["user:supabase:8f1c", "team:mobile"]);
    let key = p(&["key:abc", "user:alice", "team:red"]);
    let bare_key = p(&["key:xyz"]);
    let owner = |c: &OwnershipConfig, p: &Principal| Caller::of(c, p).map(|c| c.owner.to_string());
    assert_eq!(
        owner(&cfg(None), &jwt).as_deref(),
        Some("user:supabase:8f1c")
    );
    assert_eq!(owner(&cfg(None), &key).as_deref(), Some("key:abc"));
    assert_eq!(
        owner(&cfg(Some(Scope::Team)), &key).as_deref(),
        Some("team:red")
    );
    assert_eq!(
        owner(&cfg(Some(Scope::Team)), &bare_key).as_deref(),
        Some("key:xyz")
    );
    assert_eq!(
        owner(&cfg(Some(Scope::User)), &bare_key).as_deref(),
        Some("key:xyz")
    );
    assert_eq!(
        owner(&cfg(Some(Scope::Key)), &jwt).as_deref(),
        Some("user:supabase:8f1c")
    );
    assert_eq!(owner(&cfg(Some(Scope::Off)), &key), None);
    assert_eq!(owner(&cfg(None), &p(&[])).as_deref(), Some("anonymous"));
    let team = Caller::of(&cfg(Some(Scope::Team)), &key).unwrap();
    let names: Vec<&str> = team.identities.iter().map(|i| &**i).collect();
    assert_eq!(names, ["team:red", "user:alice", "key:abc"]);
    assert!(team.owns("key:abc") && !team.owns("team:blue"));
}

#[tokio::test]
async fn the_gateway_sets_a_hashed_end_user_identifier() {
    let h = Harness::start_with(opts(
        "forward_user_id: hashed\nforward_user_id_salt: salt-0123456789abcdef\n",
    ))
    .await;
    let (a, b) = two_keys(&h).await;
    let mut body = chat_body("gpt-4o-mini");
    body["user"] = json!("alice@example.com");
    body["safety_identifier"] = json!("client-chosen");
    ok(&h, &a, "POST", "/v1/chat/completions", Some(body.clone())).await;
    ok(&h, &a, "POST", "/v1/chat/completions", Some(body.clone())).await;
    ok(&h, &b, "POST", "/v1/chat/completions", Some(body)).await;
    ok(
        &h,
        &a,
        "POST",
        "/v1/responses",
        Some(json!({"model": "gpt-4o-mini", "input": "x", "user": "u"})),
    )
    .await;
    let sent: Vec<Value> = h
        .mock
        .requests()
        .iter()
        .map(|r| r.json().unwrap())
        .collect();
    let ids: Vec<&str> = sent
        .iter()
        .map(|v| v["safety_identifier"].as_str().unwrap())
        .collect();
    assert!(ids[0].starts_with("pc-") && ids[0].len() == 35, "{ids:?}");
    assert_eq!(ids[0], ids[1], "stable per principal");
    assert_ne!(ids[0], ids[2], "distinct per principal");
    assert_eq!(ids[0], ids[3], "the same on every endpoint");
    assert!(sent.iter().all(|v| v.get("user").is_none()), "{sent:?}");
    assert!(!format!("{sent:?}").contains("alice"));
    h.stop().await;

    // Hashing needs a salt.
    let env = |_: &str| None;
    let e = portcullis::config::Config::from_yaml(
        "forward_user_id: hashed\n",
        &env,
        portcullis::config::ConfigSource::Defaults,
    )
    .unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|e| e.location == "forward_user_id_salt"),
        "{e}"
    );
}

#[tokio::test]
async fn families_beyond_the_mock_forms_and_the_native_surface() {
    let h = Harness::start().await;
    let (a, b) = two_keys(&h).await;
    // Families the mock does not implement are checked all the same.
    for (m, p) in [
        ("GET", "/v1/conversations/conv_abc"),
        ("POST", "/v1/conversations/conv_abc/items"),
        ("DELETE", "/v1/conversations/conv_abc/items/msg_1"),
        ("GET", "/v1/chat/completions/chatcmpl-xyz/messages"),
        ("GET", "/v1/audio/voice_consents/cons_1"),
        ("POST", "/v1/uploads/upload_1/complete"),
        ("GET", "/v1/threads/thread_1/runs/run_1/steps/step_1"),
    ] {
        hidden(&h, &a, m, p, None).await;
    }
    // Multipart fields naming resources.
    let before = h.mock.request_count();
    let form = reqwest::multipart::Form::new()
        .text("name", "my voice")
        .text("consent", "cons_nobody")
        .part(
            "audio_sample",
            reqwest::multipart::Part::bytes(b"RIFF0000".to_vec()).file_name("a.wav"),
        );
    let resp = h
        .http
        .post(format!("{}/v1/audio/voices", h.url))
        .bearer_auth(&a)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap(), not_found());
    assert_eq!(h.mock.request_count(), before);

    // The native surface lists and checks the same records.
    let asst = id(&ok(
        &h,
        &a,
        "POST",
        "/providers/openai/assistants",
        Some(json!({"model": "gpt-4o-mini"})),
    )
    .await);
    let listed = ok(&h, &a, "GET", "/v1/assistants", None).await;
    assert_eq!(listed["data"][0]["id"], asst.as_str());
    let native = ok(&h, &a, "GET", "/providers/openai/assistants", None).await;
    assert_eq!(native["data"], listed["data"]);
    assert_eq!(
        ok(&h, &b, "GET", "/providers/openai/assistants", None).await["data"],
        json!([])
    );
    hidden(
        &h,
        &b,
        "DELETE",
        &format!("/providers/openai/assistants/{asst}"),
        None,
    )
    .await;
    h.stop().await;
}

const JWT_SECRET: &str = "an-hs256-secret-of-at-least-thirty-two-bytes!";

fn jwt(sub: &str, team: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "https://idp.example.test", "aud": "gw", "sub": sub, "team": team, "exp": now + 600, "iat": now}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Identity-provider users own what they create (scope `user` by default for
/// them): another user of the same team — or a gateway key of that team — sees
/// nothing of it, in the path, the body or a list; the owner is `user:<id>`.
#[tokio::test]
async fn jwt_users_own_their_resources() {
    let h = Harness::start_with(opts(&format!(
        "auth:\n  lockout: {{enabled: false}}\n  jwt:\n    - name: idp\n      issuer: https://idp.example.test\n      hs256_secret: {JWT_SECRET}\n      audiences: [gw]\n      algorithms: [HS256]\n      team_claim: team\nrules:\n  - subjects: [\"*\"]\n    models: [\"openai/*\"]\n"
    )))
    .await;
    let alice = jwt("alice", "red");
    let bob = jwt("bob", "red");
    let (_, red_key) = h.create_key(json!({"team": "red", "user": "alice"})).await;
    let f = upload(&h, &alice, "a.txt", b"alice's", "assistants").await;
    assert_eq!(records(&h, "file", &f).await[0].owner, "user:idp:alice");
    let thread = id(&ok(&h, &alice, "POST", "/v1/threads", Some(json!({}))).await);
    ok(&h, &alice, "GET", &format!("/v1/files/{f}"), None).await;
    for other in [&bob, &red_key] {
        hidden(&h, other, "GET", &format!("/v1/files/{f}"), None).await;
        hidden(&h, other, "DELETE", &format!("/v1/files/{f}"), None).await;
        hidden(
            &h,
            other,
            "GET",
            &format!("/v1/threads/{thread}/messages"),
            None,
        )
        .await;
        hidden(
            &h,
            other,
            "POST",
            "/v1/threads",
            Some(json!({"tool_resources": {"code_interpreter": {"file_ids": [f]}}})),
        )
        .await;
        assert_eq!(
            ok(&h, other, "GET", "/v1/files", None).await["data"],
            json!([])
        );
    }
    let listed = ok(&h, &alice, "GET", "/v1/files", None).await;
    assert_eq!(listed["data"][0]["id"], f.as_str());
    h.stop().await;
}

/// Ownership settings change on reload: `allow_unmanaged_ids` turned on lets an
/// ID the gateway never issued through; turned off again, it is 404.
#[tokio::test]
async fn ownership_settings_change_on_reload() {
    let allow = |on: bool| format!("ownership:\n  allow_unmanaged_ids: {on}\n");
    let fg = FileGateway::start("", &allow(false)).await;
    let (_, key) = fg.create_key(json!({})).await;
    let get = || {
        fg.http
            .get(format!("{}/v1/files/file-made-elsewhere", fg.url))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 404);
    assert_eq!(fg.mock.request_count(), 0);
    fg.rewrite("", &allow(true));
    assert_eq!(fg.reload(MASTER).await.status(), 200);
    get().await.unwrap();
    assert_eq!(
        fg.mock.request_count(),
        1,
        "forwarded once unmanaged IDs are allowed"
    );
    fg.rewrite("", &allow(false));
    assert_eq!(fg.reload(MASTER).await.status(), 200);
    assert_eq!(get().await.unwrap().status(), 404);
    assert_eq!(fg.mock.request_count(), 1);
    fg.gw.shutdown().await.unwrap();
}

/// The families beyond files, assistants, vector stores, batches and
/// responses — uploads, conversations, fine-tuning, containers, evals, videos,
/// skills, voice consents — each created by A through the gateway: B's
/// GET/POST/DELETE on A's IDs at every depth and B's bodies naming them are
/// 404 with nothing forwarded; derived IDs (an upload's file, a job's
/// checkpoint, a run's output item, a remix) are A's; B's lists are empty;
/// what A deletes stays gone.
#[tokio::test]
async fn every_other_family_belongs_to_its_creator() {
    let h = Harness::start_with(Opts {
        allowed_endpoints: Some(format!(
            "{}, fine_tuning, containers, evals, videos, skills]",
            ALLOWED.trim_end_matches(']')
        )),
        ..Default::default()
    })
    .await;
    let (a, b) = two_keys(&h).await;
    let f = upload(&h, &a, "train.jsonl", b"{}\n", "fine-tune").await;
    let hide_all = |paths: Vec<(&'static str, String, Option<Value>)>| {
        let h = &h;
        let b = b.clone();
        async move {
            for (m, p, body) in paths {
                hidden(h, &b, m, &p, body).await;
            }
        }
    };

    // Uploads: parts and completion under an owned upload; the file it makes is A's.
    let u = id(&ok(&h, &a, "POST", "/v1/uploads", Some(json!({"filename": "big.bin", "purpose": "assistants", "bytes": 8, "mime_type": "text/plain"}))).await);
    let part = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/uploads/{u}/parts"),
        Some(json!({})),
    )
    .await);
    hide_all(vec![
        ("POST", format!("/v1/uploads/{u}/parts"), Some(json!({}))),
        (
            "POST",
            format!("/v1/uploads/{u}/complete"),
            Some(json!({"part_ids": [part]})),
        ),
        ("POST", format!("/v1/uploads/{u}/cancel"), None),
    ])
    .await;
    let done = ok(
        &h,
        &a,
        "POST",
        &format!("/v1/uploads/{u}/complete"),
        Some(json!({"part_ids": [part]})),
    )
    .await;
    let uf = done["file"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        records(&h, "file", &uf).await[0].owner,
        records(&h, "upload", &u).await[0].owner
    );
    ok(&h, &a, "GET", &format!("/v1/files/{uf}"), None).await;
    hidden(&h, &b, "GET", &format!("/v1/files/{uf}"), None).await;

    // Conversations and their items; a response naming A's conversation.
    let c = id(&ok(&h, &a, "POST", "/v1/conversations", Some(json!({}))).await);
    let items = ok(
        &h,
        &a,
        "POST",
        &format!("/v1/conversations/{c}/items"),
        Some(json!({"items": [{"type": "message", "role": "user", "content": "hi"}]})),
    )
    .await;
    let item = items["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        !records(&h, "item", &item).await.is_empty(),
        "items are registered"
    );
    hide_all(vec![
        ("GET", format!("/v1/conversations/{c}"), None),
        (
            "POST",
            format!("/v1/conversations/{c}"),
            Some(json!({"metadata": {}})),
        ),
        ("DELETE", format!("/v1/conversations/{c}"), None),
        ("GET", format!("/v1/conversations/{c}/items"), None),
        (
            "POST",
            format!("/v1/conversations/{c}/items"),
            Some(json!({"items": []})),
        ),
        ("GET", format!("/v1/conversations/{c}/items/{item}"), None),
        (
            "DELETE",
            format!("/v1/conversations/{c}/items/{item}"),
            None,
        ),
        (
            "POST",
            "/v1/responses".into(),
            Some(json!({"model": "gpt-4o-mini", "input": "hi", "conversation": c})),
        ),
    ])
    .await;

    // Fine-tuning: B may not train on A's file; A's job, checkpoints and events are A's.
    hidden(
        &h,
        &b,
        "POST",
        "/v1/fine_tuning/jobs",
        Some(json!({"model": "gpt-4o-mini", "training_file": f})),
    )
    .await;
    let j = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/fine_tuning/jobs",
        Some(json!({"model": "gpt-4o-mini", "training_file": f})),
    )
    .await);
    let ck = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/fine_tuning/jobs/{j}/checkpoints"),
        None,
    )
    .await;
    let ck = ck["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(!records(&h, "fine_tuning_checkpoint", &ck).await.is_empty());
    hide_all(vec![
        ("GET", format!("/v1/fine_tuning/jobs/{j}"), None),
        ("POST", format!("/v1/fine_tuning/jobs/{j}/cancel"), None),
        ("POST", format!("/v1/fine_tuning/jobs/{j}/pause"), None),
        ("GET", format!("/v1/fine_tuning/jobs/{j}/checkpoints"), None),
        ("GET", format!("/v1/fine_tuning/jobs/{j}/events"), None),
        (
            "GET",
            format!("/v1/fine_tuning/checkpoints/{ck}/permissions"),
            None,
        ),
    ])
    .await;

    // Containers and their files.
    let cn = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/containers",
        Some(json!({"name": "sandbox"})),
    )
    .await);
    let cf = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/containers/{cn}/files"),
        Some(json!({"file_id": f})),
    )
    .await);
    hide_all(vec![
        ("GET", format!("/v1/containers/{cn}"), None),
        ("DELETE", format!("/v1/containers/{cn}"), None),
        ("GET", format!("/v1/containers/{cn}/files"), None),
        (
            "POST",
            format!("/v1/containers/{cn}/files"),
            Some(json!({})),
        ),
        ("GET", format!("/v1/containers/{cn}/files/{cf}"), None),
        ("DELETE", format!("/v1/containers/{cn}/files/{cf}"), None),
        (
            "GET",
            format!("/v1/containers/{cn}/files/{cf}/content"),
            None,
        ),
    ])
    .await;

    // Evals, their runs and the runs' output items.
    let e = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/evals",
        Some(
            json!({"name": "e", "data_source_config": {"type": "custom"}, "testing_criteria": []}),
        ),
    )
    .await);
    let r = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/evals/{e}/runs"),
        Some(json!({"name": "r"})),
    )
    .await);
    let oi = ok(
        &h,
        &a,
        "GET",
        &format!("/v1/evals/{e}/runs/{r}/output_items"),
        None,
    )
    .await;
    let oi = oi["data"][0]["id"].as_str().unwrap().to_owned();
    hide_all(vec![
        ("GET", format!("/v1/evals/{e}"), None),
        (
            "POST",
            format!("/v1/evals/{e}"),
            Some(json!({"name": "mine"})),
        ),
        ("DELETE", format!("/v1/evals/{e}"), None),
        ("GET", format!("/v1/evals/{e}/runs"), None),
        ("POST", format!("/v1/evals/{e}/runs"), Some(json!({}))),
        ("GET", format!("/v1/evals/{e}/runs/{r}"), None),
        ("DELETE", format!("/v1/evals/{e}/runs/{r}"), None),
        ("GET", format!("/v1/evals/{e}/runs/{r}/output_items"), None),
        (
            "GET",
            format!("/v1/evals/{e}/runs/{r}/output_items/{oi}"),
            None,
        ),
    ])
    .await;
    ok(
        &h,
        &a,
        "GET",
        &format!("/v1/evals/{e}/runs/{r}/output_items/{oi}"),
        None,
    )
    .await;

    // Videos (a remix is the creator's too), skills, voice consents.
    let v = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/videos",
        Some(json!({"prompt": "a cat"})),
    )
    .await);
    let remix = id(&ok(
        &h,
        &a,
        "POST",
        &format!("/v1/videos/{v}/remix"),
        Some(json!({"prompt": "a dog"})),
    )
    .await);
    let s = id(&ok(&h, &a, "POST", "/v1/skills", Some(json!({"name": "s"}))).await);
    let consent = id(&ok(
        &h,
        &a,
        "POST",
        "/v1/audio/voice_consents",
        Some(json!({"name": "me"})),
    )
    .await);
    hide_all(vec![
        ("GET", format!("/v1/videos/{v}"), None),
        ("DELETE", format!("/v1/videos/{v}"), None),
        ("GET", format!("/v1/videos/{v}/content"), None),
        (
            "POST",
            format!("/v1/videos/{v}/remix"),
            Some(json!({"prompt": "x"})),
        ),
        ("GET", format!("/v1/videos/{remix}"), None),
        ("GET", format!("/v1/skills/{s}"), None),
        ("DELETE", format!("/v1/skills/{s}"), None),
        ("GET", format!("/v1/skills/{s}/content"), None),
        ("GET", format!("/v1/skills/{s}/versions"), None),
        ("GET", format!("/v1/audio/voice_consents/{consent}"), None),
        (
            "DELETE",
            format!("/v1/audio/voice_consents/{consent}"),
            None,
        ),
    ])
    .await;
    ok(&h, &a, "GET", &format!("/v1/videos/{remix}"), None).await;

    // Top-level lists: A sees its own, B nothing.
    for (path, mine) in [
        ("/v1/fine_tuning/jobs", &j),
        ("/v1/containers", &cn),
        ("/v1/evals", &e),
        ("/v1/skills", &s),
        ("/v1/audio/voice_consents", &consent),
    ] {
        let listed = ok(&h, &a, "GET", path, None).await;
        let ids: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![mine.as_str()], "{path}");
        assert_eq!(
            ok(&h, &b, "GET", path, None).await["data"],
            json!([]),
            "{path}"
        );
    }
    let listed = ok(&h, &a, "GET", "/v1/videos", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    // Deleted resources stay gone, for their owner too, without asking the provider.
    for path in [
        format!("/v1/conversations/{c}"),
        format!("/v1/containers/{cn}"),
        format!("/v1/evals/{e}"),
        format!("/v1/videos/{v}"),
        format!("/v1/skills/{s}"),
    ] {
        ok(&h, &a, "DELETE", &path, None).await;
        hidden(&h, &a, "GET", &path, None).await;
    }
    hidden(
        &h,
        &a,
        "GET",
        &format!("/v1/containers/{cn}/files/{cf}"),
        None,
    )
    .await;
    hidden(&h, &a, "GET", &format!("/v1/evals/{e}/runs/{r}"), None).await;
    h.stop().await;
}
