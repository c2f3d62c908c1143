//! The remaining ID-bearing families of OpenAI's API, served from one table:
//! uploads and their parts, conversations and their items, fine-tuning jobs
//! and their checkpoints, containers and their files, evals with their runs
//! and output items, videos, skills, voice consents and voices.
//!
//! Every collection answers the same way: `POST` creates an object (the
//! request's JSON fields, an `id` with the family's prefix, `object`,
//! `created_at`, and the parent's id field), `GET` lists the objects under the
//! same parent with OpenAI's pagination, `GET/POST/DELETE …/{id}` retrieve,
//! modify and delete (a delete takes the children along), `GET …/{id}/content`
//! returns bytes, and any other `POST …/{id}/{action}` (`cancel`, `complete`,
//! `pause`, `resume`, `remix`) answers the object with a new status. Creating
//! a fine-tuning job also makes one checkpoint, and an eval run one output
//! item, so their child lists have something in them; completing an upload
//! makes a real file (`GET /v1/files/{id}` finds it).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use http::{Method, Uri};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::error::{ApiError, ApiResult};
use crate::store::{ListParams, Table, paginate};
use crate::util::{new_id, now, ok_json};

/// One collection: its path below `/v1` (`{}` stands for the parent's id).
struct Collection {
    path: &'static str,
    object: &'static str,
    prefix: &'static str,
    parent_field: Option<&'static str>,
    /// Index of a child collection that gets one object when one is created here.
    spawns: Option<usize>,
}

const fn top(path: &'static str, object: &'static str, prefix: &'static str) -> Collection {
    Collection {
        path,
        object,
        prefix,
        parent_field: None,
        spawns: None,
    }
}

const fn child(
    path: &'static str,
    object: &'static str,
    prefix: &'static str,
    parent_field: &'static str,
) -> Collection {
    Collection {
        path,
        object,
        prefix,
        parent_field: Some(parent_field),
        spawns: None,
    }
}

const COLLECTIONS: &[Collection] = &[
    top("uploads", "upload", "upload_"),
    child("uploads/{}/parts", "upload.part", "part_", "upload_id"),
    top("conversations", "conversation", "conv_"),
    // Items carry a `type`, not an `object` (as in OpenAI's API).
    child("conversations/{}/items", "", "msg_", "conversation_id"),
    Collection {
        spawns: Some(5),
        ..top("fine_tuning/jobs", "fine_tuning.job", "ftjob-")
    },
    child(
        "fine_tuning/jobs/{}/checkpoints",
        "fine_tuning.job.checkpoint",
        "ftckpt_",
        "fine_tuning_job_id",
    ),
    top("containers", "container", "cntr_"),
    child(
        "containers/{}/files",
        "container.file",
        "cfile_",
        "container_id",
    ),
    top("evals", "eval", "eval_"),
    Collection {
        spawns: Some(10),
        ..child("evals/{}/runs", "eval.run", "evalrun_", "eval_id")
    },
    child(
        "evals/{}/runs/{}/output_items",
        "eval.run.output_item",
        "outputitem_",
        "run_id",
    ),
    top("videos", "video", "video_"),
    top("skills", "skill", "skill_"),
    top("audio/voice_consents", "audio.voice_consent", "cons_"),
    top("audio/voices", "audio.voice", "voice_"),
];

/// What a path names.
enum Target<'p> {
    /// The collection under a parent.
    Collection(usize, Option<&'p str>),
    /// One object.
    Object(usize, &'p str),
    /// An action on one object (`cancel`, `content`, `remix`, ...).
    Action(usize, &'p str, &'p str),
}

/// Matches `segs` against a collection's path; returns the last parent id.
fn match_collection<'p>(c: &Collection, segs: &[&'p str]) -> Option<Option<&'p str>> {
    let tpl: Vec<&str> = c.path.split('/').collect();
    if tpl.len() != segs.len() {
        return None;
    }
    let mut parent = None;
    for (t, s) in tpl.iter().zip(segs) {
        if *t == "{}" {
            parent = Some(*s);
        } else if t != s {
            return None;
        }
    }
    Some(parent)
}

fn target<'p>(segs: &[&'p str]) -> Option<Target<'p>> {
    for (i, c) in COLLECTIONS.iter().enumerate() {
        if let Some(parent) = match_collection(c, segs) {
            return Some(Target::Collection(i, parent));
        }
    }
    for (i, c) in COLLECTIONS.iter().enumerate() {
        if let Some((id, head)) = segs.split_last()
            && match_collection(c, head).is_some()
        {
            return Some(Target::Object(i, id));
        }
    }
    for (i, c) in COLLECTIONS.iter().enumerate() {
        if segs.len() >= 2 {
            let (head, tail) = segs.split_at(segs.len() - 2);
            if match_collection(c, head).is_some() {
                return Some(Target::Action(i, tail[0], tail[1]));
            }
        }
    }
    None
}

fn table(tables: &mut HashMap<usize, Table>, i: usize) -> &mut Table {
    tables.entry(i).or_default()
}

fn no_such(c: &Collection, id: &str) -> ApiError {
    let what = if c.object.is_empty() {
        "item"
    } else {
        c.object
    };
    ApiError::not_found(format!("No such {what} object: {id}"))
}

