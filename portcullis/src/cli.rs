//! `portcullis keys ...`: a thin client of the admin API. Every command returns
//! the text to print, so the binary's `main` does the only printing.

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the admin API is and how to open it.
#[derive(Debug, Args, Clone)]
pub struct AdminClientArgs {
    /// Gateway URL.
    #[arg(
        long,
        env = "PORTCULLIS_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The master key (prefer the environment variable: flags show up in `ps`).
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_KEY",
        hide_env_values = true,
        global = true
    )]
    pub admin_key: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Attributes shared by `create` and `update`.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyAttrs {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// User the key acts for.
    #[arg(long)]
    pub user: Option<String>,
    /// Team.
    #[arg(long)]
    pub team: Option<String>,
    /// Comma-separated model globs (`gpt-4o*,openai/*`).
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Comma-separated endpoint groups (`chat,embeddings`).
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Option<Vec<String>>,
    /// Expiry: RFC 3339 time or Unix seconds.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata as a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Make it an admin key with this role (`admin`, `team_admin`, `viewer`);
    /// it then opens the admin API and never calls models.
    #[arg(long, value_parser = ["admin", "team_admin", "viewer"])]
    pub admin_role: Option<String>,
}

/// `portcullis keys ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum KeysCommand {
    /// Create a key; its secret is shown once.
    Create(KeyAttrs),
    /// List keys.
    List {
        /// Keys per page.
        #[arg(long)]
        limit: Option<usize>,
        /// Start after this id.
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one key.
    Show {
        /// Key id.
        id: String,
    },
    /// Change a key's attributes.
    Update {
        /// Key id.
        id: String,
        #[command(flatten)]
        attrs: KeyAttrs,
        /// Remove the expiry.
        #[arg(long, conflicts_with = "expires_at")]
        no_expiry: bool,
        /// Remove the model restriction.
        #[arg(long, conflicts_with = "models")]
        all_models: bool,
        /// Remove the endpoint restriction.
        #[arg(long, conflicts_with = "endpoints")]
        all_endpoints: bool,
        /// Make an admin key a client key again.
        #[arg(long, conflicts_with = "admin_role")]
        no_admin_role: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// Key id.
        id: String,
    },
    /// Issue a replacement key; the old one keeps working for the grace period.
    Rotate {
        /// Key id.
        id: String,
        /// Seconds the old key stays valid.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
}

fn attrs_json(a: &KeyAttrs) -> anyhow::Result<Value> {
    let mut body = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.to_owned(), v);
        }
    };
    put("name", a.name.clone().map(Value::from));
    put("user", a.user.clone().map(Value::from));
    put("team", a.team.clone().map(Value::from));
    put("models", a.models.clone().map(|m| json!(m)));
    put("endpoints", a.endpoints.clone().map(|m| json!(m)));
    put("expires_at", a.expires_at.clone().map(Value::from));
    put("admin_role", a.admin_role.clone().map(Value::from));
    if let Some(m) = &a.metadata {
        let v: Value =
            serde_json::from_str(m).map_err(|e| anyhow::anyhow!("--metadata is not JSON: {e}"))?;
        body.insert("metadata".into(), v);
    }
    Ok(Value::Object(body))
}

