"""GPT-2 model: `GPT`, `GPTConfig`, `PRESETS` (model/gpt.py); Hugging Face weight conversion lives in model/hf.py.

Read first: model/gpt.py's `explicit_attention` (attention written out, shapes in comments), then `Block` and
`GPT.forward`. The model runs the fused kernel (`fused_attention`) unless told `model.set_attention("explicit")`.
"""

from model.gpt import GPT, PRESETS, GPTConfig, KVCache, explicit_attention, fused_attention, sample_next

__all__ = ["GPT", "GPTConfig", "PRESETS", "KVCache", "explicit_attention", "fused_attention", "sample_next"]
