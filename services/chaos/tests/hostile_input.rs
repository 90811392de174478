//! Scenario 9, hostile input at the transport: HTTP/2 abuse from a local client that
//! writes raw frames (rapid reset, reset floods, CONTINUATION floods, empty DATA floods)
//! while a legitimate client keeps calling. Promises: the abusive connection is closed,
//! the legitimate client keeps its latency, and the pod's memory grows under 50 MiB.
//! (Malformed frames, decompression bombs and forged shapes are the end-to-end bad-input
//! test's table and the `decode_frame` fuzz target; the spool reader has its own target.)

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Pod, RssSampler};
use support::{jpeg_frame, models_dir, Kafka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use visionfleet_chaos::{Figures, Scale};
use visionfleet_proto::v1::ingest_client::IngestClient;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: a literal header field without indexing, new name (RFC 7541 6.2.2).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// The header block of a gRPC call to `path`.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    literal(&mut h, ":path", path);
    literal(&mut h, ":authority", "pod");
    literal(&mut h, "content-type", "application/grpc");
    literal(&mut h, "te", "trailers");
    h
}

/// An abusive connection: sends `frames` until the server closes it or all are sent.
/// Returns whether the server closed it (GOAWAY, then EOF or a reset), and how many
/// frames went out.
async fn abuse(addr: SocketAddr, frames: impl Iterator<Item = Vec<u8>>) -> (bool, usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    // Read (and drop) what the server sends; note a GOAWAY or the end of the connection.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return (true, seen),
                Ok(n) => seen.extend_from_slice(&buf[..n.min(64 * 1024)]),
            }
            if seen.len() > 1 << 20 {
                seen.drain(..seen.len() - 4096);
            }
        }
    });
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    w.write_all(&hello).await.unwrap();
    let mut sent = 0;
    for f in frames {
        if w.write_all(&f).await.is_err() || reader.is_finished() {
            break;
        }
        sent += 1;
    }
    // Give the server a moment to answer the last frames, then see if it hung up.
    let closed = tokio::time::timeout(Duration::from_secs(5), reader).await;
    (matches!(closed, Ok(Ok((true, _)))), sent)
}

/// The control for the attacks: the same raw client, well-behaved (a health check), gets
/// its answer (a HEADERS frame on its stream) and is not disconnected. Without it a raw
/// client the server could not parse at all would "pass" every attack.
async fn well_formed_raw_request_is_answered(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &grpc_headers("/grpc.health.v1.Health/Check"),
    ));
    hello.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0])); // an empty HealthCheckRequest
    conn.write_all(&hello).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut header = [0u8; 9];
        loop {
            conn.read_exact(&mut header).await?;
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload).await?;
            if kind == SETTINGS && flags & 0x1 == 0 {
                conn.write_all(&frame(SETTINGS, 0x1, 0, &[])).await?;
            }
            if kind == HEADERS && stream == 1 {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    assert!(
        matches!(answered, Ok(Ok(()))),
        "a well-formed raw request was not answered: {answered:?}"
    );
}

/// A legitimate Detect round trip's latency.
async fn legit_latency(url: &str, jpeg: &[u8], sequence: u64) -> Duration {
    let mut c = IngestClient::connect(url.to_string()).await.unwrap();
    let t = Instant::now();
    c.detect(jpeg_frame("cam-legit", sequence, jpeg))
        .await
        .unwrap();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_abuse_is_cut_off_and_legitimate_clients_keep_their_latency() {
    let scale = Scale::from_env();
    let flood: u32 = scale.pick(20_000, 200_000);
    let kafka = Kafka::start(1);
    let pod = Pod::start(&kafka.bootstrap, "chaos.hostile", &[]).await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut sequence = 0;
    let mut baseline = Duration::ZERO;
    for _ in 0..3 {
        sequence += 1;
        baseline = baseline.max(legit_latency(&pod.url(), &jpeg, sequence).await);
    }
    well_formed_raw_request_is_answered(pod.grpc).await;
    let rss = RssSampler::start(pod.child.id());
    let rss_before = visionfleet_chaos::rss_bytes(pod.child.id()).unwrap();
    let detect = grpc_headers("/visionfleet.v1.Ingest/Detect");
    let stream_path = grpc_headers("/visionfleet.v1.Ingest/StreamFrames");

    type Attack = (&'static str, Box<dyn Iterator<Item = Vec<u8>> + Send>);
    let attacks: Vec<Attack> = vec![
        (
            "rapid reset",
            Box::new((0..flood).flat_map({
                let h = detect.clone();
                move |i| {
                    let id = 2 * i + 1;
                    [
                        frame(HEADERS, END_HEADERS, id, &h),
                        frame(RST_STREAM, 0, id, &8u32.to_be_bytes()),
                    ]
                }
            })),
        ),
        (
            "continuation flood",
            Box::new(
                std::iter::once(frame(HEADERS, 0, 1, &detect)).chain((0..flood).map(|_| {
                    let mut junk = Vec::new();
                    for _ in 0..100 {
                        literal(
                            &mut junk,
                            "x-junk",
                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                        );
                    }
                    frame(CONTINUATION, 0, 1, &junk)
                })),
            ),
        ),
        (
            "empty data flood",
            Box::new(
                std::iter::once(frame(HEADERS, END_HEADERS, 1, &stream_path))
                    .chain((0..flood * 5).map(|_| frame(DATA, 0, 1, &[])))
                    .chain(std::iter::once(frame(DATA, END_STREAM, 1, &[]))),
            ),
        ),
    ];

    let mut handled = 0;
    let mut worst = Duration::ZERO;
    for (name, frames) in attacks {
        let url = pod.url();
        let (jpeg2, first) = (jpeg.clone(), sequence + 1);
        sequence += 3;
        // The legitimate client calls while the attack runs.
        let legit = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for s in first..first + 3 {
                worst = worst.max(legit_latency(&url, &jpeg2, s).await);
            }
            worst
        });
        let (closed, sent) = abuse(pod.grpc, frames).await;
        let legit_worst = legit.await.unwrap();
        worst = worst.max(legit_worst);
        handled += sent;
        println!("hostile-input: {name}: closed {closed} after {sent} frames, legitimate Detect worst {legit_worst:?} (baseline {baseline:?})");
        assert!(
            closed,
            "{name}: the server kept the abusive connection open after {sent} frames"
        );
    }
    let growth = rss.peak().saturating_sub(rss_before);
    Figures {
        scenario: "hostile-input".into(),
        captured: handled as u64,
        events: sequence,
        lost: 0,
        duplicates: 0,
        recovery: worst,
    }
    .report();
    println!("hostile-input: pod RSS growth {} KiB", growth >> 10);
    assert!(growth < 50 << 20, "pod RSS grew {growth} bytes under abuse");
    assert!(
        worst < baseline * 3 + Duration::from_secs(1),
        "a legitimate call took {worst:?} under abuse (baseline {baseline:?})"
    );
    assert_eq!(
        support::http_get(pod.http, "/healthz").await.unwrap().0,
        200
    );
}
