//! The edge agent binary: parse settings, stream until the source is done (or SIGINT /
//! SIGTERM), print a summary. `status` reports on a spool and a running agent.

use clap::Parser;
use visionfleet_edge_agent::status::{self, StatusArgs};
use visionfleet_edge_agent::{run, AgentConfig, Summary};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "status") {
        args.remove(1);
        init_logging("text");
        let args = StatusArgs::parse_from(args);
        let found = status::gather(&args)?;
        if args.json {
            println!("{}", serde_json::to_string(&found)?);
        } else {
            status::print(&found);
        }
        return Ok(());
    }
    let config = match AgentConfig::load(args) {
        Ok(c) => c,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => return Err(e),
        },
    };
    init_logging(&config.log_format);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let json = config.json;
    let device = config.device_id.clone();
    let summary = run(config, stop).await?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&device, &summary);
    }
    Ok(())
}

/// Logs to stderr, filtered by `VF_LOG` (default `info`), as text or JSON lines.
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// SIGINT or SIGTERM (Kubernetes and systemd stop with the latter).
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

fn print_summary(device: &str, summary: &Summary) {
    println!(
        "agent {device}: {} frames captured, {} sent ({} resent), {} acknowledged, {} rejected, {} reconnects",
        summary.captured,
        summary.sent,
        summary.resent,
        summary.acknowledged,
        summary.rejected,
        summary.reconnects
    );
    if summary.skipped_still + summary.skipped_undecodable > 0 {
        println!(
            "capture: {} frames skipped as still (motion gating), {} undecodable",
            summary.skipped_still, summary.skipped_undecodable
        );
    }
    if let Some(s) = &summary.spool {
        println!(
            "spool: {} stored, {} acknowledged, {} dropped (oldest), {} dropped (newest), {} expired, {} bytes of torn tail cut",
            s.appended, s.acknowledged, s.dropped_oldest, s.dropped_newest, s.expired, s.truncated_bytes
        );
    }
    if let Some(l) = &summary.lanes {
        for (lane, c) in [("urgent", &l.urgent), ("routine", &l.routine)] {
            println!(
                "lane {lane}: {} stored, {} acknowledged, {} dropped",
                c.appended,
                c.acknowledged,
                c.dropped_oldest + c.dropped_newest + c.expired
            );
        }
    }
}
