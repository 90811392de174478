//! `visionfleet-loadtest agent`: what the edge agent costs on its box. The real agent
//! binary streams 1080p JPEG photos from a folder (as a camera hands them over, already
//! encoded), with its disk spool on (every frame synced before it is sent), to an
//! acknowledging sink in this process; the sink answers each frame at once, so what is
//! measured is the agent alone, not the pod. Two phases, each after a warm-up: 10 fps, and
//! as fast as the agent goes. CPU time comes from `/proc/<pid>/stat` (user + system), RSS
//! from `/proc/<pid>/status` sampled every 100 ms (and the kernel's high-water mark).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::Stream;
use image::imageops::FilterType;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use visionfleet_proto::v1::ingest_server::{Ingest, IngestServer};
use visionfleet_proto::v1::{AckStatus, DetectResponse, Frame, FrameAck};

/// Arguments of the agent benchmark.
#[derive(Debug, clap::Args)]
pub struct AgentBenchArgs {
    /// The agent binary to measure (a release build).
    #[arg(long)]
    pub agent: PathBuf,
    /// Photos to make the 1080p frames from.
    #[arg(long, default_value = "models/samples")]
    pub samples: PathBuf,
    /// Scratch folder (frames, spool, report).
    #[arg(long, default_value = ".state/bench-agent")]
    pub work_dir: PathBuf,
    /// Seconds measured per phase (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Frame rate of the paced phase.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
}

