//! The edge agent binary: parse settings, stream until the source is done (or SIGINT /
//! SIGTERM), print a summary. `status` reports on a spool and a running agent.

use clap::Parser;
use visionfleet_edge_agent::status::{self, StatusArgs};
use visionfleet_edge_agent::{run, AgentConfig, Summary};
use visionfleet_process::{init_logging, shutdown_signal};

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
