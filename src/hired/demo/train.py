"""Train the bundled demo models: a small LLaVA-NeXT (or InternVL) on the synthetic scenes of ``hired.data.scenes``.

    python -m hired.demo.train --out src/hired/demo_model --seed 0
    python -m hired.demo.train --family internvl --out src/hired/demo_internvl_model --seed 0

The model is transformers' own ``LlavaNextForConditionalGeneration``: a CLIP vision tower with a
CLS token (112 px crops, patch 14, 8 x 8 tokens per crop), LLaVA-NeXT's anyres geometry (full view +
grid of sub-images from pinpoints scaled to the crop, unpadding, image newlines), a small Llama
and a word-level tokenizer built from the generator's words.

Stage 1 trains the ViT alone on crops cut exactly as the processor cuts them: the CLS token (at the
feature layer and at the last layer) predicts which colours, shapes, letters and colour-shape pairs
are in the crop (multi-label), so that CLS attention points at the objects, as CLIP's does; a
per-token head predicts each patch's colour, shape and letter so that the tokens carry them.
Stage 2 freezes the ViT and trains the projector, image newline and language model on the
questions with all visual tokens (several questions of one picture share its image prefix through
a block attention mask). Then it answers the test split with ``generate``, prints the accuracy and
the majority-answer baseline, and saves with ``save_pretrained``.

``--family internvl`` trains transformers' own ``InternVLForConditionalGeneration`` the same way:
an InternViT with a CLS token (112 px tiles, patch 14, 8 x 8 patches, pixel shuffle 0.5 -> 4 x 4 =
16 tokens per tile), the GotOcr2 tiling (at most 6 tiles, the thumbnail last when there are 2+),
a small Qwen2. Its CLS head reads the last layer only (the feature layer, -1, whose CLS attention
HiRED ranks by): with a second head on the layer before, the CLS gathered there and the last
layer's CLS attention drifted off the objects (HiRED at 20% was no better than random dropping).
The projector starts with a LayerNorm, so its features are not standardized.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hired.data import scenes as S

CROP = 112
PATCH = 14
GRID = CROP // PATCH
PINPOINTS = [[CROP, 2 * CROP], [2 * CROP, CROP], [2 * CROP, 2 * CROP], [3 * CROP, CROP], [CROP, 3 * CROP]]
VISION = dict(image_size=CROP, patch_size=PATCH, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
              num_attention_heads=4, projection_dim=96, hidden_act="quick_gelu")
TEXT = dict(model_type="llama", hidden_size=160, intermediate_size=480, num_hidden_layers=3, num_attention_heads=5,
            num_key_value_heads=5, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False)
# The InternVL demo: the same widths and depths, InternViT and Qwen2 layers, InternVL's tiling.
INTERNVL_VISION = dict(image_size=CROP, patch_size=PATCH, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                       num_attention_heads=4, attention_bias=True, use_qk_norm=False, norm_type="layer_norm",
                       layer_norm_eps=1e-6, layer_scale_init_value=0.1, use_mean_pooling=True, hidden_act="gelu")
INTERNVL_TEXT = dict(TEXT, model_type="qwen2", rms_norm_eps=1e-6)
MAX_TILES = 6
COLORS = list(S.COLORS)
LETTERS = list(S.LETTERS)
SHAPES = list(S.SHAPES)
N_PRESENCE = len(COLORS) + len(SHAPES) + len(LETTERS) + len(COLORS) * len(SHAPES)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_processor(family: str = "llava_next"):
    from hired.presets import build_processor as build
    from hired.presets import build_tokenizer

    tokenizer = build_tokenizer(S.words(), family=family)
    if family == "internvl":
        return build("internvl", tokenizer, crop=CROP, patch=PATCH, max_tiles=MAX_TILES)
    return build("llava_next", tokenizer, crop=CROP, patch=PATCH, pinpoints=PINPOINTS)


def build_model(processor, seed: int, family: str = "llava_next"):
    tokenizer = processor.tokenizer
    text = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if family == "internvl":
        from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig

        config = InternVLConfig(
            vision_config=InternVLVisionConfig(**INTERNVL_VISION), text_config=dict(INTERNVL_TEXT, **text),
            image_token_id=tokenizer.convert_tokens_to_ids(processor.image_token), downsample_ratio=0.5,
            image_seq_length=processor.image_seq_length,
            vision_feature_layer=-1, vision_feature_select_strategy="default", projector_hidden_act="gelu",
            tie_word_embeddings=False,
        )
        config.min_patches, config.max_patches = 1, MAX_TILES  # the processor's tile limits, for hired
        cls = InternVLForConditionalGeneration
    else:
        from transformers import CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

        config = LlavaNextConfig(
            vision_config=CLIPVisionConfig(**VISION), text_config=dict(TEXT, **text),
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"), image_grid_pinpoints=PINPOINTS,
            vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu",
            tie_word_embeddings=False,
        )
        cls = LlavaNextForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.max_new_tokens = 4
    return model


# ---------------------------------------------------------------- data

def crop_boxes(obj: S.SceneObject, width: int, height: int, rows: int, cols: int) -> list[tuple[float, ...]]:
    """The object's box in each partition's crop coordinates (full view first, then the grid row-major),
    as the processor cuts the picture: the full view squashed to CROP x CROP, the picture resized to
    the grid (LLaVA-NeXT: the exactly matching pinpoint; InternVL: cols x rows tiles) and tiled."""
    x0, y0, x1, y1 = obj.box
    boxes = [(x0 * CROP / width, y0 * CROP / height, x1 * CROP / width, y1 * CROP / height)]
    sx, sy = cols * CROP / width, rows * CROP / height
    for r in range(rows):
        for c in range(cols):
            boxes.append((x0 * sx - c * CROP, y0 * sy - r * CROP, x1 * sx - c * CROP, y1 * sy - r * CROP))
    return boxes


def crop_labels(objects: list[S.SceneObject], width: int, height: int, rows: int, cols: int):
    """Per partition: presence targets [N_PRESENCE] and per-token (colour, shape, letter) classes [GRID*GRID, 3]
    (0 = none)."""
    partitions = 1 + rows * cols
    presence = np.zeros((partitions, N_PRESENCE), dtype=np.float32)
    tokens = np.zeros((partitions, GRID * GRID, 3), dtype=np.int64)
    best = np.zeros((partitions, GRID, GRID), dtype=np.float32)
    edges = np.arange(GRID) * PATCH
    for obj in objects:
        ci, si = COLORS.index(obj.color), SHAPES.index(obj.shape)
        li = LETTERS.index(obj.letter) + 1 if obj.letter else 0
        for p, (x0, y0, x1, y1) in enumerate(crop_boxes(obj, width, height, rows, cols)):
            ox = np.clip(np.minimum(x1, edges + PATCH) - np.maximum(x0, edges), 0, None)
            oy = np.clip(np.minimum(y1, edges + PATCH) - np.maximum(y0, edges), 0, None)
            area = (x1 - x0) * (y1 - y0)
            inside = ox.sum() * oy.sum()
            if inside < 0.3 * area:
                continue
            presence[p, ci] = presence[p, len(COLORS) + si] = 1
            if li:
                presence[p, len(COLORS) + len(SHAPES) + li - 1] = 1
            presence[p, len(COLORS) + len(SHAPES) + len(LETTERS) + ci * len(SHAPES) + si] = 1
            cover = np.outer(oy, ox) / PATCH**2  # [GRID rows, GRID cols]
            take = (cover > 0.25) & (cover > best[p])
            best[p][take] = cover[take]
            flat = take.reshape(-1)
            tokens[p, flat] = (ci + 1, si + 1, li)
    return presence, tokens


def scene_indices(seed: int, split: str, count: int) -> list[int]:
    out, index = [], 0
    while len(out) < count:
        if S.split_of(seed, index) == split:
            out.append(index)
        index += 1
    return out


def prepare(processor, seed: int, indices: list[int], with_labels: bool, family: str = "llava_next"):
    """Pixel values (float16) per scene in the model's crop order, grid, questions and (for stage 1)
    crop labels in the same order."""
    from transformers.image_processing_utils import select_best_resolution

    from hired.families.internvl import tile_grid

    items = []
    for index in indices:
        image, qas, objects = S.generate_scene(seed, index)
        batch = processor.image_processor(images=image, return_tensors="pt")
        order = None  # HiRED's partition p is the model's crop order[p]
        if family == "internvl":
            pixels = batch["pixel_values"].to(torch.float16)  # tiles row-major, then the thumbnail
            h, w = image.height, image.width
            grid_rows, grid_cols = tile_grid((h, w), (CROP, CROP), 1, MAX_TILES)
            tiles = grid_rows * grid_cols
            order = [tiles, *range(tiles)] if tiles > 1 else [0]
            assert pixels.shape[0] == len(order), (pixels.shape, h, w)
        else:
            pixels = batch["pixel_values"][0].to(torch.float16)
            h, w = batch["image_sizes"][0].tolist()
            best_h, best_w = select_best_resolution((h, w), PINPOINTS)
            grid_rows, grid_cols = best_h // CROP, best_w // CROP
            assert pixels.shape[0] == 1 + grid_rows * grid_cols, (pixels.shape, h, w)
        item = dict(index=index, pixels=pixels, size=(h, w), grid=(grid_rows, grid_cols), qas=qas)
        if with_labels:
            presence, tokens = crop_labels(objects, w, h, grid_rows, grid_cols)
            if order is not None:  # into the model's order; a single tile is the full view itself
                inverse = np.argsort(order)
                presence, tokens = presence[: len(order)][inverse], tokens[: len(order)][inverse]
            item["presence"], item["tokens"] = presence, tokens
        items.append(item)
    return items


# ---------------------------------------------------------------- stage 1: the ViT

def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """100 steps of linear warm-up, then a cosine decay to zero at ``steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def train_step(loss: torch.Tensor, params: list, optimizer: torch.optim.Optimizer, schedule) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()


