# Tokenizer benchmarks: encoding speed against tiktoken (and what a cold pass is made of), BPE learning
# time against HF tokenizers.
.PHONY: bench-tokenizer bench-encode bench-encode-cost bench-learn-bpe
bench-tokenizer: bench-encode bench-encode-cost bench-learn-bpe
bench-encode: $(STAMP)
	$(PY) -m bench.bench_encode
bench-encode-cost: $(STAMP)
	$(PY) -m bench.encode_cost
bench-learn-bpe: $(STAMP)
	$(PY) -m bench.bench_learn_bpe
bench: bench-tokenizer
