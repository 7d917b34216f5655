"""Every figure type of `advkit.report.plots`, drawn from tiny hand-written reports and checked to be a real PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from advkit.attacks.moves import MoveProgram, Step
from advkit.attacks.moves import moves_table
from advkit.datasets import PairedDataset, open_dataset
from advkit.errors import ReportError
from advkit.report import Report, attack_summary
from advkit.report.plots import FIGURES, plot_report, replay_moves, success_curve, transfer_matrix

PNG = b"\x89PNG\r\n\x1a\n"
RGBIR = {"data": "synthetic-rgbir", "data_param": ["n_per_class=3", "size=16"]}


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    assert float(pixels.std()) > 0  # not a blank canvas


def attack_run(report: Report, run_id: str, n: int, *, seed: int, images: bool = False) -> dict[str, np.ndarray]:
    """An attack run on the first ``n`` digits images, with deterministic random outcomes."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    labels = open_dataset("digits").labels[index]
    success = rng.random(n) < 0.6
    columns = {
        "index": index, "label": labels, "pred": labels, "attacked": np.ones(n, bool),
        "adv_pred": np.where(success, (labels + 1) % 10, labels), "success": success,
        "queries": rng.integers(1, 200, n), "l0": np.where(success, rng.integers(1, 20, n), 0),
        "l2": np.where(success, rng.random(n) * 3, 0).astype(np.float32),
        "linf": np.where(success, rng.random(n), 0).astype(np.float32),
    }
    if images:
        columns["adv_images"] = rng.random((n, 1, 8, 8)).astype(np.float32)
    config = {"data": "digits", "attack": run_id, "model": "m.safetensors"}
    with report.start_run(run_id, kind="attack", config=config) as writer:
        writer.append(columns)
        writer.finish(attack_summary(columns))
    return columns


def transfer_run(report: Report) -> tuple[np.ndarray, list[MoveProgram]]:
    ds = open_dataset("synthetic-rgbir", n_per_class=3, size=16)
    assert isinstance(ds, PairedDataset)
    index = ds.domain("rgb").indices("test")[:3]
    programs = [MoveProgram(16, 16, [Step.copy([i, 17 + i], [200 + i, 40]), Step.snapshot([60], [i])]) for i in range(len(index))]
    n = len(index)
    columns = {
        "index": index, "label": ds.labels[index], "src_success": np.array([True, True, False]),
        "src_adv_pred": ds.labels[index], "tgt_adv_pred": ds.labels[index], "queries": np.full(n, 5),
        "iterations": np.ones(n, np.int64), "l0": np.full(n, 3), "n_moves": np.full(n, 3),
        "tgt_success": np.array([True, False, False]),
    }
    summary = {"pairs": n, "source_success_rate": 2 / 3, "transfer_rate": 1 / 3, "both_fooled_rate": 1 / 3,
               "random.transfer_rate": 0.0}
    with report.start_run("transfer-white-pixle-rgb-ir", kind="transfer",
                          config={**RGBIR, "direction": "rgb->ir", "attack_name": "white-pixle"}) as writer:
        writer.append(columns)
        writer.add_table("moves", moves_table(index, programs))
        writer.finish(summary)
    return index, programs


@pytest.fixture
def full_report(tmp_path: Path) -> Report:
    return write_full_report(tmp_path / "all.h5")


def write_full_report(path: Path) -> Report:
    """A report with data for every figure type: two attack runs (one with images), a transfer run with moves,
    a robustness run and a detector run with an ROC table."""
    report = Report(path)
    attack_run(report, "attack-pixle", 30, seed=0, images=True)
    attack_run(report, "attack-pgd", 30, seed=1)
    transfer_run(report)
    n, names, severities = 12, ["fog", "contrast"], [1, 2, 3]
    correct = np.random.default_rng(2).random((n, len(names), len(severities))) < np.linspace(0.9, 0.3, 3)
    with report.start_run("robustness", kind="robustness", config={"corruptions": names, "severities": severities}) as writer:
        writer.append({"index": np.arange(n), "label": np.arange(n) % 10, "model_correct": correct})
        writer.finish({"clean_accuracy": 0.95, "corruption_accuracy": float(correct.mean())})
    with report.start_run("detect-ae", kind="detect", config={}) as writer:
        writer.append({"index": np.arange(4), "label": np.zeros(4, np.int64)})
        writer.add_table("roc", {"fpr": np.array([0.0, 0.1, 0.5, 1.0]), "tpr": np.array([0.0, 0.6, 0.9, 1.0]),
                                 "threshold": np.array([9.0, 2.0, 1.0, 0.0])})
        writer.finish({"auroc": 0.8})
    return report


