# Fine-tuning on conversations, and talking to the result: make sft -> make chat
#
#   make sft                                  the recipe's pretraining checkpoint -> artifacts/<recipe>/sft/
#   make sft INIT=gpt2                        start from OpenAI's GPT-2 (hub id via the HF cache, or a directory)
#   make sft INIT=path/to/ckpt.pt             or from another checkpoint of the recipe's tokenizer
#   make sft RESUME=1 | FORCE=1               continue the run / start over (the old run is kept until the
#                                             new one's first checkpoint)
#   make sft SET="sft.max_steps=100"          override recipe keys
#   make sft CONFIG=configs/fineweb-edu-10B.toml    smol-smoltalk on 1-8 GPUs (torchrun, like pretrain)
#   make chat                                 terminal chat with artifacts/<recipe>/sft/ckpt.pt (/reset, /quit)
#   make chat PROMPT="What does json.dumps do?"    answer once and exit (for scripts)
#   make chat TEMPERATURE=0.7 TOP_K=40        sampling settings
#   make bench-sft                            SFT vs pretraining tokens/s, chat latency -> BENCHMARKS.md
#
# `make sft` does not run `make pretrain` first: on a big recipe that would start days of pretraining.
# It says where the base checkpoint is missing instead.

INIT        ?=
TEMPERATURE ?=
TOP_K       ?=
FORCE       ?=

SFT_ARGS = --config $(call quote,$(CONFIG)) $(SET_ARGS) $(if $(INIT),--init $(call quote,$(INIT))) \
           $(if $(filter 1 yes true,$(RESUME)),--resume) $(if $(filter 1 yes true,$(FORCE)),--force)
# PROMPT has a default for `make sample`; only a PROMPT given on the command line makes the chat one-shot.
CHAT_ARGS = --config $(call quote,$(CONFIG)) $(SET_ARGS) \
            $(if $(filter command line,$(origin PROMPT)),--prompt $(call quote,$(value PROMPT))) \
            $(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(if $(TOP_K),--top-k $(TOP_K))

.PHONY: sft chat bench-sft

sft: $(STAMP)
	@if [ "$(strip $(NGPU))" != "" ] && [ "$(strip $(NGPU))" -gt 0 ]; then \
	  echo "$(NGPU) CUDA GPU(s): torchrun $(TORCHRUN_ARGS)"; \
	  set -x; $(VENV)/bin/torchrun $(TORCHRUN_ARGS) -m pipelines.sft $(SFT_ARGS); \
	else \
	  echo "no CUDA GPU: fine-tuning in one CPU process"; \
	  set -x; $(PY) -m pipelines.sft $(SFT_ARGS); \
	fi

chat: $(STAMP)
	@$(PY) -m pipelines.chat $(CHAT_ARGS)

bench-sft: $(STAMP)
	$(PY) -m bench.bench_sft

bench: bench-sft
