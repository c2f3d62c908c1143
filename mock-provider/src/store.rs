//! The in-memory object store of the stateful endpoints, and list
//! pagination.
//!
//! Objects are kept as JSON values: the mock mostly echoes what it was given,
//! and modify requests merge fields into the stored object.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// A stored object.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    seq: u64,
    created_at: u64,
    /// Owning object (thread of a message, vector store of a file, …).
    pub parent: Option<String>,
    pub obj: Value,
}

/// Objects of one kind by key.
#[derive(Debug, Default)]
pub(crate) struct Table {
    next_seq: u64,
    map: HashMap<String, Entry>,
}

impl Table {
    pub fn insert(&mut self, key: String, parent: Option<String>, obj: Value) {
        let created_at = obj
            .get("created_at")
            .or_else(|| obj.get("created"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        self.next_seq += 1;
        self.map.insert(
            key,
            Entry {
                seq: self.next_seq,
                created_at,
                parent,
                obj,
            },
        );
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).map(|e| &e.obj)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.map.get_mut(key).map(|e| &mut e.obj)
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        self.map.remove(key)
    }

    /// Drops every entry whose parent is `parent`.
    pub fn remove_children(&mut self, parent: &str) {
        self.map.retain(|_, e| e.parent.as_deref() != Some(parent));
    }

    /// The entries accepted by `keep`, oldest first.
    pub fn sorted(&self, keep: impl Fn(&Entry) -> bool) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.map.values().filter(|e| keep(e)).collect();
        v.sort_by_key(|e| (e.created_at, e.seq));
        v
    }

    /// Like [`Table::sorted`], cloning the objects.
    pub fn sorted_values(&self, keep: impl Fn(&Entry) -> bool) -> Vec<Value> {
        self.sorted(keep)
            .into_iter()
            .map(|e| e.obj.clone())
            .collect()
    }
}

/// Everything the stateful endpoints keep.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub files: Table,
    pub file_content: HashMap<String, Bytes>,
    pub assistants: Table,
    pub threads: Table,
    /// Parent: thread id.
    pub messages: Table,
    /// Parent: thread id.
    pub runs: Table,
    /// Parent: run id.
    pub steps: Table,
    pub vector_stores: Table,
    /// Key `vs_id/file_id`, parent: vector store id.
    pub vs_files: Table,
    /// Parent: vector store id.
    pub file_batches: Table,
    /// File ids of each file batch.
    pub batch_files: HashMap<String, Vec<String>>,
    pub batches: Table,
    pub responses: Table,
    /// Input items of each response, in order.
    pub response_inputs: HashMap<String, Vec<Value>>,
    /// The families of [`crate::generic`], by collection index.
    pub generic: HashMap<usize, Table>,
}

/// `limit` / `order` / `after` / `before`.
#[derive(Debug, Clone)]
pub(crate) struct ListParams {
    pub limit: usize,
    pub desc: bool,
    pub after: Option<String>,
    pub before: Option<String>,
}

impl ListParams {
    /// Parses the query (default order `desc`, default limit 20, max 100).
    pub fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let limit = match q.get("limit").map(|s| s.trim()) {
            None | Some("") => 20,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid 'limit': expected an integer, but got '{s}' instead."
                    ))
                    .param("limit")
                    .code("integer_parsing")
                })?
                .clamp(1, 100),
        };
        let desc = match q.get("order").map(String::as_str) {
            None | Some("") | Some("desc") => true,
            Some("asc") => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value: '{other}'. Supported values are: 'asc' and 'desc'."
                ))
                .param("order")
                .code("invalid_value"));
            }
        };
        let nonempty = |k: &str| q.get(k).filter(|s| !s.is_empty()).cloned();
        Ok(Self {
            limit: usize::try_from(limit).unwrap_or(20),
            desc,
            after: nonempty("after"),
            before: nonempty("before"),
        })
    }
}

/// Builds a list page from objects sorted oldest first.
pub(crate) fn paginate(mut items: Vec<Value>, p: &ListParams) -> Result<Value, ApiError> {
    if p.desc {
        items.reverse();
    }
    let find = |items: &[Value], id: &str, param: &str| {
        items
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(id))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid '{param}': no object with id '{id}' in this list."
                ))
                .param(param)
            })
    };
    let start = match &p.after {
        Some(a) => find(&items, a, "after")? + 1,
        None => 0,
    };
    let end = match &p.before {
        Some(b) => find(&items, b, "before")?,
        None => items.len(),
    };
    let window: Vec<Value> = if start < end {
        items.drain(start..end).collect()
    } else {
        Vec::new()
    };
    let has_more = window.len() > p.limit;
    let data: Vec<Value> = if p.before.is_some() && p.after.is_none() {
        // Closest to the cursor.
        let skip = window.len().saturating_sub(p.limit);
        window.into_iter().skip(skip).collect()
    } else {
        window.into_iter().take(p.limit).collect()
    };
    let id = |v: Option<&Value>| v.and_then(|v| v.get("id")).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "object": "list",
        "data": data,
        "first_id": id(data.first()),
        "last_id": id(data.last()),
        "has_more": has_more,
    }))
}

/// Copies the listed `keys` present in `body` into `obj` (modify requests).
pub(crate) fn merge_fields(obj: &mut Value, body: &Map<String, Value>, keys: &[&str]) {
    if let Value::Object(o) = obj {
        for k in keys {
            if let Some(v) = body.get(*k) {
                // `metadata: null` resets to `{}` like OpenAI.
                let v = if v.is_null() && (*k == "metadata" || *k == "tool_resources") {
                    json!({})
                } else {
                    v.clone()
                };
                o.insert((*k).to_owned(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> ListParams {
        let q = q
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ListParams::parse(&q).unwrap()
    }

    fn ids(v: &Value) -> Vec<&str> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pages() {
        let items: Vec<Value> = (1..=5).map(|i| json!({"id": format!("x{i}")})).collect();
        let p = paginate(items.clone(), &params(&[("limit", "2")])).unwrap();
        assert_eq!(ids(&p), ["x5", "x4"]);
        assert_eq!(p["has_more"], true);
        let p = paginate(items.clone(), &params(&[("limit", "2"), ("after", "x4")])).unwrap();
        assert_eq!(ids(&p), ["x3", "x2"]);
        assert_eq!(p["has_more"], true);
        let p = paginate(
            items.clone(),
            &params(&[("limit", "2"), ("after", "x2"), ("order", "desc")]),
        )
        .unwrap();
        assert_eq!(ids(&p), ["x1"]);
        assert_eq!(p["has_more"], false);
        let p = paginate(
            items.clone(),
            &params(&[("order", "asc"), ("before", "x4")]),
        )
        .unwrap();
        assert_eq!(ids(&p), ["x1", "x2", "x3"]);
        let p = paginate(
            items.clone(),
            &params(&[("order", "asc"), ("before", "x4"), ("limit", "1")]),
        )
        .unwrap();
        assert_eq!(ids(&p), ["x3"]);
        assert_eq!(p["first_id"], "x3");
        assert!(paginate(items, &params(&[("after", "nope")])).is_err());
        let p = paginate(Vec::new(), &params(&[])).unwrap();
        assert_eq!(p["first_id"], Value::Null);
    }
}
