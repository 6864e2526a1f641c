"""Build small random-weight Qwen2.5-VL / Qwen3-VL checkpoints offline (tests, demos, training seeds).

The tokenizer is a byte-level BPE trained on a few standard-library sources, wrapped as a Qwen2
tokenizer with the Qwen-VL special tokens and chat template, so the saved folder loads through
`AutoProcessor` / `AutoModelForImageTextToText` exactly like a hub checkpoint.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(vocab_size: int = 1000, corpus: list[str] | None = None):
    """A byte-level BPE Qwen2 tokenizer with the Qwen-VL special tokens, trained offline."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if corpus is None:
        files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:40]
        bpe.train(files, trainer)
    else:
        bpe.train_from_iterator(corpus, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS], special_tokens=True)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_qwen_vl(out_dir: str | os.PathLike, family: str = "qwen2_5_vl", seed: int = 0,
                       min_pixels: int | None = None, max_pixels: int | None = None,
                       text: dict[str, Any] | None = None, vision: dict[str, Any] | None = None,
                       tokenizer=None) -> Path:
    """Write a random-weight Qwen-VL checkpoint (model, processor, tokenizer) to `out_dir`."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessor, Qwen2VLVideoProcessor)

    out = Path(out_dir)
    tok = tokenizer or build_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    text_cfg = dict(vocab_size=len(tok) + 16, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                    bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id)
    text_cfg.update(text or {})
    if family == "qwen2_5_vl":
        patch, factor = 14, 28
        text_cfg.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]})
        vis_cfg = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text_cfg["hidden_size"],
                       patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[1], tokens_per_second=2)
        vis_cfg.update(vision or {})
        config = Qwen2_5_VLConfig(text_config=text_cfg, vision_config=vis_cfg, **common)
        model_cls, proc_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
        image_proc_cls, video_proc_cls = Qwen2VLImageProcessor, Qwen2VLVideoProcessor
    elif family == "qwen3_vl":
        from transformers import (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor,
                                  Qwen3VLVideoProcessor)

        patch, factor = 16, 32
        text_cfg.setdefault("head_dim", text_cfg["hidden_size"] // text_cfg["num_attention_heads"])
        text_cfg.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3],
                                                "mrope_interleaved": True})
        vis_cfg = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text_cfg["hidden_size"],
                       patch_size=patch, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256,
                       deepstack_visual_indexes=[0])
        vis_cfg.update(vision or {})
        config = Qwen3VLConfig(text_config=text_cfg, vision_config=vis_cfg, **common)
        model_cls, proc_cls = Qwen3VLForConditionalGeneration, Qwen3VLProcessor
        image_proc_cls, video_proc_cls = Qwen2VLImageProcessor, Qwen3VLVideoProcessor
    else:
        raise ValueError(f"unknown family {family!r}")
    min_px = min_pixels or 4 * factor * factor
    max_px = max_pixels or 256 * factor * factor
    size = {"shortest_edge": min_px, "longest_edge": max_px}
    image_proc = image_proc_cls(size=size, patch_size=patch, merge_size=2, temporal_patch_size=2)
    video_proc = video_proc_cls(size=size, patch_size=patch, merge_size=2, temporal_patch_size=2)
    processor = proc_cls(image_processor=image_proc, video_processor=video_proc, tokenizer=tok,
                         chat_template=CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
