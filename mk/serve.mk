# Tokenisation service: serve one tokenizer over HTTP/JSON with several worker processes.
#
#   make serve                                   the recipe's tokenizer (built first if needed) on 127.0.0.1:8000
#   make serve PORT=9000 WORKERS=4               overrides; HOST=0.0.0.0 exposes it (no authentication!)
#   make serve TOKENIZER=path/to/tokenizer.ljt.json
#   make serve GPT2_ENCODER=encoder.json GPT2_VOCAB=vocab.bpe        GPT-2's r50k_base
#   make serve SERVE_ARGS="--max-body-bytes 1048576 --max-batch 256"   (several flags: split at spaces)
#   make bench-serve                             MB/s through the service (1 and 2 workers) and p50/p99 latency
#
# Settings come from, in order: these variables, the recipe's [serve] section, built-in defaults.

HOST         ?=
PORT         ?=
WORKERS      ?=
GPT2_ENCODER ?=
GPT2_VOCAB   ?=
SERVE_ARGS   ?=
TOKENIZER    ?=

# Without TOKENIZER or GPT-2 files the recipe decides: its [serve] tokenizer key, else what its
# tokenizer stage wrote, $(ART)/tokenizer/tokenizer.ljt.json (built first by the `tokenizer` target).
serve_source = $(if $(GPT2_ENCODER),--gpt2 $(call quote,$(GPT2_ENCODER)) $(call quote,$(GPT2_VOCAB)),\
               $(if $(TOKENIZER),--tokenizer $(call quote,$(TOKENIZER))))
serve_flags  = $(if $(HOST),--host $(call quote,$(HOST))) $(if $(PORT),--port $(call quote,$(PORT))) \
               $(if $(WORKERS),--workers $(call quote,$(WORKERS)))
serve_needs := $(if $(GPT2_ENCODER)$(TOKENIZER),,tokenizer)

.PHONY: serve bench-serve

serve: $(STAMP) $(serve_needs)
	$(PY) -m service --config $(call quote,$(CONFIG)) $(serve_source) $(serve_flags) $(SERVE_ARGS)

bench-serve: $(STAMP)
	$(PY) -m bench.bench_serve

bench: bench-serve