def test_every_figure_type_is_a_valid_png(full_report: Report, tmp_path: Path) -> None:
    result = plot_report(full_report, tmp_path / "figs")
    assert result.skipped == {}
    assert set(result.written) == set(FIGURES)
    names = sorted(p.name for p in result.paths)
    assert names == sorted(["success-vs-queries.png", "perturbation-norms.png", "images-attack-pixle.png",
                            "images-transfer-white-pixle-rgb-ir.png", "corruptions-robustness.png", "roc.png",
                            "transfer-matrix.png"])
    for path in result.paths:
        assert_png(path)


def test_figures_without_data_are_skipped_with_a_reason(tmp_path: Path) -> None:
    report = Report(tmp_path / "a.h5")
    attack_run(report, "attack-pgd", 10, seed=3)  # no images, no transfer, no robustness, no ROC
    result = plot_report(report, tmp_path / "figs")
    assert set(result.written) == {"cdf", "norms"}
    assert "--save-images" in result.skipped["images"]
    assert set(result.skipped) == {"images", "corruptions", "roc", "transfer"}
    with pytest.raises(ReportError, match="cannot draw roc: no run table with fpr and tpr"):
        plot_report(report, tmp_path / "figs", figures=["roc"])
    with pytest.raises(ReportError, match="unknown figure 'heat'"):
        plot_report(report, tmp_path / "figs", figures=["heat"])
    with pytest.raises(ReportError, match="has no run 'nope'"):
        plot_report(report, tmp_path / "figs", runs=["nope"])
    with pytest.raises(ReportError, match="does not exist|no such report"):
        plot_report(Report(tmp_path / "missing.h5"), tmp_path / "figs")


def test_figures_drawn_without_some_runs_name_them(full_report: Report, tmp_path: Path) -> None:
    columns = attack_run(Report(tmp_path / "scratch.h5"), "x", 10, seed=4)
    del columns["queries"]  # e.g. written by third-party code: nothing to place on the queries axis
    columns["success"][:] = False  # and nothing to histogram
    with full_report.start_run("attack-other", kind="attack", config={"data": "digits"}) as writer:
        writer.append(columns)
        writer.finish(attack_summary(columns))
    result = plot_report(full_report, tmp_path / "figs")
    assert {"cdf", "norms", "images"} <= set(result.written)
    assert result.left_out["cdf"] == "attack-other: no per-sample success and queries"
    assert result.left_out["norms"] == "attack-other: no per-sample success and queries"
    assert result.left_out["images"].startswith("attack-pgd: no adversarial images")
    assert "attack-other: no adversarial images" in result.left_out["images"]
    pgd_only = plot_report(full_report, tmp_path / "pgd", runs=["attack-pgd"], figures=["cdf", "norms"])
    assert pgd_only.left_out == {}


def test_success_curve_counts_successes_by_query_budget() -> None:
    queries = np.array([10, 3, 7, 3, 50])
    success = np.array([True, True, False, True, False])
    x, y = success_curve(queries, success)
    assert x.tolist() == [0, 3, 3, 10, 50]
    assert y[-1] == pytest.approx(success.mean())
    for budget in (0, 3, 9, 10, 100):  # the step curve at any budget = share fooled within it
        at = y[np.searchsorted(x, budget, side="right") - 1]
        assert at == pytest.approx(np.mean(success & (queries <= budget)))


