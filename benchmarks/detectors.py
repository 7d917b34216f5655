"""Layer-wise autoencoder detector vs Mahalanobis and MagNet on the MNIST subset (advkit's built-in small CNN).

Fits one detector with advkit's defaults on the 4,000 training images (3,600 fit + 400 held out for thresholds),
attacks the first correctly classified test images with FGSM, PGD, CW (kappa > 0 and kappa = 0), DeepFool, Pixle
and WhitePixle, and prints AUROC for clean-vs-adversarial and clean+noisy-vs-adversarial, unsupervised and
supervised (known-attack and unknown-attack protocols), beside the two baselines, plus fit times and the CPU
load other processes put on the machine while fitting.

    .venv/bin/python benchmarks/detectors.py                 # ~10 min on an idle 2-core CPU
    .venv/bin/python benchmarks/detectors.py --images 100 --attacks fgsm,pgd --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ForeignLoad, machine_info  # noqa: E402

from advkit.attacks import create_attack  # noqa: E402
from advkit.attacks.runner import select_samples  # noqa: E402
from advkit.cli.attack_cmd import builtin_checkpoint  # noqa: E402
from advkit.datasets import open_dataset  # noqa: E402
from advkit.detectors import DetectorSettings, LayerwiseDetector  # noqa: E402
from advkit.detectors.evaluate import evaluate, fgsm_training_set, matched_noise  # noqa: E402
from advkit.models import ModelWrapper, load_checkpoint  # noqa: E402

ATTACKS = {
    "fgsm": ("fgsm", {"eps": 0.3}),
    "pgd": ("pgd", {"eps": 0.3, "alpha": 0.01, "steps": 40}),
    "cw-k5": ("cw", {"c": 10.0, "kappa": 5.0, "steps": 100, "lr": 0.05}),
    "cw-k0": ("cw", {"c": 10.0, "kappa": 0.0, "steps": 100, "lr": 0.05}),
    "deepfool": ("deepfool", {}),
    "pixle": ("pixle", {}),
    "white-pixle": ("white-pixle", {}),
}
def table_rows(layers: list[str]) -> list[tuple[str, str]]:
    """(section, detector) rows: the combined and per-layer autoencoder scores, then the baselines."""
    return [("unsupervised", "ae"), *(("unsupervised", f"ae[{layer}]") for layer in layers), ("unsupervised", "recon"),
            ("unsupervised", "mahalanobis"), ("unsupervised", "magnet"), ("supervised", "svc"), ("supervised", "mahalanobis (LR)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="correctly classified test images attacked")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--epochs", type=int, default=DetectorSettings().epochs)
    parser.add_argument("--filters", type=int, default=DetectorSettings().filters)
    parser.add_argument("--error", default=DetectorSettings().error)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", default=None, help="comma-separated layers to tap (default: advkit detect fit's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    info = machine_info()
    print(f"# {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads)", flush=True)

    loaded = load_checkpoint(builtin_checkpoint())
    model = ModelWrapper(loaded.net, loaded.preprocessing)
    ds = open_dataset("mnist-subset")
    settings = DetectorSettings(epochs=args.epochs, filters=args.filters, error=args.error, seed=args.seed)
    began = time.perf_counter()
    with ForeignLoad() as load:
        det = LayerwiseDetector.fit(model, ds, ds.indices("train"), settings=settings,
                                    layers=args.layers.split(",") if args.layers else None)
    total = time.perf_counter() - began
    rows = table_rows(list(det.layers))
    print(f"# fit: {det.meta['n_fit']} + {det.meta['n_calib']} held-out images, layers {det.layers}, {settings.epochs} epochs, "
          f"{settings.filters} filters: autoencoder training {det.meta['train_seconds']:.1f} s, whole fit {total:.1f} s, "
          f"other processes used {load.cores:.2f} cores meanwhile", flush=True)

    plan = select_samples(model, ds, split="test", n=args.images, seed=args.seed)
    x, y = ds.batch(plan.attack_index)
    clean_f = det.features(x)
    fgsm_f, fgsm_noisy_f = fgsm_training_set(det, x, y, plan.attack_index, eps=0.3, seed=args.seed)  # unknown protocol
    results: dict[str, dict] = {"fit": {"train_seconds": det.meta["train_seconds"], "total_seconds": total,
                                        "foreign_cores": load.cores, "settings": vars(settings) if hasattr(settings, "__dict__") else {}},
                                "attacks": {}}
    for key in args.attacks.split(","):
        name, params = ATTACKS[key]
        t = time.perf_counter()
        res = create_attack(name, **params)(model, x, y)
        attack_s = time.perf_counter() - t
        noisy = matched_noise(x, res.x_adv, plan.attack_index, args.seed)
        with torch.no_grad():
            noisy_ok = (model.logits(noisy).argmax(1) == y).numpy()
        keep = res.success.numpy() & noisy_ok
        if keep.sum() < 20:
            print(f"{key}: only {keep.sum()} usable samples; skipped", flush=True)
            continue
        adv_f, noisy_f = det.features(res.x_adv[keep]), det.features(noisy[keep])
        c_f = clean_f.subset(keep)
        known = evaluate(det, c_f, adv_f, noisy_f, train_fraction=0.3, supervised="svc", seed=args.seed)
        unknown = evaluate(det, c_f, adv_f, noisy_f, train_fraction=0.3, supervised="svc", seed=args.seed,
                           train_adv=fgsm_f.subset(keep), train_noisy=fgsm_noisy_f.subset(keep))
        entry = {"success": float(res.success.float().mean()), "kept": int(keep.sum()), "attack_seconds": attack_s,
                 "l2": float(res.l2[keep].mean()), "rows": {}}
        for section, det_name in rows:
            for setting in ("clean", "clean+noisy"):
                k = known.get(section, det_name, setting)
                u = unknown.get(section, det_name, setting) if section == "supervised" else None
                entry["rows"][f"{section}/{det_name}/{setting}"] = {"auroc": k.auroc, "tpr5": k.tpr,
                                                                    "auroc_unknown": u.auroc if u else None}
        results["attacks"][key] = entry
        print(f"{key}: success {entry['success']:.2f}, kept {entry['kept']}, mean L2 {entry['l2']:.2f}, attack {attack_s:.0f} s", flush=True)
        for section, det_name in rows:
            cells = []
            for setting in ("clean", "clean+noisy"):
                r = entry["rows"][f"{section}/{det_name}/{setting}"]
                cells.append(f"{setting} {r['auroc']:.3f}" + (f" (unknown {r['auroc_unknown']:.3f})" if r["auroc_unknown"] is not None else ""))
            print(f"    {section:12s} {det_name:18s} " + "   ".join(cells), flush=True)
    print_markdown(results, rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))


def print_markdown(results: dict, rows: list[tuple[str, str]]) -> None:
    attacks = list(results["attacks"])
    print("\n| detector | setting | " + " | ".join(attacks) + " |")
    print("|---|---|" + "---|" * len(attacks))
    for section, det_name in rows:
        for setting in ("clean", "clean+noisy"):
            cells = []
            for a in attacks:
                r = results["attacks"][a]["rows"][f"{section}/{det_name}/{setting}"]
                cells.append(f"{r['auroc']:.3f}" + (f" / {r['auroc_unknown']:.3f}" if r["auroc_unknown"] is not None else ""))
            print(f"| {section[:5]}. {det_name} | {setting} | " + " | ".join(cells) + " |")
    print("| attack success / kept |  | " + " | ".join(f"{results['attacks'][a]['success']:.2f} / {results['attacks'][a]['kept']}" for a in attacks) + " |")


if __name__ == "__main__":
    main()
