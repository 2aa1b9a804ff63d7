# Tokenizer benchmarks: encoding speed against tiktoken, training time against HF tokenizers.
.PHONY: bench-tokenizer bench-encode bench-train
bench-tokenizer: bench-encode bench-train
bench-encode: $(STAMP)
	$(PY) -m bench.bench_encode
bench-train: $(STAMP)
	$(PY) -m bench.bench_train
bench: bench-tokenizer
