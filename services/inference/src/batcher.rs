//! The batcher: one worker thread per model that owns the detector, takes frames from a
//! bounded queue and runs as many as are waiting (up to `max_batch_size`, waiting at most
//! `max_queue_delay` for more) in one forward pass. Model compute never touches the async
//! runtime's threads.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use visionfleet_detector::detector::{ImageInput, RgbView, StageTimings};
use visionfleet_detector::{Detection, Detector, Manifest};

use crate::error::Error;
use crate::metrics::Metrics;

/// What the batcher returns for one frame.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Detections in source pixels.
    pub detections: Vec<Detection>,
    /// Time the frame waited in the queue.
    pub queue_wait: Duration,
    /// Stage timings of the batch it ran in.
    pub timings: StageTimings,
    /// Size of that batch.
    pub batch_size: usize,
}

/// What a frame brings to the detector.
#[derive(Debug, Clone)]
pub enum FrameInput {
    /// A decoded image, letterboxed by the detector.
    Image(RgbImage),
    /// A ready `[3, size, size]` tensor in 0..=1 (KServe FP32 input).
    Planar(Vec<f32>),
}

impl FrameInput {
    /// Memory the input holds while it waits, in bytes.
    pub fn bytes(&self) -> usize {
        match self {
            FrameInput::Image(img) => img.as_raw().len(),
            FrameInput::Planar(v) => v.len() * 4,
        }
    }
}

struct Job {
    input: FrameInput,
    enqueued: Instant,
    deadline: Option<Instant>,
    permit: OwnedSemaphorePermit,
    byte_permit: OwnedSemaphorePermit,
    reply: oneshot::Sender<Result<BatchOutput, JobError>>,
}

/// Why a queued frame produced no detections.
#[derive(Debug)]
enum JobError {
    /// Its deadline passed while it waited; it was not run.
    Expired,
    /// The detector failed on the batch.
    Failed(String),
}

/// Batching policy.
#[derive(Debug, Clone)]
pub struct BatchPolicy {
    /// Most frames per forward pass.
    pub max_batch_size: usize,
    /// Longest wait for more frames after the first.
    pub max_queue_delay: Duration,
    /// Frames that may wait in the queue.
    pub queue_capacity: usize,
    /// Decoded bytes that may wait in the queue (counted in KiB).
    pub queue_capacity_bytes: usize,
    /// Batch sizes to prefer when the delay expires (ascending; empty: run what is there).
    pub preferred_batch_sizes: Vec<usize>,
}

/// How many of `waiting` frames to run now. A full batch or a preferred size runs whole;
/// otherwise the largest preferred size that fits runs and the rest wait for the next
/// batch (as Triton's dynamic batcher does), or everything runs when none fits.
pub fn choose_batch(waiting: usize, max: usize, preferred: &[usize]) -> usize {
    let waiting = waiting.min(max);
    if preferred.is_empty() || waiting == max || preferred.contains(&waiting) {
        return waiting;
    }
    preferred
        .iter()
        .copied()
        .filter(|&p| p <= waiting)
        .max()
        .unwrap_or(waiting)
}

/// Handle to one model's worker thread.
pub struct Batcher {
    manifest: Manifest,
    tx: SyncSender<Job>,
    slots: Arc<Semaphore>,
    /// Queue memory budget in KiB.
    kib: Arc<Semaphore>,
    kib_capacity: usize,
    metrics: Arc<Metrics>,
}

impl Batcher {
    /// Starts the worker thread for `detector`.
    pub fn start(detector: Detector, policy: BatchPolicy, metrics: Arc<Metrics>) -> Self {
        let manifest = detector.manifest().clone();
        let (tx, rx) = sync_channel(policy.queue_capacity);
        let worker_metrics = metrics.clone();
        let name = format!("batcher-{}", manifest.name);
        let slots = Arc::new(Semaphore::new(policy.queue_capacity));
        let kib_capacity = (policy.queue_capacity_bytes / 1024).max(1);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || worker(detector, rx, policy, worker_metrics))
            .expect("spawning the batcher thread");
        Self {
            manifest,
            tx,
            slots,
            kib: Arc::new(Semaphore::new(kib_capacity)),
            kib_capacity,
            metrics,
        }
    }

    /// The served model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Queues a frame and waits for its detections. With `wait_for_room` the call waits
    /// while the queue is full (streams: backpressure); without it a full queue is
    /// `QueueFull` at once (unary calls: shed load).
    pub async fn run(&self, image: RgbImage, wait_for_room: bool) -> Result<BatchOutput, Error> {
        self.run_input(FrameInput::Image(image), wait_for_room, None)
            .await
    }

    /// Like [`Batcher::run`] for any [`FrameInput`]. A frame whose `deadline` has passed
    /// when the worker reaches it is not run (`DeadlineExceeded`).
    pub async fn run_input(
        &self,
        input: FrameInput,
        wait_for_room: bool,
        deadline: Option<Instant>,
    ) -> Result<BatchOutput, Error> {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::DeadlineExceeded);
        }
        let permit = if wait_for_room {
            self.slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Draining)?
        } else {
            self.slots
                .clone()
                .try_acquire_owned()
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::Closed => Error::Draining,
                    tokio::sync::TryAcquireError::NoPermits => Error::QueueFull {
                        retry_after_ms: 100,
                    },
                })?
        };
        // Bytes are admitted like frames, so that a queue of large images is bounded too.
        // One image larger than the whole budget may still run alone.
        let kib = input.bytes().div_ceil(1024).clamp(1, self.kib_capacity) as u32;
        let byte_permit = if wait_for_room {
            self.kib
                .clone()
                .acquire_many_owned(kib)
                .await
                .map_err(|_| Error::Draining)?
        } else {
            self.kib
                .clone()
                .try_acquire_many_owned(kib)
                .map_err(|e| match e {
                    tokio::sync::TryAcquireError::Closed => Error::Draining,
                    tokio::sync::TryAcquireError::NoPermits => Error::QueueFull {
                        retry_after_ms: 100,
                    },
                })?
        };
        let (reply, rx) = oneshot::channel();
        let job = Job {
            byte_permit,
            input,
            enqueued: Instant::now(),
            deadline,
            permit,
            reply,
        };
        // Never blocks: a permit guarantees a free slot in the channel.
        self.tx.send(job).map_err(|_| Error::Draining)?;
        self.metrics.queue_depth.inc();
        rx.await.map_err(|_| Error::Draining)?.map_err(|e| match e {
            JobError::Expired => Error::DeadlineExceeded,
            JobError::Failed(e) => Error::Detector(visionfleet_detector::Error::InvalidInput(e)),
        })
    }

    /// Refuses new frames; queued ones still run.
    pub fn close(&self) {
        self.slots.close();
        self.kib.close();
    }
}

