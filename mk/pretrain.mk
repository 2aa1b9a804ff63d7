# Pretraining: make pretrain -> make sample / make eval / make hellaswag
#
#   make pretrain                         data -> tokenizer -> shards (cheap when up to date) -> train
#   make pretrain RESUME=1                continue from artifacts/<recipe>/pretrain/ckpt.pt
#   make pretrain FORCE=1                 start over; the previous run is replaced at the first checkpoint
#   make pretrain SET="train.max_steps=100 wandb.mode=offline"     override recipe keys
#   make pretrain CONFIG=configs/fineweb-edu-10B.toml              GPT-2 124M on 1-8 GPUs
#   make pretrain NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1        multi-node (run on every node)
#   make sample PROMPT='The meaning of "life" is'                 TOKENS=64 NUM=3 (the prompt passes as typed)
#   make eval                             val loss (+ HellaSwag when eval.hellaswag is set)
#   make hellaswag                        download the official validation set, score the checkpoint (if any)
#   make gpu-check                        ~50 steps of gpt2 on one GPU: tokens/s and MFU -> BENCHMARKS.md
#
# With CUDA GPUs, training runs one process per GPU under torchrun (NGPU overrides the count);
# without, it runs in this one process on the CPU.

NGPU        ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
NNODES      ?= 1
NODE_RANK   ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
RESUME      ?=
PROMPT      ?= I am a doctor, let me teach you about
TOKENS      ?= 64
NUM         ?= 3
HELLASWAG   ?= artifacts/hellaswag/hellaswag_val.jsonl

# A rerun never overwrites a run (train/run_dir.py): RESUME=1 continues it, FORCE=1 starts over (the old
# run is kept until the new run's first checkpoint); FORCE=1 here does not redo the data stages.
PRETRAIN_ARGS = --config $(call quote,$(CONFIG)) $(SET_ARGS) $(if $(filter 1 yes true,$(RESUME)),--resume) \
                $(call pipeline_force,pretrain)
# Single node: --standalone picks a free local rendezvous port. Several nodes: torchrun's c10d
# rendezvous on MASTER_ADDR:MASTER_PORT (every node runs the same command with its NODE_RANK).
TORCHRUN_ARGS = $(if $(filter 1,$(NNODES)),--standalone,--nnodes=$(NNODES) --node_rank=$(NODE_RANK) \
                --rdzv_backend=c10d --rdzv_endpoint=$(MASTER_ADDR):$(MASTER_PORT)) --nproc_per_node=$(NGPU)

.PHONY: pretrain sample eval hellaswag gpu-check

pretrain: shards
	@if [ "$(strip $(NGPU))" != "" ] && [ "$(strip $(NGPU))" -gt 0 ]; then \
	  echo "$(NGPU) CUDA GPU(s): torchrun $(TORCHRUN_ARGS)"; \
	  set -x; $(VENV)/bin/torchrun $(TORCHRUN_ARGS) -m pipelines.pretrain $(PRETRAIN_ARGS); \
	else \
	  echo "no CUDA GPU: training in one CPU process"; \
	  set -x; $(PY) -m pipelines.pretrain $(PRETRAIN_ARGS); \
	fi

# PROMPT is read with $(value ...): make would otherwise expand a `$(...)` in it to nothing, silently.
sample: $(STAMP)
	$(PY) -m pipelines.sample --config $(call quote,$(CONFIG)) $(SET_ARGS) \
	  --prompt $(call quote,$(value PROMPT)) --tokens $(call quote,$(TOKENS)) --num $(call quote,$(NUM))

eval: $(STAMP)
	$(PY) -m pipelines.evaluate --config $(call quote,$(CONFIG)) $(SET_ARGS)

# Needs network once; the file is kept under artifacts/hellaswag/. Set eval.hellaswag in a recipe
# to also score HellaSwag during training.
hellaswag: $(STAMP)
	$(PY) -m pipelines.hellaswag $(call quote,$(HELLASWAG))
	@if [ -f $(call quote,$(ART)/pretrain/ckpt.pt) ]; then \
	  set -x; $(PY) -m pipelines.evaluate --config $(call quote,$(CONFIG)) $(SET_ARGS) \
	    --hellaswag $(call quote,$(HELLASWAG)); \
	else echo "no checkpoint in $(ART)/pretrain yet: make pretrain first, then make hellaswag scores it"; fi

gpu-check: $(STAMP)
	bash bench/gpu_check.sh
