# The data pipeline: make data -> make tokenizer -> make shards -> make inspect
#
#   make shards                                 whole chain for $(CONFIG); up-to-date stages are skipped
#   make shards CONFIG=configs/fineweb-edu-10B.toml
#   make tokenizer FORCE=1                      redo just the named stage (its inputs are reused)
#   make shards SET='shards.workers=1 shards.format=arrow'   override recipe keys (section.key=value, TOML values)
#   make shards SET='data.paths=["/data/my file.jsonl"]'      quotes and spaces pass through as typed
#   make inspect DOC=topic:assert               decode one document by id (default: 2 at random)
#   make tokenizer GPT2_DIR=path/to/dir         also report GPT-2's bytes/token (dir with encoder.json, vocab.bpe)
#   make shards VERIFY=1                        hash every output before calling a stage up to date
#   make shards PROGRESS=0                      no progress bars or progress lines (so does TQDM_DISABLE=1)
#   make shards EXECUTOR=ray RAY_ADDRESS=head:6379   data, tokenizer and shards as tasks on a Ray cluster
#                                               (same bytes; every node must see artifacts/ at the same path)
#   make bench-shards                           shards throughput vs a build-nanogpt-style tiktoken pipeline
#   make bench-ray                              make shards: local executor vs Ray on 1 and 2 nodes
#
# Stages are phony and always invoked: each stage compares its recipe section and the fingerprints
# of its inputs with its own manifest.json, checks its outputs (sizes; sha256 of small files and of
# big ones whose stat changed, contract/manifest.py) and returns at once when nothing changed, so
# Make needs no timestamps to get the dependency chain right (and a changed recipe key reruns
# exactly the stages that read it, a damaged output the stage that made it).

# The recipe's name, read without Python so that it works before `make setup`.
RECIPE_NAME := $(or $(shell sed -n 's/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' $(call quote,$(CONFIG)) 2>/dev/null | head -n1),$(basename $(notdir $(CONFIG))))
ART         := artifacts/$(RECIPE_NAME)
SET         ?=
DOC         ?=
GPT2_DIR    ?=
# A TOML string for a path typed on the command line (backslashes and double quotes escaped).
toml_string = "$(subst ",\",$(subst \,\\,$(1)))"
GPT2_SET      = tokenizer.gpt2_encoder_json=$(call toml_string,$(GPT2_DIR)/encoder.json) \
                tokenizer.gpt2_vocab_bpe=$(call toml_string,$(GPT2_DIR)/vocab.bpe)
PIPELINE_ARGS = --config $(call quote,$(CONFIG)) $(SET_ARGS) $(if $(GPT2_DIR),--set $(call quote,$(GPT2_SET)))
# FORCE=1 applies to the stage named on the command line only, not to the stages it depends on.
pipeline_force = $(if $(filter 1 yes true,$(FORCE)),$(if $(filter $(1),$(MAKECMDGOALS)),--force))
# VERIFY=1 applies to every stage the target runs: damage upstream is what it is looking for.
pipeline_verify = $(if $(filter 1 yes true,$(VERIFY)),--verify)
# PROGRESS=0: no progress at all. Otherwise a terminal gets tqdm bars and a log file a plain line every
# LLM_JOURNEY_PROGRESS_EVERY seconds (tokenizer/progress.py).
PROGRESS    ?= 1
pipeline_progress = $(if $(filter 0 no false off,$(PROGRESS)),--no-progress)
# EXECUTOR=local|ray: where the data stages run (pipelines/executors/); RAY_ADDRESS: the cluster to use.
# Both are passed on the command line, so `make -n` shows them.
EXECUTOR    ?=
RAY_ADDRESS ?=
pipeline_executor = $(if $(EXECUTOR),--executor $(call quote,$(EXECUTOR)))
ray_env           = $(if $(RAY_ADDRESS),RAY_ADDRESS=$(call quote,$(RAY_ADDRESS)))
STAGE_PY          = $(ray_env) $(PY)

.PHONY: data tokenizer shards inspect bench-shards bench-ray

data: $(STAMP)
	$(STAGE_PY) -m pipelines.data $(PIPELINE_ARGS) $(call pipeline_force,data) $(pipeline_verify) \
	  $(pipeline_progress) $(pipeline_executor)

tokenizer: data
	$(STAGE_PY) -m pipelines.learn_tokenizer $(PIPELINE_ARGS) $(call pipeline_force,tokenizer) $(pipeline_verify) \
	  $(pipeline_progress) $(pipeline_executor)

shards: tokenizer
	$(STAGE_PY) -m pipelines.shards $(PIPELINE_ARGS) $(call pipeline_force,shards) $(pipeline_verify) \
	  $(pipeline_progress) $(pipeline_executor)

# DOC holds ids separated by spaces (ids themselves cannot contain one); each is quoted on its own.
inspect: shards
	$(PY) -m pipelines.inspect $(PIPELINE_ARGS) $(foreach d,$(value DOC),--doc $(call quote,$(d)))

bench-shards: $(STAMP)
	$(PY) -m bench.bench_shards

bench-ray: $(STAMP)
	$(PY) -m bench.bench_ray

bench: bench-shards bench-ray
