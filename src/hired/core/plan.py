"""One image's plan: view -> policy -> keep mask -> packed sequence -> report (pure tensors).

Every backend and every family runs this same code; only how the scores and features are
obtained differs. :func:`planned_tokens` predicts, from the layout and config alone, what
:func:`plan_image` will hand the language model, so serving engines can size prompts up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from hired.config import HiREDConfig
from hired.core.layout import ImageLayout
from hired.core.merging import apply_merge_weights
from hired.core.report import ImageReport
from hired.core.selection import check_scores
from hired.core.view import ImageView, Selection
from hired.errors import HiREDError, UnsupportedModelError

Policy = Callable[[ImageView, HiREDConfig], Selection]


@dataclass
class ImagePlan:
    """What to give the language model for one image."""

    selection: Selection
    keep: Tensor  # [P, N] kept partition tokens (never outside layout.valid)
    in_sequence: Tensor  # [L] positions of layout.positions that reach the language model
    report: ImageReport

    @property
    def llm_tokens(self) -> int:
        return int(self.in_sequence.sum())


def select(
    layout: ImageLayout,
    final_scores: Tensor,
    init_scores: Tensor,
    policy: Policy,
    config: HiREDConfig,
    keys: Tensor | None = None,
    key_heads: int = 1,
) -> Selection:
    """Run ``policy`` on one image's scores ([P, N] each, HiRED's partition order); InputError
    where they are not finite (see :func:`hired.core.selection.check_scores`)."""
    check_scores(final_scores, init_scores, layout.valid)
    view = ImageView(final_scores, init_scores, layout.grid, layout.valid, config.budget_tokens(layout.denominator),
                     keys, key_heads, layout.full_view, layout.shape)
    return policy(view, config)


def plan_image(
    layout: ImageLayout, selection: Selection, config: HiREDConfig, image_size: tuple[int, int] | None
) -> ImagePlan:
    """Map a policy's keep mask onto the model's packed sequence, with the configured newlines."""
    valid = layout.valid
    keep = selection.keep & valid
    in_sequence = layout.sequence_mask(keep, config.newline_policy)
    report = ImageReport(
        image_size=(int(image_size[0]), int(image_size[1])) if image_size is not None else None,
        grid=layout.grid,
        budget=config.budget_tokens(layout.denominator),
        partition_budgets=selection.budgets.tolist(),
        keep_mask=selection.keep,
        valid=valid,
        newline_tokens=int((in_sequence & layout.is_newline).sum()),
        llm_tokens_full=layout.length,
        budget_total=layout.budget_total,
    )
    return ImagePlan(selection, keep, in_sequence, report)


def merge_partitions(features: Tensor, selection: Selection, layout: ImageLayout) -> Tensor:
    """One image's projector inputs ``[C, N', D]`` (its crops in the model's order, at the
    language model's granularity) with each kept token replaced by its merge (the policy's
    weights, over its partition's tokens); unchanged when the policy does not merge."""
    if selection.merge_weights is None:
        return features
    if layout.weights is not None:
        raise UnsupportedModelError(
            "merging methods cannot merge an interpolated token map (LLaVA-OneVision downsamples after the "
            "projector, they merge before it); use a ranking method (hired, random, spatial) for this picture"
        )
    flat = features.reshape(-1, features.shape[-1])
    rows = layout.token_rows.to(features.device)  # [P, N] rows of ``flat``, -1 where no token is
    present = rows >= 0
    gathered = flat[rows.clamp_min(0)] * present[..., None].to(flat.dtype)  # [P, N, D]
    keep = (selection.keep & layout.valid).to(features.device) & present
    merged = apply_merge_weights(gathered, keep, selection.merge_weights.to(features.device))
    out = flat.clone()
    out[rows[keep]] = merged[keep]
    return out.view_as(features)


def keep_image_tokens(
    layout: ImageLayout,
    packed: Tensor | tuple[Tensor, ...],
    selection: Selection,
    config: HiREDConfig,
    image_size: tuple[int, int] | None,
    count_known: bool,
) -> tuple[Tensor | tuple[Tensor, ...], ImageReport]:
    """One image's last step, as every backend runs it: the plan of ``selection``, checked against
    :func:`planned_tokens` (the count a serving engine sized its placeholders with), and the packed
    features [L, D] (merges already applied; or a tuple of streams sharing that token axis) cut to
    it. Returns the kept features (newlines included), in the same structure, and the report."""
    plan = plan_image(layout, selection, config, image_size)
    planned = planned_tokens(layout, config, count_known)
    if planned is not None and planned != plan.llm_tokens:  # a bug in a family or policy
        size = "x".join(map(str, image_size)) if image_size else "an"
        raise HiREDError(
            f"internal error: planned {planned} image tokens for {size} image but the plan gives "
            f"{plan.llm_tokens} ({config.method}); please report it"
        )
    if isinstance(packed, Tensor):
        return packed[plan.in_sequence.to(packed.device)], plan.report
    return tuple(stream[plan.in_sequence.to(stream.device)] for stream in packed), plan.report


def planned_tokens(layout: ImageLayout, config: HiREDConfig, count_known: bool) -> int | None:
    """Image tokens (visual + newline) :func:`plan_image` gives the language model for an image
    of this layout, or ``None`` where the count depends on the content.

    count_known: the policy keeps exactly ``min(budget, valid tokens)`` under ``config`` (false for
    adaptive policies and for HiRED's official allocation, whose floor rounding and selection on
    the padded grid make the count depend on the scores).
    """
    valid = int(layout.valid.sum())
    if not count_known:
        return None
    kept = min(config.budget_tokens(layout.denominator), valid)
    if layout.newlines == 0:
        return kept
    policy = config.newline_policy
    if policy == "none":
        return kept
    if policy == "all" or kept == valid:  # every row keeps a token: "kept_rows" == "all"
        return kept + layout.newlines
    return None  # "kept_rows": which rows keep a token depends on the content
