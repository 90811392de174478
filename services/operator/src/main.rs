//! The operator binary: `visionfleet-operator crd` prints the CRD; otherwise parse flags,
//! set up logging, connect to the API server, bind, run until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use visionfleet_operator::{crd_yaml, run, Config};
use visionfleet_process::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).is_some_and(|a| a == "crd") {
        print!("{}", crd_yaml()?);
        return Ok(());
    }
    let config = Config::parse();
    init_logging(&config.log_format);
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
