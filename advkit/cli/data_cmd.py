"""``advkit data info NAME|PATH``: size, classes and splits of a dataset."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import typer

from advkit.cli.common import DataParamOpt, JsonOpt, emit_json, kv_table, out, parse_params, table

app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)


def describe(ds: Any) -> dict[str, Any]:
    """Facts about an ImageDataset or PairedDataset."""
    from advkit.datasets import SPLITS, PairedDataset

    views = {"rgb": ds.domain("rgb"), "ir": ds.domain("ir")} if isinstance(ds, PairedDataset) else {ds.domain: ds}
    first = next(iter(views.values()))
    return {
        "name": ds.name,
        "kind": "paired" if isinstance(ds, PairedDataset) else "single",
        "samples": len(first),
        "domains": {d: {"channels": v.channels, "size": list(v.size)} for d, v in views.items()},
        "classes": list(first.class_names),
        "splits": {s: int((first.split == code).sum()) for s, code in SPLITS.items()},
        "per_class": {name: int((first.labels == k).sum()) for k, name in enumerate(first.class_names)},
        "meta": dict(getattr(ds, "meta", {})),
    }


@app.command("info")
def info(
    dataset: Annotated[str, typer.Argument(help="Dataset name, FORMAT:PATH or PATH (advkit list datasets).")],
    data_param: DataParamOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Number of samples, domains, image size, classes and split sizes."""
    from advkit.datasets import open_dataset

    facts = describe(open_dataset(dataset, **parse_params(data_param or [], "--data-param")))
    if json_output:
        emit_json(facts)
        return
    domains = ", ".join(f"{d} {v['channels']}ch {v['size'][0]}x{v['size'][1]}" for d, v in facts["domains"].items())
    out.print(kv_table("dataset", {
        "name": facts["name"], "kind": facts["kind"], "samples": facts["samples"], "domains": domains,
        "splits": ", ".join(f"{k} {v}" for k, v in facts["splits"].items() if v),
        **{f"meta.{k}": v for k, v in facts["meta"].items()},
    }))
    counts = np.array(list(facts["per_class"].values()))
    out.print(table(f"{len(counts)} classes", ["class", "samples"], list(facts["per_class"].items())))
