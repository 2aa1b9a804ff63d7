"""Pure-Python byte-level BPE tokenizer (GPT-2 / r50k_base compatible)."""
