"""A tiny random SmolVLM written to disk: the VLM of a fresh SmolVLA in tests, benchmarks
and CPU smoke runs (`--lerobot.vlm DIR`), with nothing downloaded."""

from __future__ import annotations

from pathlib import Path

TINY_WORDS = (
    "pick place the puck at goal reach push open close door drawer put a window "
    "button press peg insert side assembly into hole "
    "Advantage: positive negative"  # RECAP's indicator text (aloe.policies.indicator)
)


def write_tiny_smolvlm(root: Path, image_size: int = 32) -> Path:
    """Write a tiny random SmolVLM (config, word-level tokenizer, processor) to `root`, for
    tests and CPU smoke runs of a fresh SmolVLA (`--lerobot.vlm ROOT`); needs transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    special = {
        "fake_image_token": "<fake_token_around_image>",
        "image_token": "<image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<eou>",
    }
    words = ["<pad>", "<unk>", *special.values(), *TINY_WORDS.split()]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", extra_special_tokens=special
    )
    text = dict(
        model_type="llama",
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=8,
    )
    SmolVLMConfig(
        text_config=text, vision_config=vision, scale_factor=2, image_token_id=vocab["<image>"]
    ).save_pretrained(root)
    images = SmolVLMImageProcessor(
        do_resize=False, do_image_splitting=False, max_image_size={"longest_edge": image_size}
    )
    SmolVLMProcessor(
        image_processor=images,
        tokenizer=fast,
        image_seq_len=4,
        video_processor=SmolVLMVideoProcessor(),
    ).save_pretrained(root)
    return root
