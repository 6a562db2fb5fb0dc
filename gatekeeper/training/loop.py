"""The built-in trainer: LoRA (or GaLore) on a base, loss on answer tokens, best validation checkpoint kept.

One loop that reads top to bottom: warm-up and cosine schedule, gradient
accumulation, clipping, periodic validation, resumable checkpoints, and
selection of the trained weights at the validation-loss minimum.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gatekeeper.bundle.base import ResolvedBase, resolve_base
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.errors import RecipeError
from gatekeeper.training.data import (
    Encoded,
    check_lengths,
    collate,
    encode,
    labelled_weights,
    load_recipe_data,
)
from gatekeeper.training.distill import BaseTeacher, distillation_loss
from gatekeeper.training.rehearsal import rehearsal_for


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    tokens_per_second: float
    val_loss: float | None = None


@dataclass
class TrainResult:
    model: object  # the peft model (or, for galore, the base model itself), best weights loaded
    tokenizer: object
    base: ResolvedBase
    record: dict = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)
    """Names of the parameters that trained: what a full-weight method's delta is taken over."""


VALIDATION_BATCH = 32


def lr_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``min_ratio * peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def examples(pool, generator, skip: int = 0):
    """An endless stream of ``pool``'s items, reshuffled each epoch with the seeded generator.

    A resumed run skips what was consumed, replaying the permutations, so the
    generator and the order continue exactly where the interrupted run stopped.
    """
    import torch

    while True:
        for index in torch.randperm(len(pool), generator=generator).tolist():
            if skip:
                skip -= 1
                continue
            yield pool[index]


def _validation_loss(model, batches, share_prefix: bool = True) -> float:
    import torch

    from gatekeeper.runtime.hf.modeling import target_logprobs

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask, labels in batches:
            chosen, _, _ = target_logprobs(model, ids, mask, labels, share_prefix=share_prefix)
            total += float(-chosen.sum())
            count += chosen.numel()
    model.train()
    return total / max(1, count)


