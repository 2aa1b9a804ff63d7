"""GPT-2 model: `GPT`, `GPTConfig`, `PRESETS` (model/gpt.py); Hugging Face weight conversion lives in model/hf.py."""

from model.gpt import GPT, PRESETS, GPTConfig, KVCache, sample_next

__all__ = ["GPT", "GPTConfig", "PRESETS", "KVCache", "sample_next"]
