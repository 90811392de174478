"""Times ONNX Runtime on the fall model's ONNX file, and OpenCV on the same pre- and
post-processing work as the candle benchmarks, with a fixed thread count. Prints one JSON
object (milliseconds, medians) for scripts/bench-detector.sh."""

import argparse
import json
import statistics
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
    }))


if __name__ == "__main__":
    main()
