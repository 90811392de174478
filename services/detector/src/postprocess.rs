//! Turning raw network output into detections: confidence filtering, class-aware
//! non-maximum suppression, and the per-family row layouts.

use std::collections::HashMap;

/// NMS settings; the defaults are the reference implementations'.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsOptions {
    /// Minimum class score (times objectness for YOLOv5) to keep a box.
    pub conf_threshold: f32,
    /// Boxes of the same class overlapping more than this are suppressed.
    pub iou_threshold: f32,
    /// At most this many detections per image.
    pub max_detections: usize,
    /// Only the best this many candidates enter NMS (bounds the work on noisy images).
    pub max_candidates: usize,
}

impl Default for NmsOptions {
    fn default() -> Self {
        Self {
            conf_threshold: 0.25,
            iou_threshold: 0.7,
            max_detections: 300,
            max_candidates: 30_000,
        }
    }
}

/// A scored box in network-input pixels, `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Class index.
    pub class_id: usize,
    /// Confidence in 0..=1.
    pub score: f32,
    /// Corners `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
}

fn corners(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// Candidates from one image of YOLOv8 output, laid out `[4 + classes, anchors]`.
pub fn candidates_v8(out: &[f32], classes: usize, conf: f32) -> Vec<Candidate> {
    let anchors = out.len() / (4 + classes);
    let row = |r: usize| &out[r * anchors..(r + 1) * anchors];
    let mut best = vec![(0usize, f32::MIN); anchors];
    for c in 0..classes {
        for (b, &s) in best.iter_mut().zip(row(4 + c)) {
            if s > b.1 {
                *b = (c, s);
            }
        }
    }
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    best.iter()
        .enumerate()
        .filter(|(_, b)| b.1 > conf)
        .map(|(a, &(class_id, score))| Candidate {
            class_id,
            score,
            bbox: corners(cx[a], cy[a], w[a], h[a]),
        })
        .collect()
}

/// Candidates from one image of YOLOv5 output, laid out `[anchors, 5 + classes]`. As in the
/// reference, objectness is filtered first and multiplies the class scores.
pub fn candidates_v5(out: &[f32], classes: usize, conf: f32) -> Vec<Candidate> {
    out.chunks_exact(5 + classes)
        .filter(|r| r[4] > conf)
        .filter_map(|r| {
            let (class_id, cls) =
                r[5..]
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &s)| if s > b.1 { (i, s) } else { b });
            let score = cls * r[4];
            (score > conf).then(|| Candidate {
                class_id,
                score,
                bbox: corners(r[0], r[1], r[2], r[3]),
            })
        })
        .collect()
}

/// Intersection over union of two corner boxes (zero when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy class-aware NMS: highest score first, a box is dropped when it overlaps a kept box
/// of the same class by more than the IoU threshold. Output is sorted by score.
pub fn nms(mut cands: Vec<Candidate>, opts: &NmsOptions) -> Vec<Candidate> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(opts.max_candidates);
    let mut kept: Vec<Candidate> = Vec::new();
    let mut by_class: HashMap<usize, Vec<[f32; 4]>> = HashMap::new();
    for c in cands {
        if kept.len() == opts.max_detections {
            break;
        }
        let same = by_class.entry(c.class_id).or_default();
        if same.iter().all(|k| iou(k, &c.bbox) <= opts.iou_threshold) {
            same.push(c.bbox);
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class_id: usize, score: f32, bbox: [f32; 4]) -> Candidate {
        Candidate {
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn iou_edge_cases() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0); // touching
        assert_eq!(iou(&a, &[5.0, 5.0, 5.0, 5.0]), 0.0); // empty box
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best() {
        let opts = NmsOptions {
            iou_threshold: 0.5,
            ..Default::default()
        };
        let out = nms(
            vec![
                cand(0, 0.6, [1.0, 1.0, 11.0, 11.0]),
                cand(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
                cand(1, 0.5, [0.0, 0.0, 10.0, 10.0]), // other class survives
                cand(0, 0.4, [50.0, 50.0, 60.0, 60.0]), // far away survives
            ],
            &opts,
        );
        let scores: Vec<f32> = out.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4]);
    }

    #[test]
    fn iou_exactly_at_threshold_is_kept() {
        let opts = NmsOptions {
            iou_threshold: 0.5,
            ..Default::default()
        };
        // IoU of these two is exactly 1/3.
        let a = cand(0, 0.9, [0.0, 0.0, 10.0, 10.0]);
        let b = cand(0, 0.8, [5.0, 0.0, 15.0, 10.0]);
        let strict = NmsOptions {
            iou_threshold: 1.0 / 3.0,
            ..opts
        };
        assert_eq!(nms(vec![a, b], &strict).len(), 2);
        assert_eq!(
            nms(
                vec![a, b],
                &NmsOptions {
                    iou_threshold: 0.3,
                    ..opts
                }
            )
            .len(),
            1
        );
    }

    #[test]
    fn limits_are_applied_and_empty_input_is_fine() {
        assert!(nms(Vec::new(), &NmsOptions::default()).is_empty());
        let many: Vec<_> = (0..1000)
            .map(|i| {
                cand(
                    0,
                    i as f32 / 1000.0,
                    [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0],
                )
            })
            .collect();
        let out = nms(many.clone(), &NmsOptions::default());
        assert_eq!(out.len(), 300);
        assert_eq!(out[0].score, 0.999);
        let capped = nms(
            many,
            &NmsOptions {
                max_candidates: 10,
                ..Default::default()
            },
        );
        assert_eq!(capped.len(), 10);
    }

    #[test]
    fn v8_rows_pick_the_best_class_over_the_threshold() {
        // Two anchors, two classes: rows cx, cy, w, h, cls0, cls1.
        let out = [
            10.0, 20.0, // cx
            10.0, 20.0, // cy
            4.0, 2.0, // w
            6.0, 2.0, // h
            0.3, 0.1, // class 0
            0.8, 0.2, // class 1
        ];
        let c = candidates_v8(&out, 2, 0.25);
        assert_eq!(c, vec![cand(1, 0.8, [8.0, 7.0, 12.0, 13.0])]);
    }

    #[test]
    fn v5_rows_multiply_objectness_into_class_scores() {
        let rows = [
            10.0, 10.0, 4.0, 4.0, 0.5, 0.9, 0.1, // 0.45 for class 0
            10.0, 10.0, 4.0, 4.0, 0.2, 1.0, 1.0, // objectness below threshold
            10.0, 10.0, 4.0, 4.0, 0.9, 0.1, 0.2, // 0.18 below threshold after product
        ];
        let c = candidates_v5(&rows, 2, 0.25);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 0);
        assert!((c[0].score - 0.45).abs() < 1e-6);
        assert_eq!(c[0].bbox, [8.0, 8.0, 12.0, 12.0]);
    }
}
