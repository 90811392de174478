//! `visionfleet-edge-agent status`: what an agent's spool holds (read-only, safe while the
//! agent runs) and, when its HTTP port answers, the running agent's own report.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::http::StatusReport;
use crate::lanes::Lane;

/// `status` arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "visionfleet-edge-agent status",
    about = "What an edge agent holds and does"
)]
pub struct StatusArgs {
    /// The agent's spool folder.
    #[arg(long, env = "VF_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// The agent's local HTTP port.
    #[arg(long, env = "VF_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Print JSON instead of sentences.
    #[arg(long)]
    pub json: bool,
}

/// What `status` found.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    /// Per lane: frames waiting and bytes, read from the spool folder.
    pub spool: Vec<(String, u64, u64)>,
    /// The running agent's report, or why there is none.
    pub agent: Result<StatusReport, String>,
}

/// Gathers the status.
pub fn gather(args: &StatusArgs) -> anyhow::Result<Status> {
    let mut spool = Vec::new();
    if let Some(dir) = &args.spool_dir {
        if !dir.is_dir() {
            anyhow::bail!("--spool-dir {}: no such folder", dir.display());
        }
        for lane in Lane::ALL {
            let lane_dir = dir.join(lane.name());
            let (waiting, bytes) = if lane_dir.is_dir() {
                crate::spool::peek(&lane_dir)?
            } else {
                Default::default()
            };
            spool.push((lane.name().to_string(), waiting.len() as u64, bytes));
        }
    }
    let agent = match args.http_addr {
        Some(addr) => fetch_report(addr),
        None => Err("no --http-addr given".into()),
    };
    Ok(Status { spool, agent })
}

/// Prints the status as sentences.
pub fn print(status: &Status) {
    for (lane, frames, bytes) in &status.spool {
        println!("spool {lane}: {frames} frames waiting, {bytes} bytes");
    }
    match &status.agent {
        Ok(r) => {
            println!(
                "agent {}: uplink {} ({}), {} captured, {} acknowledged, {} resent, {} skipped as still, {} reconnects",
                r.device_id, r.uplink, r.endpoint, r.captured, r.acknowledged, r.resent, r.skipped_still, r.reconnects
            );
            for l in &r.lanes {
                println!(
                    "agent lane {}: {} frames, {} bytes, oldest {:.1} s",
                    l.lane, l.frames, l.bytes, l.oldest_age_seconds
                );
            }
        }
        Err(why) => println!("agent: not reachable: {why}"),
    }
}

/// `GET /status` over plain HTTP/1.1 (the port is local; no client library needed).
fn fetch_report(addr: SocketAddr) -> Result<StatusReport, String> {
    let timeout = Duration::from_secs(2);
    let mut conn =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = conn.set_read_timeout(Some(timeout));
    write!(
        conn,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {}", head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| format!("{addr}: unexpected /status body: {e}"))
}