def test_transfer_matrix_holds_the_run_summaries(full_report: Report) -> None:
    runs = [full_report.read(r.id) for r in full_report.runs()]
    matrix, rows, cols = transfer_matrix(runs)
    assert rows == ["white-pixle", "random moves"]
    assert cols == ["rgb->ir source", "rgb->ir transfer", "rgb->ir both"]
    assert matrix[0].tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])
    assert matrix[1, 1] == 0.0 and np.isnan(matrix[1, 0])


def test_transfer_runs_of_one_direction_get_columns_of_their_own(tmp_path: Path) -> None:
    """Two runs of rgb->ir (pixle, white-pixle) had columns headed alike: which was which could not be told."""
    report = Report(tmp_path / "t.h5")
    for run_id, attack, rate in (("t-pixle", "pixle", 0.25), ("t-white", "white-pixle", 0.5)):
        with report.start_run(run_id, kind="transfer", config={"direction": "rgb->ir", "attack_name": attack}) as writer:
            writer.append({"index": np.arange(2)})
            writer.finish({"source_success_rate": 1.0, "transfer_rate": rate, "both_fooled_rate": rate})
    with report.start_run("t-ir", kind="transfer", config={"direction": "ir->rgb", "attack_name": "pixle"}) as writer:
        writer.append({"index": np.arange(2)})
        writer.finish({"source_success_rate": 1.0, "transfer_rate": 0.0, "both_fooled_rate": 0.0})
    matrix, _, cols = transfer_matrix([report.read(r.id) for r in report.runs()])
    assert cols[::3] == ["t-pixle source", "t-white source", "ir->rgb source"]
    assert matrix[0, 1::3].tolist() == [0.25, 0.5, 0.0]


def test_image_grid_uses_the_recorded_moves(full_report: Report, tmp_path: Path) -> None:
    """The transfer grid shows each recorded program replayed on the dataset's images, arrows from its moves."""
    asked: list[np.ndarray] = []

    def loader(run, indices):  # type: ignore[no-untyped-def]
        asked.append(np.asarray(indices))
        ds = open_dataset("synthetic-rgbir", n_per_class=3, size=16)
        return {d: ds.domain(d).batch(indices)[0].numpy() for d in ("rgb", "ir")}

    result = plot_report(full_report, tmp_path / "figs", runs=["transfer-white-pixle-rgb-ir"], figures=["images"],
                         max_images=2, loader=loader)
    assert [p.name for p in result.paths] == ["images-transfer-white-pixle-rgb-ir.png"]
    assert_png(result.paths[0])
    run = full_report.read("transfer-white-pixle-rgb-ir")
    assert asked[0].tolist() == run.samples["index"][run.samples["src_success"]].tolist()  # successes first, 2 max

    _, programs = transfer_run(Report(tmp_path / "again.h5"))
    index = run.samples["index"]
    clean = loader(run, index)
    adversarial, arrows = replay_moves(run.tables["moves"], index, clean)
    for j, program in enumerate(programs):
        for domain in ("rgb", "ir"):
            expected = program.apply(torch.from_numpy(clean[domain][j])).numpy()
            assert np.array_equal(adversarial[domain][j], expected)
        src, dst = arrows[j]
        # step 0 copies 200+j -> j and 40 -> 17+j; step 1 then writes 60 from position j (the last write wins)
        assert dict(zip(dst.tolist(), src.tolist())) == {j: 200 + j, 17 + j: 40, 60: j}


