#!/usr/bin/env python3
"""Produce small JSON golden fixtures from the reference runtimes.

Two models are covered:

* ``fall-yolov8s``  -- a YOLOv8s ONNX export (classes "Normal", "Fall"), run
  with onnxruntime on the CPU.  Output 1x6x8400: cx, cy, w, h (pixels of the
  640x640 letterboxed input) followed by 2 sigmoid class scores.
* ``coco-yolov5s``  -- a YOLOv5s TF.js graph model (80 COCO classes), run with
  TensorFlow.js through ``run_tfjs.mjs`` (Node).  Output 1x25200x85: cx, cy,
  w, h normalised by 640, objectness, 80 sigmoid class scores.

For each model and each test image it writes ``{out}/{model}.{stem}.json``
(post-NMS detections in source-image pixels) and once per model
``{out}/{model}.raw.json`` (a strided sample of the raw output tensor for a
deterministic synthetic input).  See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
INPUT_SIZE = 640
CONF_THRESHOLD = 0.25
MAX_DET = 300
# Offset added per class id so that class-aware NMS can run as one pass.
CLASS_OFFSET = 7680.0
IMAGES = ("bus.jpg", "zidane.jpg")
TFJS_VERSION = "4.22.0"

FALL_LABELS = ["Normal", "Fall"]
COCO_LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
assert len(COCO_LABELS) == 80

RAW_FORMULA = "((x*7 + y*13 + c*29) % 256) / 255"


# --------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------

def letterbox(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Ultralytics LetterBox(auto=False, center=True, scaleup=True)."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = int(round(w * r)), int(round(h * r))
    if (new_w, new_h) != (w, h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw = (size - new_w) / 2
    dh = (size - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT,
                             value=(114, 114, 114))
    assert out.shape[:2] == (size, size), out.shape
    return out


def preprocess(path: Path) -> tuple[np.ndarray, int, int]:
    """Return (HWC float32 RGB in [0,1], w0, h0)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    h0, w0 = img.shape[:2]
    lb = letterbox(img)
    rgb = cv2.cvtColor(lb, cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32) / np.float32(255.0), w0, h0


def synthetic_nchw(size: int = INPUT_SIZE) -> np.ndarray:
    c = np.arange(3, dtype=np.int64)[:, None, None]
    y = np.arange(size, dtype=np.int64)[None, :, None]
    x = np.arange(size, dtype=np.int64)[None, None, :]
    v = ((x * 7 + y * 13 + c * 29) % 256).astype(np.float32) / np.float32(255.0)
    return v[None].astype(np.float32)  # 1x3xHxW


# --------------------------------------------------------------------------
# Runtimes
# --------------------------------------------------------------------------

class FallModel:
    name = "fall-yolov8s"
    iou_threshold = 0.7
    labels = FALL_LABELS

    def __init__(self, path: Path):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(path), sess_options=so,
                                         providers=["CPUExecutionProvider"])
        self.input_name = self.sess.get_inputs()[0].name
        self.reference = f"onnxruntime {ort.__version__}"

    def run_nchw(self, nchw: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input_name: np.ascontiguousarray(nchw)})[0]

    def infer(self, hwc: np.ndarray) -> np.ndarray:
        """Return candidate rows [N, 4 + classes] in 640-pixel units."""
        out = self.run_nchw(hwc.transpose(2, 0, 1)[None])  # 1x6x8400
        return out[0].T  # 8400x6

    def raw(self) -> tuple[np.ndarray, str]:
        return self.run_nchw(synthetic_nchw()), "pixels"


class CocoModel:
    name = "coco-yolov5s"
    iou_threshold = 0.45
    labels = COCO_LABELS

    def __init__(self, model_json: Path, node: str = "node"):
        self.model_json = Path(model_json).resolve()
        self.node = node
        self.reference = f"tfjs {TFJS_VERSION}"

    def run_nhwc(self, nhwc: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="golden-tfjs-") as tmp:
            inp = Path(tmp) / "in.f32"
            outp = Path(tmp) / "out.f32"
            np.ascontiguousarray(nhwc, dtype="<f4").tofile(inp)
            res = subprocess.run(
                [self.node, str(HERE / "run_tfjs.mjs"), str(self.model_json), str(inp), str(outp)],
                cwd=HERE, check=True, capture_output=True, text=True)
            info = json.loads(res.stdout.strip().splitlines()[-1])
            if info.get("tfjs") != TFJS_VERSION:
                raise RuntimeError(f"expected tfjs {TFJS_VERSION}, runner reports {info}")
            print(f"    tfjs: {info}", file=sys.stderr)
            return np.fromfile(outp, dtype="<f4").reshape(info["shape"])

    def infer(self, hwc: np.ndarray) -> np.ndarray:
        out = self.run_nhwc(hwc[None])[0].astype(np.float32)  # 25200x85
        out[:, :4] *= INPUT_SIZE  # normalised -> pixels
        return out

    def raw(self) -> tuple[np.ndarray, str]:
        return self.run_nhwc(synthetic_nchw().transpose(0, 2, 3, 1)), "normalised by 640 for columns 0..3"


# --------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------

def xywh2xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    """Greedy NMS over boxes already sorted by descending score; suppress IoU > thr."""
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    order = np.arange(len(boxes))
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        iw = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        ih = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[iou <= iou_thr]
    return keep


