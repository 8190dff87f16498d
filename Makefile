# All set-up lives here: `make test` and `make demo` work on a fresh machine with nothing installed by hand.
# The ComfyUI test host (ComfyUI 0.3.75 + torch) is built once into $(ANYI2V_HOST), outside the clone.
export ANYI2V_HOST ?= $(HOME)/.cache/comfyui-anyi2v/host
PY := $(ANYI2V_HOST)/venv/bin/python

.PHONY: all host browser test unit lint js demo bench scale miniature eval study wheels clean-host

all: test

host:
	bash dev/setup_host.sh >/dev/null

browser: host
	bash dev/setup_browser.sh

lint: host
	$(PY) -m ruff check .

js:
	node --test tests/js/

unit: host
	$(PY) -m pytest -q tests/unit

test: host browser lint js
	$(PY) -m pytest -q -p no:cacheprovider

demo: host
	$(PY) -m dev.demo

bench: host
	$(PY) -m dev.bench

scale: host
	$(PY) -m dev.scale

# Train the miniature video model (the 256 px `cpu` profile: about 50 minutes on 2 CPU cores, on a GPU when there is
# one; writes dev/miniature/models/ and rewrites docs/miniature-loss.png).
miniature: host
	$(PY) -m dev.miniature.train

# AnyI2V measured on the miniature (ObjMC, first-frame IoU, ablations; rewrites the table in docs/eval.md and
# docs/eval-objmc.png). Needs `make miniature` first.
eval: host
	$(PY) -m dev.eval

# The efficacy study in one command (docs/eval.md): trains the miniature for the device present (the 512 px `gpu`
# profile on CUDA, about 8 minutes on an H100; the `cpu` one on a CPU), evaluates it (about 3 minutes) and prints
# eval's JSON last. STUDY_SMOKE=1: the same code path at the gpu profile's shapes, 2 steps of each training phase
# and 1 case per variant, into a temporary folder. STUDY_PHASE=train|eval, STUDY_TRAIN_S, STUDY_EVAL_S: dev/study.py.
# Offline: ANYI2V_WHEELS=<make wheels folder> builds the host from wheels alone (dev/setup_host.sh).
study: host
	$(PY) -m dev.study

# Wheels (CPython 3.12, manylinux x86_64) for an offline study host: WHEELS_FOR=gpu (the lent GPU machines, the
# default, 48 MB at most) or bare (a Python with only torch, numpy, safetensors, einops, transformers).
WHEELS_DIR ?= .wheels
WHEELS_FOR ?= gpu
wheels:
	WHEELS_DIR="$(WHEELS_DIR)" WHEELS_FOR="$(WHEELS_FOR)" bash dev/wheels.sh

clean-host:
	rm -rf "$(ANYI2V_HOST)"
