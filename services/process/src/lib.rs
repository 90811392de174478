//! What every VisionFleet binary (pod, agent, operator) does the same way, so that SREs
//! see one behaviour: logs on stderr filtered by `VF_LOG` as text or JSON lines, and a
//! stop on SIGTERM (Kubernetes, systemd) or Ctrl-C.

/// Logs to stderr, filtered by `VF_LOG` (default `info`); `format` is `json` (one object
/// per line, for log shippers) or anything else for text.
pub fn init_logging(format: &str) {
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

/// Completes on SIGTERM or Ctrl-C (SIGINT). Where no SIGTERM handler can be installed,
/// Ctrl-C alone.
pub async fn shutdown_signal() {
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