def decode(rows: np.ndarray, v5: bool, iou_thr: float):
    """rows: [N, 4 + (1 if v5) + C] in 640-pixel units -> (boxes, scores, classes)."""
    if v5:
        rows = rows[rows[:, 4] > CONF_THRESHOLD]
        cls_scores = rows[:, 5:] * rows[:, 4:5]
    else:
        cls_scores = rows[:, 4:]
    scores = cls_scores.max(axis=1)
    classes = cls_scores.argmax(axis=1)
    m = scores > CONF_THRESHOLD
    boxes, scores, classes = xywh2xyxy(rows[m, :4]), scores[m], classes[m]
    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    keep = greedy_nms(boxes + classes[:, None].astype(np.float32) * CLASS_OFFSET, scores, iou_thr)
    keep = keep[:MAX_DET]
    return boxes[keep], scores[keep], classes[keep]


def scale_boxes(boxes: np.ndarray, w0: int, h0: int) -> np.ndarray:
    gain = min(INPUT_SIZE / h0, INPUT_SIZE / w0)
    padx = round((INPUT_SIZE - w0 * gain) / 2 - 0.1)
    pady = round((INPUT_SIZE - h0 * gain) / 2 - 0.1)
    b = boxes.astype(np.float64).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - padx) / gain
    b[:, [1, 3]] = (b[:, [1, 3]] - pady) / gain
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w0)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h0)
    return b


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def r4(v: float) -> float:
    return round(float(v), 4)


def sig6(v: float) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"non-finite output value {v}")
    return float(f"{v:.6g}")


def dumps_fixture(obj: dict) -> str:
    """One top-level key per line, one detection per line, number lists inline."""
    compact = dict(separators=(", ", ": "))
    lines = []
    for key, value in obj.items():
        if key == "detections" and value:
            inner = ",\n".join("  " + json.dumps(d, **compact) for d in value)
            lines.append(f"{json.dumps(key)}: [\n{inner}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, **compact)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def write_json(path: Path, obj: dict) -> None:
    text = dumps_fixture(obj)
    assert json.loads(text) == obj
    path.write_text(text)
    size = len(text.encode())
    if size >= 100_000:
        raise RuntimeError(f"{path} is {size} bytes, over the 100 KB budget")
    print(f"  wrote {path} ({size} bytes)", file=sys.stderr)


def image_fixture(model, img_path: Path, out_dir: Path) -> None:
    hwc, w0, h0 = preprocess(img_path)
    t0 = time.perf_counter()
    rows = model.infer(hwc)
    t1 = time.perf_counter()
    boxes, scores, classes = decode(rows, v5=isinstance(model, CocoModel), iou_thr=model.iou_threshold)
    boxes = scale_boxes(boxes, w0, h0)
    dets = [
        {"class_id": int(c), "label": model.labels[int(c)], "score": r4(s), "box": [r4(v) for v in b]}
        for b, s, c in zip(boxes, scores, classes)
    ]
    print(f"  {model.name} {img_path.name}: {len(dets)} detections, inference {t1 - t0:.2f}s", file=sys.stderr)
    for d in dets:
        print(f"    {d['class_id']:>2} {d['label']:<12} {d['score']:.4f} {d['box']}", file=sys.stderr)
    write_json(out_dir / f"{model.name}.{img_path.stem}.json", {
        "model": model.name,
        "image": img_path.name,
        "reference": model.reference,
        "input_size": INPUT_SIZE,
        "conf_threshold": CONF_THRESHOLD,
        "iou_threshold": model.iou_threshold,
        "image_width": w0,
        "image_height": h0,
        "detections": dets,
    })


def raw_fixture(model, stride: int, out_dir: Path) -> None:
    t0 = time.perf_counter()
    out, units = model.raw()
    t1 = time.perf_counter()
    flat = np.asarray(out, dtype=np.float32).reshape(-1)
    print(f"  {model.name} raw: shape {list(out.shape)}, inference {t1 - t0:.2f}s", file=sys.stderr)
    write_json(out_dir / f"{model.name}.raw.json", {
        "model": model.name,
        "reference": model.reference,
        "input_formula": RAW_FORMULA,
        "output_shape": [int(d) for d in out.shape],
        "units": units,
        "sample_stride": stride,
        "values": [sig6(v) for v in flat[::stride]],
        "sum_abs": float(f"{np.abs(flat.astype(np.float64)).sum():.9g}"),
    })


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fall-onnx", type=Path, required=True, help="YOLOv8s fall-detection ONNX file")
    ap.add_argument("--coco-tfjs", type=Path, required=True, help="YOLOv5s COCO TF.js model.json")
    ap.add_argument("--images", type=Path, required=True, help="folder holding bus.jpg and zidane.jpg")
    ap.add_argument("--out", type=Path, required=True, help="folder to write the JSON fixtures to")
    ap.add_argument("--node", default=os.environ.get("NODE", "node"), help="node executable (default: node)")
    args = ap.parse_args(argv)

    if not (HERE / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        ap.error(f"run `npm ci` in {HERE} first")
    args.out.mkdir(parents=True, exist_ok=True)

    jobs = [(FallModel(args.fall_onnx), 37), (CocoModel(args.coco_tfjs, args.node), 1009)]
    for model, stride in jobs:
        print(f"{model.name} ({model.reference})", file=sys.stderr)
        for name in IMAGES:
            image_fixture(model, args.images / name, args.out)
        raw_fixture(model, stride, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
