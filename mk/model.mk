# Export a trained checkpoint as a Hugging Face GPT-2 directory (config.json + model.safetensors +
# tokenizer files) that transformers.GPT2LMHeadModel / AutoTokenizer load.
#   make export-hf                      artifacts/<recipe>/pretrain/ckpt.pt -> artifacts/<recipe>/hf-export/
#   make export-hf CKPT=path OUT=dir
CKPT ?= $(ART)/pretrain/ckpt.pt
OUT  ?= $(ART)/hf-export
.PHONY: export-hf
export-hf: $(STAMP)
	$(PY) -m pipelines.hf export $(call quote,$(CKPT)) $(call quote,$(OUT)) \
	  --tokenizer $(call quote,$(ART)/tokenizer/tokenizer.ljt.json)
