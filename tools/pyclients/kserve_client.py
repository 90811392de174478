"""Drive a KServe v2 (Open Inference Protocol) gRPC server with NVIDIA Triton's own
Python client (tritonclient.grpc, unmodified), the way a Triton user would, and print
ONE JSON object describing what the server answered. Used by the interop test; also
handy by hand:

    kserve_client.py --url 127.0.0.1:50051 --model coco-yolov5s --image bus.jpg

Output (stdout, one line):
  {"live", "ready", "model_ready",
   "server_metadata": {"name", "version", "extensions"},
   "model_metadata": {"name", "versions", "platform", "inputs": [{"name", "datatype", "shape"}], "outputs": [...]},
   "infer_outputs": {NAME: {"datatype", "shape"}},
   "results": [{"image", "detections": [{"class_id", "score", "box": [x_min, y_min, x_max, y_max]}]}],
   "bad_request_error": {"status", "message"} or null when the server accepted the bad request}

Exits non-zero, with a one-line reason on stderr, on any unexpected failure: server
unreachable, an RPC error other than the deliberate bad request, an unreadable image, or
outputs that break the detection contract.
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

INPUT_NAME = "images"
OUTPUT_NAMES = ("detection_count", "boxes", "scores", "classes")
# Expected (datatype, rank) of each output; see check_outputs for the shape rules.
OUTPUT_CONTRACT = {
    "detection_count": ("INT32", 1),
    "boxes": ("FP32", 3),
    "scores": ("FP32", 2),
    "classes": ("INT32", 2),
}


class ClientError(Exception):
    """An unexpected failure, reported on stderr with a non-zero exit."""


def tensor_meta(tensors):
    return [{"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]}
            for t in tensors]


def load_batch(paths):
    """Loads images as RGB, resizes all to the first one's size, stacks to uint8 [N, H, W, 3]."""
    frames = []
    size = None
    for path in paths:
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except (OSError, ValueError) as e:
            raise ClientError(f"cannot read image {path}: {e}") from None
        if size is None:
            size = rgb.size  # (width, height)
        elif rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        frames.append(np.asarray(rgb, dtype=np.uint8))
    return np.ascontiguousarray(np.stack(frames))


def check_outputs(result, n):
    """Fetches the four outputs and checks them against the detection contract."""
    arrays, meta = {}, {}
    for name in OUTPUT_NAMES:
        tensor = result.get_output(name)
        if tensor is None:
            raise ClientError(f"response has no output {name!r}")
        meta[name] = {"datatype": tensor.datatype, "shape": [int(d) for d in tensor.shape]}
        want_dtype, want_rank = OUTPUT_CONTRACT[name]
        if tensor.datatype != want_dtype or len(tensor.shape) != want_rank:
            raise ClientError(f"output {name!r} is {tensor.datatype} {meta[name]['shape']}, "
                              f"want {want_dtype} of rank {want_rank}")
        try:
            arrays[name] = result.as_numpy(name)
        except ValueError as e:  # raw bytes do not match the declared shape
            raise ClientError(f"output {name!r}: raw content does not match shape "
                              f"{meta[name]['shape']}: {e}") from None
        if arrays[name] is None:
            raise ClientError(f"output {name!r} has no data")

    counts = arrays["detection_count"]
    if counts.shape != (n,):
        raise ClientError(f"detection_count shape {list(counts.shape)}, want [{n}]")
    if (counts < 0).any():
        raise ClientError(f"negative detection_count {counts.tolist()}")
    m = int(counts.max()) if n else 0
    for name, shape in (("boxes", (n, m, 4)), ("scores", (n, m)), ("classes", (n, m))):
        if arrays[name].shape != shape:
            raise ClientError(f"output {name!r} shape {list(arrays[name].shape)}, want "
                              f"{list(shape)} (M = largest detection_count = {m})")
    return arrays, meta


def run(args):
    client = grpcclient.InferenceServerClient(url=args.url)
    try:
        return drive(client, args)
    except InferenceServerException as e:
        raise ClientError(f"{args.url}: {e.status()}: {e.message()}") from None
    finally:
        client.close()


def drive(client, args):
    t = args.timeout
    batch = load_batch(args.image)  # before any RPC: a bad image fails fast
    out = {
        "live": client.is_server_live(client_timeout=t),
        "ready": client.is_server_ready(client_timeout=t),
        "model_ready": client.is_model_ready(args.model, client_timeout=t),
    }
    sm = client.get_server_metadata(client_timeout=t)
    out["server_metadata"] = {"name": sm.name, "version": sm.version,
                              "extensions": list(sm.extensions)}
    mm = client.get_model_metadata(args.model, client_timeout=t)
    out["model_metadata"] = {"name": mm.name, "versions": list(mm.versions),
                             "platform": mm.platform, "inputs": tensor_meta(mm.inputs),
                             "outputs": tensor_meta(mm.outputs)}

    n = batch.shape[0]
    inp = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
    inp.set_data_from_numpy(batch)
    requested = [grpcclient.InferRequestedOutput(name) for name in OUTPUT_NAMES]
    result = client.infer(args.model, [inp], outputs=requested, client_timeout=t)
    arrays, out["infer_outputs"] = check_outputs(result, n)

    counts, boxes = arrays["detection_count"], arrays["boxes"]
    scores, classes = arrays["scores"], arrays["classes"]
    out["results"] = [
        {"image": path,
         "detections": [{"class_id": int(classes[i, k]), "score": float(scores[i, k]),
                         "box": [float(v) for v in boxes[i, k]]}
                        for k in range(int(counts[i]))]}
        for i, path in enumerate(args.image)
    ]

    # Deliberately wrong datatype for the image input: the server must refuse it.
    bad = grpcclient.InferInput(INPUT_NAME, [1, 2, 2, 3], "FP64")
    bad.set_data_from_numpy(np.zeros((1, 2, 2, 3), dtype=np.float64))
    try:
        client.infer(args.model, [bad], outputs=requested, client_timeout=t)
        out["bad_request_error"] = None
    except InferenceServerException as e:
        out["bad_request_error"] = {"status": str(e.status()), "message": str(e.message())}
    return out


def main():
    p = argparse.ArgumentParser(
        description="Drive a KServe v2 gRPC server with tritonclient.grpc and print one JSON object.")
    p.add_argument("--url", required=True, help="HOST:PORT of the gRPC server")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--image", action="append", required=True, metavar="PATH",
                   help="image file; repeat for a batch (resized to the first's size)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="per-RPC deadline in seconds (default 60)")
    args = p.parse_args()
    try:
        out = run(args)
        text = json.dumps(out, allow_nan=False)
    except ClientError as e:
        sys.exit(f"kserve_client: {e}")
    except Exception as e:  # anything else is unexpected too; keep it to one clear line
        sys.exit(f"kserve_client: unexpected {type(e).__name__}: {e}")
    print(text)


if __name__ == "__main__":
    main()
