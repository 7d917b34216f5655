"""``advkit detect fit|eval|score``: layer-wise autoencoder detectors of adversarial examples (arXiv:2006.10013).

``fit`` trains a detector on a model's clean training images; ``eval`` measures it (beside the Mahalanobis and
MagNet baselines) on adversarial images saved by ``advkit attack --save-images`` or made on the spot with
``--attack``, and writes a report run with ROC tables plus a ROC PNG; ``score`` flags individual inputs.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from advkit.cli.common import (
    ArchOpt, ArchParamOpt, ConfigOpt, DataParamOpt, DeviceOpt, JsonOpt, SeedOpt, UnsafePickleOpt, check_compatible, command_line,
    arch_settings, emit_json, finished_run, kv_table, log, log_complete, out, parse_params, progress_bar, recorded_config,
    pixel_budget, run_advice, split_choice, start_or_finished, table,
)
from advkit.errors import AdvkitError, CheckpointError, DetectorError

if TYPE_CHECKING:
    import torch

    from advkit.datasets import ImageDataset
    from advkit.detectors import LayerwiseDetector
    from advkit.detectors.evaluate import Evaluation
    from advkit.models import ModelWrapper

app = typer.Typer(help="Detect adversarial examples with layer-wise autoencoders (fit, eval, score).", no_args_is_help=True)


class Kind(str, Enum):
    wae = "wae"
    ae = "ae"
    vae = "vae"


class Error(str, Enum):
    rel_l1 = "rel-l1"
    mse = "mse"


class Supervised(str, Enum):
    svc = "svc"
    logreg = "logreg"
    none = "none"


class Protocol(str, Enum):
    known = "known"
    unknown = "unknown"


RUN_OPTION = "--run-prefix PREFIX"
"""How detect eval names a distinct run, in refusals' advice (its --run picks attack runs of --adversarial)."""

