"""Shorten token sequences to the image tokens that were kept (pure tensors)."""

from __future__ import annotations

import torch
from torch import Tensor

from hired.errors import ImageTokenMismatchError

# Value used to pad each kind of per-token tensor when rows are re-aligned.
PAD_VALUES = {"labels": -100, "token_type_ids": 0, "mm_token_type_ids": 0}


def drop_image_placeholders(
    input_ids: Tensor, image_token_id: int, full_lens: list[int], kept_lens: list[int]
) -> Tensor:
    """[B, L] bool mask of tokens to keep: each image's placeholder run is cut to its kept length.

    Images are matched to placeholders in batch order, as the model's masked scatter does.
    """
    is_image = input_ids == image_token_id
    found = int(is_image.sum())
    needed = sum(full_lens)
    if found != needed:
        raise ImageTokenMismatchError(
            f"the prompt holds {found} image placeholder tokens but the {len(full_lens)} image(s) "
            f"need {needed}: give one image token per image and let the processor expand it"
        )
    positions = torch.nonzero(is_image.flatten()).flatten()
    full = torch.tensor(full_lens, device=input_ids.device)
    kept = torch.tensor(kept_lens, device=input_ids.device)
    image_of = torch.repeat_interleave(torch.arange(len(full_lens), device=input_ids.device), full)
    start = torch.cumsum(full, 0) - full
    index_in_image = torch.arange(needed, device=input_ids.device) - start[image_of]
    keep = torch.ones(input_ids.numel(), dtype=torch.bool, device=input_ids.device)
    keep[positions[index_in_image >= kept[image_of]]] = False
    return keep.view_as(input_ids)


def kept_first(values: Tensor, input_ids: Tensor, image_token_id: int, kept: list[Tensor]) -> Tensor:
    """``values`` [B, L, ...] with each image's placeholder run reordered so that the values of
    its kept tokens (``kept[i]``: [L_i] mask over the image's run, in order) come first, in
    order: :func:`drop_image_placeholders` keeps the first kept-count placeholders of a run, so
    per-token values that differ along a run (mRoPE positions) then follow their tokens."""
    where = torch.nonzero((input_ids == image_token_id).flatten()).flatten()
    mask = torch.cat(kept).to(where.device)
    if mask.numel() != where.numel():
        raise ImageTokenMismatchError(f"{where.numel()} image placeholders for images of {mask.numel()} tokens")
    image_of = torch.repeat_interleave(torch.arange(len(kept), device=where.device),
                                       torch.tensor([k.numel() for k in kept], device=where.device))
    order = torch.argsort(image_of * 2 + (~mask).long(), stable=True)  # per image: kept, then dropped
    flat = values.flatten(0, 1).clone()
    flat[where] = flat[where[order]]
    return flat.view_as(values)


def padding_side(attention_mask: Tensor | None) -> str:
    """'left' unless the mask shows right padding (the side generation expects)."""
    if attention_mask is None or attention_mask.shape[1] == 0:
        return "left"
    if bool((attention_mask[:, -1] == 0).any()) and not bool((attention_mask[:, 0] == 0).any()):
        return "right"
    return "left"


def compact_rows(
    tensors: dict[str, Tensor], keep: Tensor, pad_values: dict[str, int], side: str
) -> dict[str, Tensor]:
    """Remove the positions ``keep`` marks False from every [B, L, ...] tensor and re-pad rows."""
    lengths = keep.sum(1)
    width = int(lengths.max()) if lengths.numel() else 0
    offsets = width - lengths if side == "left" else torch.zeros_like(lengths)
    # Destination column of each kept token: its rank within the row plus the row's offset.
    columns = torch.cumsum(keep.long(), 1) - 1 + offsets[:, None]
    rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)
    out = {}
    for name, tensor in tensors.items():
        fresh = torch.full((keep.shape[0], width, *tensor.shape[2:]), pad_values.get(name, 0), dtype=tensor.dtype,
                           device=tensor.device)
        fresh[rows[keep], columns[keep]] = tensor[keep]
        out[name] = fresh
    return out


def shrink_prompt(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    image_token_id: int,
    full_lens: list[int],
    kept_lens: list[int],
    pad_token_id: int,
    extra: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """input_ids / attention_mask (and any other [B, L, ...] tensors in ``extra``) with each image's
    placeholders cut to its kept count, rows re-padded on their original padding side."""
    keep = drop_image_placeholders(input_ids, image_token_id, full_lens, kept_lens)
    side = padding_side(attention_mask)
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    tensors = {"input_ids": input_ids, "attention_mask": mask, **(extra or {})}
    pads = {"input_ids": pad_token_id, "attention_mask": 0, **PAD_VALUES}
    out = compact_rows(tensors, keep, pads, side)
    if attention_mask is None and bool(out["attention_mask"].all()):
        out["attention_mask"] = None
    return out