class VisionHeads(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.cls_mid = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, N_PRESENCE))
        self.cls_last = nn.Linear(hidden, N_PRESENCE)
        self.token = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, len(COLORS) + 1 + len(SHAPES) + 1
                                                                     + len(LETTERS) + 1))


def stage1(model, items, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    tower = model.model.vision_tower
    heads = VisionHeads(tower.config.hidden_size)
    pixels = torch.cat([it["pixels"] for it in items])
    presence = torch.from_numpy(np.concatenate([it["presence"] for it in items]))
    tokens = torch.from_numpy(np.concatenate([it["tokens"] for it in items]))
    n = pixels.shape[0]
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps = epochs * (n // batch_size)
    schedule = warmup_cosine(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    sizes = [len(COLORS) + 1, len(SHAPES) + 1, len(LETTERS) + 1]
    tower.train()
    step = 0
    log(f"stage 1: {n} crops, {epochs} epochs, {steps} steps")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        totals = Counter()
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            out = tower(pixels[idx].float(), output_hidden_states=True)
            mid = out.hidden_states[-2]
            # CLIP: the CLS of layer -2 (the feature layer) and the pooled last CLS; the token head on the
            # features. InternViT (features from layer -1): the CLS of layer -1 only, the token head on -1 (a
            # CLS also trained at layer -2 gathers there, and the last layer's CLS attention drifts off the objects).
            internvl = out.pooler_output is None
            last = out.last_hidden_state[:, 0] if internvl else out.pooler_output
            features = out.hidden_states[-1] if internvl else mid
            if internvl:
                loss_cls = F.binary_cross_entropy_with_logits(heads.cls_last(last), presence[idx])
            else:
                loss_cls = F.binary_cross_entropy_with_logits(heads.cls_mid(mid[:, 0]), presence[idx]) + \
                    F.binary_cross_entropy_with_logits(heads.cls_last(last), presence[idx])
            logits = heads.token(features[:, 1:]).split(sizes, dim=-1)
            target = tokens[idx]
            # letters are the hardest attribute to read from a patch: weight them double
            loss_tok = sum(w * F.cross_entropy(lg.reshape(-1, lg.shape[-1]), target[..., k].reshape(-1))
                           for k, (lg, w) in enumerate(zip(logits, (1.0, 1.0, 2.0))))
            loss = 4 * loss_cls + loss_tok
            train_step(loss, params, optimizer, schedule)
            step += 1
            totals["cls"] += loss_cls.item()
            totals["tok"] += loss_tok.item()
            totals["n"] += 1
            with torch.no_grad():
                for k, lg in enumerate(logits):
                    on = target[..., k] > 0
                    totals[f"acc{k}"] += (lg.argmax(-1)[on] == target[..., k][on]).float().mean().item()
            if step % 100 == 0:
                log(f"  step {step}/{steps} cls {totals['cls'] / totals['n']:.4f} "
                    f"tok {totals['tok'] / totals['n']:.4f}")
        accs = " ".join(f"{name} {totals[f'acc{k}'] / totals['n']:.3f}"
                        for k, name in enumerate(("color", "shape", "letter")))
        log(f"  epoch {epoch + 1}: cls {totals['cls'] / totals['n']:.4f} tok {totals['tok'] / totals['n']:.4f}; "
            f"object-token accuracy {accs}")
    tower.eval()


# ---------------------------------------------------------------- stage 2: projector + LM

@torch.no_grad()
def cache_features(model, items, batch: int = 256) -> None:
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    pixels = torch.cat([it["pixels"] for it in items])
    outs = []
    for start in range(0, pixels.shape[0], batch):
        hidden = tower(pixels[start:start + batch].float(), output_hidden_states=True).hidden_states[layer]
        outs.append(hidden[:, 1:].to(torch.float16))
    feats = torch.cat(outs)
    offset = 0
    for it in items:
        p = it["pixels"].shape[0]
        it["features"] = feats[offset:offset + p]
        offset += p


def feature_stats(items) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the cached ViT features. The residual stream of a ViT has a large
    shared mean and uneven channel scales; the projector trains on standardized features and the
    standardization is folded into its first linear layer afterwards (an exact affine rewrite)."""
    feats = torch.cat([it["features"].reshape(-1, it["features"].shape[-1]) for it in items]).float()
    return feats.mean(0), feats.std(0).clamp_min(1e-3)


def fold_standardization(model, mean: torch.Tensor, std: torch.Tensor) -> None:
    """linear_1(standardize(x)) == linear_1'(x): W' = W / std, b' = b - W' mean."""
    linear = model.model.multi_modal_projector.linear_1
    with torch.no_grad():
        linear.weight.div_(std)
        linear.bias.sub_(linear.weight @ mean)


def encode_questions(tokenizer, items) -> None:
    for it in items:
        blocks = []
        for qa in it["qas"]:
            q = tokenizer(qa["question"], add_special_tokens=False).input_ids
            a = tokenizer(qa["answer"], add_special_tokens=False).input_ids
            assert len(a) == 1 and tokenizer.unk_token_id not in q + a, qa
            blocks.append((q, a[0]))
        it["blocks"] = blocks


def pack_images(model, items, stats=None) -> list[torch.Tensor]:
    """Each scene's image tokens as the model packs them from its cached ViT features."""
    lm = model.model
    feats = torch.cat([it["features"] for it in items]).float()
    counts = [it["features"].shape[0] for it in items]
    if getattr(model.config, "downsample_ratio", None):  # InternVL: pixel shuffle, projector, crops in order
        side = int(feats.shape[1] ** 0.5)
        shuffled = lm.pixel_shuffle(feats.reshape(feats.shape[0], side, side, -1), model.config.downsample_ratio)
        projected = lm.multi_modal_projector(shuffled.reshape(feats.shape[0], -1, shuffled.shape[-1]))
        return [p.flatten(0, 1) for p in projected.split(counts)]
    if stats is not None:
        feats = (feats - stats[0]) / stats[1]
    projected = lm.multi_modal_projector(feats)
    sizes = torch.tensor([it["size"] for it in items])
    packed, _ = lm.pack_image_features(list(projected.split(counts)), sizes, "default", lm.image_newline)
    return packed


def stage2_batch(model, items, eos: int, pad: int, stats=None):
    """Embeddings, 4D block mask, positions and targets of a batch of scenes of one geometry."""
    lm = model.model
    packed = pack_images(model, items, stats)
    embed = lm.get_input_embeddings()
    seqs, lens = [], []
    for it, image in zip(items, packed):
        ids = [tok for q, a in it["blocks"] for tok in q + [a]]
        seqs.append((image, ids))
        lens.append(image.shape[0] + len(ids))
    total = max(lens)
    b = len(items)
    embeds = embed.weight.new_zeros(b, total, embed.weight.shape[1])
    mask = torch.zeros(b, 1, total, total, dtype=torch.bool)
    positions = torch.zeros(b, total, dtype=torch.long)
    rows, cols, targets = [], [], []
    for i, ((image, ids), it) in enumerate(zip(seqs, items)):
        k = image.shape[0]
        token_embeds = embed(torch.tensor(ids, dtype=torch.long)) if ids else embeds.new_zeros(0, embeds.shape[-1])
        embeds[i, :k] = image
        embeds[i, k:k + len(ids)] = token_embeds
        mask[i, 0, :k, :k] = torch.ones(k, k, dtype=torch.bool).tril()
        positions[i, :k] = torch.arange(k)
        start = k
        for q, a in it["blocks"]:
            n = len(q) + 1
            mask[i, 0, start:start + n, :k] = True
            mask[i, 0, start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            positions[i, start:start + n] = torch.arange(k, k + n)
            rows += [i, i]
            cols += [start + len(q) - 1, start + len(q)]
            targets += [a, eos]
            start += n
        for j in range(start, total):  # padding attends to itself only
            mask[i, 0, j, j] = True
    return embeds, mask, positions, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets)


def stage2(model, items, epochs: int, batch_size: int, lr: float, seed: int, tokenizer) -> None:
    # LLaVA's projector starts with a linear layer: standardized features, folded in afterwards;
    # InternVL's starts with a LayerNorm, which standardizes each token itself.
    internvl = getattr(model.config, "downsample_ratio", None) is not None
    stats = None if internvl else feature_stats(items)
    lm = model.model
    for p in lm.vision_tower.parameters():
        p.requires_grad_(False)
    params = [p for name, p in model.named_parameters() if not name.startswith("model.vision_tower")]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    by_grid = defaultdict(list)
    for it in items:
        if it["blocks"]:
            by_grid[it["grid"]].append(it)
    rng = random.Random(seed)
    batches_per_epoch = sum(len(v) // batch_size + (len(v) % batch_size > 0) for v in by_grid.values())
    steps = epochs * batches_per_epoch
    schedule = warmup_cosine(optimizer, steps)
    log(f"stage 2: {len(items)} scenes, {sum(len(it['blocks']) for it in items)} questions, {steps} steps")
    model.train()
    lm.vision_tower.eval()
    step = 0
    for epoch in range(epochs):
        batches = []
        for grid in sorted(by_grid):
            group = list(by_grid[grid])
            rng.shuffle(group)
            batches += [group[s:s + batch_size] for s in range(0, len(group), batch_size)]
        rng.shuffle(batches)
        totals = Counter()
        for batch in batches:
            embeds, mask, positions, rows, cols, targets = stage2_batch(
                model, batch, tokenizer.eos_token_id, tokenizer.pad_token_id, stats)
            hidden = lm.language_model(inputs_embeds=embeds, attention_mask=mask,
                                       position_ids=positions).last_hidden_state
            logits = model.lm_head(hidden[rows, cols])
            loss = F.cross_entropy(logits, targets)
            train_step(loss, params, optimizer, schedule)
            step += 1
            answer = torch.arange(0, len(targets), 2)
            totals["loss"] += loss.item()
            totals["acc"] += (logits[answer].argmax(-1) == targets[answer]).float().mean().item()
            totals["n"] += 1
            if step % 50 == 0:
                log(f"  step {step}/{steps} loss {totals['loss'] / totals['n']:.4f} "
                    f"answer acc {totals['acc'] / totals['n']:.3f}")
        log(f"  epoch {epoch + 1}: loss {totals['loss'] / totals['n']:.4f} "
            f"answer acc {totals['acc'] / totals['n']:.3f}")
    if stats is not None:
        fold_standardization(model, *stats)
    model.eval()


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model, processor, seed: int, indices: list[int]) -> dict:
    """Generate an answer to every question of the scenes with all visual tokens."""
    model.eval()
    correct, total = Counter(), Counter()
    answers = Counter()
    for index in indices:
        image, records = S.scene_records(seed, index)
        for record in records:
            inputs = processor(images=image, text=f"{processor.image_token}\n{record['question']}", return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
            text = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            hit = text == record["answer"]
            for key in ("all", record["kind"]):
                correct[key] += hit
                total[key] += 1
            answers[record["answer"]] += 1
    majority, majority_count = answers.most_common(1)[0]
    return {
        "accuracy": correct["all"] / total["all"],
        "questions": total["all"],
        "per_kind": {k: round(correct[k] / total[k], 4) for k in S.KINDS if total[k]},
        "majority_answer": majority,
        "majority_baseline": majority_count / total["all"],
    }


def model_card(result: dict, model) -> str:
    """The README.md saved beside the weights: what the model is, how it was made, how well it does."""
    vision, text = model.config.vision_config, model.config.text_config
    params = sum(p.numel() for p in model.parameters()) / 1e6
    per_kind = ", ".join(f"{kind} {100 * acc:.1f}%" for kind, acc in result["per_kind"].items())
    family = result.get("family", "llava_next")
    threads = result.get("threads", 2)
    if family == "internvl":
        size, patch = vision.image_size[0], vision.patch_size[0]
        title = "hired demo model (InternVL)"
        cls, language = "`InternVLForConditionalGeneration`", "Qwen2"
        geometry = [
            f"- Vision: InternViT with a CLS token, {size} px tiles, patch {patch} ({(size // patch) ** 2} patches, "
            f"pixel shuffle 0.5 -> {(size // patch // 2) ** 2} tokens per tile), {vision.num_hidden_layers} layers "
            f"of width {vision.hidden_size}.",
            f"- InternVL's tiling: up to {model.config.max_patches} tiles of the closest aspect ratio, the thumbnail "
            "last when there are 2+ tiles; no newlines.",
        ]
        flag = " --family internvl"
    else:
        tokens = (vision.image_size // vision.patch_size) ** 2
        title, cls, language = "hired demo model", "`LlavaNextForConditionalGeneration`", "Llama"
        geometry = [
            f"- Vision: CLIP ViT with a CLS token, {vision.image_size} px crops, patch {vision.patch_size} "
            f"({tokens} tokens per crop), {vision.num_hidden_layers} layers of width {vision.hidden_size}.",
            "- LLaVA-NeXT's anyres geometry with the pinpoints scaled to the crop "
            f"({model.config.image_grid_pinpoints}),",
            "  unpadding and image newlines.",
        ]
        flag = ""
    lines = [
        f"# {title}",
        "",
        f"A small {'InternVL' if family == 'internvl' else 'LLaVA-NeXT'} ({cls}) trained from scratch on hired's "
        "synthetic",
        "high-resolution VQA scenes (`hired.data.scenes`), for demonstration and testing: it makes `hired run`,",
        "`hired viz` and `hired eval` meaningful offline. It knows nothing but those scenes.",
        "",
        *geometry,
        f"- Language model: {language}, {text.num_hidden_layers} layers of width {text.hidden_size}; word-level "
        f"tokenizer of {text.vocab_size} tokens; {params:.2f} M parameters in all.",
        f"- Training: seed {result['seed']}, {result['minutes']} min on a 2-core CPU ({threads} "
        f"thread{'s' if threads > 1 else ''}). Stage 1 trains the ViT on "
        f"{result.get('stage1_scenes', '?')} scenes",
        "  so that its CLS token says what each crop holds and each patch token what covers it; stage 2 trains the",
        f"  projector and the language model on the questions of {result['train_scenes']} scenes, with all visual "
        "tokens.",
        f"  Reproduce with `python -m hired.demo.train{flag} --out DIR --seed {result['seed']}"
        f"{result.get('options', '')}`.",
        f"- Test split ({result['test_scenes']} scenes, {result['questions']} questions), all visual tokens, greedy:",
        f"  **{100 * result['accuracy']:.1f}%** exact match ({per_kind}); always answering the most common",
        f"  answer ('{result['majority_answer']}') scores {100 * result['majority_baseline']:.1f}%.",
        "",
        "Licensed with hired under Apache-2.0.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava_next", choices=["llava_next", "internvl"])
    parser.add_argument("--out", default=None, help="Default: src/hired/demo_model (llava_next) or "
                        "src/hired/demo_internvl_model (internvl).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-scenes", type=int, default=4000, help="Training scenes of stage 1 (the ViT).")
    parser.add_argument("--train-scenes", type=int, default=8000, help="Training scenes of stage 2 (projector + LM).")
    parser.add_argument("--test-scenes", type=int, default=200)
    parser.add_argument("--stage1-epochs", type=int, default=10)
    parser.add_argument("--stage2-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr1", type=float, default=2e-3)
    parser.add_argument("--lr2", type=float, default=1e-3)
    parser.add_argument("--batch2", type=int, default=16)
    parser.add_argument("--vit", default=None, help="Development: load the stage 1 ViT from / save it to this file.")
    parser.add_argument("--stop-after-stage1", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    started = time.time()
    processor = build_processor(args.family)
    model = build_model(processor, args.seed, args.family)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    train = scene_indices(args.seed, "train", args.train_scenes)
    test = scene_indices(args.seed, "test", args.test_scenes)
    items = prepare(processor, args.seed, train, with_labels=True, family=args.family)
    log(f"prepared {len(items)} training scenes")
    if args.vit and Path(args.vit).exists():
        model.model.vision_tower.load_state_dict(torch.load(args.vit))
        log(f"stage 1 skipped: ViT loaded from {args.vit}")
    else:
        stage1(model, items[:args.stage1_scenes], args.stage1_epochs, batch_size=64, lr=args.lr1, seed=args.seed)
        if args.vit:
            torch.save(model.model.vision_tower.state_dict(), args.vit)
    if args.stop_after_stage1:
        return {}
    cache_features(model, items)
    for it in items:
        it.pop("pixels")
    encode_questions(processor.tokenizer, items)
    stage2(model, items, args.stage2_epochs, batch_size=args.batch2, lr=args.lr2, seed=args.seed,
           tokenizer=processor.tokenizer)
    result = evaluate(model, processor, args.seed, test)
    minutes = (time.time() - started) / 60
    defaults = vars(parser.parse_args([]))
    options = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                      if k not in ("family", "out", "seed", "vit") and v != defaults[k] and v is not False)
    result.update(options=options, family=args.family, seed=args.seed, threads=args.threads,
                  stage1_scenes=min(args.stage1_scenes, len(train)), train_scenes=len(train),
                  test_scenes=len(test), minutes=round(minutes, 1))
    log(f"test accuracy (all tokens): {result['accuracy']:.4f} over {result['questions']} questions; "
        f"majority baseline ('{result['majority_answer']}'): {result['majority_baseline']:.4f}; "
        f"per kind {result['per_kind']}")
    out = Path(args.out or f"src/hired/{'demo_internvl_model' if args.family == 'internvl' else 'demo_model'}")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "README.md").write_text(model_card(result, model))
    log(f"saved to {out} after {minutes:.1f} min")
    return result


if __name__ == "__main__":
    main()
