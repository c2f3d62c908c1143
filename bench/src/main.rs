//! `portcullis-bench`: the two things `bench/run` cannot do with an
//! off-the-shelf load generator.
//!
//! * `seed-keys` writes N gateway keys straight into a SQLite store (through
//!   `portcullis::store`, so the schema is the gateway's own) and a sample of
//!   the full keys to a file, before the gateway starts;
//! * `stream` measures streamed chat completions request by request: time to
//!   the response headers, to the first body byte and to the last byte;
//! * `hold` keeps N slow streams open at once (for the gateway's peak RSS).
//!
//! Every command prints one JSON object on stdout.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis::authn::keys;
use portcullis::store::ApiKeyRecord;

#[derive(Debug, Parser)]
#[command(name = "portcullis-bench", about = "Helpers for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Insert COUNT keys into the store and write SAMPLE of them to OUT.
    SeedKeys {
        /// Store URL, e.g. `sqlite:///tmp/x/keys.db`.
        #[arg(long)]
        database: String,
        /// Keys to insert.
        #[arg(long)]
        count: usize,
        /// How many of them to write to `--out` (one key a line).
        #[arg(long)]
        sample: usize,
        /// File for the sampled keys.
        #[arg(long)]
        out: PathBuf,
        /// Model globs of every key (comma-separated); absent = every model.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Endpoint groups of every key (comma-separated); absent = all.
        #[arg(long, value_delimiter = ',')]
        endpoints: Option<Vec<String>>,
    },
    /// Streamed chat completions, one after another on each of CONCURRENCY
    /// connections; per-request time to headers, first and last byte.
    Stream {
        #[command(flatten)]
        target: Target,
        /// Measured requests (after `--warmup`).
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Unmeasured requests first.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
    /// Open STREAMS streamed completions at once and read them all to the end.
    Hold {
        #[command(flatten)]
        target: Target,
        /// Streams held open at once.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

#[derive(Debug, clap::Args)]
struct Target {
    /// Full URL of the chat completions endpoint.
    #[arg(long)]
    url: String,
    /// Gateway key (sent as `Authorization: Bearer`); absent = no credential.
    #[arg(long, env = "BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Model to ask for.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
}

impl Target {
    fn request(&self) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": [{"role": "user", "content": "Tell me a short story about a portcullis."}],
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let mut req = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(k) = &self.key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        Ok(req.body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?)
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(conn)
}

/// One streamed request: µs to headers, first body byte, last byte.
#[derive(Debug, Clone, Copy)]
struct Timing {
    headers: u64,
    first: u64,
    last: u64,
}

async fn one_stream(client: &HttpClient, target: &Target) -> anyhow::Result<Timing> {
    let req = target.request()?;
    let t0 = Instant::now();
    let resp = client.request(req).await?;
    let headers = micros(t0.elapsed());
    let status = resp.status();
    let mut body = resp.into_body();
    let mut first = None;
    let mut tail = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data()
            && !data.is_empty()
        {
            if first.is_none() {
                first = Some(micros(t0.elapsed()));
            }
            tail.extend_from_slice(&data);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
    }
    let last = micros(t0.elapsed());
    if !status.is_success() {
        bail!("status {status}");
    }
    if !tail.windows(6).any(|w| w == b"[DONE]") {
        bail!("stream ended without [DONE]");
    }
    Ok(Timing {
        headers,
        first: first.unwrap_or(last),
        last,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn summary(mut v: Vec<u64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let pct = |p: f64| {
        // Nearest-rank percentile.
        let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    serde_json::json!({
        "p50_us": pct(50.0),
        "p90_us": pct(90.0),
        "p99_us": pct(99.0),
        "max_us": v[v.len() - 1],
        "mean_us": mean,
    })
}

async fn stream(
    target: Target,
    requests: usize,
    warmup: usize,
    concurrency: usize,
) -> anyhow::Result<serde_json::Value> {
    let client = client();
    let target = Arc::new(target);
    let concurrency = concurrency.max(1);
    for _ in 0..warmup {
        one_stream(&client, &target)
            .await
            .context("warm-up request failed")?;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let n = requests / concurrency + usize::from(w < requests % concurrency);
        let client = client.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::with_capacity(n);
            let mut errors = 0usize;
            let mut last_error = None;
            for _ in 0..n {
                match one_stream(&client, &target).await {
                    Ok(t) => ok.push(t),
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e.to_string());
                    }
                }
            }
            (ok, errors, last_error)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    let mut errors = 0;
    let mut last_error = None;
    for t in tasks {
        let (ok, e, le) = t.await?;
        all.extend(ok);
        errors += e;
        last_error = le.or(last_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "requests": all.len(),
        "errors": errors,
        "last_error": last_error,
        "elapsed_s": elapsed,
        "rps": all.len() as f64 / elapsed,
        "headers": summary(all.iter().map(|t| t.headers).collect()),
        "first_byte": summary(all.iter().map(|t| t.first).collect()),
        "last_byte": summary(all.iter().map(|t| t.last).collect()),
    }))
}

async fn hold(
    target: Target,
    streams: usize,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let client = client();
    let target = Arc::new(target);
    let opened = Arc::new(tokio::sync::Barrier::new(streams + 1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        let client = client.clone();
        let target = target.clone();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let req = target.request()?;
            let resp = client.request(req).await;
            opened.wait().await;
            let resp = resp?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("status {status}");
            }
            if !bytes.ends_with(b"data: [DONE]\n\n") {
                bail!("stream ended without [DONE]");
            }
            Ok::<usize, anyhow::Error>(bytes.len())
        }));
    }
    let run = async {
        opened.wait().await;
        let all_open_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Signal on stderr so the harness can sample memory while all are open.
        eprintln!("all {streams} streams have their response headers");
        let mut ok = 0usize;
        let mut errors = 0usize;
        let mut last_error = None;
        let mut results = futures_util::stream::iter(tasks).buffer_unordered(streams.max(1));
        while let Some(r) = results.next().await {
            match r {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => {
                    errors += 1;
                    last_error = Some(e.to_string());
                }
                Err(e) => {
                    errors += 1;
                    last_error = Some(e.to_string());
                }
            }
        }
        (all_open_ms, ok, errors, last_error)
    };
    let (all_open_ms, ok, errors, last_error) = tokio::time::timeout(timeout, run)
        .await
        .context("streams did not finish in time")?;
    Ok(serde_json::json!({
        "streams": streams,
        "ok": ok,
        "errors": errors,
        "last_error": last_error,
        "all_open_ms": all_open_ms,
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}

async fn seed_keys(
    database: &str,
    count: usize,
    sample: usize,
    out: &PathBuf,
    models: Option<Vec<String>>,
    endpoints: Option<Vec<String>>,
) -> anyhow::Result<serde_json::Value> {
    let store = portcullis::store::open(database)
        .await
        .with_context(|| format!("cannot open {database}"))?;
    let started = Instant::now();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let mut sampled = String::with_capacity(sample * (keys::KEY_LEN + 1));
    let mut records = Vec::with_capacity(count);
    for i in 0..count {
        let (id, key) = keys::generate();
        if i < sample {
            sampled.push_str(key.expose());
            sampled.push('\n');
        }
        records.push(ApiKeyRecord {
            id,
            digest: keys::digest(key.expose()).to_vec(),
            name: Some(format!("bench-{i}")),
            user: Some(format!("user-{}", i % 1000)),
            team: Some(format!("team-{}", i % 50)),
            models: models.clone(),
            endpoints: endpoints.clone(),
            expires_at: None,
            revoked_at: None,
            created_at: now_ms,
            metadata: serde_json::json!({}),
            rotated_from: None,
            admin_role: None,
        });
    }
    let mut inserts = futures_util::stream::iter(records.iter())
        .map(|r| store.insert_key(r))
        .buffer_unordered(8);
    while let Some(r) = inserts.next().await {
        r?;
    }
    drop(inserts);
    // As a gateway's clean shutdown leaves it: the log checkpointed into the
    // database file (else the gateway under test would start by
    // checkpointing the seeding's last writes).
    store.flush().await?;
    std::fs::write(out, sampled).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(serde_json::json!({
        "inserted": count,
        "sampled": sample.min(count),
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        match cli.command {
            Command::SeedKeys {
                database,
                count,
                sample,
                out,
                models,
                endpoints,
            } => seed_keys(&database, count, sample, &out, models, endpoints).await,
            Command::Stream {
                target,
                requests,
                warmup,
                concurrency,
            } => stream(target, requests, warmup, concurrency).await,
            Command::Hold {
                target,
                streams,
                timeout_secs,
            } => hold(target, streams, Duration::from_secs(timeout_secs)).await,
        }
    })?;
    println!("{out}");
    Ok(())
}