DetectorOpt = Annotated[Path, typer.Option("--detector", help="Detector file written by advkit detect fit.")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Checkpoint (default: the one the detector was fitted for).")]


def _checkpoint(spec: str | None) -> str:
    """The checkpoint ``spec`` names; without one, the built-in CNN's."""
    from advkit.cli.attack_cmd import builtin_checkpoint

    return spec or str(builtin_checkpoint())


Arch = tuple[str | None, dict[str, Any] | None]
"""(--arch, its --arch-param settings) for bare state_dict checkpoints; (None, None) for checkpoints with metadata."""


def _open_model(spec: str | None, arch: Arch, unsafe_pickle: bool, device: Any) -> tuple[ModelWrapper, str]:
    from advkit.models import ModelWrapper, load_checkpoint

    source = _checkpoint(spec)
    loaded = load_checkpoint(source, architecture=arch[0], arch_kwargs=arch[1], unsafe_pickle=unsafe_pickle, map_location=device)
    return ModelWrapper(loaded.net, loaded.preprocessing).to(device), source


def _open_data(spec: str | None, domain: str | None, data_param: dict[str, Any]) -> ImageDataset:
    from advkit.cli.attack_cmd import BUILTIN_DATA
    from advkit.datasets import open_images

    return open_images(spec or BUILTIN_DATA, domain, **data_param)


# ------------------------------------------------------------------------------------------------------- fit


@app.command("fit")
def fit(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint or module:factory; give it with --data (neither: the built-in MNIST CNN on mnist-subset).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Dataset of clean training images; give it with --model (neither: mnist-subset).")] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Side of a paired RGB-IR dataset: rgb or ir.")] = None,
    split: Annotated[str, typer.Option("--split", callback=split_choice, help="Split of clean images to fit on.")] = "train",
    layers: Annotated[list[str] | None, typer.Option("--layers", help="Layer to tap (repeat, or comma-separate); default: stem + conv stages.")] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="Autoencoder: wae (WAE-MMD, the paper's), ae or vae.")] = Kind.wae,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the clean images (the paper: 150).")] = 20,
    filters: Annotated[int, typer.Option("--filters", min=1, help="Channels per encoder conv (the paper: 128).")] = 32,
    latent: Annotated[int, typer.Option("--latent", min=1, help="Code size per layer.")] = 64,
    error: Annotated[Error, typer.Option("--error", help="Reconstruction error fed to the IsolationForest.")] = Error.rel_l1,
    fpr: Annotated[float, typer.Option("--fpr", help="False-positive rate the thresholds are calibrated to.")] = 0.05,
    calib_fraction: Annotated[float, typer.Option("--calib-fraction", help="Share of the images held out to calibrate thresholds.")] = 0.1,
    n: Annotated[int | None, typer.Option("--n", min=1, help="Use at most this many images of the split (seeded choice).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Detector file to write (.safetensors).")] = Path("detector.safetensors"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing detector file.")] = False,
    data_param: DataParamOpt = None,
    arch: ArchOpt = None,
    arch_param: ArchParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Train one autoencoder per layer on clean images (classifier frozen) and calibrate thresholds."""
    from advkit.detectors import DetectorSettings, LayerwiseDetector
    from advkit.detectors.taps import check_layer_names
    from advkit.models.hooks import require_hooks
    from advkit.rng import seeded_subset
    from advkit.runtime import ProgressEvent, resolve_device

    if out_path.suffix != ".safetensors":
        raise typer.BadParameter(f"detector files are safetensors (no pickle): use a name ending in .safetensors, not {out_path.name}", param_hint="--out")
    from advkit.report.paths import same_file

    if model is not None and same_file(out_path, model):
        raise typer.BadParameter(f"{out_path} is the model's checkpoint; write the detector to another file", param_hint="--out")
    if out_path.exists() and not overwrite:
        raise AdvkitError(f"{out_path} already exists; pass --overwrite to replace it")
    if (model is None) != (data is None):
        raise typer.BadParameter("pass both --model and --data, or neither to use the built-in MNIST model", param_hint="--model/--data")
    for value, hint in ((fpr, "--fpr"), (calib_fraction, "--calib-fraction")):
        if not 0 < value < 1:
            raise typer.BadParameter(f"must lie in (0, 1), got {value:g}", param_hint=hint)
    settings = DetectorSettings(kind=kind.value, filters=filters, latent=latent, epochs=epochs, fpr=fpr,
                                calib_fraction=calib_fraction, error=error.value, seed=seed)
    dev = resolve_device(device)
    arch_kwargs = arch_settings(arch, arch_param)
    wrapped, source = _open_model(model, (arch, arch_kwargs), unsafe_pickle, dev)
    require_hooks(wrapped.net)  # before the data is read and "fitting ..." is logged
    params = parse_params(data_param or [], "--data-param")
    ds = _open_data(data, domain, params)
    check_compatible(wrapped, ds)
    indices = seeded_subset(ds.indices(split), n, seed, "detector-subset")
    names = [part.strip() for item in (layers or []) for part in item.split(",") if part.strip()] or None
    if names:
        names = check_layer_names(wrapped.net, names)  # before any work: a typo fails at once, in one line; repeats go
    log(f"fitting a {kind.value} detector on {len(indices)} {split} images of {ds.name} for {source} on {dev}")
    with progress_bar() as show:
        def progress(event: ProgressEvent) -> None:
            show(event)

        det = LayerwiseDetector.fit(wrapped, ds, indices, layers=names, settings=settings, progress=progress)
    config = recorded_config(ctx.params, {"out_path"})  # model and data spelled as absolute paths
    det.meta.update({"model": config.get("model"), "data": config.get("data"), "domain": domain, "data_param": params,
                     "arch": arch, "arch_kwargs": arch_kwargs, "command": command_line(), "config": config})
    try:
        det.save(out_path, overwrite=overwrite)
    except FileExistsError:  # written by another process (another fit?) after the check above: it is not replaced
        raise AdvkitError(f"{out_path} appeared while this detector was fitted (another advkit detect fit?) and was left "
                          "as it is; pass --overwrite to replace it") from None
    summary = {
        "detector": str(out_path), "model": source, "data": ds.name, "layers": det.layers,
        "shapes": ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in det.shapes.items()), "kind": kind.value, "epochs": epochs,
        "filters": filters, "images (fit / held out)": f"{det.meta['n_fit']} / {det.meta['n_calib']}",
        "train seconds": det.meta["train_seconds"], "fpr": fpr,
        **{f"threshold {k}": v for k, v in det.thresholds.items() if "[" not in k},
    }
    if json_output:
        emit_json({**summary, "thresholds": det.thresholds})
        return
    out.print(kv_table(f"detector {out_path}", summary))


def _load_detector(path: Path, model: str | None, arch: Arch, unsafe_pickle: bool, device: str
                   ) -> tuple[LayerwiseDetector, dict[str, Any], str]:
    """(detector, its metadata, the checkpoint its model was loaded from). Without ``--arch``, the model is built
    with the architecture and settings the detector was fitted with."""
    from advkit.detectors import LayerwiseDetector
    from advkit.models.hooks import require_hooks
    from advkit.report.paths import resolve_recorded
    from advkit.runtime import resolve_device

    meta = LayerwiseDetector.read_meta(path)
    dev = resolve_device(device)
    spec = model or resolve_recorded(meta.get("model"), "model", path)
    if arch[0] is None or arch[0] == meta.get("arch"):
        arch = (meta.get("arch"), arch[1] if arch[1] is not None else meta.get("arch_kwargs"))
    wrapped, source = _open_model(spec, arch, unsafe_pickle, dev)
    require_hooks(wrapped.net)  # before any attack runs on it
    return LayerwiseDetector.load(path, wrapped), meta, source


# ------------------------------------------------------------------------------------------------------ eval


def _report_sets(path: Path, runs: list[str], det: LayerwiseDetector, source: str, arch: Arch, unsafe_pickle: bool
                 ) -> list[tuple[str, ImageDataset, np.ndarray, torch.Tensor]]:
    """(run id, dataset, dataset indices, adversarial images) of the successful samples of each attack run.

    ``source`` is the checkpoint the detector's model came from; a run must have attacked that same model.
    """
    import torch

    from advkit.report import Report
    from advkit.report.paths import resolve_recorded

    report = Report(path)
    if not report.exists():
        raise AdvkitError(f"no such report: {path}")
    # a run this advkit cannot read (newer schema, damage) stays in: reading it, if chosen, says why in one line
    infos = [r for r in report.runs(unreadable=True) if r.status == "complete" or r.problem]
    chosen = runs or [r.id for r in infos if r.kind == "attack" or r.problem]
    if not chosen:
        raise DetectorError(f"{path} has no complete attack runs; write one with advkit attack ... --save-images")
    known = {r.id: r for r in infos}
    sets = []
    fingerprints: dict[tuple[str, str], str] = {}
    for run_id in chosen:
        if run_id not in known:
            from advkit.registry import suggest

            raise DetectorError(f"{path} has no complete run {run_id!r}{suggest(run_id, list(known))}")
        data = report.read(run_id, images=True)
        if "adv_images" not in data.samples:
            raise DetectorError(f"run {run_id} in {path} has no saved images; re-run advkit attack with --save-images, "
                                "or let advkit detect eval make them with --attack NAME")
        cfg = data.config
        _check_attacked_model(f"run {run_id} in {path}", resolve_recorded(cfg.get("model"), "model", path),
                              _recorded_arch(cfg) if cfg.get("arch") else arch, det, source, unsafe_pickle, fingerprints)
        s = data.samples
        mask = s["attacked"].astype(bool) & s["success"].astype(bool) if "attacked" in s else s["success"].astype(bool)
        images = s["adv_images"][mask]
        x_adv = torch.from_numpy(images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0))
        data_spec = resolve_recorded(cfg.get("data"), "data", path)
        ds = _open_data(data_spec, cfg.get("domain"), parse_params(cfg.get("data_param") or [], "--data-param"))
        sets.append((run_id, ds, s["index"][mask].astype(np.int64), x_adv))
    return sets


def _recorded_arch(config: dict[str, Any]) -> Arch:
    """The --arch and --arch-param an attack run was recorded with."""
    return config.get("arch"), parse_params(config.get("arch_param") or [], "--arch-param") or None


def _check_attacked_model(what: str, spec: str | None, arch: Arch, det: LayerwiseDetector, source: str,
                          unsafe_pickle: bool, fingerprints: dict[tuple[str, str], str]) -> None:
    """A DetectorError unless ``spec`` (what ``what`` attacked) is the detector's model: the file it was loaded
    from under any spelling, or any checkpoint with the same weights (compared by fingerprint, cached per spec)."""
    from advkit.report.paths import same_file

    checkpoint = _checkpoint(spec)
    if same_file(checkpoint, source):
        return  # LayerwiseDetector.load has already checked this file's fingerprint
    key = (checkpoint, repr(arch))
    if key not in fingerprints:
        try:
            other, _ = _open_model(checkpoint, arch, unsafe_pickle, det.model.device)
        except CheckpointError as exc:
            where = "" if Path(checkpoint).is_absolute() else " (looked next to the report and in the current directory)"
            raise DetectorError(f"cannot check which model {what} attacked: {exc}{where}") from None
        fingerprints[key] = other.fingerprint()
    if fingerprints[key] != det.meta["fingerprint"]:
        raise DetectorError(f"{what} attacked another model ({spec or 'the built-in CNN'}) than the one this detector was fitted for")


def _attack_sets(names: list[str], params: dict[str, Any], det: LayerwiseDetector, ds: ImageDataset, n: int, seed: int
                 ) -> list[tuple[str, ImageDataset, np.ndarray, torch.Tensor]]:
    import torch

    from advkit.attacks import create_attack
    from advkit.attacks.runner import attack_batches, batches, select_samples
    from advkit.cli.attack_cmd import settings_per_attack
    from advkit.runtime import ProgressEvent

    settings = settings_per_attack(names, params, builtin=False)  # NAME.key for an attack not named: one line
    plan = select_samples(det.model, ds, split="test", n=n, seed=seed)
    sets = []
    for name in names:
        attack = create_attack(name, **settings[name])
        cols: list[dict[str, np.ndarray]] = []
        with progress_bar() as show:  # square or autoattack on a few hundred images take minutes
            for part in attack_batches(attack, det.model, ds, plan, batches(plan.attack_index, 128), seed=seed, save_images=True):
                cols += [part] if part is not None else []
                show(ProgressEvent(f"attack {name}", sum(len(c["index"]) for c in cols), len(plan.attack_index), {}))
        merged = {k: np.concatenate([c[k] for c in cols]) for k in ("index", "success", "adv_images")}
        mask = merged["success"].astype(bool)
        sets.append((f"attack-{name}", ds, merged["index"][mask], torch.from_numpy(merged["adv_images"][mask])))
    return sets


def _column(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def _table_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ".".join(parts)).strip("-")[:120]


@app.command("eval")
def evaluate_cmd(
    ctx: typer.Context,
    detector: DetectorOpt,
    adversarial: Annotated[Path | None, typer.Option("--adversarial", help="Report with attack runs saved with --save-images.")] = None,
    runs: Annotated[list[str] | None, typer.Option("--run", help="Attack run(s) of --adversarial to use (default: all).")] = None,
    attack: Annotated[list[str] | None, typer.Option("--attack", help="Make adversarial images with this attack (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Attack setting key=value or NAME.key=value.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Test samples to attack with --attack.")] = 200,
    protocol: Annotated[Protocol, typer.Option("--protocol", help="known: supervised detectors train on the same attack; unknown: on FGSM.")] = Protocol.known,
    supervised: Annotated[Supervised, typer.Option("--supervised", help="Supervised detector on the latent codes.")] = Supervised.svc,
    train_fraction: Annotated[float, typer.Option("--train-fraction", help="Share of samples that trains the supervised detectors.")] = 0.3,
    quick_grid: Annotated[bool, typer.Option("--quick-grid/--no-quick-grid", help="Search 3 values of C with standard scaling instead of the paper's grid.")] = False,
    fgsm_eps: Annotated[float, typer.Option("--fgsm-eps", parser=pixel_budget, help="FGSM budget of the unknown-attack protocol (e.g. 0.3 or 8/255).")] = 0.3,
    adaptive: Annotated[bool, typer.Option("--adaptive/--no-adaptive", help="Also run PGD against classifier + detector together.")] = False,
    adaptive_eps: Annotated[float, typer.Option("--adaptive-eps", parser=pixel_budget, help="L-infinity budget of the adaptive PGD (e.g. 0.3 or 8/255).")] = 0.3,
    adaptive_steps: Annotated[int, typer.Option("--adaptive-steps", help="Steps of the adaptive PGD.")] = 40,
    adaptive_step: Annotated[float | None, typer.Option("--adaptive-step", parser=pixel_budget, help="Step size of the adaptive PGD (default: 2.5 * eps / steps, as Madry et al.).")] = None,
    adaptive_weight: Annotated[float, typer.Option("--adaptive-weight", help="Weight of the detector score in the adaptive loss.")] = 1.0,
    adaptive_n: Annotated[int, typer.Option("--adaptive-n", min=1, help="Samples attacked adaptively.")] = 100,
    model: ModelOpt = None,
    out_path: Annotated[Path, typer.Option("--out", help="HDF5 report to write the evaluation runs to.")] = Path("advkit-detect.h5"),
    run_prefix: Annotated[str, typer.Option("--run-prefix", help="Prefix of the written run ids.")] = "detect",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace finished runs of the same name.")] = False,
    arch: ArchOpt = None,
    arch_param: ArchParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """AUROC and TPR at 5% FPR of the detector (per layer and combined) beside Mahalanobis and MagNet."""
    import torch

    from advkit.detectors.adaptive import default_step
    from advkit.detectors.evaluate import evaluate, fgsm_training_set, matched_noise
    from advkit.report import Report
    from advkit.report.paths import resolve_recorded

    if (adversarial is None) == (not attack):
        raise typer.BadParameter("pass --adversarial REPORT or --attack NAME (one of them)", param_hint="--adversarial/--attack")
    if not 0 <= train_fraction < 1:
        raise typer.BadParameter("must lie in [0, 1)", param_hint="--train-fraction")
    for eps, hint in ((fgsm_eps, "--fgsm-eps"), (adaptive_eps, "--adaptive-eps")):
        if not 0 < eps <= 1:  # before any attack runs; NaN fails too
            raise typer.BadParameter(f"must lie in (0, 1] (an L-infinity budget on [0, 1] pixels), got {eps:g}", param_hint=hint)
    if not 0 <= adaptive_weight < float("inf"):  # NaN fails too
        raise typer.BadParameter(f"must be a finite number >= 0, got {adaptive_weight:g}", param_hint="--adaptive-weight")
    if adaptive_steps < 1 or (adaptive_step is not None and adaptive_step <= 0):
        raise typer.BadParameter("steps must be >= 1 and the step > 0", param_hint="--adaptive-steps/--adaptive-step")
    step = default_step(adaptive_eps, adaptive_steps) if adaptive_step is None else adaptive_step
    chosen = (arch, arch_settings(arch, arch_param))
    det, meta, source = _load_detector(detector, model, chosen, unsafe_pickle, device)
    report = Report(out_path)
    # what the measured images and detector were: a detector refitted under the same path, or an attack run
    # replaced in --adversarial, is another config, not a run to skip as complete
    detector_sha256 = hashlib.sha256(detector.read_bytes()).hexdigest()
    made = {info.id: info.created for info in Report(adversarial).runs(unreadable=True)} if adversarial is not None and adversarial.exists() else {}

    def planned(run_id: str) -> tuple[str, dict[str, Any]]:
        """The report run that measures attack run ``run_id``, and its config."""
        return (f"{run_prefix}-{run_id.removeprefix('attack-')}",
                {**recorded_config(ctx.params, {"out_path", "runs", "attack", "run_prefix"}), "source": run_id,
                 "model_fingerprint": meta["fingerprint"], "detector_sha256": detector_sha256,
                 **({"source_created": made[run_id]} if run_id in made else {})})

    names = list(dict.fromkeys(attack or []))
    if adversarial is None:  # every run this call writes is checked before the first attack (or the first evaluation)
        _check_runs(report, [planned(f"attack-{a}") for a in names], seed, overwrite)
        ds = _open_data(resolve_recorded(meta.get("data"), "data", detector), meta.get("domain"), meta.get("data_param") or {})
        sets = _attack_sets(names, parse_params(param or []), det, ds, n, seed)
    else:
        sets = _report_sets(adversarial, list(runs or []), det, source, chosen, unsafe_pickle)
        _check_runs(report, [planned(run_id) for run_id, *_ in sets], seed, overwrite)
    sup = None if supervised is Supervised.none else supervised.value
    results: dict[str, Any] = {}
    done = []
    for run_id, ds, idx, x_adv in sets:
        in_order = np.argsort(idx, kind="stable")  # rows by dataset index, as a report holds them: the seeded
        idx, x_adv = idx[in_order], x_adv[torch.from_numpy(in_order)]  # train/test split then depends on the samples only
        name, cfg = planned(run_id)
        if not overwrite and finished_run(report, name, cfg) is not None:
            log_complete(name, out_path)
            done.append(name)
            continue
        seen = det.fitted_on(ds, idx)  # clean images the detector was fitted on would flatter every score
        if seen.any():
            log(f"{run_id}: {int(seen.sum())} of {len(idx)} samples left out: the detector was fitted on their clean images")
            idx, x_adv = idx[~seen], x_adv[torch.from_numpy(~seen)]
        if len(idx) < 4:
            log(f"{run_id}: only {len(idx)} successful adversarial images; skipped")
            continue
        x, y = ds.batch(idx)
        noisy = matched_noise(x, x_adv, idx, seed)
        with torch.no_grad():
            keep = (det.model.logits(noisy.to(det.model.device)).argmax(1).cpu() == y).numpy()
            keep &= (det.model.logits(x.to(det.model.device)).argmax(1).cpu() == y).numpy()
        idx, x, y, x_adv, noisy = idx[keep], x[keep], y[keep], x_adv[keep], noisy[keep]
        if len(idx) < 4:  # the paper's kept samples; too few (or none, which scoring refuses) measure nothing
            log(f"{run_id}: only {len(idx)} samples with the clean and noisy images classified correctly; skipped")
            continue
        clean_f, adv_f, noisy_f = det.features(x), det.features(x_adv), det.features(noisy)
        # unknown protocol: FGSM images and noise matched to FGSM's L2 (not the tested attack's) train the detectors
        train_adv, train_noisy = (fgsm_training_set(det, x, y, idx, eps=fgsm_eps, seed=seed)
                                  if protocol is Protocol.unknown and sup else (None, None))
        ev = evaluate(det, clean_f, adv_f, noisy_f, train_fraction=train_fraction if sup else 0.0, supervised=sup,
                      train_adv=train_adv, train_noisy=train_noisy, seed=seed, fpr=0.05, quick=quick_grid)
        adaptive_rows = _adaptive(det, x[ev.test_mask], y[ev.test_mask], adaptive_eps, adaptive_steps, step, adaptive_weight,
                                  adaptive_n, seed) if adaptive else []
        png = _write_run(report, name, cfg, seed, overwrite, ev, idx, y.numpy(), clean_f, adv_f, adaptive_rows, out_path)
        if png is None:  # the same command in another process finished this run first
            log_complete(name, out_path)
            done.append(name)
            continue
        results[run_id] = {"run": name, "roc_png": str(png), "n": int(len(idx)), "notes": ev.notes,
                           "rows": [vars(r) for r in ev.rows], "adaptive": adaptive_rows}
        if not json_output:
            _print_eval(run_id, ev, adaptive_rows, protocol.value, len(idx))
            log(f"wrote run {name} to {out_path} and {png}")
    if not results and not done:
        raise DetectorError("no attack produced enough successful adversarial images to evaluate")
    if json_output:
        emit_json({"report": str(out_path), "results": results})


def _adaptive(det: LayerwiseDetector, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, step: float, weight: float,
              n: int, seed: int) -> list[dict[str, Any]]:
    """Oblivious (weight 0) and adaptive PGD with the same budget, steps and seed: success, detection and evasion rates."""
    import torch

    from advkit.detectors.adaptive import adaptive_pgd
    from advkit.detectors.evaluate import auroc
    from advkit.rng import generator

    x, y = x[:n], y[:n]
    clean = det.score(x)["ae"]
    rows = []
    for w in (0.0, weight):
        x_adv = adaptive_pgd(det, x, y, eps=eps, alpha=step, steps=steps, weight=w, generator=generator(seed, "adaptive"))
        with torch.no_grad():
            success = (det.model.logits(x_adv).argmax(1).cpu() != y).numpy()
        score = det.score(x_adv.cpu())["ae"]
        flagged = score > det.thresholds["ae"]
        rows.append({"attack": "pgd (oblivious)" if w == 0 else f"pgd + detector (weight {w:g})", "n": int(len(x)),
                     "success": float(success.mean()), "detected": float(flagged[success].mean()) if success.any() else float("nan"),
                     "success_undetected": float((success & ~flagged).mean()),
                     "auroc": auroc(clean, score[success]), "eps": eps, "steps": steps, "step": step})
    return rows


def _check_runs(report: Any, runs: list[tuple[str, dict[str, Any]]], seed: int, overwrite: bool) -> None:
    """The clash :meth:`Report.start_run` would find for any of ``runs`` (id, config), before the work."""
    from advkit.errors import ReportError

    for run_id, cfg in runs:
        if not overwrite and finished_run(report, run_id, cfg) is not None:  # done by an earlier, interrupted call
            continue
        try:
            report.check_start(run_id, kind="detect", config=cfg, seed=seed, overwrite=overwrite)
        except ReportError as exc:  # the store's advice names attack's --run; detect eval names its runs by prefix
            raise run_advice(exc, RUN_OPTION) from None


def _write_run(report: Any, name: str, cfg: dict[str, Any], seed: int, overwrite: bool, ev: Evaluation, idx: np.ndarray,
               labels: np.ndarray, clean_f: Any, adv_f: Any, adaptive_rows: list[dict[str, Any]], out_path: Path) -> Path | None:
    """Write the run and its ROC PNG (returned); None, writing nothing, when the same run is already complete (another
    process running the same command finished it while this one evaluated or waited for the report's lock)."""
    from advkit.report.plots import plot_roc

    columns: dict[str, Any] = {"index": idx, "label": labels, "pred": clean_f.pred, "adv_pred": adv_f.pred,
                               "success": np.ones(len(idx), bool), "test": ev.test_mask}
    for part, scores in ev.scores.items():
        for score_name, values in scores.items():
            columns[_column(f"score_{part}_{score_name}")[:64]] = values
    summary: dict[str, Any] = {}
    writer, _ = start_or_finished(report, name, "detect", cfg, seed, overwrite, RUN_OPTION)
    if writer is None:
        return None
    with writer as run:
        run.append(columns)
        rows = ev.rows
        run.add_table("results", {"section": [r.section for r in rows], "detector": [r.detector for r in rows],
                                  "setting": [r.setting for r in rows], "auroc": [r.auroc for r in rows],
                                  "tpr_at_5fpr": [r.tpr for r in rows], "n_neg": [r.n_neg for r in rows],
                                  "n_pos": [r.n_pos for r in rows]})
        for (section, det_name, setting), (fpr, tpr) in ev.roc.items():
            if "[" in det_name:
                continue  # per-layer curves stay in the results table only
            run.add_table(_table_name("roc", section, det_name, setting), {"fpr": fpr, "tpr": tpr})
        if adaptive_rows:
            run.add_table("adaptive", {k: [r[k] for r in adaptive_rows] for k in adaptive_rows[0]})
        for r in rows:
            if "[" not in r.detector:
                summary[_column(f"auroc_{r.section}_{r.detector}_{r.setting}")] = r.auroc
        run.finish(summary)
    curves = {f"{sec[:5]} {d} ({s})": c for (sec, d, s), c in ev.roc.items() if "[" not in d and (sec == "unsupervised" or d != "magnet")}
    png = out_path.with_name(f"{out_path.stem}-{name}-roc.png")
    return plot_roc(curves, png, title=f"{name}: clean(+noisy) vs adversarial")


def _print_eval(run_id: str, ev: Evaluation, adaptive_rows: list[dict[str, Any]], protocol: str, n: int) -> None:
    from rich.markup import escape

    from advkit.detectors.evaluate import SETTINGS

    keys = sorted({(r.section, r.detector) for r in ev.rows}, key=lambda k: [r for r in ev.rows].index(ev.get(k[0], k[1], "clean")))
    rows = []
    for section, name in keys:
        cells: list[Any] = [section, escape(name)]
        for setting in SETTINGS:
            r = ev.get(section, name, setting)
            cells += [r.auroc, r.tpr] if r else ["", ""]
        rows.append(cells)
    test = int(ev.test_mask.sum()) if ev.test_mask is not None else n
    title = f"{run_id}: {n} samples, tested on {test} ({protocol} attack protocol for the supervised rows)"
    out.print(table(title, ["", "detector", "AUROC clean", "TPR@5% clean", "AUROC +noisy", "TPR@5% +noisy"], rows))
    for note in ev.notes:
        log(note)
    if adaptive_rows:
        pgd = adaptive_rows[0]
        out.print(table(f"adaptive check (detector 'ae' at its calibrated threshold; L-inf PGD eps {pgd['eps']:g}, "
                        f"{pgd['steps']} steps of {pgd['step']:.4g})",
                        ["attack", "n", "success", "detected", "success & undetected", "AUROC"],
                        [[r["attack"], r["n"], r["success"], r["detected"], r["success_undetected"], r["auroc"]] for r in adaptive_rows]))


# ----------------------------------------------------------------------------------------------------- score


def _read_inputs(inputs: list[str], shape: tuple[int, int, int]) -> tuple[list[str], torch.Tensor]:
    import torch

    from advkit.datasets.base import to_tensor
    from advkit.datasets.readers import read_image

    names, images = [], []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            raise AdvkitError(f"{spec} is a folder: give image files, or --data {spec} to score a dataset folder")
        if not path.is_file():
            raise AdvkitError(f"no such image file: {spec} (use --data DATASET for a dataset)")
        arr = read_image(path)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise AdvkitError(f"{spec} holds an array of shape {arr.shape}, not an (H, W) or (H, W, C) image")
        if arr.shape[:2] != shape[1:]:
            hint = "; save arrays as (H, W, C), channels last" if arr.shape[1:] == shape[1:] else ""
            raise AdvkitError(f"{spec} is {arr.shape[0]}x{arr.shape[1]}, the model takes {shape[1]}x{shape[2]} images{hint}")
        names.append(spec)
        images.append(to_tensor(arr[None]))  # each file by its own dtype: 8-bit, 16-bit and float files may mix
    return names, torch.cat(images)


@app.command("score")
def score(
    detector: DetectorOpt,
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files (png, jpg, tif, npy) to score.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Score images of a dataset instead (see --split, --n).")] = None,
    split: Annotated[str, typer.Option("--split", callback=split_choice, help="Split of --data.")] = "test",
    adversarial: Annotated[Path | None, typer.Option("--adversarial", help="Score the successful adversarial images of a report.")] = None,
    runs: Annotated[list[str] | None, typer.Option("--run", help="Attack run(s) of --adversarial (default: all).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="At most this many images from --data or --adversarial.")] = 20,
    domain: Annotated[str | None, typer.Option("--domain", help="Side of a paired --data: rgb or ir (default: the fitted one's, for its data).")] = None,
    data_param: DataParamOpt = None,
    model: ModelOpt = None,
    arch: ArchOpt = None,
    arch_param: ArchParamOpt = None,
    unsafe_pickle: UnsafePickleOpt = False,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Score inputs and flag those above the calibrated thresholds (higher = more likely adversarial)."""
    import torch
    from rich.markup import escape

    if sum(x is not None and x != [] for x in (inputs, data, adversarial)) != 1:
        raise typer.BadParameter("pass image files, --data DATASET or --adversarial REPORT (one of them)", param_hint="INPUTS")
    chosen = (arch, arch_settings(arch, arch_param))
    det, meta, source = _load_detector(detector, model, chosen, unsafe_pickle, device)
    if inputs:
        names, x = _read_inputs(list(inputs), tuple(meta["input_shape"]))
    elif data is not None:
        from advkit.report.paths import absolute_spec

        # the fit's domain and dataset options apply to the fit's own dataset only, not to any --data
        fitted = meta.get("data") is not None and meta.get("data") == absolute_spec(data, "data")
        params = parse_params(data_param, "--data-param") if data_param else (meta.get("data_param") or {}) if fitted else {}
        ds = _open_data(data, domain or (meta.get("domain") if fitted else None), params)
        idx = ds.indices(split, required=True)[:n]
        names, x = [f"{ds.name}[{i}]" for i in idx], ds.batch(idx)[0]
    else:
        sets = _report_sets(adversarial, list(runs or []), det, source, chosen, unsafe_pickle)  # type: ignore[arg-type]
        names = [f"{run_id}[{i}]" for run_id, _, idx, _ in sets for i in idx[:n]]
        x = torch.cat([xa[:n] for *_, xa in sets]) if sets else torch.zeros(0)
        if not len(names):
            raise DetectorError(f"{adversarial} holds no successful adversarial images")
    feats = det.features(x)
    scores = det.scores(feats)
    flags = det.flags(scores)
    layer_names = [f"ae[{layer}]" for layer in det.layers]
    records = [{"input": escape(name), "pred": int(feats.pred[i]), "score": float(scores["ae"][i]), "flagged": bool(flags["ae"][i]),
                "layers_flagged": int(sum(flags[k][i] for k in layer_names)),
                "mahalanobis_flagged": bool(flags["mahalanobis"][i]), "magnet_flagged": bool(flags["magnet"][i])}
               for i, name in enumerate(names)]
    if json_output:
        emit_json({"detector": str(detector), "threshold": det.thresholds["ae"], "fpr": det.settings.fpr, "inputs": records})
        return
    out.print(table(f"{detector}: flagged above {det.thresholds['ae']:.4g} (calibrated to {det.settings.fpr:g} FPR on clean images)",
                    ["input", "pred", "score", "flagged", f"layers flagged (of {len(layer_names)})", "mahalanobis", "magnet"],
                    [[r["input"], r["pred"], r["score"], r["flagged"], r["layers_flagged"], r["mahalanobis_flagged"], r["magnet_flagged"]] for r in records]))
    flagged = sum(r["flagged"] for r in records)
    out.print(f"{flagged} of {len(records)} inputs flagged", highlight=False)  # a result: stdout, like the table


__all__ = ["app"]
