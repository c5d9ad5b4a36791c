"""What every family's preset record holds, and the pieces records share (a local tokenizer,
language-model shapes). Nothing here touches a model hub."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast


@dataclass(frozen=True)
class Preset:
    """Shapes of a real checkpoint (or of a tiny test model): the vision and text config fields."""

    family: str  # a key of hired.families.FAMILIES
    vision: dict
    text: dict
    checkpoint: str | None = None  # the hub id whose shapes these are
    extra: dict = field(default_factory=dict)  # top-level config fields besides the family's defaults


@dataclass(frozen=True)
class FamilyPresets:
    """One family's record: its tokenizer's image tokens, a processor of its real preprocessing
    (``processor(tokenizer, **geometry)``: crop, patch, pinpoints, max_tiles, ... as the family
    takes them), a transformers config from a preset's fields (``config(preset, tokenizer)``),
    its presets by name, the tiny one the tests use, and the placeholder a prompt marks an
    image with (the processor expands it to the image's tokens)."""

    family: str
    tokens: dict[str, str]
    processor: Callable[..., Any]
    config: Callable[[Preset, PreTrainedTokenizerFast], Any]
    presets: dict[str, Preset]
    tiny: str
    placeholder: str = "<image>"

    def prompt(self, text: str) -> str:
        """``text`` after one image's placeholder, as the processor expects it."""
        return f"{self.placeholder}\n{text}"


WORDS = (
    "what is the in of a an on to and color shape red green blue yellow white black orange purple "
    "square circle triangle star how many which letter inside there are describe image picture "
    "written sign left right top bottom one two three four five six seven eight nine zero yes no"
).split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]  # ids 0-4 in every preset tokenizer


def word_tokenizer(named: dict[str, str], words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built locally with these named special tokens (after
    :data:`SPECIALS`), padding on the left."""
    specials = SPECIALS + [t for t in named.values() if t not in SPECIALS]
    vocab = {token: i for i, token in enumerate(specials + [w for w in (words or WORDS) if w not in specials])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        padding_side="left", extra_special_tokens=named,
    )


def llama(hidden: int, inter: int, layers: int, heads: int, vocab: int = 32064, kv: int | None = None, **kw) -> dict:
    return dict(
        model_type="llama", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv or heads, vocab_size=vocab,
        max_position_embeddings=4096, rms_norm_eps=1e-5, **kw,
    )


def qwen2(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int = 151674, **kw) -> dict:
    return dict(
        model_type="qwen2", hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab, max_position_embeddings=32768,
        rms_norm_eps=1e-6, **kw,
    )


def tiny_vision(vision: dict, **changes: Any) -> dict:
    """A real vision geometry with tiny widths and depths (the tests' models)."""
    return dict(vision, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, **changes)
