"""Drives a KServe v2 (Open Inference Protocol) server with NVIDIA Triton's own gRPC
client, as a Triton user would, and prints one JSON object with what it saw. Used by the
interop test; also handy by hand:

    kserve_client.py --url 127.0.0.1:50051 --model coco-yolov5s --image bus.jpg
"""

import argparse
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

OUTPUTS = ["detection_count", "boxes", "scores", "classes"]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True, help="HOST:PORT of the gRPC server")
    p.add_argument("--model", required=True)
    p.add_argument("--image", action="append", required=True)
    a = p.parse_args()

    client = grpcclient.InferenceServerClient(url=a.url)
    try:
        out = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(a.model),
            "server_metadata": client.get_server_metadata(as_json=True),
            "model_metadata": client.get_model_metadata(a.model, as_json=True),
        }
        images = [Image.open(path).convert("RGB") for path in a.image]
        size = images[0].size
        batch = np.stack([np.asarray(im.resize(size) if im.size != size else im, dtype=np.uint8)
                          for im in images])
        inp = grpcclient.InferInput("images", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        result = client.infer(a.model, [inp], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
        counts = result.as_numpy("detection_count")
        boxes, scores, classes = (result.as_numpy(n) for n in ("boxes", "scores", "classes"))
        out["results"] = [
            {
                "image": path,
                "detections": [
                    {"class_id": int(classes[i, k]), "score": float(scores[i, k]),
                     "box": [float(v) for v in boxes[i, k]]}
                    for k in range(int(counts[i]))
                ],
            }
            for i, path in enumerate(a.image)
        ]

        bad = grpcclient.InferInput("images", [1], "FP64")
        bad.set_data_from_numpy(np.zeros([1], dtype=np.float64))
        try:
            client.infer(a.model, [bad])
            out["bad_request_error"] = None
        except InferenceServerException as e:
            out["bad_request_error"] = {"status": str(e.status()), "message": e.message()}
    except InferenceServerException as e:
        sys.exit(f"kserve_client: {a.url}: {e.status()}: {e.message()}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