/// Acknowledges every frame as published at once, counting them.
#[derive(Clone, Default)]
struct AckSink {
    acked: Arc<AtomicU64>,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<FrameAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for AckSink {
    type StreamFramesStream = AckStream;

    async fn stream_frames(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<AckStream>, Status> {
        let acked = self.acked.clone();
        let acks = request.into_inner().map(move |frame| {
            let f = frame?;
            acked.fetch_add(1, Ordering::Relaxed);
            Ok(FrameAck {
                event_id: format!("{}/{}", f.device_id, f.sequence),
                device_id: f.device_id,
                sequence: f.sequence,
                status: AckStatus::Published as i32,
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(acks)))
    }

    async fn detect(&self, _request: Request<Frame>) -> Result<Response<DetectResponse>, Status> {
        Err(Status::unimplemented(
            "the benchmark sink only acknowledges streams",
        ))
    }
}

/// One phase's figures.
#[derive(Debug, serde::Serialize)]
pub struct Phase {
    /// Requested rate (0: unpaced).
    pub fps_target: f64,
    /// Frames acknowledged per second during the measured window.
    pub fps: f64,
    /// CPU time over wall time, percent of one core.
    pub cpu_percent: f64,
    /// CPU time per frame.
    pub cpu_ms_per_frame: f64,
    /// Largest sampled resident set.
    pub rss_max_mb: f64,
    /// The kernel's resident high-water mark at the end.
    pub rss_hwm_mb: f64,
}

/// Runs both phases and prints the summary line.
pub async fn run(args: AgentBenchArgs) -> anyhow::Result<()> {
    let frames_dir = args.work_dir.join("frames");
    let (count, mean_kb) = write_frames(&args.samples, &frames_dir)?;
    println!("frames: {count} JPEGs of 1920x1080, mean {mean_kb} KB");

    let sink = AckSink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = IngestServer::new(sink.clone()).max_decoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let paced = phase(&args, &frames_dir, addr, args.fps, &sink).await?;
    let unpaced = phase(&args, &frames_dir, addr, 0.0, &sink).await?;
    let binary_mb = std::fs::metadata(&args.agent)
        .with_context(|| format!("{}", args.agent.display()))?
        .len() as f64
        / 1e6;

    for p in [&paced, &unpaced] {
        let label = if p.fps_target > 0.0 {
            format!("{} fps", p.fps_target)
        } else {
            "max rate".into()
        };
        println!(
            "{label}: {:.1} frames/s, cpu {:.1}% of one core ({:.2} ms/frame), rss max {:.1} MB (hwm {:.1} MB)",
            p.fps, p.cpu_percent, p.cpu_ms_per_frame, p.rss_max_mb, p.rss_hwm_mb
        );
    }
    let report = serde_json::json!({
        "frames": {"count": count, "mean_kb": mean_kb, "width": 1920, "height": 1080},
        "paced": paced,
        "max_rate": unpaced,
        "binary_mb": binary_mb,
    });
    std::fs::write(
        args.work_dir.join("results.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "agent: rss {:.1} MB, cpu {:.1}% of one core at {} fps, binary {:.1} MB",
        paced.rss_max_mb, paced.cpu_percent, args.fps, binary_mb
    );
    Ok(())
}

/// Writes the sample photos as 1080p JPEGs (quality 90, plain and mirrored, a few crops),
/// returning how many and their mean size in KB.
fn write_frames(samples: &Path, out: &Path) -> anyhow::Result<(usize, usize)> {
    std::fs::create_dir_all(out)?;
    let mut paths: Vec<_> = std::fs::read_dir(samples)
        .with_context(|| format!("reading {}", samples.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .collect();
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "no .jpg photos in {}", samples.display());
    let mut n = 0;
    let mut bytes = 0;
    for p in &paths {
        let photo = image::open(p).with_context(|| format!("decoding {}", p.display()))?;
        let filled = photo.resize_to_fill(1920, 1080, FilterType::Triangle);
        for (k, variant) in [filled.clone(), filled.fliph()].into_iter().enumerate() {
            let mut jpeg = std::io::Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&variant.to_rgb8())?;
            let jpeg = jpeg.into_inner();
            bytes += jpeg.len();
            std::fs::write(out.join(format!("{n:03}-{k}.jpg")), jpeg)?;
            n += 1;
        }
    }
    Ok((n, bytes / n / 1024))
}

async fn phase(
    args: &AgentBenchArgs,
    frames: &Path,
    sink_addr: std::net::SocketAddr,
    fps: f64,
    sink: &AckSink,
) -> anyhow::Result<Phase> {
    let spool = args.work_dir.join(format!("spool-{fps}"));
    let _ = std::fs::remove_dir_all(&spool);
    let mut child = Command::new(&args.agent)
        .args(["--endpoint", &format!("http://{sink_addr}")])
        .args(["--device-id", "bench-agent", "--source", "folder"])
        .arg("--path")
        .arg(frames)
        .args(["--repeat", "1000000", "--fps", &fps.to_string()])
        .arg("--spool-dir")
        .arg(&spool)
        .env("VF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.agent.display()))?;
    let result = measure(&mut child, args.seconds, sink).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&spool);
    let mut p = result?;
    p.fps_target = fps;
    Ok(p)
}

async fn measure(child: &mut Child, seconds: u64, sink: &AckSink) -> anyhow::Result<Phase> {
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let Some(status) = child.try_wait()? {
        anyhow::bail!("the agent exited during warm-up: {status}");
    }
    let (cpu0, acked0, t0) = (
        cpu_seconds(pid)?,
        sink.acked.load(Ordering::Relaxed),
        Instant::now(),
    );
    let mut rss_max: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        rss_max = rss_max.max(status_kb(pid, "VmRSS:")? as f64 / 1024.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let frames = (sink.acked.load(Ordering::Relaxed) - acked0) as f64;
    Ok(Phase {
        fps_target: 0.0,
        fps: frames / wall,
        cpu_percent: 100.0 * cpu / wall,
        cpu_ms_per_frame: if frames > 0.0 {
            1000.0 * cpu / frames
        } else {
            0.0
        },
        rss_max_mb: rss_max,
        rss_hwm_mb: status_kb(pid, "VmHWM:")? as f64 / 1024.0,
    })
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unexpected /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} missing from /proc/{pid}/status"))
}