def train(
    recipe: Recipe,
    root: Path,
    on_step: Callable[[StepInfo], None] | None = None,
    *,
    checkpoints: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train per the recipe. With ``checkpoints`` (a work directory) a checkpoint is saved every
    ``checkpoint_every`` steps; ``resume`` continues from the latest one there."""
    if recipe.method == "dpo":  # preference pairs against a parent: a loop of its own
        from gatekeeper.training.dpo_loop import train_dpo

        return train_dpo(recipe, root, on_step, checkpoints=checkpoints, resume=resume)
    import torch

    from gatekeeper.runtime.hf.modeling import (
        compute_precision,
        pick_device,
        resolve_dtype,
        target_logprobs,
    )
    from gatekeeper.runtime.prompts import load_tokenizer
    from gatekeeper.training import checkpoint
    from gatekeeper.training.methods import get_method, optimizer_state_bytes

    settings = recipe.training
    data = recipe.data
    # Validate everything before the first step: a typo should cost seconds, not a run.
    checked = load_recipe_data(data, root, settings.field_weights)
    train_items, val_items = checked.train, checked.validation
    base = resolve_base(recipe.base, relative_to=root)
    method = get_method(recipe.method)
    if method.preflight is not None:  # settings the base cannot take, from its config alone
        method.preflight(recipe, root)
    tokenizer = load_tokenizer(base.path)
    train_set = encode(train_items, tokenizer, data.prompt, settings.field_weights)
    val_set = encode(val_items, tokenizer, data.prompt)
    longest = max(check_lengths(train_set, settings.max_seq_len, root / data.train),
                  check_lengths(val_set, settings.max_seq_len, root / data.validation))
    if resume and checkpoints is None:
        raise RecipeError("resuming needs a checkpoint directory")
    fingerprint = checkpoint.run_fingerprint(recipe, base, root)
    resumed = checkpoint.load(checkpoints, fingerprint) if resume else None

    torch.manual_seed(settings.seed)
    device = pick_device(recipe.serving.device)
    precision = resolve_dtype(settings.precision, device)
    model, trainable, optimizer = method.build(recipe, base, precision)
    # On an H100 a LoRA step on these short rows is bound by kernel launches, not arithmetic:
    # the prefix's extra pass made the step slower there (see target_logprobs).
    # Checkpointed layers run without a cache, and the shared prefix lives in one.
    share_prefix = device.type == "cpu" and not settings.gradient_checkpointing

    def computing():
        return compute_precision(precision, device)

    distill = data.rehearsal is not None and data.rehearsal.mode == "distill"
    # answered by the base itself: the adapter switched off (galore has not moved a weight yet)
    rehearsal, rehearsal_record = rehearsal_for(recipe, root, model, tokenizer, base_sha256=base.sha256,
                                                precision=precision, device_type=device.type,
                                                steps=settings.max_steps, base_side=method.base_side,
                                                computing=computing)

    per_epoch = math.ceil(len(train_set) / (settings.batch_size * settings.grad_accum))
    total_steps = settings.max_steps or math.ceil(settings.epochs * per_epoch)
    order_gen = torch.Generator().manual_seed(settings.seed)
    pad_id = tokenizer.pad_token_id
    teacher = BaseTeacher(model, method.base_side, rehearsal, pad_id, device, computing,
                          share_prefix=share_prefix) if distill and rehearsal else None
    # Validation keeps no activations for a backward pass, so it runs in larger batches.
    val_batch = max(settings.batch_size, VALIDATION_BATCH)
    val_batches = [
        tuple(t.to(device) for t in collate(val_set[i : i + val_batch], pad_id))
        for i in range(0, len(val_set), val_batch)
    ]

    def snapshot() -> dict:
        return {n: p.detach().clone() for n, p in trainable.items()}

    if resumed is None:
        if checkpoints is not None:
            checkpoint.discard(checkpoints)  # a fresh run never resumes someone else's leftovers
        # Step 0 is the untrained adapter (LoRA's B starts at zero): the curve shows
        # the base's loss, and a run that never improves on it selects it honestly.
        with computing():
            initial = _validation_loss(model, val_batches, share_prefix)
        val_curve: list[list[float]] = [[0, round(initial, 6)]]
        train_curve: list[list[float]] = []
        best = (initial, 0, snapshot())
        start, consumed, elapsed = 0, 0, 0.0
    else:
        state = resumed.state
        with torch.no_grad():
            for name, param in trainable.items():
                param.copy_(resumed.weights[name])
        checkpoint.restore_optimizer(optimizer, trainable, resumed.optimizer, state["optimizer"])
        checkpoint.restore_rng(resumed.rng)
        val_curve, train_curve = state["val_curve"], state["train_curve"]
        best_weights = resumed.best if resumed.best is not None else snapshot()
        best = (state["best_val_loss"], state["best_step"], best_weights)
        start, consumed, elapsed = state["step"], state["examples_consumed"], state["elapsed_seconds"]

    stream = examples(train_set, order_gen, consumed)
    rehearsal_stream = None
    if rehearsal:  # its own generator, so it cannot shift the task order; replayed the same way on resume
        per_row = data.rehearsal.per_batch / settings.batch_size
        rehearsal_stream = examples(rehearsal, torch.Generator().manual_seed(settings.seed + 1), int(consumed * per_row))
    started, wall0, tokens_seen = time.time(), time.perf_counter(), 0
    for step in range(start, total_steps):
        lr = lr_at(step, settings.learning_rate, settings.warmup_steps, total_steps, settings.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for _ in range(settings.grad_accum):
            batch: list[Encoded] = [next(stream) for _ in range(settings.batch_size)]
            groups = [(batch, False)]  # (rows, rehearsal?)
            if rehearsal_stream is not None:  # its own group: rows of one template share their prefix
                groups.append(([next(rehearsal_stream) for _ in range(data.rehearsal.per_batch)], True))
            chosen, weights, divergence = [], [], None
            for group, rehearsing in groups:
                ids, mask, labels = collate(group, pad_id)
                tokens_seen += int(mask.sum())  # counted before the copy: no wait for the device
                ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
                with computing():
                    if rehearsing and distill:
                        divergence = distillation_loss(model, method.base_side, ids, mask, labels,
                                                       share_prefix=share_prefix, teacher_hidden=teacher.hidden(group))
                    else:
                        chosen.append(target_logprobs(model, ids, mask, labels, share_prefix=share_prefix)[0])
                        weights.append(labelled_weights(group))
            logprobs = torch.cat(chosen).float()  # answers mode: rehearsal tokens pooled with the task's
            if all(w is None for w in weights):
                loss = -logprobs.mean()
            else:  # the weighted mean; rehearsal rows carry no field weights (1 each)
                w = torch.cat([torch.ones(len(c)) if g is None else g for c, g in zip(chosen, weights)]).to(logprobs)
                loss = -(logprobs * w).sum() / w.sum()
            if divergence is not None:
                loss = loss + data.rehearsal.weight * divergence
            loss = loss / settings.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
            consumed += len(batch)
        torch.nn.utils.clip_grad_norm_(list(trainable.values()), settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_curve.append([step + 1, round(step_loss, 6)])
        val_loss = None
        if (step + 1) % settings.eval_every == 0 or step + 1 == total_steps:
            with computing():
                val_loss = _validation_loss(model, val_batches, share_prefix)
            val_curve.append([step + 1, round(val_loss, 6)])
            if val_loss < best[0] or recipe.selection.select_on == "last":
                best = (val_loss, step + 1, snapshot())
        # No checkpoint after the last step: the candidate is written right after it.
        if checkpoints is not None and (step + 1) % settings.checkpoint_every == 0 and step + 1 < total_steps:
            checkpoint.save(checkpoints, step=step + 1, params=trainable, optimizer=optimizer,
                            best=None if best[1] == step + 1 else best[2], state={
                                "fingerprint": fingerprint, "examples_consumed": consumed,
                                "val_curve": val_curve, "train_curve": train_curve,
                                "best_step": best[1], "best_val_loss": best[0],
                                "elapsed_seconds": elapsed + time.perf_counter() - wall0,
                            })
        if on_step:
            rate = tokens_seen / max(1e-9, time.perf_counter() - wall0)
            on_step(StepInfo(step + 1, total_steps, step_loss, rate, val_loss))

    state_bytes = optimizer_state_bytes(optimizer)
    with torch.no_grad():  # restore the selected checkpoint
        for name, value in best[2].items():
            trainable[name].copy_(value)
    model.eval()
    session = time.perf_counter() - wall0
    record = {
        "method": recipe.method,
        "base": recipe.base,
        "base_sha256": base.sha256,
        "seed": settings.seed,
        "steps": total_steps,
        "best_step": best[1],
        "best_val_loss": round(best[0], 6),
        "val_curve": val_curve,
        "train_curve": train_curve,
        "examples": {"train": len(train_set), "validation": len(val_set)},
        # No "truncated" count: an example longer than max_seq_len stops training (check_lengths),
        # so none is ever cut. The longest one says how much room was left.
        "max_seq_len": settings.max_seq_len,
        "longest_example_tokens": longest,
        **({"rehearsal": rehearsal_record} if rehearsal_record else {}),
        "device": device.type,
        "precision": precision,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(elapsed + session, 2),
        "tokens_per_second": round(tokens_seen / max(session, 1e-9), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_parameters": sum(p.numel() for p in trainable.values()),
        "optimizer_state_bytes": state_bytes,
    }
    if resumed is not None:
        record["resumed_from_step"] = start
    if device.type == "cuda":
        record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return TrainResult(model, tokenizer, base, record, trained=sorted(trainable))
