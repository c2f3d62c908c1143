//! The `portcullis` binary: serve, quickstart, check-config, keys, mock-provider.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis::cli::{AdminClientArgs, KeysCommand, run_keys};
use portcullis::config::{Config, LogConfig, LogFormat};
use portcullis::server;

/// mimalloc instead of glibc's malloc: a request allocates a few dozen small,
/// short-lived blocks (header maps, read buffers, futures, ledger strings), and
/// glibc's allocator was a fifth of the gateway's user-space instructions under
/// load (BENCHMARKS.md). The library leaves the choice to the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An auth-first gateway in front of LLM provider APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file (else $PORTCULLIS_CONFIG, else ./portcullis.yaml, else defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Override `database`.
        #[arg(long)]
        database: Option<String>,
        /// Development only: every request is anonymous (also `auth.disabled`, PORTCULLIS_DISABLE_AUTH=true).
        #[arg(long)]
        disable_auth: bool,
        /// Allow `--disable-auth` on a non-loopback address.
        #[arg(long)]
        allow_insecure_public: bool,
    },
    /// Start a mock provider and the gateway on a throw-away store, with a ready key.
    Quickstart {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate a configuration file.
    CheckConfig {
        /// Configuration file (else $PORTCULLIS_CONFIG, else ./portcullis.yaml, else defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage gateway keys through the admin API.
    Keys {
        #[command(flatten)]
        client: AdminClientArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Explain what the gateway would decide for a subject, model and request.
    Explain {
        #[command(flatten)]
        client: AdminClientArgs,
        #[command(flatten)]
        args: portcullis::cli::ExplainArgs,
    },
    /// Usage and cost from the ledger (or, with --budgets, budget spend) through the admin API.
    Usage {
        #[command(flatten)]
        client: AdminClientArgs,
        #[command(flatten)]
        args: portcullis::cli::UsageArgs,
    },
    /// Re-read the configuration file and apply the new access rules.
    Reload {
        #[command(flatten)]
        client: AdminClientArgs,
    },
    /// Run the fake OpenAI-compatible provider.
    MockProvider(mock_provider::MockArgs),
}

fn init_logging(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal (and never with NO_COLOR): log files, pipes
    // and journald must not receive escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match worker_threads() {
        Ok(n) => n.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread: Tokio's current-thread scheduler. Its one run queue is
    // FIFO; the multi-thread scheduler with one worker moves what overflows
    // its 256-task local queue to a global queue it takes one task from every
    // few dozen polls, so under hundreds of connections some waited many
    // times longer than others (c=256: p99 52 ms against 14 ms here), and it
    // served 10-17% fewer requests per second (BENCHMARKS.md).
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all();
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `$PORTCULLIS_WORKER_THREADS`: the runtime's worker threads. Unset or empty:
/// one per CPU this process may run on (Tokio's default).
fn worker_threads() -> Result<Option<usize>, String> {
    let Some(raw) = std::env::var_os("PORTCULLIS_WORKER_THREADS") else {
        return Ok(None);
    };
    let v = raw.to_string_lossy();
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!(
            "PORTCULLIS_WORKER_THREADS must be a positive integer, got {v:?}"
        )),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            database,
            disable_auth,
            allow_insecure_public,
        } => {
            let mut cfg = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = database {
                cfg.database = d;
            }
            cfg.auth.disabled |= disable_auth;
            if let Err(e) = cfg.check_insecure_listen(allow_insecure_public) {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
            init_logging(&cfg.log);
            serve(cfg).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quickstart { listen } => {
            quickstart(listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                let from = match &c.source {
                    portcullis::config::ConfigSource::File(p) => p.display().to_string(),
                    portcullis::config::ConfigSource::Defaults => {
                        "built-in defaults and the environment".into()
                    }
                };
                println!(
                    "configuration is valid ({from}): {} provider(s), listen {}",
                    c.providers.len(),
                    c.listen
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Keys { client, command } => {
            let out = run_keys(&client, &command).await?;
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { client, args } => {
            print!("{}", portcullis::cli::run_explain(&client, &args).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage { client, args } => {
            print!("{}", portcullis::cli::run_usage(&client, &args).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload { client } => {
            print!("{}", portcullis::cli::run_reload(&client).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::MockProvider(args) => {
            init_logging(&LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
            });
            mock_provider::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = server::bind_admin(&cfg).await?;
    let admin_addr = admin_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let mut gateway = server::build(cfg, None).await?;
    if let Some(key) = gateway.generated_master_key.take() {
        eprintln!(
            "\n  No master key was configured, so one was generated. It is shown this once;\n  only its digest is stored. Use it for the admin API (PORTCULLIS_ADMIN_KEY):\n\n    {}\n",
            key.expose()
        );
    }
    let scheme = if gateway.state.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let runtime = tokio::runtime::Handle::current();
    let scheduler = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    tracing::info!(%addr, providers = gateway.state.config.providers.len(), scheduler, workers = runtime.metrics().num_workers(), "portcullis listening on {scheme}://{addr}");
    if let Some(a) = admin_addr {
        tracing::info!(addr = %a, "admin API listening on {scheme}://{a} (and not on the main address)");
    }
    server::serve(listener, admin_listener, gateway, server::shutdown_signal()).await
}

async fn quickstart(listen: SocketAddr) -> anyhow::Result<()> {
    init_logging(&LogConfig {
        level: "warn".into(),
        format: LogFormat::Text,
    });
    let dir = tempfile::tempdir()?;
    let mock = mock_provider::MockProvider::start(
        "127.0.0.1:0".parse()?,
        mock_provider::MockOptions {
            record: false,
            ..Default::default()
        },
    )
    .await?;
    let yaml = format!(
        "listen: {listen}\ndatabase: sqlite://{db}\nproviders:\n  - name: openai\n    kind: openai\n    base_url: {base}\n    api_key: sk-mock-quickstart-provider-key\n    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]\n",
        db = dir.path().join("portcullis.db").display(),
        base = mock.base_url(),
    );
    let path = dir.path().join("portcullis.yaml");
    std::fs::write(&path, &yaml)?;
    let env = |k: &str| {
        std::env::var(k)
            .ok()
            .filter(|_| k != "PORTCULLIS_MASTER_KEY")
    };
    let cfg = Config::from_yaml(&yaml, &env, portcullis::config::ConfigSource::File(path))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let running = server::spawn(cfg, None).await.map_err(|e| {
        anyhow::anyhow!("cannot start the gateway on {listen}: {e} (try --listen 127.0.0.1:0)")
    })?;
    let master = running
        .generated_master_key
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no master key was generated"))?;
    let url = running.url();
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/admin/keys"))
        .bearer_auth(master.expose())
        .json(&serde_json::json!({"name": "quickstart", "user": "you"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = created["key"].as_str().unwrap_or_default();
    println!(
        r#"
Portcullis quickstart: a gateway in front of a mock OpenAI provider, on a throw-away store.

  gateway     {url}
  provider    {mock_url} (mock; replies are canned, usage is real)
  master key  {master}   (admin API: PORTCULLIS_ADMIN_KEY)
  client key  {key}

Try it:

curl {url}/v1/chat/completions \
  -H "Authorization: Bearer {key}" \
  -H "Content-Type: application/json" \
  -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

python3 - <<'PY'
from openai import OpenAI  # pip install openai
client = OpenAI(base_url="{url}/v1", api_key="{key}")
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content, reply.usage)
PY

PORTCULLIS_URL={url} PORTCULLIS_ADMIN_KEY={master} portcullis keys list

Press Ctrl-C to stop (the store is deleted).
"#,
        mock_url = mock.base_url(),
        master = master.expose(),
    );
    server::shutdown_signal().await;
    running.shutdown().await?;
    mock.shutdown().await;
    drop(dir);
    Ok(())
}
