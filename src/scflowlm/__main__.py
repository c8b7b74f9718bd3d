"""Command line: ``python -m scflowlm demo`` runs the embedded end-to-end example."""

from __future__ import annotations

import argparse
import time


def demo(*, epochs: int | None, seed: int, n_cells: int, source: str = "auto") -> None:
    """Synthetic perturbations -> train CaLMFlow with one combination held out -> predict it -> score it."""
    import pandas as pd
    import scvi

    import scflowlm

    scvi.settings.seed = seed
    keys = {
        "condition_keys": ["cell_type", "condition"],
        "perturbation_key": "condition",
        "control_value": "control",
    }
    held = {"cell_type": "NK", "condition": "IFNB+TNF"}

    print("1/4 making a synthetic data set: 3 cell types x {control, IFNB, TNF, IFNB+TNF}, 100 cells each")
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=100, n_genes=200, n_pcs=16, seed=seed)
    scflowlm.CaLMFlowModel.setup_anndata(
        adata,
        prompt_template="Generate a {cell_type} cell stimulated with {condition}:",
        control_template="Generate an unstimulated {cell_type} cell:",
        perturbation_key="condition",
        control_value="control",
    )
    model = scflowlm.CaLMFlowModel(adata, source=source)  # the defaults, as a user gets them
    print(f"2/4 training: {model._model_summary_string}\n    held out: {held}")
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, holdout=[held])
    print(f"    trained in {time.perf_counter() - t0:.0f} s")

    print(f"3/4 predicting {n_cells} cells of the held-out combination (KV-cached autoregressive rollout)")
    pred = model.predict_perturbation(held, n_cells=n_cells, seed=seed)

    print("4/4 scoring against the real held-out cells and simple baselines")
    preds = {
        "CaLMFlow": pred,
        "control mean": scflowlm.tl.baseline_control_mean(adata, conditions=[held], **keys),
        "additive shift": scflowlm.tl.baseline_additive(adata, conditions=[held], **keys),
        "nearest-context shift": scflowlm.tl.baseline_nearest_context(adata, conditions=[held], **keys),
    }
    _, half = scflowlm.tl.baseline_real_vs_real(
        adata, conditions=[held], condition_keys=keys["condition_keys"], seed=seed
    )
    preds["real vs real (floor)"] = half
    rest = adata[~adata.obs_names.isin(half.obs_names)]  # the other half is the reference for the floor
    rows = []
    for name, p in preds.items():
        real = adata if name != "real vs real (floor)" else rest
        df = scflowlm.tl.evaluate(
            real,
            p,
            metrics=["r2", "r2_de", "pearson_delta_de", "mmd", "edistance"],
            space="pca",
            key_added=None,
            **keys,
        )
        rows.append(df.assign(model=name))
    table = pd.concat(rows).set_index("model")[["r2", "r2_de", "pearson_delta_de", "mmd", "edistance"]]
    print()
    print(table.round(3).to_markdown() if _has_tabulate() else table.round(3).to_string())
    print(
        "\nr2/r2_de: Pearson R^2 of mean expression (all genes / top-100 DE genes); pearson_delta_de: r of the change "
        "from the control mean on the DE genes; mmd, edistance: distribution distances in PCA space (lower is better)."
    )


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


def _positive(text: str) -> int:
    """An integer >= 1 (argparse's type for counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m scflowlm`` (the arguments are checked before torch and scvi-tools load)."""
    parser = argparse.ArgumentParser(prog="python -m scflowlm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train and evaluate on synthetic data (a few CPU minutes)")
    p.add_argument(
        "--epochs",
        type=_positive,
        default=None,
        help="training epochs (default: the model's own, about 3,000 steps)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-cells", type=_positive, default=300, help="cells to generate")
    p.add_argument(
        "--source", choices=["auto", "noise", "control"], default="auto", help="start of the flows"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(epochs=args.epochs, seed=args.seed, n_cells=args.n_cells, source=args.source)


if __name__ == "__main__":
    main()
