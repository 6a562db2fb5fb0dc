"""The trainer's loop for method dpo: a LoRA parent's adapter, trained further on preference pairs.

It reads like ``gatekeeper.training.loop`` (warm-up and cosine schedule,
gradient accumulation, clipping, periodic validation, distillation rehearsal
against the base with the adapter off) with three differences:
the loss is DPO's (``gatekeeper.training.preference``) against the parent's
log-probabilities, computed once before the first step; the validation loss is
the task's, recorded so a reviewer sees what the preferences cost the task,
and the last step is kept (selecting on it would keep the parent); and a run
is short, so it writes no resumable checkpoints.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path
from typing import Callable

from gatekeeper.bundle.base import resolve_base
from gatekeeper.bundle.goldens import load_preferences
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.errors import RecipeError
from gatekeeper.training.data import check_lengths, collate, encode, load_recipe_data
from gatekeeper.training.distill import BaseTeacher, distillation_loss
from gatekeeper.training.loop import VALIDATION_BATCH, StepInfo, TrainResult, _validation_loss, examples, lr_at
from gatekeeper.training.preference import dpo_batch_loss, encode_pairs, reference_logprobs
from gatekeeper.training.rehearsal import rehearsal_for


def train_dpo(
    recipe: Recipe,
    root: Path,
    on_step: Callable[[StepInfo], None] | None = None,
    *,
    checkpoints: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the parent's adapter on ``data.preferences`` with the DPO loss. ``checkpoints`` is accepted
    for the trainer's signature and unused: a DPO run does not checkpoint."""
    import torch

    from gatekeeper.runtime.hf.modeling import compute_precision, pick_device, resolve_dtype
    from gatekeeper.runtime.prompts import load_tokenizer
    from gatekeeper.training.methods import optimizer_state_bytes
    from gatekeeper.training.methods.base import TrainingMethod
    from gatekeeper.training.methods.dpo import build, load_parent

    settings, data = recipe.training, recipe.data
    if resume:
        raise RecipeError("method dpo writes no checkpoints to resume from; train again without --resume")
    # Everything checked before a model loads: the task's sets (the gates read them), the pairs, the parent.
    checked = load_recipe_data(data, root)
    preferences = load_preferences(root / data.preferences)
    base = resolve_base(recipe.base, relative_to=root)
    parent = load_parent(recipe, root, base.sha256)
    tokenizer = load_tokenizer(base.path)
    pairs = encode_pairs(preferences, tokenizer)
    longest = check_lengths([side for p in pairs for side in (p.chosen, p.rejected)], settings.max_seq_len,
                            root / data.preferences)
    val_set = encode(checked.validation, tokenizer, data.prompt)
    check_lengths(val_set, settings.max_seq_len, root / data.validation)

    torch.manual_seed(settings.seed)
    device = pick_device(recipe.serving.device)
    precision = resolve_dtype(settings.precision, device)
    model, trainable, optimizer = build(recipe, base, precision, parent=parent)
    share_prefix = device.type == "cpu" and not settings.gradient_checkpointing
    pad_id, beta = tokenizer.pad_token_id, recipe.dpo.beta

    def computing():
        return compute_precision(precision, device)

    per_epoch = math.ceil(len(pairs) / (settings.batch_size * settings.grad_accum))
    total_steps = settings.max_steps or math.ceil(settings.epochs * per_epoch)
    model.eval()  # the reference: the parent's weights as loaded, dropout off, computed once
    with computing():
        ref_chosen, ref_rejected = reference_logprobs(model, pairs, pad_id, device, batch=VALIDATION_BATCH,
                                                      share_prefix=share_prefix)
    # mode distill (the recipe checks): the teacher is the adapter switched off, the base
    rehearsal, rehearsal_record = rehearsal_for(recipe, root, model, tokenizer, base_sha256=base.sha256,
                                                precision=precision, device_type=device.type, steps=total_steps,
                                                base_side=TrainingMethod.base_side, computing=computing)
    teacher = BaseTeacher(model, TrainingMethod.base_side, rehearsal, pad_id, device, computing,
                          share_prefix=share_prefix) if rehearsal else None
    val_batches = [tuple(t.to(device) for t in collate(val_set[i : i + VALIDATION_BATCH], pad_id))
                   for i in range(0, len(val_set), VALIDATION_BATCH)]
    with computing():
        val_curve = [[0, round(_validation_loss(model, val_batches, share_prefix), 6)]]  # leaves train mode on
    train_curve: list[list[float]] = []
    preference_curve: list[list[float]] = []  # [step, share of pairs with a positive margin, mean margin]

    # pair indices (the reference's values are looked up by them), in a fresh seeded order each epoch
    stream = examples(range(len(pairs)), torch.Generator().manual_seed(settings.seed))
    rehearsal_stream = None
    if rehearsal:  # its own generator: it cannot shift the pairs' order
        rehearsal_stream = examples(rehearsal, torch.Generator().manual_seed(settings.seed + 1))
    started, wall0, tokens_seen = time.time(), time.perf_counter(), 0
    for step in range(total_steps):
        lr = lr_at(step, settings.learning_rate, settings.warmup_steps, total_steps, settings.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss, margins = 0.0, []
        for _ in range(settings.grad_accum):
            picked = [next(stream) for _ in range(settings.batch_size)]
            batch = [pairs[i] for i in picked]
            tokens_seen += sum(len(p.chosen) + len(p.rejected) for p in batch)
            with computing():
                loss, margin = dpo_batch_loss(model, batch, ref_chosen[picked], ref_rejected[picked], beta,
                                              pad_id, device, sft_weight=recipe.dpo.sft_weight,
                                              share_prefix=share_prefix)
            if rehearsal_stream is not None:
                rows = [next(rehearsal_stream) for _ in range(data.rehearsal.per_batch)]
                tokens_seen += sum(len(r) for r in rows)
                ids, mask, labels = (t.to(device) for t in collate(rows, pad_id))
                with computing():
                    divergence = distillation_loss(model, TrainingMethod.base_side, ids, mask, labels,
                                                   share_prefix=share_prefix, teacher_hidden=teacher.hidden(rows))
                loss = loss + data.rehearsal.weight * divergence
            (loss / settings.grad_accum).backward()
            step_loss += float(loss.detach()) / settings.grad_accum
            margins.append(margin.float().cpu())
        torch.nn.utils.clip_grad_norm_(list(trainable.values()), settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        margin = torch.cat(margins)
        train_curve.append([step + 1, round(step_loss, 6)])
        preference_curve.append([step + 1, round(float((margin > 0).float().mean()), 4), round(float(margin.mean()), 6)])
        val_loss = None
        if (step + 1) % settings.eval_every == 0 or step + 1 == total_steps:
            with computing():
                val_loss = _validation_loss(model, val_batches, share_prefix)
            val_curve.append([step + 1, round(val_loss, 6)])
        if on_step:
            on_step(StepInfo(step + 1, total_steps, step_loss,
                             tokens_seen / max(1e-9, time.perf_counter() - wall0), val_loss))

    model.eval()
    session = time.perf_counter() - wall0
    record = {
        "method": recipe.method,
        "base": recipe.base,
        "base_sha256": base.sha256,
        "parent": parent.lineage(recipe.parent),
        "reference": "the parent: its log-probabilities of every pair, computed once before the first step",
        "beta": beta,
        "sft_weight": recipe.dpo.sft_weight,
        "seed": settings.seed,
        "steps": total_steps,
        "best_step": total_steps,  # the last step, always (see the module's docstring)
        "best_val_loss": val_curve[-1][1],
        "val_curve": val_curve,
        "train_curve": train_curve,
        "preference_curve": preference_curve,
        "examples": {"preferences": len(pairs), "validation": len(val_set)},
        **({"rehearsal": rehearsal_record} if rehearsal_record else {}),
        "max_seq_len": settings.max_seq_len,
        "longest_example_tokens": longest,
        "device": device.type,
        "precision": precision,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(session, 2),
        "tokens_per_second": round(tokens_seen / max(session, 1e-9), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_parameters": sum(p.numel() for p in trainable.values()),
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
    }
    if device.type == "cuda":
        record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return TrainResult(model, tokenizer, base, record, trained=sorted(trainable))
