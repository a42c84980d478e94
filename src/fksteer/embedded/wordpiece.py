"""Uncased WordPiece text in and out: the tokenizer of the embedded MiniLM text model.

    from fksteer.embedded.wordpiece import WordPieceText, detokenize
    text = detokenize(["he", "didn", "'", "t", "say", "so", "."])   # "he didn't say so."

:func:`detokenize` joins WordPiece tokens into text as it is written: ``##`` pieces glued to the
word before, no space before closing punctuation or after opening brackets, contractions
("didn't", "it's") and hyphenated words closed up, straight quotes paired. With
``sentence_case`` it also capitalises the first letter of each sentence after the first and the
pronoun "i" (the model is uncased: this restores the casing English text takes, without changing
any word).

:class:`WordPieceText` wraps a transformers BERT tokenizer with that decoding, and is what
:class:`~fksteer.integrations.masked.MaskedDiffusionModel` calls (``__call__`` for prompts,
``batch_decode`` for samples, ``eos_token_id``/``pad_token_id`` for the ends of texts).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["WordPieceText", "detokenize"]

_CLOSING = set(".,;:!?)]}%")
_OPENING = set("([{$#")
_CONTRACTIONS = {"s", "t", "m", "d", "ll", "re", "ve"}
# A sentence starts after . ! or ? (and an optional opening quote). The start of a decoded text
# is not one: the texts are continuations of a prompt.
_SENTENCE_START = re.compile(r"([.!?]\s+\"?)([a-z])")
_PRONOUN_I = re.compile(r"\bi\b(?=('(m|d|ll|ve))?\b)")


def _words(tokens: Sequence[str]) -> list[str]:
    """Glue ``##`` pieces to the piece before (a leading piece loses its ``##``) and runs of
    hyphens into one dash word ("--")."""
    words: list[str] = []
    for token in tokens:
        if token == "-" and words and set(words[-1]) == {"-"}:
            words[-1] += "-"
        elif token.startswith("##") and len(token) > 2:
            if words:
                words[-1] += token[2:]
            else:
                words.append(token[2:])
        else:
            words.append(token)
    return words


def _glue(words: list[str]) -> str:
    """Join words with spaces where written English has them."""
    out = ""
    double_quote_open = False
    for index, word in enumerate(words):
        before = words[index - 1] if index else ""
        after = words[index + 1] if index + 1 < len(words) else ""
        space = bool(out)
        if word in _CLOSING or (word == "'" and after in _CONTRACTIONS and before.isalnum()):
            space = False
        elif before in _OPENING or (before == "'" and word in _CONTRACTIONS):
            space = False
        elif word == "-" or before == "-":
            space = False
        elif word == '"':
            space = space and not double_quote_open
            double_quote_open = not double_quote_open
        elif before == '"' and double_quote_open:
            space = False
        if word == "n't":
            space = False
        out += (" " if space else "") + word
    return out


def _sentence_case(text: str) -> str:
    text = _SENTENCE_START.sub(lambda match: match.group(1) + match.group(2).upper(), text)
    return _PRONOUN_I.sub("I", text)


def detokenize(
    tokens: Sequence[str], sentence_case: bool = False, continuation: bool = False
) -> str:
    """WordPiece tokens (special tokens already removed) -> the text they spell.

    ``continuation``: the text continues a prompt, so it starts with the space that separates
    it from the prompt, unless it starts inside a word (a ``##`` piece) or with closing
    punctuation; ``prompt + text`` then reads as written.
    """
    text = _glue(_words(tokens))
    if sentence_case:
        text = _sentence_case(text)
    if continuation and tokens:
        first = tokens[0]
        attached = first.startswith("##") or first in _CLOSING or first in {"'", "-"}
        text = text if attached else " " + text
    return text


class WordPieceText:
    """A BERT (WordPiece) tokenizer that decodes continuations with :func:`detokenize`.

    Decoded texts continue a prompt: they start with a space (see ``continuation``), so that
    ``prompt + text`` is what a reader reads.

    Args:
        tokenizer: a transformers ``BertTokenizerFast`` (or any tokenizer with ``__call__``,
            ``convert_ids_to_tokens`` and the ``[SEP]``/``[PAD]`` tokens).
        sentence_case: capitalise sentence starts and "i" when decoding.

    ``[SEP]`` ends a text (``eos_token_id``); ``[PAD]`` fills the rest of the row.
    """

    def __init__(self, tokenizer: Any, sentence_case: bool = True):
        self.tokenizer = tokenizer
        self.sentence_case = bool(sentence_case)
        self.eos_token_id = int(tokenizer.sep_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.cls_token_id = int(tokenizer.cls_token_id)
        self.mask_token_id = int(tokenizer.mask_token_id)
        self.all_special_ids = list(tokenizer.all_special_ids)

    def __call__(self, text: str | list[str], add_special_tokens: bool = False) -> dict:
        """Token ids under ``"input_ids"``, without [CLS]/[SEP] unless ``add_special_tokens``."""
        return self.tokenizer(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """One row of ids -> text; special tokens are always dropped."""
        special = set(self.all_special_ids)
        kept = [int(i) for i in ids if int(i) not in special]
        tokens = self.tokenizer.convert_ids_to_tokens(kept)
        return detokenize(tokens, self.sentence_case, continuation=True)

    def batch_decode(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool = True):
        """Rows of ids -> texts (see :meth:`decode`)."""
        return [self.decode(row) for row in rows]
