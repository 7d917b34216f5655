"""``advkit finetune``: adversarially fine-tune a checkpoint and report robustness before and after."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, check_compatible, command_line, emit_json, finished_run,
    kept_if_appeared, log, log_complete, out, parse_params, pixel_budget, progress_bar, recorded_config, require_preprocessing, start_training_run,
    table, training_state_path, usage_mistakes, warn,
)
from advkit.cli.train_cmd import Domain
from advkit.errors import AdvkitError

if TYPE_CHECKING:
    import torch

    from advkit.attacks import Attack
    from advkit.datasets import ImageDataset
    from advkit.defenses.finetune import FinetuneMethod
    from advkit.models import LoadedModel, ModelWrapper

# evaluation attacks: Pixle at restarts 10 x iterations 10 (the protocol) and PGD 40 steps of Madry's step
EVAL_DEFAULTS = {"pixle": {"restarts": 10, "max_iterations": 10}, "pgd": {"steps": 40}}
# a larger fall in clean accuracy makes the attack rows compare few, easy images: warned, and recorded in the report
CLEAN_DROP_WARNING = 0.03


def finetune(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Checkpoint to fine-tune (with its preprocessing).")],
    data: Annotated[str, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH.")],
    out_path: Annotated[Path, typer.Option("--out", help="Fine-tuned checkpoint to write.")],
    method: Annotated[str, typer.Option("--method", help="paper-white, paper-black, pgd, fast, trades or plain.")] = "paper-white",
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="The paper's protocol uses 32.")] = 32,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam/SGD learning rate (default: 3e-3 for paper-*, else 1e-3).")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam, adamw or sgd.")] = "adam",
    schedule: Annotated[str | None, typer.Option("--schedule", help="onecycle, cosine or constant (default: constant for paper-*, else cosine).")] = None,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of each batch the paper's protocol attacks.")] = 20 / 32,
    eps: Annotated[float, typer.Option("--eps", parser=pixel_budget, help="L-inf budget of pgd/fast/trades and of the PGD evaluation (e.g. 0.3 or 8/255).")] = 0.3,
    alpha: Annotated[float | None, typer.Option("--alpha", parser=pixel_budget, help="PGD/TRADES step size in training (default 2.5 eps / steps; fast: 1.25 eps).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="PGD/TRADES steps in training (fast: 1).")] = 7,
    beta: Annotated[float, typer.Option("--beta", help="TRADES weight of the robustness term.")] = 6.0,
    select_best: Annotated[bool, typer.Option("--select-best/--last", help="Keep the epoch with the best robust accuracy on val images against the method's threat (PGD for pgd/fast/trades, Pixle 5 x 5 for paper-*, clean accuracy for plain).")] = True,
    eval_attack: Annotated[list[str] | None, typer.Option("--eval-attack", help="Attacks for before/after (default: pixle and pgd).")] = None,
    eval_n: Annotated[int, typer.Option("--eval-n", min=1, help="Images both models classify correctly, attacked before and after; the corruption row uses this many test images (a seeded subset).")] = 100,
    corruptions: Annotated[bool, typer.Option("--corruptions/--no-corruptions", help="Also compare accuracy under the 15 natural corruptions x 5 severities.")] = True,
    data_param: DataParamOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Report file (default: OUT with .h5).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name inside the report (default: finetune-METHOD).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint and report run.")] = False,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune with adversarial examples; checkpoints every epoch, resumes, and reports before/after robustness.

    Datasets without a val split get one carved out of their training split (10%, stratified, seeded by --seed):
    the epoch is chosen on val images, and before/after is measured on test images.
    """
    from advkit.datasets import open_images
    from advkit.defenses.finetune import FinetuneMethod, default_optimisation
    from advkit.defenses.selection import VAL_FRACTION, epoch_selection, with_validation_split
    from advkit.distributed import init_world, rank_device
    from advkit.models import ModelWrapper, load_checkpoint, save_checkpoint
    from advkit.report import Report
    from advkit.runtime import resolve_device
    from advkit.training import TrainSettings, train_classifier

    with usage_mistakes():  # a method, budget or learning rate the fine-tuning refuses is a bad option value
        spec = FinetuneMethod(method, fraction, eps, alpha, steps, beta, seed)
        default_lr, default_schedule = default_optimisation(method)
        settings = TrainSettings(epochs, batch_size, default_lr if lr is None else lr, optimizer, 0.9, 0.0,
                                 schedule or default_schedule, 0, False, seed)
    dev = resolve_device(device)
    world = init_world(dev)
    dev = rank_device(dev)
    with world.together():  # a mistake on one rank stops every rank, printed once
        names = list(dict.fromkeys(eval_attack or EVAL_DEFAULTS))  # a repeated --eval-attack runs once
        attacks = _eval_attacks(names, eps)  # a typo or a bad setting fails now, not after training
        state_path, replace_out = training_state_path(out_path, overwrite, report)
        loaded = _checked_model(model, unsafe_pickle, dev)
        pre = loaded.preprocessing
        opened = open_images(data, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
        ds = with_validation_split(opened, seed=seed) if select_best else opened  # --last trains on all train images
        ds.indices("test", required=True)  # before/after is measured on test images: fail now, not after training
        before = ModelWrapper(copy.deepcopy(loaded.net), pre).to(dev)  # the pre-trained model, kept as it is
        check_compatible(before, ds, quiet=not world.is_root)
        _require_gradients(before, ds, spec, attacks)
        _dry_run(attacks, before, ds)
        selection = epoch_selection(spec, ds, before, seed=seed) if select_best else None
        criterion = selection.criterion if selection else "the last epoch (--last)"
        validation = ("none (--last)" if not select_best else f"the val split of {ds.name}" if ds is opened else
                      f"{VAL_FRACTION:.0%} of the train split of {ds.name} (stratified, seed {seed})")

        report_path = report or out_path.with_suffix(".h5")
        run_id = run or f"finetune-{method}"
        cfg = recorded_config(ctx.params, {"run"}, {"model": before})
        if world.size > 1:  # --batch-size is per rank, so the rank count is part of what was run
            cfg["ranks"] = world.size
        if method == "fast":  # what runs: one step of 1.25 eps, not the --steps default
            cfg.update(steps=spec.steps, alpha=spec.alpha)
        # a run killed after finishing its report but before deleting its state file: done, not a conflict
        finished = (finished_run(Report(report_path), run_id, cfg)
                    if world.is_root and not overwrite and state_path.exists() else None)
    finished = world.broadcast(finished)
    if finished is not None:
        world.close()
        if world.is_root:
            state_path.unlink(missing_ok=True)
            log_complete(run_id, report_path)
            _print(finished, names, method, report_path, json_output)
        return
    train_args: dict[str, Any] = dict(preprocessing=pre, device=dev, state_path=state_path, objective=spec.objective(),
                                      validate=selection.score if selection else None, fingerprint=spec.fingerprint(), world=world,
                                      replace_state=overwrite)
    with world.together():  # a report rank 0 cannot start stops the other ranks before they train
        opened_run = start_training_run(Report(report_path), run_id, state_path, kind="finetune", config=cfg, seed=seed,
                                        command=command_line(), overwrite=overwrite) if world.is_root else None
    if opened_run is None:  # other torchrun ranks train their share; rank 0 evaluates and writes
        try:
            train_classifier(loaded.net, ds, settings, **train_args)
        finally:
            world.close()
        return
    with opened_run as writer:
        log(f"fine-tuning {loaded.architecture} with {method} ({settings.optimizer} lr {settings.lr:g}, {settings.schedule}) on {ds.name} "
            f"({len(ds.indices('train'))} train images, {dev}" + (f" x {world.size} ranks)" if world.size > 1 else ")"))
        log(f"keeping the epoch with the best {criterion}; val images: {validation}" if selection else f"keeping {criterion}")
        began = time.perf_counter()
        try:
            with progress_bar() as progress, kept_if_appeared(writer, state_path, "finetune"):
                outcome = train_classifier(loaded.net, ds, settings, progress=progress, **train_args)
        except AdvkitError:  # a state file of other settings, a divergence: the corrected command starts a fresh run
            writer.abandon()
            raise
        finally:
            world.close()
        seconds_per_epoch = (time.perf_counter() - began) / max(epochs - outcome.resumed_from_epoch, 1)
        if selection:
            best = outcome.best_epoch - 1
            log(f"kept epoch {outcome.best_epoch} of {epochs} (val score {outcome.history['val_score'][best]:.3f}, clean val "
                f"accuracy {outcome.history['eval_acc'][best]:.3f}) by {criterion}")
        # what train records, now about the fine-tuned weights (the input's accuracy and data would be stale)
        with kept_if_appeared(writer, state_path, "finetune"):
            save_checkpoint(out_path, loaded.net, loaded.architecture, loaded.arch_kwargs, pre,
                            {**loaded.extra, "dataset": ds.name, "domain": ds.domain, "seed": seed,
                             "test_accuracy": outcome.test_accuracy, "finetune": method, "epochs": epochs,
                             "best_epoch": outcome.best_epoch}, overwrite=replace_out)
        after = ModelWrapper(loaded.net, pre).to(dev)
        columns, summary = _before_after(before, after, attacks, ds, eval_n=eval_n, corruptions=corruptions, seed=seed)
        summary.update({"seconds_per_epoch": round(seconds_per_epoch, 2), "best_epoch": outcome.best_epoch,
                        "selection": criterion, "validation": validation, "checkpoint": str(out_path)})
        writer.add_table("history", {k: np.asarray(v) for k, v in outcome.history.items()})
        writer.append(columns)
        writer.finish(summary)
    state_path.unlink(missing_ok=True)
    _print(summary, names, method, report_path, json_output)


def _checked_model(spec: str, unsafe_pickle: bool, device: torch.device) -> LoadedModel:
    """The checkpoint to fine-tune: it needs an advkit architecture (to save the result) and its preprocessing."""
    from advkit.models import load_checkpoint

    loaded = load_checkpoint(spec, unsafe_pickle=unsafe_pickle, map_location=device)
    if loaded.kind not in ("advkit", "state_dict"):
        raise AdvkitError(f"{spec} is a {loaded.kind} model without an advkit architecture to save the fine-tuned weights "
                          "under; fine-tune a checkpoint written by advkit train")
    require_preprocessing(loaded, spec, "fine-tuning would train it on wrongly normalised inputs")
    return loaded


def _eval_attacks(names: list[str], eps: float) -> dict[str, Attack]:
    """The before/after attacks, built (so validated, with close matches for unknown names) before any training."""
    from advkit.attacks import create_attack
    from advkit.attacks.base import madry_step

    def settings(name: str) -> dict[str, Any]:
        if name != "pgd":
            return EVAL_DEFAULTS.get(name, {})
        # Madry's step, as in training and epoch selection: 40 steps of eps / 40 travel one eps in all and
        # understated PGD's success (0.18 vs 0.30 on digits at eps 0.1, before fine-tuning)
        steps = EVAL_DEFAULTS["pgd"]["steps"]
        return {"steps": steps, "eps": eps, "alpha": madry_step(eps, steps)}

    return {name: create_attack(name, **settings(name)) for name in names}


def _require_gradients(model: ModelWrapper, ds: ImageDataset, spec: FinetuneMethod, attacks: dict[str, Attack]) -> None:
    """One line, before training, if the method or an evaluation attack needs input gradients the model lacks."""
    from advkit.attacks.base import require_input_gradients
    from advkit.attacks.sanity import uses_gradients

    needing = [(f"--method {spec.method}", "--method paper-black or plain")] if spec.uses_gradients else []
    needing += [(f"attack {name}", "a gradient-free --eval-attack such as pixle or square") for name in filter(uses_gradients, attacks)]
    if needing:  # the probe tests the model, so one is enough: the message names the first thing that needs it
        require_input_gradients(model, ds.batch(ds.indices("train")[:1])[0].to(model.device), *needing[0])


def _dry_run(attacks: dict[str, Attack], model: ModelWrapper, ds: ImageDataset) -> None:
    """Each evaluation attack on one train image, so what fails only when run (an RGB-only attack on gray data, a
    setting torchattacks rejects when it builds the attack, ...) fails before training instead of after it."""
    x, y = ds.batch(ds.indices("train")[:1])
    for attack in attacks.values():
        attack(model, x, y)


def _before_after(before: ModelWrapper, after: ModelWrapper, attacks: dict[str, Attack], ds: ImageDataset, *,
                  eval_n: int, corruptions: bool, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-image attack columns and the summary: clean accuracy on the test split, attacks on the same test images
    both models classify correctly, corruption accuracy, and a warning if clean accuracy fell."""
    from advkit.defenses.evaluate import common_correct, robustness_columns, robustness_summary
    from advkit.training import predict

    models = {"before": before, "after": after}
    test_idx = ds.indices("test")
    clean = {name: float((predict(m, ds, test_idx) == ds.labels[test_idx]).mean()) for name, m in models.items()}
    index = common_correct(models, ds, n=eval_n, seed=seed)
    log(f"evaluating {', '.join(attacks)} on {len(index)} test images both models classify correctly")
    columns = robustness_columns(models, attacks, ds, index, seed=seed)
    summary: dict[str, Any] = {"before.clean_accuracy": clean["before"], "after.clean_accuracy": clean["after"],
                               "test_images": len(test_idx), "eval_images": len(index)}
    if corruptions:
        from advkit.perturbations import perturbation_names
        from advkit.perturbations.robustness import corruption_correct

        from advkit.rng import seeded_subset

        images = seeded_subset(test_idx, eval_n, seed, "corruption-subset")  # whether correct or not; all classes
        for name, m in models.items():
            correct = corruption_correct(m, ds, images, perturbation_names(), [1, 2, 3, 4, 5], seed=seed)
            summary[f"{name}.corruption_accuracy"] = float(correct.mean())
        summary["corruption_images"] = len(images)
    summary.update(robustness_summary(columns, list(models), list(attacks)))
    drop = clean["before"] - clean["after"]
    summary["clean_accuracy_drop"] = drop
    if drop > CLEAN_DROP_WARNING:
        summary["warning.clean_accuracy_drop"] = (
            f"fine-tuning lowered clean accuracy from {clean['before']:.3f} to {clean['after']:.3f} ({100 * drop:.1f} points): "
            f"the attack rows compare only the {len(index)} test images both models still classify correctly, so they can "
            "look like a robustness gain; try a lower --lr or fewer --epochs")
    return columns, summary


def _print(summary: dict[str, Any], attacks: list[str], method: str, path: Path, json_output: bool) -> None:
    for key, message in summary.items():
        if key.startswith("warning."):
            warn(message)
    if json_output:
        emit_json({"report": str(path), **summary})
        return
    n = summary["eval_images"]
    rows = [["clean accuracy" + (f" ({summary['test_images']} test images)" if "test_images" in summary else ""),
             summary["before.clean_accuracy"], summary["after.clean_accuracy"]]]
    if "before.corruption_accuracy" in summary:
        images = f", {summary['corruption_images']} test images" if "corruption_images" in summary else ""
        rows.append([f"accuracy under corruptions (15 x 5{images})", summary["before.corruption_accuracy"],
                     summary["after.corruption_accuracy"]])
    rows.append(["images in the attack rows (both models correct)", n, n])
    for a in attacks:
        for key, label in (("success_rate", "success rate"), ("l0_mean", "pixels changed (successes)"), ("queries_mean", "queries (successes)")):
            rows.append([f"{a} {label}", summary[f"before.{a}.{key}"], summary[f"after.{a}.{key}"]])
    kept = f", epoch {summary['best_epoch']} kept" if "best_epoch" in summary else ""
    out.print(table(f"{method} fine-tuning{kept}: before / after (report {path})", ["", "before", "after"], rows))
