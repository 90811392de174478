//! `vfctl models`: list what the model store holds.

use visionfleet_detector::ModelStore;

use crate::StoreArgs;

/// `vfctl models` subcommands.
#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// List the models in the store.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON manifests, one per line, instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `vfctl models` subcommand.
pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List { store, json } => {
            let models = ModelStore::open(&store.models_dir)?.list()?;
            if json {
                for m in &models {
                    println!("{}", serde_json::to_string(m)?);
                }
                return Ok(());
            }
            println!(
                "{:<16} {:<8} {:<6} {:>7} {:>6}  {:<10} SOURCE",
                "NAME", "FAMILY", "SCALE", "CLASSES", "INPUT", "LICENSE"
            );
            for m in &models {
                println!(
                    "{:<16} {:<8} {:<6} {:>7} {:>6}  {:<10} {}",
                    m.name,
                    m.family.to_string(),
                    format!("{:?}", m.scale).to_lowercase(),
                    m.class_names.len(),
                    m.input_size,
                    m.license,
                    m.source
                );
            }
            Ok(())
        }
    }
}
