"""Times ONNX Runtime on the fall model's ONNX file, and OpenCV on the same pre- and
post-processing work as the candle benchmarks, with a fixed thread count. Prints one JSON
object (milliseconds, medians) for scripts/bench-detector.sh."""

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import cv2
import numpy as np
import onnxruntime as ort


def median_ms(fn, runs, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def synthetic(batch, size=640):
    # value(c, y, x) = ((7x + 13y + 29c) mod 256) / 255, as in the golden tests
    c, y, x = np.meshgrid(np.arange(3), np.arange(size), np.arange(size), indexing="ij")
    one = (((x * 7 + y * 13 + c * 29) % 256) / 255.0).astype(np.float32)
    return np.repeat(one[None], batch, axis=0)


def letterbox(img, size=640):
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0


def node_profile(onnx, threads, x, runs):
    """Per-node kernel times (median over `runs` forward passes, ms) in execution order,
    from ONNX Runtime's own profiler, with the op type and output shape of each node."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(runs + 1):
        sess.run(None, {name: x})
    trace = json.load(open(sess.end_profiling()))
    times, meta, order = collections.defaultdict(list), {}, []
    for ev in trace:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        node = ev["name"][: -len("_kernel_time")]
        if node not in meta:
            order.append(node)
            args = ev.get("args", {})
            shapes = args.get("output_type_shape") or [{}]
            meta[node] = {"op": args.get("op_name", "?"), "output": list(shapes[0].values())[0] if shapes[0] else []}
        times[node].append(ev["dur"] / 1000.0)
    # The first run is a warm-up.
    return [dict(name=n, ms=statistics.median(times[n][1:] or times[n]), **meta[n]) for n in order]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--onnx", required=True)
    p.add_argument("--image", required=True, help="bus.jpg; a 1080p JPEG is made from it")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x1 = synthetic(1)
    forward = {"1": median_ms(lambda: sess.run(None, {name: x1}), a.runs)}
    # The exported graph has a fixed batch of 1: a batch of N is N runs back to back.
    for n in (4, 8):
        forward[str(n)] = median_ms(lambda: [sess.run(None, {name: x1}) for _ in range(n)], max(3, a.runs // n))

    nodes = node_profile(a.onnx, a.threads, x1, 5)

    cv2.setNumThreads(1)  # pre-processing is compared on one core
    bus = cv2.imread(a.image)
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(bus, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    assert ok
    buf = np.frombuffer(jpeg.tobytes(), dtype=np.uint8)
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    pre = {
        "decode": median_ms(lambda: cv2.imdecode(buf, cv2.IMREAD_COLOR), 30),
        "letterbox": median_ms(lambda: letterbox(decoded), 30),
        "decode_and_letterbox": median_ms(lambda: letterbox(cv2.imdecode(buf, cv2.IMREAD_COLOR)), 30),
    }

    rng = np.random.default_rng(7)
    xy = rng.random((5000, 2)) * 600
    wh = 20 + rng.random((5000, 2)) * 100
    boxes = np.concatenate([xy, wh], axis=1).tolist()  # x, y, w, h
    scores = (0.25 + rng.random(5000) * 0.75).tolist()
    classes = (np.arange(5000) % 80).tolist()
    nms = median_ms(lambda: cv2.dnn.NMSBoxesBatched(boxes, scores, classes, 0.25, 0.7, top_k=300), 30)

    print(json.dumps({
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "threads": a.threads,
        "forward_ms": forward,
        "preprocess_1080p_ms": pre,
        "nms_5000_ms": nms,
        "nodes": nodes,
    }))


if __name__ == "__main__":
    main()
