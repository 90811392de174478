//! The inference pod binary: parse flags, set up logging, bind, run until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use visionfleet_inference::{run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(&config.log_format);
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

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
