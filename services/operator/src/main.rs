//! The operator binary: `visionfleet-operator crd` prints the CRD; otherwise parse flags,
//! set up logging, connect to the API server, bind, run until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use visionfleet_operator::{crd_yaml, run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).is_some_and(|a| a == "crd") {
        print!("{}", crd_yaml()?);
        return Ok(());
    }
    let config = Config::parse();
    init_tracing(&config.log_format);
    config.validate().map_err(anyhow::Error::msg)?;
    // rustls needs a process-wide crypto provider; kube is built with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", config.http_addr))?;
    tracing::info!(http = %http.local_addr()?, "listening");
    run(config, client, http, shutdown_signal()).await?;
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

/// SIGINT or SIGTERM (Kubernetes stops pods with the latter).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}
