"""``advkit transfer``: attack one domain of aligned RGB-IR pairs and replay the pixel moves on the other."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from advkit.cli.common import (
    ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, check_compatible, emit_json,
    finished_run, log, log_complete, out, parse_params, pixel_budget, progress_bar, recorded_config, split_choice,
    start_or_finished, table,
)
from advkit.errors import AdvkitError

if TYPE_CHECKING:
    from advkit.datasets import ImageDataset
    from advkit.models import ModelWrapper

DIRECTIONS = ("rgb->ir", "ir->rgb", "both")
# advkit's default for CPU time (the reference's transfer.yaml: restarts 500 x 20): about 2% of the pixels per move, 30 x 20
DEFAULT_PARAMS = {"white-pixle": {"pixels_per_iteration": 0.02, "restarts": 30, "max_iterations": 20}}
MOVE_ATTACKS = ("pixle", "white-pixle", "white-pixle-sorted")


def transfer(
    ctx: typer.Context,
    source_model: Annotated[str, typer.Option("--source-model", help="Model attacked on its own domain.")],
    target_model: Annotated[str, typer.Option("--target-model", help="Model of the other domain, given the replayed images.")],
    data: Annotated[str, typer.Option("--data", help="Paired RGB-IR dataset (name, FORMAT:PATH or PATH).")],
    attack_name: Annotated[str, typer.Option("--attack", help="pixle, white-pixle or white-pixle-sorted.")] = "white-pixle",
    direction: Annotated[str, typer.Option("--direction", help="rgb->ir (source model is RGB), ir->rgb, or both.")] = "both",
    split: Annotated[str, typer.Option("--split", callback=split_choice, help="Pairs to use: test, val, train or all.")] = "test",
    n: Annotated[int | None, typer.Option("--n", "--num-samples", min=0, help="Pairs per direction (0 = all kept pairs).")] = 100,
    param: Annotated[list[str] | None, typer.Option("--param", help="Attack setting key=value.")] = None,
    controls: Annotated[bool, typer.Option("--controls/--no-controls", help="The additive (FGSM, PGD) controls; the random-move control always runs.")] = True,
    control_eps: Annotated[float, typer.Option("--control-eps", parser=pixel_budget, help="Linf budget of the FGSM/PGD controls (e.g. 8/255).")] = 8 / 255,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    out_path: Annotated[Path, typer.Option("--out", help="HDF5 report.")] = Path("advkit-transfer.h5"),
    run: Annotated[str | None, typer.Option("--run", help="Prefix of the run names (default transfer-ATTACK); -SRC-TGT is added.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace finished runs of the same name.")] = False,
    data_param: DataParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Attack the source domain, replay the moves on the aligned target image, report transfer per direction."""
    from advkit.attacks import create_attack
    from advkit.datasets import PairedDataset, open_dataset
    from advkit.models import ModelWrapper, load_checkpoint
    from advkit.report import Report
    from advkit.runtime import resolve_device

    if direction not in DIRECTIONS:
        raise typer.BadParameter(f"choose from {', '.join(DIRECTIONS)}", param_hint="--direction")
    if attack_name not in MOVE_ATTACKS:
        raise typer.BadParameter(f"{attack_name} does not move pixels; transfer replays moves of {', '.join(MOVE_ATTACKS)}",
                                 param_hint="--attack")
    dev = resolve_device(device)
    settings = {**DEFAULT_PARAMS.get(attack_name, {}), **parse_params(param or [])}
    attack = create_attack(attack_name, **settings)
    if controls and not 0 < control_eps <= 1:  # alpha is derived from it: a message about alpha would puzzle
        raise typer.BadParameter(f"must be in (0, 1] (an L-inf budget on [0, 1] pixels), got {control_eps:g}", param_hint="--control-eps")
    additive = {"fgsm": create_attack("fgsm", eps=control_eps),
                "pgd": create_attack("pgd", eps=control_eps, alpha=control_eps / 4, steps=10)} if controls else {}
    ds = open_dataset(data, **parse_params(data_param or [], "--data-param"))
    if not isinstance(ds, PairedDataset):
        raise AdvkitError(f"{data} has a single domain ({ds.domain}); transfer needs aligned RGB-IR pairs (e.g. synthetic-rgbir)")
    models = {}
    for role, spec in (("source", source_model), ("target", target_model)):
        loaded = load_checkpoint(spec, unsafe_pickle=unsafe_pickle, map_location=dev)
        models[role] = ModelWrapper(loaded.net, loaded.preprocessing).to(dev)
    first = ("rgb", "ir") if direction in ("rgb->ir", "both") else ("ir", "rgb")
    plan = [(first, models["source"], models["target"])]
    if direction == "both":
        plan.append(((first[1], first[0]), models["target"], models["source"]))
    report = Report(out_path)
    base = recorded_config(ctx.params, {"batch_size", "out_path", "param", "direction", "run"},
                           {f"{role}_model": m for role, m in models.items()})
    # every direction is checked (domains, a clashing run in the report) before the first attack starts
    runs = []
    for (src_domain, tgt_domain), src_model, tgt_model in plan:
        src, tgt = ds.domain(src_domain), ds.domain(tgt_domain)
        _check_domain(src_model, src, "source" if src_model is models["source"] else "target")
        _check_domain(tgt_model, tgt, "target" if tgt_model is models["target"] else "source")
        key = f"{src_domain}->{tgt_domain}"
        run_id = f"{run or f'transfer-{attack_name}'}-{src_domain}-{tgt_domain}"
        cfg = {**base, **_roles(base, swapped=src_model is not models["source"]), "direction": key,
               "attack_params": attack.params()}
        finished = None if overwrite else finished_run(report, run_id, cfg)
        if finished is None:
            report.check_start(run_id, kind="transfer", config=cfg, seed=seed, overwrite=overwrite)
        runs.append((key, run_id, cfg, finished, src_model, tgt_model, src, tgt))
    summaries: dict[str, dict[str, Any]] = {}
    for key, run_id, cfg, finished, src_model, tgt_model, src, tgt in runs:
        if finished is not None:
            log_complete(run_id, out_path)
            summaries[key] = finished
            continue
        summaries[key] = _run(report, run_id, cfg, attack, additive, src_model, tgt_model, src, tgt,
                              split=split, n=None if n == 0 else n, seed=seed, batch_size=batch_size, overwrite=overwrite)
    _print(summaries, attack_name, out_path, json_output)


