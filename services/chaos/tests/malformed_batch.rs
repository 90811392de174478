//! Scenario 9, hostile input in the frames themselves: one stream carries good frames
//! between a table of malformed ones (truncated and corrupt images, a decompression bomb,
//! forged raw shapes, empty and zero-sized images), so they share batches. Promises: each
//! bad frame gets a REJECTED ack with its exact reason and lands on the dead-letter topic;
//! the good frames in the same batches get the same detections as when sent alone; an
//! oversize message is refused with a clear error; nothing acknowledged is lost.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;
#[path = "../../inference/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{tally, Pod};
use support::{models_dir, Kafka};
use visionfleet_chaos::{event_id, Figures};
use visionfleet_proto::v1::frame::Image;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{
    AckStatus, DetectResponse, Frame, PixelFormat, RawImage, RejectReason,
};

const DEVICE: &str = "cam-malformed";

fn frame(sequence: u64, image: Image) -> Frame {
    Frame {
        device_id: DEVICE.into(),
        sequence,
        image: Some(image),
        ..Frame::default()
    }
}

/// A PNG whose header claims 50000x50000 pixels over a few bytes of data: a decompression
/// bomb, refused from the header before any allocation.
fn png_bomb() -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib of one zero byte: far too little data, but the header alone must decide.
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    png.extend_from_slice(&typed);
    png.extend_from_slice(&crc32(&typed).to_be_bytes());
}

/// CRC-32 (IEEE), bit by bit: only a PNG header is hashed.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Labels and boxes rounded to whole pixels, scores to 1e-2: batch composition may move
/// the last float bits, never the detections.
fn summary(r: &DetectResponse) -> Vec<(String, [i64; 4], i64)> {
    r.detections
        .iter()
        .map(|d| {
            let b = d.r#box.unwrap();
            (
                d.label.clone(),
                [b.x_min, b.y_min, b.x_max, b.y_max].map(|v| v.round() as i64),
                (d.score * 100.0).round() as i64,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_do_not_disturb_the_good_ones_in_their_batch() {
    let kafka = Kafka::start(1);
    let topic = "chaos.malformed";
    let pod = Pod::start(&kafka.bootstrap, topic, &["--max-frame-bytes", "1048576"]).await;
    let bus = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let zidane = std::fs::read(models_dir().join("samples/zidane.jpg")).unwrap();
    let mut client = IngestClient::connect(pod.url()).await.unwrap();
    let alone_bus = client
        .detect(frame(1, Image::Jpeg(bus.clone())))
        .await
        .unwrap()
        .into_inner();
    let alone_zidane = client
        .detect(frame(2, Image::Jpeg(zidane.clone())))
        .await
        .unwrap()
        .into_inner();

    let raw = |w: u32, h: u32, len: usize| {
        Image::Raw(RawImage {
            format: PixelFormat::Rgb8 as i32,
            width: w,
            height: h,
            data: vec![7; len],
        })
    };
    let bad: Vec<(Image, RejectReason, &str)> = vec![
        (
            Image::Jpeg(bus[..bus.len() / 2].to_vec()),
            RejectReason::InvalidImage,
            "invalid image: JPEG data: truncated (no end-of-image marker)",
        ),
        (
            Image::Png(png_bomb()),
            RejectReason::TooLarge,
            "frame too large: 50000x50000 is 2500000000 pixels, the limit is 40000000",
        ),
        (
            raw(100_000, 100_000, 12),
            RejectReason::TooLarge,
            "frame too large: 100000x100000 is 10000000000 pixels, the limit is 40000000",
        ),
        (
            raw(64, 48, 64 * 48 * 3 - 1),
            RejectReason::InvalidImage,
            "invalid image: raw PIXEL_FORMAT_RGB8 buffer has 9215 bytes, 64x48x3 needs 9216",
        ),
        (
            raw(0, 48, 0),
            RejectReason::InvalidImage,
            "invalid image: image has zero size (0x48)",
        ),
        (
            Image::Jpeg(Vec::new()),
            RejectReason::InvalidImage,
            "invalid image: JPEG data is empty",
        ),
        (
            Image::Jpeg(vec![0x42; 1024 * 1024 + 1]),
            RejectReason::TooLarge,
            "frame too large: JPEG is 1048577 bytes, the limit is 1048576",
        ),
        (
            Image::Png(b"\x89PNG\r\n\x1a\nnot a png".to_vec()),
            RejectReason::InvalidImage,
            "invalid image: PNG header:",
        ),
    ];
    // Good and bad interleaved on one stream: they arrive together and share batches.
    let mut frames = Vec::new();
    let mut expected_bad = BTreeMap::new();
    let mut good = BTreeMap::new();
    let mut sequence = 10;
    for (image, reason, message) in bad {
        sequence += 1;
        let (img, want) = if sequence % 2 == 0 {
            (&bus, &alone_bus)
        } else {
            (&zidane, &alone_zidane)
        };
        frames.push(frame(sequence, Image::Jpeg(img.clone())));
        good.insert(sequence, summary(want));
        sequence += 1;
        frames.push(frame(sequence, image));
        expected_bad.insert(sequence, (reason, message));
    }
    let by_seq = support::stream_acks(&mut client, frames).await;
    for (s, (reason, message)) in &expected_bad {
        let ack = &by_seq[s];
        assert_eq!(ack.status, AckStatus::Rejected as i32, "{ack:?}");
        assert_eq!(ack.reject_reason, *reason as i32, "{ack:?}");
        assert!(
            ack.error.starts_with(message),
            "{:?} does not start with {message:?}",
            ack.error
        );
    }
    // Each good frame of the stream, run again alone, must match its twin from before.
    for (s, want) in &good {
        assert_eq!(
            by_seq[s].status,
            AckStatus::Published as i32,
            "{:?}",
            by_seq[s]
        );
        let img = if s % 2 == 0 { &bus } else { &zidane };
        let again = client
            .detect(frame(1000 + s, Image::Jpeg(img.clone())))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&summary(&again), want, "frame {s}");
    }
    // A message beyond the transport's limit (the frame limit plus 64 KiB) is refused.
    let oversize = client
        .detect(frame(9999, Image::Jpeg(vec![1; 2 << 20])))
        .await
        .unwrap_err();
    assert_eq!(oversize.code(), tonic::Code::OutOfRange, "{oversize:?}");
    assert!(
        oversize.message().contains("message length too large"),
        "{oversize:?}"
    );

    // Every good frame has its event, every bad one its dead-letter record.
    let accepted: Vec<String> = [1, 2]
        .into_iter()
        .chain(good.keys().copied())
        .map(|s| event_id(DEVICE, s))
        .collect();
    let seen = tally(&kafka.bootstrap, topic, accepted.len() + good.len());
    let missing = seen.missing(&accepted);
    let dlq = support::consumer::consume(
        &kafka.bootstrap,
        &format!("{topic}.dlq"),
        "chaos-dlq",
        expected_bad.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    Figures {
        scenario: "malformed-frames".into(),
        captured: (accepted.len() + expected_bad.len()) as u64,
        events: (accepted.len() - missing.len() + dlq.len()) as u64,
        lost: missing.len() as u64,
        duplicates: seen.duplicates(),
        recovery: Duration::ZERO,
    }
    .report();
    assert!(
        missing.is_empty(),
        "acknowledged frames without an event: {missing:?}"
    );
    assert_eq!(
        dlq.len(),
        expected_bad.len(),
        "one dead-letter record per bad frame"
    );
}
