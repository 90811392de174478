//! `visionfleet-loadtest`: load experiments against a running inference pod.

mod agent_bench;
mod device;
mod events;
mod fleet;
mod images;
mod plot;
mod report;
mod serving;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "visionfleet-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serving overhead and overload: raw detector vs pod throughput, latency at 70% and
    /// 300% of saturation, shed rate and peak server memory.
    Serving(serving::ServingArgs),
    /// A fleet of virtual edge devices streaming real JPEGs through `StreamFrames`, with
    /// an independent Kafka consumer accounting for every frame by event id.
    Fleet(fleet::FleetArgs),
    /// The edge agent's own cost: RSS and CPU at 10 fps and at its maximum rate with
    /// 1080p JPEG input, against an acknowledging sink.
    Agent(agent_bench::AgentBenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serving(args) => serving::run(args).await,
        Command::Fleet(args) => fleet::run(args).await,
        Command::Agent(args) => agent_bench::run(args).await,
    }
}