def _roles(config: dict[str, Any], *, swapped: bool) -> dict[str, Any]:
    """The models as one direction uses them: in the reverse direction of ``--direction both`` the command's target
    model is the one attacked, so that run records it as its source (and its config replays that direction alone)."""
    keys = ("source_model", "source_model_fingerprint", "target_model", "target_model_fingerprint")
    if not swapped:
        return {k: config[k] for k in keys}
    return {"source_model": config["target_model"], "source_model_fingerprint": config["target_model_fingerprint"],
            "target_model": config["source_model"], "target_model_fingerprint": config["source_model_fingerprint"]}


def _check_domain(model: ModelWrapper, view: ImageDataset, role: str) -> None:
    """The model must take this domain's images, and be trained on this domain when its checkpoint says so."""
    pre = model.preprocessing
    if pre.domain in ("rgb", "ir") and pre.domain != view.domain:  # an error here, before check_compatible warns of it
        raise AdvkitError(f"the {role} model was trained on {pre.domain} images but would get {view.domain} ones; check --direction")
    check_compatible(model, view, f"the {role} model", f"the {view.domain} side")  # and its class-name warning


def _run(report: Any, run_id: str, cfg: dict[str, Any], attack: Any, additive: dict[str, Any], src_model: ModelWrapper,
         tgt_model: ModelWrapper, src: ImageDataset, tgt: ImageDataset, *, split: str, n: int | None, seed: int,
         batch_size: int, overwrite: bool) -> dict[str, Any]:
    """One direction, journaled a batch at a time: an interrupted one resumes from its last journaled batch."""
    import numpy as np

    from advkit.attacks.transfer import direction_batches, direction_summary, select_pairs

    index = select_pairs(src_model, tgt_model, src, tgt, split=split, n=n, seed=seed)
    log(f"{attack.name} {src.domain} -> {tgt.domain}: {len(index)} pairs both models classify correctly")
    writer, finished = start_or_finished(report, run_id, "transfer", cfg, seed, overwrite)
    if writer is None:  # the same command finished it while this one waited for the report's lock
        log_complete(run_id, report.path)
        return dict(finished or {})
    with writer:
        done = np.isin(index, writer.done_indices)
        if done.any():
            log(f"resuming {run_id}: {int(done.sum())} pairs already in {report.path}")
        try:
            with progress_bar() as show:
                for columns, moves in direction_batches(attack, src_model, tgt_model, src, tgt, index[~done], seed=seed,
                                                        batch_size=batch_size, controls=additive, progress=show,
                                                        done=int(done.sum())):
                    writer.append(columns, tables={"moves": moves})
        except AdvkitError:  # e.g. an attack that records no moves: no half-made run for the fixed command to trip on
            if not len(writer.done_indices):
                writer.abandon()
            raise
        summary = direction_summary(writer.samples(), list(additive))
        writer.finish(summary)
    return dict(summary)


def _print(summaries: dict[str, dict[str, Any]], attack_name: str, path: Path, json_output: bool) -> None:
    if json_output:
        emit_json({"report": str(path), "directions": summaries})
        return
    keys = list(summaries)
    header = ["method"] + [f"{k} {m}" for k in keys for m in ("source", "transfer", "both")]
    rows = []
    for label, prefix in ((attack_name, ""), ("random moves (control)", "random."), ("fgsm (control)", "fgsm."), ("pgd (control)", "pgd.")):
        if not any(f"{prefix}transfer_rate" in summaries[k] for k in keys):
            continue
        row: list[Any] = [label]
        for k in keys:
            s = summaries[k]
            row += [s.get(f"{prefix}source_success_rate", float("nan")), s.get(f"{prefix}transfer_rate", float("nan")),
                    s.get(f"{prefix}both_fooled_rate", float("nan"))]
        rows.append(row)
    pairs = ", ".join(f"{k}: {summaries[k].get('pairs', '?')} pairs" for k in keys)
    out.print(table(f"transfer matrix ({pairs}; report {path})", header, rows))

