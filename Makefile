# All set-up lives here: `make test` and `make demo` work on a fresh machine with nothing installed by hand.
# The ComfyUI test host (ComfyUI 0.3.75 + torch) is built once into $(ANYI2V_HOST), outside the clone.
export ANYI2V_HOST ?= $(HOME)/.cache/comfyui-anyi2v/host
PY := $(ANYI2V_HOST)/venv/bin/python

.PHONY: all host browser test unit lint js demo bench scale miniature eval clean-host

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

# Train the miniature video model (CPU, about 50 minutes; writes dev/miniature/models/ and rewrites docs/miniature-loss.png).
miniature: host
	$(PY) -m dev.miniature.train

# AnyI2V measured on the miniature (ObjMC, first-frame IoU, ablations; rewrites the table in docs/eval.md and
# docs/eval-objmc.png). Needs `make miniature` first.
eval: host
	$(PY) -m dev.eval

clean-host:
	rm -rf "$(ANYI2V_HOST)"
