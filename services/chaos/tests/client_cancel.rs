//! Scenario 10, clients that crash or cancel mid-stream, many times: streams dropped after
//! a few frames, calls cancelled by a client-side timeout, connections closed with frames
//! in flight. Promises: the pod stays live and keeps serving, its in-flight and open-stream
//! gauges return to zero, and every frame it acknowledged is in Kafka.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{metric, tally, Pod};
use support::{jpeg_frame, models_dir, Kafka};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use visionfleet_chaos::{event_id, Figures, Rng, Scale};
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::AckStatus;

const DEVICE: &str = "cam-cancel";

/// One client that goes away early. Returns (frames sent, event ids acknowledged).
async fn cancelling_client(
    url: &str,
    first: u64,
    rng: &mut Rng,
    jpeg: &[u8],
) -> (u64, Vec<String>) {
    // A fresh connection each time: dropping the client closes it, like a crashed device.
    let mut client = IngestClient::connect(url.to_string()).await.unwrap();
    let frames = rng.range(1, 6);
    match rng.next_u64() % 3 {
        // A Detect call whose caller gives up before the answer.
        0 => {
            let call = client.detect(jpeg_frame(DEVICE, first, jpeg));
            let _ = tokio::time::timeout(Duration::from_millis(rng.range(1, 300)), call).await;
            (1, Vec::new())
        }
        // A stream dropped with frames in flight, after reading some acks or none.
        _ => {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            for s in first..first + frames {
                tx.send(jpeg_frame(DEVICE, s, jpeg)).await.unwrap();
            }
            let mut acked = Vec::new();
            if let Ok(response) = client.stream_frames(ReceiverStream::new(rx)).await {
                let mut acks = response.into_inner();
                let read_for = Duration::from_millis(rng.range(0, 1500));
                let _ = tokio::time::timeout(read_for, async {
                    while let Some(Ok(ack)) = acks.next().await {
                        if ack.status == AckStatus::Published as i32 {
                            acked.push(ack.event_id);
                        }
                    }
                })
                .await;
            }
            drop(tx);
            (frames, acked)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_streams_and_calls_leave_nothing_behind() {
    let scale = Scale::from_env();
    let rounds = scale.pick(40, 400);
    let kafka = Kafka::start(1);
    let topic = "chaos.client-cancel";
    let pod = Pod::start(&kafka.bootstrap, topic, &[]).await;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut rng = Rng::new(0xC0FF_EE00_D15E_A5E5);
    let (mut sent, mut acked) = (0, Vec::new());
    let mut next = 1;
    for _ in 0..rounds {
        let (n, a) = cancelling_client(&pod.url(), next, &mut rng, &jpeg).await;
        next += n;
        sent += n;
        acked.extend(a);
    }
    let last_cancel = Instant::now();
    let http = pod.http;
    support::eventually_async("gauges back to zero", Duration::from_secs(60), || async {
        let (_, scrape) = support::http_get(http, "/metrics").await.ok()?;
        (metric(&scrape, "vf_frames_in_flight") == 0.0 && metric(&scrape, "vf_streams_open") == 0.0)
            .then_some(())
    })
    .await;
    let recovery = last_cancel.elapsed();
    assert_eq!(support::http_get(http, "/healthz").await.unwrap().0, 200);
    // A well-behaved client is still served.
    let mut client = IngestClient::connect(pod.url()).await.unwrap();
    let answer = client
        .detect(jpeg_frame(DEVICE, next, &jpeg))
        .await
        .unwrap();
    assert_eq!(answer.into_inner().event_id, event_id(DEVICE, next));
    acked.push(event_id(DEVICE, next));

    let seen = tally(&kafka.bootstrap, topic, acked.len());
    let missing = seen.missing(&acked);
    Figures {
        scenario: "client-cancel".into(),
        captured: sent + 1,
        events: seen.distinct(),
        lost: missing.len() as u64,
        duplicates: seen.duplicates(),
        recovery,
    }
    .report();
    assert!(
        missing.is_empty(),
        "acknowledged frames without an event: {missing:?}"
    );
}
