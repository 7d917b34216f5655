"""``advkit attack NAME... --model CKPT --data DATASET``: attack a checkpoint and write a per-sample report.

Also runs under ``torchrun --nproc_per_node=N -m advkit attack ...``: every rank attacks its share of the
planned samples and rank 0 writes the merged report.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ArchOpt, ArchParamOpt, ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, arch_settings, check_compatible,
    emit_json, finished_run, has_preprocessing, kv_table, log, log_complete, no_preprocessing, out, parse_params, plain,
    progress_bar, recorded_config, split_choice, start_or_finished, table, warn,
)
from advkit.cli.train_cmd import Domain
from advkit.errors import AdvkitError
from advkit.registry import suggest
from advkit.runtime import ProgressEvent

if TYPE_CHECKING:
    from advkit.attacks import Attack
    from advkit.attacks.runner import SamplePlan
    from advkit.datasets import ImageDataset
    from advkit.distributed import World
    from advkit.models import ModelWrapper
    from advkit.report import Report

DEFAULT_ATTACK = "pixle"
BUILTIN_MODEL = "mnist-subset-small-cnn.safetensors"
BUILTIN_DATA = "mnist-subset"
# MNIST needs a larger budget than torchattacks' CIFAR defaults (eps 8/255 barely moves MNIST): Madry et al.'s settings
BUILTIN_PARAMS = {"pgd": {"eps": 0.3, "alpha": 0.01, "steps": 40}, "fgsm": {"eps": 0.3}}
SUMMARY_ROWS = ("clean_accuracy", "robust_accuracy", "attack_success_rate", "queries_mean", "queries_median",
                "l0_mean", "l2_mean", "linf_mean", "time_per_image", "n_attacked")


def builtin_checkpoint() -> Path:
    """The small CNN shipped with advkit (trained on the MNIST subset by ``advkit train``; see README)."""
    return Path(str(resources.files("advkit.models") / "pretrained" / BUILTIN_MODEL))


def attack(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Attack name(s) (advkit list attacks); several give a worst case.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint or module:factory; give it with --data (neither: the built-in MNIST CNN on mnist-subset).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Dataset name, FORMAT:PATH or PATH; give it with --model (neither: mnist-subset).")] = None,
    domain: Annotated[Domain | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset to attack.")] = None,
    split: Annotated[str, typer.Option("--split", callback=split_choice, help="Split to attack: test, val, train or all.")] = "test",
    n: Annotated[int | None, typer.Option("--n", "--num-samples", help="Samples to attack (0 = all); use --num-samples under torchrun.")] = 100,
    per_class: Annotated[int | None, typer.Option("--per-class", min=1, help="At most this many samples of each class, within --n (--n 0: no cap).")] = None,
    include_misclassified: Annotated[bool, typer.Option("--include-misclassified/--no-include-misclassified", help="Also attack samples the model already gets wrong (recorded per sample; the success rate and costs count correctly classified samples only).")] = False,
    targeted: Annotated[str | None, typer.Option("--targeted", help="random, least-likely, or a class index/name.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Attack setting key=value, or NAME.key=value for one of several attacks.")] = None,
    max_queries: Annotated[int | None, typer.Option("--max-queries", help="Per-sample budget of model evaluations; a sample that spends it without success counts as robust (a warning says how many).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images attacked together (advkit's attacks give the same results at any batch size, up to floating point: docs/methods.md).")] = 128,
    out_path: Annotated[Path, typer.Option("--out", help="HDF5 report to write or resume.")] = Path("advkit-report.h5"),
    run: Annotated[str | None, typer.Option("--run", help="Run name (several attacks: prefix of their run names).")] = None,
    save_images: Annotated[bool, typer.Option("--save-images/--no-save-images", help="Store adversarial images in the report.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace finished runs of the same name.")] = False,
    data_param: DataParamOpt = None,
    arch: ArchOpt = None,
    arch_param: ArchParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Attack correctly classified samples; report success, queries and perturbation sizes per sample.

    With neither --model nor --data, attacks advkit's built-in small CNN on the MNIST subset. Re-running an
    interrupted command resumes it from the report.
    """
    from advkit.attacks import create_attack
    from advkit.attacks.runner import parse_target, select_samples
    from advkit.datasets import open_images
    from advkit.distributed import init_world, rank_device
    from advkit.models import ModelWrapper, load_checkpoint
    from advkit.report import Report
    from advkit.runtime import resolve_device

    if (model is None) != (data is None):
        raise typer.BadParameter("pass both --model and --data, or neither to use the built-in MNIST model", param_hint="--model/--data")
    if batch_size < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--batch-size")
    if n is not None and n < 0:
        raise typer.BadParameter(f"must be >= 1, or 0 for every sample; got {n}", param_hint="--n")
    if max_queries is not None and max_queries < 1:
        raise typer.BadParameter("must be >= 1 (each sample needs at least one query)", param_hint="--max-queries")
    names = list(dict.fromkeys(names or [DEFAULT_ATTACK]))
    settings = settings_per_attack(names, parse_params(param or []), builtin=model is None)
    attacks = {name: create_attack(name, **settings[name]) for name in names}
    dev = resolve_device(device)
    world = init_world(dev)
    dev = rank_device(dev)
    try:
        with world.together():  # a mistake on one rank (a file another node lacks) stops them all, printed once
            loaded = load_checkpoint(model or builtin_checkpoint(), architecture=arch, arch_kwargs=arch_settings(arch, arch_param),
                                     unsafe_pickle=unsafe_pickle, map_location=dev)
            ds = open_images(data or BUILTIN_DATA, None if domain is None else domain.value, **parse_params(data_param or [], "--data-param"))
            wrapped = ModelWrapper(loaded.net, loaded.preprocessing).to(dev)
            check_compatible(wrapped, ds, quiet=not world.is_root)
            plan = select_samples(wrapped, ds, split=split, n=None if n == 0 else n, per_class=per_class, seed=seed,
                                  only_correct=not include_misclassified, target=parse_target(targeted, ds.class_names))
            _require_gradients(wrapped, ds, plan, names)
            if world.is_root and per_class and n and len(plan.attack_index) >= n and per_class * len(ds.class_names) > n:
                warn(f"--n {n} stopped the selection before --per-class {per_class} of every class; pass --n 0 for all of them")
            if len(plan.attack_index):  # a targeted mode or image shape an attack lacks: before the first attack runs
                first = ds.batch(plan.attack_index[:1])[0].to(dev)
                for attack_obj in attacks.values():
                    attack_obj.check_applicable(wrapped, first, targeted is not None)
            if world.is_root:
                if not has_preprocessing(loaded):
                    warn(no_preprocessing(loaded.source, "it is attacked on [0, 1] pixels without normalisation and its "
                                          "accuracies are wrong if it expects normalised inputs"))
                where = "the built-in small CNN" if model is None else loaded.source
                log(f"{', '.join(names)} against {where}: {len(plan.attack_index)} of {len(plan.scanned_index)} scanned "
                    f"{split} samples of {ds.name} on {dev}" + (f" x {world.size} ranks" if world.size > 1 else ""))
            base_config = recorded_config(ctx.params, {"batch_size", "names", "param", "run", "out_path"}, {"model": wrapped})
            flags = _sanity_flags(wrapped, ds, plan, names)
            report = Report(out_path)
            configs = {name: {**base_config, **_batching(attack_obj, batch_size=batch_size), "attack": name, "attack_params": attack_obj.params()}
                       for name, attack_obj in attacks.items()}
            worst = _worst_case_config({**base_config, **_batching(*attacks.values(), batch_size=batch_size)}, configs, run)
        _check_report(report, [(_run_id(run, name, len(names)), "attack", cfg) for name, cfg in configs.items()]
                      + ([(f"{run or 'attack'}-worst-case", "worst-case", worst)] if len(names) > 1 else []),
                      seed, overwrite, world)
        summaries: dict[str, dict[str, Any]] = {}
        for name, attack_obj in attacks.items():
            summaries[name] = _attack_run(report, _run_id(run, name, len(names)), configs[name], attack_obj, wrapped, ds,
                                          plan, world, seed=seed, batch_size=batch_size, max_queries=max_queries,
                                          save_images=save_images, overwrite=overwrite, sanity=flags)
        if len(names) > 1 and world.is_root:
            summaries["worst case"] = _worst_case_run(report, run, names, worst, seed, overwrite)
    finally:
        world.close()
    if world.is_root:
        _warn_sanity(summaries)
        _print_summaries(summaries, ds.name, out_path, json_output)


