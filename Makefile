# LLM Journey: every target is a stage of one pipeline.
#   make data -> make tokenizer -> make shards -> make inspect -> make pretrain
# Each stage reads the previous stage's artifacts under artifacts/<recipe>/ and writes its own.
# CONFIG picks the recipe (a TOML file in configs/); the default runs offline on the embedded corpus.

SHELL      := /bin/bash
CONFIG     ?= configs/demo.toml
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
STAMP      := $(VENV)/.installed
# The CPU wheel of torch (small; installed where no GPU is present); GPU machines get pip's default CUDA build.
TORCH_CPU  ?= torch==2.13.0

# Values typed after `make` reach the commands exactly as typed, each as ONE shell word: `quote`
# wraps a value in single quotes and writes every ' inside it as '\'' (close, escaped quote,
# reopen). Values that may hold `$(...)` (SET, PROMPT, DOC) are read with $(value ...): plain
# $(PROMPT) would let make expand `$(date)` itself, to an empty make variable, without a word.
#   make shards SET='data.paths=["/data/my file.jsonl"] shards.workers=1'
#   make sample PROMPT='Cost: $(5) or "more"'
quote    = '$(subst ','\'',$(1))'
SET_ARGS = $(if $(value SET),--set $(call quote,$(value SET)))

# make DEBUG=1: expected failures print their traceback too, not just the one `error:` line.
ifneq ($(filter 1 yes true,$(DEBUG)),)
export LLM_JOURNEY_DEBUG := 1
endif

.DEFAULT_GOAL := help
.PHONY: help setup test lint bench clean

help:
	@echo "make setup            create .venv and install runtime + dev dependencies (and Ray, for EXECUTOR=ray)"
	@echo "make test             run the whole test suite"
	@echo "make lint             ruff"
	@echo "make data|tokenizer|shards|inspect|pretrain|sample|eval|serve   (CONFIG=$(CONFIG))"
	@echo "make hellaswag|export-hf|gpu-check    evaluation, HF export, GPU throughput check"
	@echo "make sft|chat         fine-tune the pretrained model on conversations, then talk to it (PROMPT=... once); make chat-web: in the browser"
	@echo "make docs             rerun the demo and regenerate the README's committed figures (docs/img/)"
	@echo "make bench            all benchmarks (bench-encode, bench-encode-cost, bench-learn-bpe, bench-shards, bench-ray, bench-serve; BENCHMARKS.md)"
	@echo "FORCE=1 redo the named stage; VERIFY=1 hash every output before skipping a stage; DEBUG=1 tracebacks"
	@echo "EXECUTOR=ray RAY_ADDRESS=host:port   make data|tokenizer|shards as tasks on a Ray cluster (same bytes)"

setup: $(STAMP)

# Install torch first so that the project's loose `torch>=...` requirement is already satisfied:
# without a GPU we take the CPU wheel (a fraction of the download); with one, pip's default CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(PIP) install -q torch; else $(PIP) install -q "$(TORCH_CPU)"; fi
	$(PIP) install -q -e ".[dev,ray]"
	$(MAKE) --no-print-directory browser
	touch $@

# The page tests drive Debian's chromium (Playwright with executable_path; never a downloaded browser
# build). Installed with apt where we may (root, apt present); elsewhere those tests say why they skip.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: apt-get could not install chromium; the page tests will skip"; \
	else echo "note: no chromium and no root to install it (apt-get install chromium); the page tests will skip"; fi

# PYTEST_ARGS lets you narrow a run: make test PYTEST_ARGS="tests/test_encode.py -x"
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The code is formatted by hand for reading (aligned comments, tables); ruff checks, it does not reformat.
lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf artifacts .pytest_cache .ruff_cache

# Each group of targets lives in its own file under mk/ (data pipeline, pretraining, model export,
# service, tokenizer benchmarks), so that each one reads on its own.
include $(sort $(wildcard mk/*.mk))
