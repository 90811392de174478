//! The inference pod binary: parse flags, set up logging, bind, run until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use visionfleet_inference::{run, Config};
use visionfleet_process::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(&config.log_format);
    config.validate()?;
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", config.http_addr))?;
    tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, "listening");
    run(config, grpc, http, shutdown_signal()).await?;
    Ok(())
}
