# The data pipeline: make data -> make tokenizer -> make shards -> make inspect
#
#   make shards                                 whole chain for $(CONFIG); up-to-date stages are skipped
#   make shards CONFIG=configs/fineweb-edu-10B.toml
#   make tokenizer FORCE=1                      redo just the named stage (its inputs are reused)
#   make shards SET="shards.workers=1 shards.format=arrow"   override recipe keys (section.key=value)
#   make inspect DOC=topic:assert               decode one document by id (default: 2 at random)
#   make tokenizer GPT2_DIR=path/to/dir         also report GPT-2's bytes/token (dir with encoder.json, vocab.bpe)
#   make bench-shards                           shards throughput vs a build-nanogpt-style tiktoken pipeline
#
# Stages are phony and always invoked: each stage compares its recipe section and the fingerprints
# of its inputs with its own manifest.json and returns at once when nothing changed, so Make needs
# no timestamps to get the dependency chain right (and a changed recipe key reruns exactly the
# stages that read it).

# The recipe's name, read without Python so that it works before `make setup`.
RECIPE_NAME := $(or $(shell sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' $(CONFIG) 2>/dev/null | head -n1),$(basename $(notdir $(CONFIG))))
ART         := artifacts/$(RECIPE_NAME)
SET         ?=
DOC         ?=
GPT2_DIR    ?=
PIPELINE_ARGS = --config $(CONFIG) $(foreach s,$(SET),--set $(s)) \
  $(if $(GPT2_DIR),--set tokenizer.gpt2_encoder_json=$(GPT2_DIR)/encoder.json --set tokenizer.gpt2_vocab_bpe=$(GPT2_DIR)/vocab.bpe)
# FORCE=1 applies to the stage named on the command line only, not to the stages it depends on.
pipeline_force = $(if $(filter 1 yes true,$(FORCE)),$(if $(filter $(1),$(MAKECMDGOALS)),--force))

.PHONY: data tokenizer shards inspect bench-shards

data: $(STAMP)
	$(PY) -m pipelines.data $(PIPELINE_ARGS) $(call pipeline_force,data)

tokenizer: data
	$(PY) -m pipelines.learn_tokenizer $(PIPELINE_ARGS) $(call pipeline_force,tokenizer)

shards: tokenizer
	$(PY) -m pipelines.shards $(PIPELINE_ARGS) $(call pipeline_force,shards)

inspect: shards
	$(PY) -m pipelines.inspect $(PIPELINE_ARGS) $(foreach d,$(DOC),--doc $(d))

bench-shards: $(STAMP)
	$(PY) -m bench.bench_shards

bench: bench-shards