def settings_per_attack(names: list[str], params: dict[str, Any], builtin: bool) -> dict[str, dict[str, Any]]:
    """Split ``--param`` into per-attack settings: ``NAME.key`` for one attack, ``key`` for all of them."""
    per: dict[str, dict[str, Any]] = {name: dict(BUILTIN_PARAMS.get(name, {})) if builtin else {} for name in names}
    for key, value in params.items():
        prefix, dot, rest = key.partition(".")
        if dot and prefix in per:
            per[prefix][rest] = value
        elif dot and not prefix:
            raise AdvkitError(f"--param {key}: no attack name before the dot (NAME.{rest}, NAME one of {', '.join(names)})")
        elif dot:
            raise AdvkitError(f"--param {key}: {prefix} is not one of the attacks in this command{suggest(prefix, names)}")
        else:
            for settings in per.values():
                settings[key] = value
    return per


def _run_id(run: str | None, name: str, count: int) -> str:
    if run is None:
        return f"attack-{name}"
    return run if count == 1 else f"{run}-{name}"


def _attack_run(
    report: Report, run_id: str, cfg: dict[str, Any], attack_obj: Attack, model: ModelWrapper, ds: ImageDataset,
    plan: SamplePlan, world: World, *, seed: int, batch_size: int, max_queries: int | None, save_images: bool, overwrite: bool,
    sanity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One attack over the plan, resumable; rank 0 journals the merged rows. Returns the run summary."""
    from advkit.attacks.runner import attack_batches, batches, skipped_columns
    from advkit.distributed import World, merge_columns, shard
    from advkit.report import attack_summary

    with world.together():
        writer, finished = start_or_finished(report, run_id, "attack", cfg, seed, overwrite) if world.is_root else (None, None)
    finished = world.broadcast(finished)
    if finished is not None:
        if world.is_root:
            log_complete(run_id, report.path)
        return finished
    attacked = False
    try:
        done = world.broadcast(set(int(i) for i in writer.done_indices) if writer else None)
        if writer and done:
            log(f"resuming {run_id}: {len(done)} samples already in {report.path}")
        with world.together():
            if writer:
                skipped = skipped_columns(plan, done, ds, save_images)
                if len(skipped["index"]):
                    writer.append(skipped)
        todo = np.array([i for i in plan.attack_index.tolist() if i not in done], np.int64)
        rounds = -(-len(shard(todo, World(0, world.size))) // batch_size)  # rank 0 has the largest share
        progress = _AttackProgress(attack_obj.name, len(plan.attack_index), writer.samples() if writer and done else None)
        with progress_bar(enabled=world.is_root) as show:
            todo_batches = batches(shard(todo, world), batch_size, rounds)
            for columns in world.lockstep(attack_batches(attack_obj, model, ds, plan, todo_batches, seed=seed,
                                                         max_queries=max_queries, save_images=save_images)):
                merged = merge_columns(world.gather(columns) or [])
                with world.together():  # a report rank 0 cannot write stops the other ranks too
                    if writer and merged is not None:
                        writer.append(merged)
                        attacked = True
                        show(progress.update(merged))
        with world.together():
            samples = writer.samples() if writer else {}
            summary = {**attack_summary(samples), **(sanity or {})} if writer else {}
            if writer:
                writer.finish(summary)
                _warn_out_of_budget(attack_obj, samples, max_queries)
        return summary
    except AdvkitError:
        if writer and not attacked:  # e.g. settings torchattacks refuses: no half-made run for the fixed command to trip on
            writer.abandon()
        raise
    finally:
        if writer:
            writer.close()


def _warn_out_of_budget(attack_obj: Attack, samples: dict[str, np.ndarray], max_queries: int | None) -> None:
    """Say how many attacked samples used their whole ``--max-queries`` budget without success: they count as robust,
    which is the budget's verdict, not the model's (a fixed-step PGD of more steps than the budget fools nothing)."""
    if max_queries is None or not len(samples.get("index", ())):
        return
    spent = samples["attacked"].astype(bool) & ~samples["success"].astype(bool) & (samples["queries"] >= max_queries)
    if spent.any():
        how = ("torchattacks attacks stop where the budget runs out and keep the clean image"
               if not attack_obj.batch_invariant else "the attack stopped there")
        warn(f"{attack_obj.name}: {int(spent.sum())} of {int(samples['attacked'].sum())} attacked samples ran out of "
             f"--max-queries {max_queries} without success and count as robust ({how})")


class _AttackProgress:
    """Live numbers for the progress bar: images/s (of this process), and over every attacked sample so far, a
    resumed run's included, the success rate and the median queries of the successes (the report's
    ``queries_median``)."""

    def __init__(self, name: str, total: int, resumed: dict[str, np.ndarray] | None = None) -> None:
        self.name, self.total, self.started = name, total, time.perf_counter()
        self.done = self.fresh = self.successes = self.scored = 0
        self.queries: list[int] = []
        if resumed is not None and len(resumed.get("index", ())):
            self._count({k: v[resumed["attacked"].astype(bool)] for k, v in resumed.items()})

    def _count(self, columns: dict[str, np.ndarray]) -> None:
        from advkit.report.summary import scored

        self.done += len(columns["index"])
        # over the samples the summary counts: with --include-misclassified, not the images already misclassified
        hit = columns["success"].astype(bool) & scored(columns)
        self.scored += int(scored(columns).sum())
        self.successes += int(hit.sum())
        self.queries.extend(columns["queries"][hit].tolist())

    def update(self, columns: dict[str, np.ndarray]) -> ProgressEvent:
        self._count(columns)
        self.fresh += len(columns["index"])
        rate = self.fresh / max(time.perf_counter() - self.started, 1e-9)
        median = float(np.median(self.queries)) if self.queries else float("nan")
        return ProgressEvent(f"attack {self.name}", self.done, self.total, {
            "img/s": rate, "success": self.successes / self.scored if self.scored else float("nan"),
            "median queries (successes)": median,
        })


def _batching(*attacks: Attack, batch_size: int) -> dict[str, int]:
    """``{"batch_size": ...}`` for a run config when one of ``attacks`` gives other results at another batch size
    (torchattacks' randomised ones), so that replaying or resuming the run attacks in the same batches; else {}."""
    return {} if all(attack.batch_invariant for attack in attacks) else {"batch_size": batch_size}


def _worst_case_config(base_config: dict[str, Any], configs: dict[str, dict[str, Any]], run: str | None) -> dict[str, Any]:
    """What a worst-case run records: the attacks, their runs and each one's settings (so its config replays)."""
    names = list(configs)
    return {**base_config, "attacks": names, "runs": [_run_id(run, name, len(names)) for name in names],
            "params_by_attack": {name: plain(cfg["attack_params"]) for name, cfg in configs.items()}}


def _check_report(report: Report, runs: list[tuple[str, str, dict[str, Any]]], seed: int, overwrite: bool, world: World) -> None:
    """Every (run id, kind, config) this command writes is checked against the report before the first attack, so a
    clash with the third run does not come after two attacks' work (rank 0 reads the report; every rank stops)."""
    with world.together():
        for run_id, kind, cfg in runs if world.is_root else []:
            if overwrite or finished_run(report, run_id, cfg) is None:
                report.check_start(run_id, kind=kind, config=cfg, seed=seed, overwrite=overwrite)


def _worst_case_run(report: Report, run: str | None, names: list[str], cfg: dict[str, Any], seed: int, overwrite: bool) -> dict[str, Any]:
    """Combine the attack runs into a per-sample worst case (a run of kind "worst-case") recorded with ``cfg``."""
    from advkit.attacks.runner import worst_case
    from advkit.attacks.sanity import attack_mix_flags
    from advkit.report import attack_summary

    per_attack = {name: report.read(_run_id(run, name, len(names))).samples for name in names}
    combined = worst_case(per_attack)
    summary = {k: v for k, v in attack_summary(combined).items() if k in ("n", "n_attacked", "n_success", "clean_accuracy", "robust_accuracy", "attack_success_rate")}
    for name in names:
        summary[f"robust_accuracy.{name}"] = attack_summary(per_attack[name])["robust_accuracy"]
    summary.update(attack_mix_flags({name: summary[f"robust_accuracy.{name}"] for name in names}, cfg["params_by_attack"]))
    writer, finished = start_or_finished(report, f"{run or 'attack'}-worst-case", "worst-case", cfg, seed, overwrite)
    if writer is None:  # complete already, also when the same command finished it while this one waited for the lock
        return dict(finished or {})
    with writer:
        writer.append(combined)
        writer.finish(summary)
    return summary


def _require_gradients(model: ModelWrapper, ds: ImageDataset, plan: SamplePlan, names: list[str]) -> None:
    """Refuse a gradient attack on a model without input gradients before any attack runs (one line, not autograd's)."""
    from advkit.attacks.base import require_input_gradients
    from advkit.attacks.sanity import uses_gradients

    needing = [name for name in names if uses_gradients(name)]
    if needing and len(plan.scanned_index):
        require_input_gradients(model, ds.batch(plan.scanned_index[:1])[0].to(model.device), f"attack {needing[0]}")


def _sanity_flags(model: ModelWrapper, ds: ImageDataset, plan: SamplePlan, names: list[str]) -> dict[str, Any]:
    """AutoAttack-style flags of the model on up to 64 of the planned clean images (advkit.attacks.sanity)."""
    from advkit.attacks.sanity import model_flags, uses_gradients

    sample = (plan.attack_index if len(plan.attack_index) else plan.scanned_index)[:64]
    if not len(sample):
        return {}
    x, y = ds.batch(sample)
    return model_flags(model, x, y, gradients=any(uses_gradients(n) for n in names))


def _warn_sanity(summaries: dict[str, dict[str, Any]]) -> None:
    """Each sanity flag set in any run, once, as a warning on stderr."""
    from advkit.attacks.sanity import warnings_for

    shown: list[str] = []
    for name, summary in summaries.items():
        for line in warnings_for(summary, [] if name == "worst case" else [name]):
            if line not in shown:
                shown.append(line)
                warn(line)


def _print_summaries(summaries: dict[str, dict[str, Any]], data: str, path: Path, json_output: bool) -> None:
    if json_output:
        single = len(summaries) == 1
        emit_json({"report": str(path), **next(iter(summaries.values()))} if single else {"report": str(path), "attacks": summaries})
        return
    names = list(summaries)
    rows = [[key.replace("_", " "), *(summaries[n].get(key, "") for n in names)] for key in SUMMARY_ROWS
            if any(key in summaries[n] for n in names)]
    out.print(table(f"{data}: report {path}", ["", *names], rows))
    if "worst case" in summaries:
        worst = summaries["worst case"]
        out.print(kv_table("robust accuracy per attack", {k.split(".", 1)[1]: v for k, v in worst.items() if k.startswith("robust_accuracy.")}))
