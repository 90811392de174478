"""The report of `make bench-detector`: candle's criterion medians beside ONNX Runtime and
OpenCV on the same work, then the forward pass layer by layer (candle's `vfctl profile`
beside ONNX Runtime's own per-node profile of the same network), and the summary line.

Usage: detector_report.py CRITERION_DIR ONNXRUNTIME_JSON CANDLE_PROFILE_JSON
"""

import collections
import json
import os
import sys


def candle_ms(crit, group, bench):
    path = os.path.join(crit, group, bench, "new", "estimates.json")
    return json.load(open(path))["median"]["point_estimate"] / 1e6


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"


def whole_work(crit, ref):
    rows = []
    for b in ("1", "4", "8"):
        rows.append((f"fall-yolov8s forward, batch {b}", candle_ms(crit, "forward_fall-yolov8s", b), ref["forward_ms"][b]))
    for name in ("decode", "letterbox", "decode_and_letterbox"):
        rows.append((f"1080p {name} (one core)", candle_ms(crit, "preprocess_1080p", name), ref["preprocess_1080p_ms"][name]))
    rows.append(("NMS, 5000 candidates", candle_ms(crit, "nms_5000_candidates", ""), ref["nms_5000_ms"]))
    for m in ("fall-yolov8s", "coco-yolov5s"):
        for b in ("1", "8"):
            rows.append((f"{m} end to end, batch {b}", candle_ms(crit, f"end_to_end_{m}", b), None))
    table(
        ["work", "candle ms", f"reference ms (onnxruntime {ref['onnxruntime']} / opencv {ref['opencv']})", "ratio"],
        [(label, fmt(c), fmt(o), ratio(c, o)) for label, c, o in rows],
    )
    return rows[0][1], rows[0][2]


def kind(layer):
    return f"{layer['kernel']}x{layer['kernel']} stride {layer['stride']}"


def module_name(node):
    """`/model.22/cv2.0/cv2.0.1/conv/Conv_output_0_nchwc` -> `model.22.cv2.0.1`, the
    checkpoint module name candle's layers carry."""
    parts = node.strip("/").split("/")[:-1]
    if parts and parts[-1] == "conv":
        parts = parts[:-1]
    kept = []
    for p in parts:
        if kept and p.startswith(kept[-1] + "."):
            kept[-1] = p  # the exporter repeats a Sequential's own name
        else:
            kept.append(p)
    return ".".join(kept)


def layer_by_layer(ref, prof):
    nodes = ref.get("nodes", [])
    layers = prof["layers"]
    ours = {l["name"] for l in layers}
    # Convolutions pair by module name; the DFL's fixed 1x1 convolution, which candle
    # computes as a weighted sum in the head, counts with everything else.
    convs = {module_name(n["name"]): n for n in nodes if "Conv" in n["op"] and module_name(n["name"]) in ours}
    others = [n for n in nodes if not ("Conv" in n["op"] and module_name(n["name"]) in ours)]
    print(f"Forward pass of fall-yolov8s at batch {prof['batch']}, layer by layer "
          f"(candle: `vfctl profile`, {prof['threads']} threads; onnxruntime: its node profiler, "
          f"{ref['threads']} threads; medians of 5 runs):")
    print()
    if len(convs) != len(layers):
        print(f"(only {len(convs)} of candle's {len(layers)} convolutions found among onnxruntime's nodes: "
              "totals only)")
        convs = {}
    rows, by_kind = [], collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for layer in layers:
        o = convs[layer["name"]]["ms"] if convs else None
        shape = f"{layer['c_in']}->{layer['c_out']} @ {layer['out_h']}x{layer['out_w']}"
        rows.append((layer["name"], kind(layer), shape, fmt(layer["gflop"], 3), fmt(layer["ms"]),
                     fmt(layer["gflop"] / layer["ms"] * 1e3, 0), fmt(layer["im2col_ms"]), fmt(layer["gemm_ms"]),
                     fmt(layer["epilogue_ms"]), fmt(o), ratio(layer["ms"], o)))
        k = by_kind[kind(layer)]
        k[0] += layer["ms"]
        k[1] += o or 0.0
        k[2] += layer["gflop"]
    table(["layer", "kernel", "channels @ output", "GFLOP", "candle ms", "candle GFLOP/s", "im2col",
           "gemm", "bias+SiLU", "onnxruntime ms", "ratio"], rows)

    conv_c = sum(l["ms"] for l in layers)
    conv_o = sum(n["ms"] for n in convs.values()) if convs else None
    other_o = sum(n["ms"] for n in others)
    other_ops = collections.Counter()
    for n in others:
        other_ops[n["op"]] += n["ms"]
    summary = [(f"all {k}", fmt(v[0]), fmt(v[1] if convs else None), ratio(v[0], v[1] if convs else None),
                fmt(v[2] / v[0] * 1e3, 0), fmt(v[2] / v[1] * 1e3 if convs and v[1] else None, 0))
               for k, v in sorted(by_kind.items())]
    gflop = sum(l["gflop"] for l in layers)
    summary.append(("all convolutions", fmt(conv_c), fmt(conv_o), ratio(conv_c, conv_o),
                    fmt(gflop / conv_c * 1e3, 0), fmt(gflop / conv_o * 1e3 if conv_o else None, 0)))
    summary.append(("everything else (SiLU outside convolutions, concat, pool, upsample, head decode)", fmt(prof["other_ms"]),
                    fmt(other_o), ratio(prof["other_ms"], other_o), "-", "-"))
    summary.append(("forward pass", fmt(prof["forward_ms"]), fmt(ref["forward_ms"]["1"]),
                    ratio(prof["forward_ms"], ref["forward_ms"]["1"]), "-", "-"))
    table(["part", "candle ms", "onnxruntime ms", "ratio", "candle GFLOP/s", "onnxruntime GFLOP/s"], summary)
    if other_ops:
        print("onnxruntime's other nodes: " + ", ".join(f"{op} {ms:.2f} ms" for op, ms in other_ops.most_common()))
        print()


def main():
    crit, ref, prof = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
    c1, o1 = whole_work(crit, ref)
    layer_by_layer(ref, prof)
    print(f"detector speed: candle/onnxruntime forward latency ratio at batch 1 = {c1 / o1:.2f} "
          f"(candle {c1:.1f} ms, onnxruntime {o1:.1f} ms)")


if __name__ == "__main__":
    main()
