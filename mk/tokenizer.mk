# Tokenizer benchmarks: encoding speed against tiktoken, BPE learning time against HF tokenizers.
.PHONY: bench-tokenizer bench-encode bench-learn-bpe
bench-tokenizer: bench-encode bench-learn-bpe
bench-encode: $(STAMP)
	$(PY) -m bench.bench_encode
bench-learn-bpe: $(STAMP)
	$(PY) -m bench.bench_learn_bpe
bench: bench-tokenizer
