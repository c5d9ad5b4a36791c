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
from hired.core.report import ImageReport
from hired.core.view import ImageView, Selection
from hired.errors import HiREDError

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


def plan_image(
    layout: ImageLayout,
    final_scores: Tensor,
    init_scores: Tensor,
    policy: Policy,
    config: HiREDConfig,
    image_size: tuple[int, int],
    keys: Tensor | None = None,
) -> ImagePlan:
    """Run ``policy`` on one image's scores ([P, N] each, HiRED's partition order) and map its
    keep mask onto the model's packed sequence."""
    valid = layout.valid
    budget = config.budget_tokens(layout.total)
    view = ImageView(final_scores, init_scores, layout.grid, valid, budget, keys)
    selection = policy(view, config)
    keep = selection.keep & valid
    in_sequence = layout.sequence_mask(keep, config.newline_policy)
    report = ImageReport(
        image_size=tuple(int(v) for v in image_size),
        grid=layout.grid,
        budget=budget,
        partition_budgets=selection.budgets.tolist(),
        keep_mask=selection.keep,
        valid=valid,
        newline_tokens=int((in_sequence & layout.is_newline).sum()),
        llm_tokens_full=layout.length,
    )
    return ImagePlan(selection, keep, in_sequence, report)


def kept_features(packed: Tensor, layout: ImageLayout, plan: ImagePlan) -> Tensor:
    """The image's packed features [L, D] cut to the plan (merged first where the policy merges)."""
    if plan.selection.merge_weights is not None:
        packed = layout.merged(packed, plan.keep, plan.selection.merge_weights)
    return packed[plan.in_sequence.to(packed.device)]


def keep_image_tokens(
    layout: ImageLayout,
    packed: Tensor,
    final_scores: Tensor,
    init_scores: Tensor,
    policy: Policy,
    config: HiREDConfig,
    image_size: tuple[int, int],
    keys: Tensor | None,
    count_known: bool,
) -> tuple[Tensor, ImageReport]:
    """One image, as every backend runs it: plan, check the plan against :func:`planned_tokens`
    (the count a serving engine sized its placeholders with), cut the packed features [L, D].
    Returns the kept features (newlines included) and the image's report."""
    plan = plan_image(layout, final_scores, init_scores, policy, config, image_size, keys)
    planned = planned_tokens(layout, config, count_known)
    if planned is not None and planned != plan.llm_tokens:  # a bug in a family or policy
        raise HiREDError(
            f"internal error: planned {planned} image tokens for a {image_size[0]}x{image_size[1]} image but the "
            f"plan gives {plan.llm_tokens} ({config.method}); please report it"
        )
    return kept_features(packed, layout, plan), plan.report


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
    kept = min(config.budget_tokens(layout.total), valid)
    if layout.newlines == 0:
        return kept
    policy = config.newline_policy
    if policy == "none":
        return kept
    if policy == "all" or kept == valid:  # every row keeps a token: "kept_rows" == "all"
        return kept + layout.newlines
    return None  # "kept_rows": which rows keep a token depends on the content
