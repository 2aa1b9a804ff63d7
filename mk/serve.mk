# Tokenisation service: serve one tokenizer over HTTP/JSON with several worker processes.
#
#   make serve                                   the recipe's tokenizer (built first if needed) on 127.0.0.1:8000
#   make serve PORT=9000 WORKERS=4               overrides; HOST=0.0.0.0 exposes it (no authentication!)
#   make serve TOKENIZER=path/to/tokenizer.ljt.json
#   make serve GPT2_ENCODER=encoder.json GPT2_VOCAB=vocab.bpe        GPT-2's r50k_base
#   make serve SERVE_ARGS="--max-body-bytes 1048576 --max-batch 256"   (several flags: split at spaces)
#   make serve ARTIFACTS=elsewhere/artifacts     what the pages browse (default: the recipe's artifacts_root)
#   make bench-serve                             MB/s through the service (1 and 2 workers) and p50/p99 latency
#
# The models, through the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models):
#   make chat-web                                the recipe's sft/ checkpoint (chat) and pretrain/ checkpoint
#                                                (completions), and the web chat at http://127.0.0.1:8000/chat
#   make chat-web DEVICE=cuda PORT=9000          (HOST, PORT, WORKERS, SERVE_ARGS as for serve)
#   make serve CHECKPOINT=path/ckpt.pt BASE_CHECKPOINT=path/ckpt.pt    any checkpoints, with the recipe's tokenizer
#   make bench-openai                            time to first token and tokens/s, 1 and 8 streaming clients
#
# Besides /v1/, the service serves two web pages: the tokenizer playground at / and the shard browser at
# /shards (service/pages.py), e.g. http://127.0.0.1:8000/shards.
#
# Settings come from, in order: these variables, the recipe's [serve] section, built-in defaults.

HOST         ?=
PORT         ?=
WORKERS      ?=
GPT2_ENCODER ?=
GPT2_VOCAB   ?=
SERVE_ARGS   ?=
TOKENIZER    ?=
ARTIFACTS    ?=
CHECKPOINT      ?=
BASE_CHECKPOINT ?=
DEVICE          ?=

# Without TOKENIZER or GPT-2 files the recipe decides: its [serve] tokenizer key, else what its
# tokenizer stage wrote, $(ART)/tokenizer/tokenizer.ljt.json (built first by the `tokenizer` target).
serve_source = $(if $(GPT2_ENCODER),--gpt2 $(call quote,$(GPT2_ENCODER)) $(call quote,$(GPT2_VOCAB)),\
               $(if $(TOKENIZER),--tokenizer $(call quote,$(TOKENIZER))))
serve_flags  = $(if $(HOST),--host $(call quote,$(HOST))) $(if $(PORT),--port $(call quote,$(PORT))) \
               $(if $(WORKERS),--workers $(call quote,$(WORKERS))) \
               $(if $(ARTIFACTS),--artifacts $(call quote,$(ARTIFACTS)))
serve_needs := $(if $(GPT2_ENCODER)$(TOKENIZER),,tokenizer)
model_flags  = $(if $(CHECKPOINT),--checkpoint $(call quote,$(CHECKPOINT))) \
               $(if $(BASE_CHECKPOINT),--base-checkpoint $(call quote,$(BASE_CHECKPOINT))) \
               $(if $(DEVICE),--device $(call quote,$(DEVICE)))

.PHONY: serve bench-serve chat-web bench-openai

serve: $(STAMP) $(serve_needs)
	$(PY) -m service --config $(call quote,$(CONFIG)) $(serve_source) $(serve_flags) $(model_flags) $(SERVE_ARGS)

# Nothing is built first (as for `make chat`): on a big recipe that would start days of training. The service
# says which checkpoint is missing; without the recipe's tokenizer it uses the one `make sft` saved.
chat-web: $(STAMP)
	$(PY) -m service --config $(call quote,$(CONFIG)) --models $(serve_source) $(serve_flags) $(model_flags) \
	  $(SERVE_ARGS)

bench-openai: $(STAMP)
	$(PY) -m bench.bench_openai

bench-serve: $(STAMP)
	$(PY) -m bench.bench_serve

bench: bench-serve bench-openai
