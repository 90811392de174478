"""Validates custom resources in rendered manifests against the CRDs that define them.

kubernetes-validate knows the built-in kinds only; this checks every document whose
group/version/kind one of the given CRD files defines against that CRD's
openAPIV3Schema (the schema the API server applies), and fails on any other custom kind
unless it is listed with --no-schema (those are named in the output, never skipped
silently).

usage: validate_custom.py --crd FILE [--crd FILE ...] [--no-schema KIND ...] MANIFEST...
"""

import argparse
import sys

import jsonschema
import yaml

BUILT_IN_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "rbac.authorization.k8s.io",
    "networking.k8s.io", "coordination.k8s.io", "events.k8s.io",
    "apiextensions.k8s.io", "storage.k8s.io", "scheduling.k8s.io", "node.k8s.io",
}


def strip_extensions(node):
    """Drops x-kubernetes-* keywords, which JSON Schema does not know."""
    if isinstance(node, dict):
        out = {k: strip_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(node, list):
        return [strip_extensions(v) for v in node]
    return node


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--crd", action="append", default=[])
    parser.add_argument("--no-schema", action="append", default=[])
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()

    schemas = {}
    for path in args.crd:
        with open(path) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strip_extensions(version["schema"]["openAPIV3Schema"])
            schemas[(f"{group}/{version['name']}", kind)] = schema

    failures = 0
    for path in args.manifests:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            group = api.split("/")[0] if "/" in api else ""
            name = doc.get("metadata", {}).get("name", "?")
            if group in BUILT_IN_GROUPS:
                continue
            schema = schemas.get((api, kind))
            if schema is None:
                if kind in args.no_schema:
                    print(f"{path}: {kind}/{name}: no schema offline (listed with --no-schema)")
                    continue
                print(f"{path}: {kind}/{name}: no CRD given for {api}", file=sys.stderr)
                failures += 1
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
            for e in errors:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                print(f"{path}: {kind}/{name}: {where}: {e.message}", file=sys.stderr)
            failures += len(errors)
            if not errors:
                print(f"{path}: {kind}/{name}: valid against its CRD")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