/// Creates one object of collection `i` under `parent` from `fields`.
fn create(
    tables: &mut HashMap<usize, Table>,
    i: usize,
    parent: Option<&str>,
    fields: &Map<String, Value>,
) -> Value {
    let c = &COLLECTIONS[i];
    let id = new_id(c.prefix);
    let mut obj = fields.clone();
    obj.insert("id".into(), json!(id));
    if c.object.is_empty() {
        obj.entry("type").or_insert(json!("message"));
    } else {
        obj.insert("object".into(), json!(c.object));
    }
    obj.insert("created_at".into(), json!(now()));
    obj.entry("status").or_insert(json!("completed"));
    if let (Some(f), Some(p)) = (c.parent_field, parent) {
        obj.insert(f.into(), json!(p));
    }
    let obj = Value::Object(obj);
    table(tables, i).insert(id.clone(), parent.map(str::to_owned), obj.clone());
    if let Some(child) = c.spawns {
        create(tables, child, Some(&id), &Map::new());
    }
    obj
}

fn json_fields(body: &Bytes) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// The fallback handler: a generic family, or 404 `Invalid URL`.
pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let invalid = || ApiError::not_found(format!("Invalid URL ({method} {})", uri.path()));
    let rest = uri.path().strip_prefix("/v1/").ok_or_else(invalid)?;
    let segs: Vec<&str> = rest.split('/').collect();
    let target = target(&segs).ok_or_else(invalid)?;
    let mut store = s.store();
    let tables = &mut store.generic;
    match (target, &method) {
        (Target::Collection(i, parent), &Method::POST) => {
            let fields = json_fields(&body);
            // Conversation items come as `{"items": [...]}` and answer a list.
            if let Some(Value::Array(items)) = fields.get("items")
                && COLLECTIONS[i].parent_field.is_some()
            {
                let data: Vec<Value> = items
                    .iter()
                    .map(|it| {
                        let m = it.as_object().cloned().unwrap_or_default();
                        create(tables, i, parent, &m)
                    })
                    .collect();
                return Ok(ok_json(&json!({"object": "list", "data": data,
                    "first_id": data.first().map(|v| v["id"].clone()),
                    "last_id": data.last().map(|v| v["id"].clone()), "has_more": false})));
            }
            Ok(ok_json(&create(tables, i, parent, &fields)))
        }
        (Target::Collection(i, parent), &Method::GET) => {
            let p = ListParams::parse(&q)?;
            let items = table(tables, i)
                .sorted_values(|e| e.parent.as_deref() == parent || parent.is_none());
            Ok(ok_json(&paginate(items, &p)?))
        }
        (Target::Object(i, id), m) => {
            let c = &COLLECTIONS[i];
            let t = table(tables, i);
            match *m {
                Method::GET => Ok(ok_json(t.get(id).ok_or_else(|| no_such(c, id))?)),
                Method::POST => {
                    let obj = t.get_mut(id).ok_or_else(|| no_such(c, id))?;
                    if let Value::Object(o) = obj {
                        for (k, v) in json_fields(&body) {
                            if k != "id" && k != "object" {
                                o.insert(k, v);
                            }
                        }
                    }
                    Ok(ok_json(obj))
                }
                Method::DELETE => {
                    t.remove(id).ok_or_else(|| no_such(c, id))?;
                    for (j, other) in COLLECTIONS.iter().enumerate() {
                        if other.path.starts_with(c.path) && j != i {
                            table(tables, j).remove_children(id);
                        }
                    }
                    Ok(ok_json(
                        &json!({"id": id, "object": format!("{}.deleted", c.object), "deleted": true}),
                    ))
                }
                _ => Err(invalid()),
            }
        }
        (Target::Action(i, id, action), m) => {
            let c = &COLLECTIONS[i];
            let obj = table(tables, i)
                .get(id)
                .cloned()
                .ok_or_else(|| no_such(c, id))?;
            match (action, m) {
                ("content", &Method::GET) => {
                    drop(store);
                    Ok(Response::new(axum::body::Body::from(format!(
                        "mock content of {id}"
                    ))))
                }
                ("remix", &Method::POST) => {
                    let parent = table(tables, i).entry(id).and_then(|e| e.parent.clone());
                    let mut fields = json_fields(&body);
                    fields.insert("remixed_from_video_id".into(), json!(id));
                    Ok(ok_json(&create(tables, i, parent.as_deref(), &fields)))
                }
                ("complete", &Method::POST) if c.object == "upload" => {
                    let name = obj["filename"].as_str().unwrap_or("upload.bin").to_owned();
                    let purpose = obj["purpose"].as_str().unwrap_or("assistants").to_owned();
                    let file = crate::files::store_file(
                        &mut store,
                        &name,
                        &purpose,
                        Bytes::from_static(b"uploaded"),
                    );
                    let t = table(&mut store.generic, i);
                    let o = t.get_mut(id).ok_or_else(|| no_such(c, id))?;
                    o["status"] = json!("completed");
                    o["file"] = file;
                    Ok(ok_json(o))
                }
                (_, &Method::POST) => {
                    let t = table(tables, i);
                    let o = t.get_mut(id).ok_or_else(|| no_such(c, id))?;
                    o["status"] = json!(match action {
                        "cancel" => "cancelled",
                        "pause" => "paused",
                        "resume" => "running",
                        _ => "completed",
                    });
                    Ok(ok_json(o))
                }
                _ => Err(invalid()),
            }
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_collections_objects_and_actions() {
        assert!(matches!(
            target(&["evals", "e1", "runs"]),
            Some(Target::Collection(9, Some("e1")))
        ));
        assert!(matches!(
            target(&["evals", "e1", "runs", "r1"]),
            Some(Target::Object(9, "r1"))
        ));
        assert!(matches!(
            target(&["evals", "e1", "runs", "r1", "output_items"]),
            Some(Target::Collection(10, Some("r1")))
        ));
        assert!(matches!(
            target(&["uploads", "u1", "complete"]),
            Some(Target::Action(0, "u1", "complete"))
        ));
        assert!(matches!(
            target(&["uploads", "u1", "parts"]),
            Some(Target::Collection(1, Some("u1")))
        ));
        assert!(target(&["nothing"]).is_none());
    }
}
