//! `vfctl`: the VisionFleet command-line tool for people and scripts: detect, bench,
//! profile, models, import and tail.

mod bench;
mod detect;
mod import;
mod models;
mod profile;
mod tail;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// VisionFleet command-line tool.
#[derive(Parser)]
#[command(name = "vfctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in images; prints one JSON object per detection per line.
    Detect(detect::DetectArgs),
    /// Time a model on this machine (decode, letterbox, forward, NMS).
    Bench(bench::BenchArgs),
    /// Time each convolution of a CPU forward pass (unfold, GEMM, bias + activation).
    Profile(profile::ProfileArgs),
    /// Inspect the model store.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Print the events on the detections topic.
    Tail(tail::TailArgs),
    /// Import weights from another format into the model store.
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
}

/// Where models live; shared by every subcommand that loads one.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Model store folder (manifests and safetensors files).
    #[arg(long, env = "VF_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Detect(args) => detect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Models { command } => models::run(command),
        Command::Import { command } => import::run(command),
    }
}