@pytest.mark.parametrize("images", [True, False])
def test_attack_runs_with_recorded_moves_draw_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, images: bool) -> None:
    """A Pixle attack run's grid draws its recorded moves; without saved images it shows the moves replayed."""
    from advkit.report import plots

    ds = open_dataset("digits")
    index = np.arange(3)
    programs = [MoveProgram(8, 8, [Step.copy([i, 9 + i], [63 - i, 20])]) for i in index]
    clean = ds.batch(index)[0]
    adv = torch.stack([p.apply(clean[i]) for i, p in enumerate(programs)]).numpy()
    columns = {"index": index, "label": ds.labels[index], "pred": ds.labels[index], "success": np.ones(3, bool),
               "queries": np.full(3, 4), "attacked": np.ones(3, bool), **({"adv_images": adv} if images else {})}
    report = Report(tmp_path / "r.h5")
    with report.start_run("attack-pixle", kind="attack", config={"data": "digits", "attack": "pixle"}) as writer:
        writer.append(columns, tables={"moves": moves_table(index, programs)})
        writer.finish(attack_summary(columns))
    drawn: dict[str, object] = {}
    grid = plots.plot_image_grid

    def spy(clean, adversarial, path, **kwargs):  # type: ignore[no-untyped-def]
        drawn.update(adversarial=adversarial, **kwargs)
        return grid(clean, adversarial, path, **kwargs)

    monkeypatch.setattr(plots, "plot_image_grid", spy)
    result = plot_report(report, tmp_path / "figs", figures=["images"])
    assert_png(result.written["images"][0])
    np.testing.assert_allclose(drawn["adversarial"], adv, atol=1e-3)  # float16 storage, or the exact replay
    arrows = [dict(zip(dst.tolist(), src.tolist())) for src, dst in drawn["moves"]]  # type: ignore[attr-defined]
    assert arrows == [{i: 63 - i, 9 + i: 20} for i in index.tolist()]


