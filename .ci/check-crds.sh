#!/usr/bin/env bash
# Fails when crds/ or the Helm chart's copy differ from what the Rust types generate.
set -euo pipefail
cd "$(dirname "$0")/.."
gen=$(mktemp)
trap 'rm -f "$gen"' EXIT
cargo run -q --locked -p weir-api --bin weir-crdgen > "$gen"
status=0
for f in crds/streamjob.yaml charts/weir/crds/streamjob.yaml charts/weir-operator/crds/streamjob.yaml; do
  if ! diff -u "$f" "$gen" > /dev/null; then
    echo "CRD drift in $f: regenerate with" >&2
    echo "  cargo run -p weir-api --bin weir-crdgen > crds/streamjob.yaml && cp crds/streamjob.yaml charts/weir/crds/ && cp crds/streamjob.yaml charts/weir-operator/crds/" >&2
    diff -u "$f" "$gen" | head -40 >&2 || true
    status=1
  fi
done
[ $status -eq 0 ] && echo "CRDs match the Rust types"
exit $status