/// Runs one `keys` command and returns what to print.
pub async fn run_keys(client: &AdminClientArgs, cmd: &KeysCommand) -> anyhow::Result<String> {
    let (method, path, body) = match cmd {
        KeysCommand::Create(a) => (
            reqwest::Method::POST,
            "/admin/keys".to_owned(),
            Some(attrs_json(a)?),
        ),
        KeysCommand::List { limit, after } => {
            let mut q = Vec::new();
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            if let Some(a) = after {
                q.push(format!("after={a}"));
            }
            let qs = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            (reqwest::Method::GET, format!("/admin/keys{qs}"), None)
        }
        KeysCommand::Show { id } => (reqwest::Method::GET, format!("/admin/keys/{id}"), None),
        KeysCommand::Update {
            id,
            attrs,
            no_expiry,
            all_models,
            all_endpoints,
            no_admin_role,
        } => {
            let mut body = attrs_json(attrs)?;
            if *no_expiry {
                body["expires_at"] = Value::Null;
            }
            if *all_models {
                body["models"] = Value::Null;
            }
            if *all_endpoints {
                body["endpoints"] = Value::Null;
            }
            if *no_admin_role {
                body["admin_role"] = Value::Null;
            }
            (
                reqwest::Method::PATCH,
                format!("/admin/keys/{id}"),
                Some(body),
            )
        }
        KeysCommand::Revoke { id } => (reqwest::Method::DELETE, format!("/admin/keys/{id}"), None),
        KeysCommand::Rotate { id, grace_seconds } => (
            reqwest::Method::POST,
            format!("/admin/keys/{id}/rotate"),
            Some(json!({"grace_seconds": grace_seconds})),
        ),
    };
    let value = admin_call(client, method, &path, body).await?;
    if client.json {
        return Ok(serde_json::to_string_pretty(&value)?);
    }
    Ok(match cmd {
        KeysCommand::List { .. } => {
            let rows = value["data"].as_array().cloned().unwrap_or_default();
            let mut out = table(&rows);
            if value["has_more"].as_bool() == Some(true)
                && let Some(last) = rows.last().and_then(|r| r["id"].as_str())
            {
                out.push_str(&format!("\nmore keys follow: --after {last}\n"));
            }
            out
        }
        KeysCommand::Create(_) | KeysCommand::Rotate { .. } => {
            let secret = value["key"].as_str().unwrap_or("");
            format!(
                "{}\nkey: {secret}\nThis is the only time the key is shown. Store it now.\n",
                table(std::slice::from_ref(&value))
            )
        }
        _ => table(std::slice::from_ref(&value)),
    })
}

/// One admin API call: the JSON answer, or an error carrying the gateway's message.
async fn admin_call(
    client: &AdminClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let base = client.url.trim_end_matches('/');
    let key = client.admin_key.as_deref().ok_or_else(|| {
        anyhow::anyhow!("set PORTCULLIS_ADMIN_KEY (or --admin-key) to the master key")
    })?;
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    let status = resp.status();
    let value: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = value["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        anyhow::bail!("{} {msg}", status.as_u16());
    }
    Ok(value)
}

/// `portcullis explain`.
#[derive(Debug, Args, Clone)]
pub struct ExplainArgs {
    /// Subject pattern (repeatable): `user:supabase:8f1c`, `team:mobile`, `role:pro`, `issuer:supabase`, `key:<id>`.
    #[arg(long = "subject")]
    pub subjects: Vec<String>,
    /// Use a real gateway key's identity and lists instead.
    #[arg(long, conflicts_with = "subjects")]
    pub key: Option<String>,
    /// The model the request names.
    #[arg(long)]
    pub model: Option<String>,
    /// Request line, e.g. 'POST /v1/chat/completions'.
    #[arg(long)]
    pub request: String,
}

/// Runs `portcullis explain` and returns what to print.
pub async fn run_explain(client: &AdminClientArgs, args: &ExplainArgs) -> anyhow::Result<String> {
    let body = json!({"subjects": args.subjects, "key_id": args.key, "model": args.model, "request": args.request});
    let v = admin_call(client, reqwest::Method::POST, "/admin/explain", Some(body)).await?;
    if client.json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let mut out = format!(
        "decision: {} (status {}{})\n",
        v["decision"].as_str().unwrap_or("?"),
        v["status"],
        v["code"]
            .as_str()
            .map(|c| format!(", {c}"))
            .unwrap_or_default()
    );
    if let Some(r) = v["rule"].as_str() {
        out.push_str(&format!("rule:     {r}\n"));
    }
    for s in v["stages"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<19} {:<8} {}\n",
            s["stage"].as_str().unwrap_or(""),
            s["result"].as_str().unwrap_or(""),
            s["detail"].as_str().unwrap_or("")
        ));
    }
    Ok(out)
}

