//! The optional TOML settings file (`--config`). Keys are the long flag names (`spool-dir`
//! or `spool_dir`); a value is a string, a number, a boolean (for switches such as `json`)
//! or an array (for lists such as `endpoint`). A key given as a flag or through its
//! environment variable is left out, so the precedence is flags, environment, file,
//! defaults. Unknown keys and unusable values are errors naming the file and the key.

use std::ffi::OsString;
use std::path::Path;

use clap::{ArgAction, CommandFactory, FromArgMatches};

use crate::config::AgentConfig;

/// Parses the command line with the settings file merged in (see the module docs).
pub fn parse_with_file<I, T>(args: I) -> anyhow::Result<AgentConfig>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let file = config_path(&args).or_else(|| std::env::var_os("VF_CONFIG"));
    let mut merged = args.clone();
    if let Some(path) = file {
        let from_file = file_args(Path::new(&path), &args)?;
        // After the program name, before the command line's own flags.
        merged.splice(1.min(merged.len())..1.min(merged.len()), from_file);
    }
    let matches = AgentConfig::command().try_get_matches_from(merged)?;
    Ok(AgentConfig::from_arg_matches(&matches)?)
}

/// The value of `--config` on the command line.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    None
}

/// The file's settings as flags, skipping those the command line or the environment set.
fn file_args(path: &Path, cli: &[OsString]) -> anyhow::Result<Vec<OsString>> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--config {shown}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("--config {shown}: not valid TOML: {e}"))?;
    let cmd = AgentConfig::command();
    let on_cli = |long: &str| {
        cli.iter().any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| anyhow::anyhow!("--config {shown}: unknown setting `{key}`"))?;
        let from_env = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if on_cli(&long) || from_env {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let flag = format!("--{long}");
        match value {
            toml::Value::Boolean(b) if switch => {
                if b {
                    out.push(flag.into());
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    out.push(format!("{flag}={}", scalar(&item, &shown, &key)?).into());
                }
            }
            other if !switch => {
                out.push(format!("{flag}={}", scalar(&other, &shown, &key)?).into())
            }
            _ => anyhow::bail!("--config {shown}: `{key}` is a switch: use true or false"),
        }
    }
    Ok(out)
}

fn scalar(v: &toml::Value, file: &impl std::fmt::Display, key: &str) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => anyhow::bail!("--config {file}: `{key}` must be a string, a number or a boolean"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> String {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    #[test]
    fn the_file_fills_in_what_flags_do_not_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            r#"
device-id = "cam-file"
source = "synthetic"
endpoint = ["http://pod-a:50051", "http://pod-b:50051"]
window = 3
fps = 2.5
json = true
spool_dir = "/var/lib/visionfleet/spool"
"#,
        );
        let cfg = parse_with_file(["agent", "--config", &file, "--window", "5"]).expect("parses");
        assert_eq!(cfg.device_id, "cam-file");
        assert_eq!(cfg.endpoint, ["http://pod-a:50051", "http://pod-b:50051"]);
        assert_eq!(cfg.window, 5, "the flag wins");
        assert_eq!(cfg.fps, 2.5);
        assert!(cfg.json);
        assert_eq!(
            cfg.spool_dir.as_deref(),
            Some(Path::new("/var/lib/visionfleet/spool"))
        );
    }

    #[test]
    fn unknown_keys_bad_values_and_broken_files_name_the_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = |text: &str| {
            let file = write(dir.path(), text);
            let e = parse_with_file(["agent", "--config", &file])
                .expect_err("invalid")
                .to_string();
            (file, e)
        };
        let (file, e) = err("device-id = \"c\"\nspool-size = 3\n");
        assert_eq!(e, format!("--config {file}: unknown setting `spool-size`"));
        let (file, e) = err("device-id = \"c\"\njson = \"yes\"\n");
        assert_eq!(
            e,
            format!("--config {file}: `json` is a switch: use true or false")
        );
        let (file, e) = err("device-id = \n");
        assert!(
            e.starts_with(&format!("--config {file}: not valid TOML")),
            "{e}"
        );
        let (_, e) = err("device-id = \"c\"\nwindow = \"many\"\n");
        assert!(
            e.contains("invalid value 'many' for '--window <WINDOW>'"),
            "{e}"
        );
        let e = parse_with_file(["agent", "--config", "/nonexistent/agent.toml"])
            .expect_err("missing")
            .to_string();
        assert!(e.starts_with("--config /nonexistent/agent.toml: "), "{e}");
    }
}