fn worker(detector: Detector, rx: Receiver<Job>, policy: BatchPolicy, metrics: Arc<Metrics>) {
    let mut carried: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    let largest_preferred = policy.preferred_batch_sizes.iter().copied().max();
    loop {
        if carried.is_empty() {
            match rx.recv() {
                Ok(job) => carried.push_back(job),
                Err(_) => break, // every sender gone: shut down
            }
        }
        // The delay runs from the oldest waiting frame's arrival.
        let deadline = carried[0].enqueued + policy.max_queue_delay;
        while carried.len() < policy.max_batch_size && Some(carried.len()) != largest_preferred {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(job) => carried.push_back(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let take = choose_batch(
            carried.len(),
            policy.max_batch_size,
            &policy.preferred_batch_sizes,
        );
        let jobs: Vec<Job> = carried.drain(..take).collect();
        let started = Instant::now();
        metrics.queue_depth.sub(jobs.len() as i64);
        let mut inputs = Vec::with_capacity(jobs.len());
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            drop(job.permit); // the frame has left the queue
            drop(job.byte_permit);
            if job.deadline.is_some_and(|d| started >= d) {
                metrics.frames_failed.with_label_values(&["deadline"]).inc();
                let _ = job.reply.send(Err(JobError::Expired));
                continue;
            }
            // The caller is gone (a cancelled call, a reset stream): no one wants the
            // result, and the detector's time is better spent on those still waiting.
            if job.reply.is_closed() {
                metrics
                    .frames_failed
                    .with_label_values(&["cancelled"])
                    .inc();
                continue;
            }
            waiting.push((job.reply, started - job.enqueued));
            inputs.push(job.input);
        }
        if inputs.is_empty() {
            continue;
        }
        let views: Vec<ImageInput<'_>> = inputs
            .iter()
            .map(|i| match i {
                FrameInput::Image(img) => ImageInput::Rgb(RgbView::from(img)),
                FrameInput::Planar(values) => ImageInput::Planar(values),
            })
            .collect();
        let batch_size = views.len();
        metrics.batch_size.observe(batch_size as f64);
        match detector.detect_inputs_timed(&views) {
            Ok((detections, timings)) => {
                metrics.observe_stages(&timings);
                for ((reply, queue_wait), detections) in waiting.into_iter().zip(detections) {
                    metrics.queue_wait.observe(queue_wait.as_secs_f64());
                    // The caller may have gone away (stream closed); nothing to do then.
                    let _ = reply.send(Ok(BatchOutput {
                        detections,
                        queue_wait,
                        timings,
                        batch_size,
                    }));
                }
            }
            Err(e) => {
                for (reply, _) in waiting {
                    let _ = reply.send(Err(JobError::Failed(e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::choose_batch;

    #[test]
    fn batches_prefer_configured_sizes() {
        // No preference: whatever is waiting, up to the maximum.
        assert_eq!(choose_batch(3, 8, &[]), 3);
        assert_eq!(choose_batch(12, 8, &[]), 8);
        // Preferred 4 and 8: 6 waiting runs 4 now, 2 wait for the next batch.
        assert_eq!(choose_batch(6, 8, &[4, 8]), 4);
        assert_eq!(choose_batch(4, 8, &[4, 8]), 4);
        assert_eq!(choose_batch(8, 8, &[4, 8]), 8);
        // Fewer than the smallest preferred size: run them rather than starve.
        assert_eq!(choose_batch(3, 8, &[4, 8]), 3);
        // A full batch always runs whole.
        assert_eq!(choose_batch(16, 16, &[4, 8]), 16);
    }
}
