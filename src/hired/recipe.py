"""``Recipe``: a HiRED config resolved against one model config, the same for every backend.

A family knows geometry and a policy knows how to choose; a backend needs both joined once:
which encoder layers to score at and how (CLS row or received attention, heads, dtype), whether
the policy merges (and over how many key heads), whether the image-token count is known from
the image size, and the per-batch step (:class:`~hired.core.batch.BatchStep`). The transformers
patch, the vLLM plugin and :func:`hired.planned_tokens` all build one here, so they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hired.config import HiREDConfig
from hired.core.batch import BatchStep
from hired.core.layout import ImageLayout
from hired.core.plan import planned_tokens
from hired.core.scoring import ScoreRequest
from hired.errors import ConfigError, UnsupportedModelError
from hired.families import Family, ImageInput, family_for_config
from hired.policies import PolicySpec, policy


@dataclass(frozen=True)
class Recipe:
    """``config`` on a model of ``model_config``: validated on construction (:meth:`build`)."""

    family: Family
    model_config: Any
    config: HiREDConfig
    policy: PolicySpec
    requests: dict[str, ScoreRequest]

    @classmethod
    def build(cls, model_config: Any, config: HiREDConfig) -> Recipe:
        """UnsupportedModelError / ConfigError naming what does not fit."""
        if not isinstance(config, HiREDConfig):
            raise ConfigError(f"config must be a hired.HiREDConfig, got {type(config).__name__}")
        family = family_for_config(model_config)
        family.check_config(model_config)
        spec = policy(config.method)
        return cls(family, model_config, config, spec, score_requests(family, model_config, config, spec))

    # -- what the backends read -----------------------------------------------------------------------
    @property
    def count_known(self) -> bool:
        return self.policy.count_known(self.config)

    @property
    def merges(self) -> bool:
        return self.policy.merges

    @property
    def has_cls(self) -> bool:
        return self.family.has_cls(self.model_config)

    @property
    def score_layers(self) -> set[int]:
        return {request.layer for request in self.requests.values()}

    @property
    def key_layers(self) -> tuple[int, ...]:
        """Layers whose keys the recorder keeps (merging policies: the final layer's)."""
        return (self.requests["final"].layer,) if self.merges else ()

    @property
    def key_heads(self) -> int:
        """Heads the final layer's keys split into, as the policy reads them (one full-width head
        where it scores with one)."""
        return 1 if self.requests["final"].heads == 1 else self.family.num_heads(self.model_config)

    def layout(self, image: ImageInput | tuple[int, int]) -> ImageLayout:
        return self.family.layout(self.model_config, image)

    def planned_tokens(self, image_size: tuple[int, int], images_in_prompt: int = 1,
                       processor: Any = None) -> int | None:
        """Image tokens (visual + newline) the language model gets for a picture of
        ``image_size`` = (height, width); ``None`` where the count depends on the content."""
        image = self.family.image_input(self.model_config, image_size, images_in_prompt, processor)
        return planned_tokens(self.layout(image), self.config, self.count_known)

    def batch(self, layouts: list[ImageLayout], rows: list[int] | None = None,
              sizes: list[tuple[int, int] | None] | None = None) -> BatchStep:
        """The per-batch step of a batch of images of these layouts."""
        return BatchStep(layouts, self.policy, self.config, self.key_heads, self.count_known, rows, sizes)


def score_requests(family: Family, model_config: Any, config: HiREDConfig, spec: PolicySpec
                   ) -> dict[str, ScoreRequest]:
    """The two score rows a backend records: "init" (phase 1's early layer) and "final" (the
    ranking layer: by default the one producing the model's features, or the encoder's last
    layer for policies whose reference scores there), with the policy's heads (one full-width
    head where it asks) and dtype (the model's own in official mode, as the published code;
    float32 otherwise), at layers whose attention spans the whole picture."""
    count = family.vision_layer_count(model_config)
    global_layers = family.global_layers(model_config)

    def index(value: int, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not -count <= value < count:
            raise ConfigError(f"{name}={value!r} is out of range for a {count}-layer vision tower")
        layer = value % count
        if global_layers is not None and layer not in global_layers:
            raise ConfigError(f"{name}={value}: vision layer {layer} attends within windows, not over the whole "
                              f"picture; score at one of layers {', '.join(map(str, global_layers))}")
        return layer

    default_init = min(global_layers) if global_layers else 0
    init = index(config.init_layer if config.init_layer is not None else default_init, "init_layer")
    if config.final_layer is not None:
        final = index(config.final_layer, "final_layer")
    elif spec.scoring.layer == "last":  # e.g. PruMerge's reference: the encoder's last layer
        final = index(count - 1, "the policy's scoring layer")
    else:
        hidden = family.feature_layer(model_config)
        final = count + hidden if hidden < 0 else hidden - 1  # the layer whose output is hidden_states[hidden]
        if not 0 <= final < count:
            raise ConfigError(f"vision_feature_layer={hidden} has no attention layer to score with")
        final = index(final, "the feature layer")
    heads = family.num_heads(model_config)
    dtype = None if config.allocation == "official" else torch.float32
    has_cls = family.has_cls(model_config)
    kind = config.score or ("cls" if has_cls else "received")
    if kind == "cls" and not has_cls:
        raise UnsupportedModelError("this model's vision encoder has no CLS token to score with; use score='received'")
    return {"init": ScoreRequest(init, heads, dtype, kind),
            "final": ScoreRequest(final, 1 if spec.scoring.single_head else heads, dtype, kind)}