def test_images_the_model_got_wrong_are_no_success_in_any_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With --include-misclassified an image the model already got wrong is recorded as a 1-query, 0-pixel success;
    the summary leaves it out, and so must the per-class table, the success curve and the norm histograms (they
    counted it: a curve ending at 0.45 under a summary of 0.108)."""
    from advkit.cli.report_cmd import per_class
    from advkit.report import plots

    labels = np.array([0, 0, 0, 1, 1, 1])
    wrong = np.array([False, False, True, False, True, True])  # the model already misclassifies these
    success = np.array([True, False, True, False, True, True])
    columns = {"index": np.arange(6), "label": labels, "pred": np.where(wrong, (labels + 1) % 2, labels),
               "attacked": np.ones(6, bool), "success": success, "queries": np.where(wrong, 1, 50),
               "l0": np.where(success & ~wrong, 7, 0), "l2": np.zeros(6, np.float32), "linf": np.zeros(6, np.float32)}
    report = Report(tmp_path / "r.h5")
    with report.start_run("attack-pixle", kind="attack", config={"data": "digits", "attack": "pixle"}) as writer:
        writer.append(columns)
        writer.finish(summary := attack_summary(columns))
    assert summary["attack_success_rate"] == pytest.approx(1 / 3)  # 1 of the 3 correctly classified images
    rows = {row["class"]: row for row in per_class(report.read("attack-pixle").samples)}
    assert rows[0]["success_rate"] == 0.5 and rows[1]["success_rate"] == 0.0 and rows[1]["attacked"] == 3
    drawn: dict[str, object] = {}
    for name, key in (("plot_success_cdf", "cdf"), ("plot_norm_histograms", "norms")):
        def spy(data, path, draw=getattr(plots, name), key=key):  # type: ignore[no-untyped-def]
            drawn[key] = data
            return draw(data, path)
        monkeypatch.setattr(plots, name, spy)
    plot_report(report, tmp_path / "figs", figures=["cdf", "norms"])
    queries, successes = drawn["cdf"]["attack-pixle"]  # type: ignore[index]
    assert queries.tolist() == [50, 50, 50] and successes.tolist() == [True, False, False]
    assert drawn["norms"]["attack-pixle"]["l0"].tolist() == [7]  # type: ignore[index]


def test_figure_helpers_from_a_plots_review(tmp_path: Path) -> None:
    """Image grids of a failed attack showed rows it never ran on (already misclassified images) as failures; the
    recorded data_param 'thermal=True' failed to parse ('thermal must be a bool'); one NaN L2 emptied the panel."""
    from advkit.report.plots import _data_params, _pick, plot_norm_histograms

    failed, attacked = np.zeros(4, bool), np.array([True, False, True, True])
    assert _pick(failed, attacked, 3).tolist() == [0, 2, 3]
    assert _pick(np.array([False, False, True, False]), attacked, 2).tolist() == [2, 0]  # successes first
    assert _data_params(["thermal=True", "size=(8, 8)", "eps=8/255"]) == {"thermal": True, "size": [8, 8], "eps": "8/255"}
    path = plot_norm_histograms({"r": {"l2": np.array([0.5, np.nan, 0.0, 1.0])}}, tmp_path / "n.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_file_name_near_the_limit_is_written(tmp_path: Path) -> None:
    """write_atomically's temporary sibling is about 12 bytes longer than the file: a legal 250-byte name failed,
    and the error named the hidden temporary file."""
    from advkit.runtime import write_atomically

    path = tmp_path / ("s" * 244 + ".csv")
    write_atomically(path, lambda tmp: tmp.write_text("a,b\n"))
    assert path.read_text() == "a,b\n" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _misclassified_run(report: Report, *, images: bool) -> None:
    """An attack run whose every image the model already got wrong (attacked with --include-misclassified)."""
    labels = open_dataset("digits").labels[:4]
    columns = {"index": np.arange(4), "label": labels, "pred": (labels + 1) % 10, "attacked": np.ones(4, bool),
               "adv_pred": (labels + 1) % 10, "success": np.ones(4, bool), "queries": np.ones(4, np.int64),
               "l0": np.zeros(4, np.int64), "l2": np.zeros(4, np.float32), "linf": np.zeros(4, np.float32)}
    if images:
        columns["adv_images"] = np.zeros((4, 1, 8, 8), np.float32)
    with report.start_run("attack-wrong", kind="attack", config={"data": "digits", "attack": "pixle"}) as writer:
        writer.append(columns)
        writer.finish(attack_summary(columns))


def test_an_image_grid_without_a_scored_sample_is_skipped_with_a_reason(tmp_path: Path) -> None:
    """A run with saved images but no correctly classified image reached plot_image_grid with no rows: its
    '(0, 1, 8, 8) stacks' error stopped every other figure of the report."""
    report = Report(tmp_path / "r.h5")
    _misclassified_run(report, images=True)
    attack_run(report, "attack-pixle", 6, seed=0, images=True)
    result = plot_report(report, tmp_path / "figs", figures=["images"])
    assert [p.name for p in result.written["images"]] == ["images-attack-pixle.png"]
    assert result.left_out["images"] == "attack-wrong: no attacked sample the model classified correctly"


def test_a_run_without_a_scored_sample_draws_no_success_curve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its success rate is NaN, but the curve drew a flat line at 0 labelled n=0, as if the attack had failed."""
    from advkit.report import plots

    drawn: dict[str, object] = {}
    monkeypatch.setattr(plots, "plot_success_cdf", lambda curves, path, draw=plots.plot_success_cdf:
                        (drawn.update(curves), draw(curves, path))[1])
    report = Report(tmp_path / "r.h5")
    _misclassified_run(report, images=False)
    attack_run(report, "attack-pixle", 6, seed=0)
    result = plot_report(report, tmp_path / "figs", figures=["cdf"])
    assert list(drawn) == ["attack-pixle"]
    assert result.left_out["cdf"] == "attack-wrong: no attacked sample the model classified correctly"
    only = Report(tmp_path / "only.h5")
    _misclassified_run(only, images=False)
    with pytest.raises(ReportError, match="cannot draw cdf: attack-wrong: no attacked sample"):
        plot_report(only, tmp_path / "figs2", figures=["cdf"])


def test_norm_histogram_legend_counts_the_values_it_cannot_draw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN L2 is left out of the bins (it made every bin NaN), but the legend said n=3 for 4 successful
    samples, so the histogram silently disagreed with the summary's NaN l2_mean."""
    from advkit.report import plots

    legends: list[str] = []
    save = plots._save

    def spy(fig, path, dpi=100):  # type: ignore[no-untyped-def]
        legends.extend(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "_save", spy)
    plots.plot_norm_histograms({"r": {"l2": np.array([0.5, np.nan, 0.0, 1.0])}, "s": {"l2": np.array([0.2])}},
                               tmp_path / "n.png")
    assert legends == ["r (n=3, 1 not finite, not drawn)", "s (n=1)"]
