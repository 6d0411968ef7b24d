#!/usr/bin/env bash
# Lints the Helm charts and checks what they render, with Helm's own Go SDK from PyPI
# (helm-python-sdk: libhelm_c behind a Python API; no helm binary is needed). The venv is cached
# under $WEIR_CI_CACHE/helm.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${WEIR_CI_CACHE:-$HOME/.cache/weir-ci}
VENV=$CACHE/helm/venv
HELM_SDK_VERSION=0.2.2
if ! "$VENV/bin/python" -c "import helm_python, yaml; assert helm_python.__version__ == '$HELM_SDK_VERSION'" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "helm-python-sdk==$HELM_SDK_VERSION" pyyaml
fi
exec "$VENV/bin/python" .ci/helm_check.py
