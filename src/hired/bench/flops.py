"""Ideal TTFT speedup: forward FLOPs of time-to-first-token work (ViT + projector + LLM prefill).

Conventions (one multiply-add = 2 FLOPs; biases, norms, activations, softmax, RoPE and the
scoring/selection work are left out: they are lower-order terms):

- ViT, per crop of T = (image_size / patch)^2 + 1 tokens (CLS included; SigLIP has none), every encoder layer the
  model runs (transformers runs all of them even when the features come from layer -2):
  patch embedding 2 (T-1) (3 p^2) d, projections Q K V O 2 T 4 d^2, MLP 2 T 2 d f (CLIP's MLP
  is not gated), attention 2 * 2 T^2 d (Q K^T and A V, full bidirectional attention).
- Projector (a two-layer MLP) on the crop's features after any pooling of g patch tokens into
  one (InternVL's pixel shuffle 0.5: g = 4, each of (T-1)/g tokens of width g d_vision; LLaVA:
  g = 1): 2 (T-1)/g (g d_vision d + d d).
- Language model prefill over S tokens, per layer: projections 2 S (d (d + 2 d_kv) + d d),
  gated MLP 2 S 3 d f, attention 2 * 2 d S (S+1)/2 (causal: each query attends to itself and
  the tokens before it; a kernel that skips the masked half does this much work); the LM head
  for the last position only, 2 d V (generate asks for the last position's logits).

The ViT and projector run on every partition whatever the budget, so they are added to both
sides of the ratio: ideal = (vit + projector + llm(S_full)) / (vit + projector + llm(S_kept)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CONVENTION = (
    "forward FLOPs, multiply-add = 2; ViT: all encoder layers, all partitions, full attention 4*T^2*d "
    "per layer; projector: 2-layer MLP on patch features; LLM prefill: QKV/O 2*S*(d*(d+2*d_kv)+d*d), "
    "gated MLP 2*S*3*d*f, causal attention 4*d*S*(S+1)/2, LM head for the last position only"
)


@dataclass(frozen=True)
class VisionShape:
    """The vision encoder's sizes per crop (the family's :class:`~hired.families.EncoderShape`)."""

    hidden: int
    intermediate: int
    layers: int
    tokens: int  # per crop, CLS included
    patch_values: int  # input values per patch (3 p^2)
    pool: int = 1  # patch tokens merged into one projector input (pixel shuffle 0.5: 4)
    cls: int = 1  # CLS tokens per crop (SigLIP: 0)


@dataclass(frozen=True)
class TextShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    gated: bool = True

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads


def shapes_of(config: Any) -> tuple[VisionShape, TextShape]:
    """The shapes of a supported model's transformers config: the vision side as its family
    reports it, the language model from ``text_config``."""
    from hired.families import family_for_config

    encoder = family_for_config(config).encoder_shape(config)
    text = config.text_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    if head_dim * heads != text.hidden_size:
        raise ValueError("head_dim * heads != hidden_size is not covered by this FLOPs model")
    return (
        VisionShape(**asdict(encoder)),
        TextShape(text.hidden_size, text.intermediate_size, text.num_hidden_layers, heads,
                  getattr(text, "num_key_value_heads", None) or heads, text.vocab_size),
    )


def vit_flops(vision: VisionShape, crops: int) -> int:
    """ViT forward FLOPs over ``crops`` crops (all layers, attention's quadratic term included)."""
    t, d, f = vision.tokens, vision.hidden, vision.intermediate
    embed = 2 * (t - vision.cls) * vision.patch_values * d
    per_layer = 2 * t * 4 * d * d + 2 * t * 2 * d * f + 2 * 2 * t * t * d
    return crops * (embed + vision.layers * per_layer)


def projector_flops(vision: VisionShape, text_hidden: int, crops: int) -> int:
    """The projector (Linear g d_vision->d, act, Linear d->d) on every crop's (pooled) features."""
    n = (vision.tokens - vision.cls) // vision.pool
    return crops * 2 * n * (vision.pool * vision.hidden * text_hidden + text_hidden * text_hidden)


def llm_prefill_flops(text: TextShape, seq_len: int, causal: bool = True) -> int:
    """Language-model prefill FLOPs of one sequence of ``seq_len`` tokens."""
    s, d, f = seq_len, text.hidden, text.intermediate
    projections = 2 * s * (d * (d + 2 * text.kv_dim) + d * d)
    mlp = 2 * s * (3 if text.gated else 2) * d * f
    pairs = s * (s + 1) // 2 if causal else s * s
    attention = 2 * 2 * d * pairs
    lm_head = 2 * d * text.vocab
    return text.layers * (projections + mlp + attention) + lm_head


@dataclass(frozen=True)
class TTFTFlops:
    vit: int
    projector: int
    llm: int

    @property
    def total(self) -> int:
        return self.vit + self.projector + self.llm

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def ttft_flops(vision: VisionShape, text: TextShape, crops: int, seq_len: int, batch: int = 1,
               causal: bool = True) -> TTFTFlops:
    """FLOPs of the work before the first token: ``batch`` sequences of ``seq_len`` tokens with
    ``crops`` ViT crops each."""
    return TTFTFlops(
        vit=batch * vit_flops(vision, crops),
        projector=batch * projector_flops(vision, text.hidden, crops),
        llm=batch * llm_prefill_flops(text, seq_len, causal),
    )
