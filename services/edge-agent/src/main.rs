//! The edge agent binary: parse flags, stream until the source is done, print a summary.

use clap::Parser;
use visionfleet_edge_agent::{run, AgentConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = AgentConfig::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if config.device_id.is_empty() {
        anyhow::bail!("--device-id must not be empty");
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let json = config.json;
    let device = config.device_id.clone();
    let summary = run(config, stop).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "agent {device}: {} frames captured, {} sent ({} resent), {} acknowledged, {} rejected, {} reconnects",
            summary.captured,
            summary.sent,
            summary.resent,
            summary.acknowledged,
            summary.rejected,
            summary.reconnects
        );
        if let Some(s) = &summary.spool {
            println!(
                "spool: {} stored, {} acknowledged, {} dropped (oldest), {} dropped (newest), {} expired, {} bytes of torn tail cut",
                s.appended, s.acknowledged, s.dropped_oldest, s.dropped_newest, s.expired, s.truncated_bytes
            );
        }
    }
    Ok(())
}