/// Runs `portcullis reload` and returns what to print.
pub async fn run_reload(client: &AdminClientArgs) -> anyhow::Result<String> {
    let v = admin_call(client, reqwest::Method::POST, "/admin/reload", None).await?;
    if client.json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let restart: Vec<&str> = v["restart_needed_for"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Ok(format!(
        "reloaded: {} rule(s) in force{}\n",
        v["rules"],
        if restart.is_empty() {
            String::new()
        } else {
            format!("; restart needed for: {}", restart.join(", "))
        }
    ))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A plain-text table of keys.
pub fn table(rows: &[Value]) -> String {
    table_of(KEY_COLUMNS, rows)
}

const KEY_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("USER", "user"),
    ("TEAM", "team"),
    ("STATUS", "status"),
    ("ROLE", "admin_role"),
    ("MODELS", "models"),
    ("ENDPOINTS", "endpoints"),
    ("EXPIRES", "expires_at"),
    ("CREATED", "created_at"),
];

/// A plain-text table of `rows` with `(heading, field)` columns.
pub fn table_of(cols: &[(&str, &str)], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, k)| cell(&r[*k])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let mut out = String::new();
    let line = |vals: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(cols.iter().map(|(h, _)| *h).collect(), &mut out);
    for r in &cells {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// `portcullis usage`.
#[derive(Debug, Args, Clone)]
pub struct UsageArgs {
    /// Group by key, user, team, model, provider, endpoint or day (UTC).
    #[arg(long, default_value = "key")]
    pub group_by: String,
    /// From this time (RFC 3339 or Unix seconds), inclusive.
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time (RFC 3339 or Unix seconds), exclusive.
    #[arg(long)]
    pub until: Option<String>,
    /// Show each budget's spend, remaining amount and period end instead.
    #[arg(long)]
    pub budgets: bool,
}

/// Runs `portcullis usage` and returns what to print.
pub async fn run_usage(client: &AdminClientArgs, args: &UsageArgs) -> anyhow::Result<String> {
    if args.budgets {
        let v = admin_call(client, reqwest::Method::GET, "/admin/budgets", None).await?;
        if client.json {
            return Ok(serde_json::to_string_pretty(&v)?);
        }
        let rows = v["data"].as_array().cloned().unwrap_or_default();
        return Ok(table_of(
            &[
                ("BUDGET", "budget"),
                ("SUBJECT", "subject"),
                ("PERIOD", "period"),
                ("BUDGET_USD", "budget_usd"),
                ("SPENT_USD", "spent_usd"),
                ("REMAINING_USD", "remaining_usd"),
                ("PERIOD_END", "period_end"),
            ],
            &rows,
        ));
    }
    let mut query = vec![("group_by", args.group_by.as_str())];
    if let Some(s) = &args.since {
        query.push(("since", s));
    }
    if let Some(u) = &args.until {
        query.push(("until", u));
    }
    let q = serde_urlencoded::to_string(&query)?;
    let v = admin_call(
        client,
        reqwest::Method::GET,
        &format!("/admin/usage?{q}"),
        None,
    )
    .await?;
    if client.json {
        return Ok(serde_json::to_string_pretty(&v)?);
    }
    let rows = v["data"].as_array().cloned().unwrap_or_default();
    Ok(table_of(
        &[
            ("GROUP", "group"),
            ("REQUESTS", "requests"),
            ("PROMPT_TOKENS", "prompt_tokens"),
            ("COMPLETION_TOKENS", "completion_tokens"),
            ("ERRORS", "errors"),
            ("COST_USD", "cost_usd"),
        ],
        &rows,
    ))
}
