//! `mock-provider`: a fake OpenAI-compatible provider (see the library docs
//! of the `mock_provider` crate for endpoints and fault models).

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A fake, fast, OpenAI-compatible LLM provider.
#[derive(Parser, Debug)]
#[command(name = "mock-provider", version, about)]
struct Cli {
    #[command(flatten)]
    args: mock_provider::MockArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    mock_provider::run(Cli::parse().args).await
}
