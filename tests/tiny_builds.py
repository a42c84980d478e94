"""Tiny random-weight models of the libraries we integrate with, built from a config in code.

    from tiny_builds import tiny_unet2d, tiny_masked_lm

Nothing is downloaded; the seeds are fixed so that every test sees the same weights.
"""

from __future__ import annotations

import torch

#: The word-level vocabulary of :func:`tiny_masked_lm` (special tokens first).
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_unet2d(num_class_embeds: int | None = None):
    """A diffusers ``UNet2DModel``: 1 channel, 8x8, two blocks (class-conditional if asked)."""
    import diffusers

    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        num_class_embeds=num_class_embeds,
    ).eval()


def tiny_masked_lm(words: list[str]):
    """A random ``BertForMaskedLM`` and a word-level fast tokenizer over ``words``.

    The tokenizer joins words with spaces when decoding (WordPiece decoder); its mask token is
    ``[MASK]``. Returns (model, tokenizer).
    """
    import tokenizers
    import transformers

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + list(words))}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    return transformers.BertForMaskedLM(config).eval(), tokenizer
