"""``advkit finetune``: adversarially fine-tune a checkpoint and report robustness before and after."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, command_line, emit_json, finished_run, log, out,
    training_state_path,
    parse_params, progress_bar, recorded_config, table,
)
from advkit.cli.train_cmd import Domain
from advkit.errors import AdvkitError

# evaluation attacks: Pixle at restarts 10 x iterations 10 (the protocol) and PGD eps/40 steps
EVAL_DEFAULTS = {"pixle": {"restarts": 10, "max_iterations": 10}, "pgd": {"steps": 40}}


def finetune(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Checkpoint to fine-tune (with its preprocessing).")],
    data: Annotated[str, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH.")],
    out_path: Annotated[Path, typer.Option("--out", help="Fine-tuned checkpoint to write.")],
    method: Annotated[str, typer.Option("--method", help="paper-white, paper-black, pgd, fast, trades or plain.")] = "paper-white",
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset.")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="The paper's protocol uses 32.")] = 32,
    lr: Annotated[float | None, typer.Option("--lr", help="Adam/SGD learning rate (default: 3e-3 for paper-*, else 1e-3).")] = None,
    optimizer: Annotated[str, typer.Option("--optimizer", help="adam, adamw or sgd.")] = "adam",
    schedule: Annotated[str | None, typer.Option("--schedule", help="onecycle, cosine or constant (default: constant for paper-*, else cosine).")] = None,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of each batch the paper's protocol attacks.")] = 20 / 32,
    eps: Annotated[float, typer.Option("--eps", help="L-inf budget of pgd/fast/trades and of the PGD evaluation.")] = 0.3,
    alpha: Annotated[float | None, typer.Option("--alpha", help="PGD step size in training (default 2.5 eps / steps).")] = None,
    steps: Annotated[int, typer.Option("--steps", help="PGD/TRADES steps in training.")] = 7,
    beta: Annotated[float, typer.Option("--beta", help="TRADES weight of the robustness term.")] = 6.0,
    select_best: Annotated[bool, typer.Option("--select-best/--last", help="Keep the epoch with the best robust validation accuracy (PGD).")] = True,
    eval_attack: Annotated[list[str] | None, typer.Option("--eval-attack", help="Attacks for before/after (default: pixle and pgd).")] = None,
    eval_n: Annotated[int, typer.Option("--eval-n", help="Images both models classify correctly, attacked before and after.")] = 100,
    corruptions: Annotated[bool, typer.Option("--corruptions/--no-corruptions", help="Also compare accuracy under the 15 natural corruptions x 5 severities.")] = True,
    data_param: DataParamOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Report file (default: OUT with .h5).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint and report run.")] = False,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Fine-tune with adversarial examples; checkpoints every epoch, resumes, and reports before/after robustness."""
    from advkit.attacks import create_attack
    from advkit.datasets import open_images
    from advkit.defenses.evaluate import common_correct, robustness_columns, robustness_summary
    from advkit.defenses.finetune import FinetuneMethod, default_optimisation
    from advkit.distributed import init_world, rank_device
    from advkit.models import ModelWrapper, load_checkpoint, save_checkpoint
    from advkit.report import Report
    from advkit.runtime import resolve_device
    from advkit.training import TrainSettings, predict, train_classifier

    dev = resolve_device(device)
    world = init_world(dev)
    dev = rank_device(dev)
    spec = FinetuneMethod(method, fraction, eps, alpha, steps, beta, seed)
    default_lr, default_schedule = default_optimisation(method)
    settings = TrainSettings(epochs, batch_size, default_lr if lr is None else lr, optimizer, 0.9, 0.0,
                             schedule or default_schedule, 0, False, seed)
    state_path = training_state_path(out_path, overwrite)
    loaded = load_checkpoint(model, unsafe_pickle=unsafe_pickle, map_location=dev)
    pre = loaded.preprocessing
    if pre.channels is None or pre.input_size is None or loaded.kind not in ("advkit", "state_dict"):
        raise AdvkitError(f"{model} has no advkit preprocessing metadata or architecture; fine-tune a checkpoint written by advkit train")
    ds = open_images(data, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
    before = ModelWrapper(load_checkpoint(model, unsafe_pickle=unsafe_pickle, map_location=dev).net, pre).to(dev)
    val_index = common_correct({"before": before}, ds, split="val" if len(ds.indices("val")) else "test", n=200, seed=seed + 1)
    pgd = create_attack("pgd", eps=eps, alpha=eps / 4, steps=10)

    def robust_val(current: ModelWrapper) -> float:
        x, y = ds.batch(val_index)
        return float((~pgd(current.unwrapped(), x, y).success.cpu()).float().mean())

    report_path = report or out_path.with_suffix(".h5")
    run_id = f"finetune-{method}"
    # a run killed after finishing its report but before deleting its state file: done, not a conflict
    finished = world.broadcast(finished_run(Report(report_path), run_id, recorded_config(ctx.params))
                               if world.is_root and not overwrite and state_path.exists() else None)
    if finished is not None:
        world.close()
        if world.is_root:
            state_path.unlink(missing_ok=True)
            log(f"run {run_id} in {report_path} is already complete with this config (--overwrite redoes it)")
            _print(finished, eval_attack or list(EVAL_DEFAULTS), method, report_path, json_output)
        return
    if not world.is_root:  # other torchrun ranks train their share; rank 0 evaluates and writes
        try:
            train_classifier(loaded.net, ds, settings, preprocessing=pre, device=dev, state_path=state_path, objective=spec.objective(),
                             validate=robust_val if select_best else None, fingerprint=spec.fingerprint(), world=world)
        finally:
            world.close()
        return
    with Report(report_path).start_run(run_id, kind="finetune", config=recorded_config(ctx.params), seed=seed,
                                       command=command_line(), overwrite=overwrite) as writer:
        log(f"fine-tuning {loaded.architecture} with {method} ({settings.optimizer} lr {settings.lr:g}, {settings.schedule}) on {ds.name} ({len(ds.indices('train'))} train images, {dev}"
            + (f" x {world.size} ranks)" if world.size > 1 else ")"))
        began = time.perf_counter()
        try:
            with progress_bar() as progress:
                outcome = train_classifier(loaded.net, ds, settings, preprocessing=pre, device=dev, state_path=state_path,
                                           progress=progress, objective=spec.objective(), validate=robust_val if select_best else None,
                                           fingerprint=spec.fingerprint(), world=world)
        finally:
            world.close()
        seconds_per_epoch = (time.perf_counter() - began) / max(epochs - outcome.resumed_from_epoch, 1)
        save_checkpoint(out_path, loaded.net, loaded.architecture, loaded.arch_kwargs, pre,
                        {**loaded.extra, "finetune": method, "epochs": epochs, "best_epoch": outcome.best_epoch})
        after = ModelWrapper(loaded.net, pre).to(dev)
        test_idx = ds.indices("test")
        clean = {name: float((predict(m, ds, test_idx) == ds.labels[test_idx]).mean()) for name, m in (("before", before), ("after", after))}
        names = eval_attack or list(EVAL_DEFAULTS)
        attacks = {a: create_attack(a, **({**EVAL_DEFAULTS.get(a, {}), "eps": eps, "alpha": eps / 40} if a == "pgd" else EVAL_DEFAULTS.get(a, {}))) for a in names}
        index = common_correct({"before": before, "after": after}, ds, n=eval_n, seed=seed)
        log(f"evaluating {', '.join(names)} on {len(index)} test images both models classify correctly")
        columns = robustness_columns({"before": before, "after": after}, attacks, ds, index, seed=seed)
        natural: dict[str, float] = {}
        if corruptions:
            from advkit.perturbations import perturbation_names
            from advkit.perturbations.robustness import corruption_correct

            for name, m in (("before", before), ("after", after)):
                correct = corruption_correct(m, ds, test_idx[:eval_n], perturbation_names(), [1, 2, 3, 4, 5], seed=seed)
                natural[f"{name}.corruption_accuracy"] = float(correct.mean())
        summary: dict[str, Any] = {
            "before.clean_accuracy": clean["before"], "after.clean_accuracy": clean["after"], **natural,
            **robustness_summary(columns, ["before", "after"], names),
            "seconds_per_epoch": round(seconds_per_epoch, 2), "best_epoch": outcome.best_epoch, "eval_images": len(index),
            "checkpoint": str(out_path),
        }
        writer.add_table("history", {k: np.asarray(v) for k, v in outcome.history.items()})
        writer.append(columns)
        writer.finish(summary)
    state_path.unlink(missing_ok=True)
    _print(summary, names, method, report_path, json_output)


def _print(summary: dict[str, Any], attacks: list[str], method: str, path: Path, json_output: bool) -> None:
    if json_output:
        emit_json({"report": str(path), **summary})
        return
    rows = [["clean accuracy", summary["before.clean_accuracy"], summary["after.clean_accuracy"]]]
    if "before.corruption_accuracy" in summary:
        rows.append(["accuracy under corruptions (15 x 5)", summary["before.corruption_accuracy"], summary["after.corruption_accuracy"]])
    for a in attacks:
        for key, label in (("success_rate", "success rate"), ("l0_mean", "pixels changed (successes)"), ("queries_mean", "queries (successes)")):
            rows.append([f"{a} {label}", summary[f"before.{a}.{key}"], summary[f"after.{a}.{key}"]])
    out.print(table(f"{method} fine-tuning: before / after on {summary['eval_images']} images (report {path})", ["", "before", "after"], rows))
