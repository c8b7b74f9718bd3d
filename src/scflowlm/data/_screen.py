"""A simulated perturbation screen at the scale users bring, with known truth: a tool for testing methods.

Not biology: a screen in which a known share of every perturbation's effect is a smooth function of one gene
vector source, so a method's use of gene knowledge can be measured against what is there to find. Real control
cells give the expression and the cell-to-cell spread; the effects live in the control cells' own expression
programs (their principal axes).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

__all__ = ["simulate_screen"]


def _programs(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` principal axes ``[G, n]`` of the control cells, scaled by their standard deviations."""
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    n = min(n, len(s))
    return vt[:n].T * (s[:n] / np.sqrt(max(len(x) - 1, 1)))


def _pattern(programs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Effects ``[k, G]`` of program weights ``[k, h]``, each scaled to a root mean square of 1 over the genes."""
    effects = weights @ programs.T  # [k, G]
    rms = np.sqrt((effects**2).mean(1, keepdims=True))
    return effects / np.maximum(rms, 1e-12)


def simulate_screen(
    adata: ad.AnnData,
    *,
    vectors: pd.DataFrame,
    n_singles: int = 500,
    n_doubles: int = 100,
    predictable: float = 0.8,
    additivity: float = 0.8,
    interaction: float = 0.3,
    effect_size: float = 2.0,
    n_cells: int = 40,
    n_programs: int = 20,
    n_pcs: int = 50,
    context: str = "k562",
    seed: int = 0,
) -> ad.AnnData:
    """A simulated screen of single and double gene perturbations on real control cells, with its truth.

    **The effects.** ``n_singles`` perturbed genes are drawn from the genes of ``vectors`` (rows with a non-zero
    vector). A single's effect on the mean expression is ``effect_size * sd * s_g * (sqrt(p) f(v_g) + sqrt(1 - p)
    u_g)``: ``f`` a smooth function of the gene's vector (a random two-layer map, ``tanh``, into weights of the
    control cells' first ``n_programs`` expression programs), ``u_g`` a gene-specific pattern in the same programs that
    no vector predicts, ``p = predictable``, both parts of root mean square 1 over the genes, ``sd`` the control
    cells' mean per-gene standard deviation and ``s_g`` a per-gene size (log-normal, median 1). A double of two
    singles is ``additivity`` times the sum of theirs (Norman et al.'s doubles are about 0.8 of it) plus
    ``interaction`` times the mean single size times ``f_2(v_a * v_b)``, an interaction that depends on the two
    genes' vectors (symmetric).

    **The cells.** The control cells are split at random in two: one half are the screen's control cells, the
    other half lend their deviations from the control mean to the perturbed cells (``n_cells`` per condition, each
    the control mean plus its effect plus one such deviation), so perturbed cells have the controls' spread but are
    never copies of the screen's controls.

    Parameters
    ----------
    adata
        Control cells (log-normalised ``X``), e.g. the K562 controls of ``perturbench_devel``; at least 40.
    vectors
        Gene vectors (gene name -> vector): the source whose knowledge makes the predictable part, e.g.
        :func:`scflowlm.data.gene_knowledge_embeddings` with ``sources=["go"]``.
    n_singles, n_doubles
        Perturbed genes, and doubles drawn among pairs of them.
    predictable
        Share of a single's effect (in squared size) that its vector determines.
    additivity, interaction
        How a double combines its singles.
    effect_size
        Effect size relative to the controls' per-gene standard deviation (root mean square over the genes).
    n_cells
        Cells per perturbed condition.
    n_programs
        Expression programs of the controls the effects live in.
    n_pcs
        Components of the PCA written to ``obsm["X_pca"]`` / ``varm["PCs"]`` (``None``: none).
    context
        The ``cell_type`` of every cell.
    seed
        Seed of every draw: the same arguments give the same screen.

    Returns
    -------
    A new AnnData: ``obs["cell_type"]`` (``context``), ``obs["condition"]`` (``"control"``, ``"G1"``, ``"G1+G2"``);
    ``X`` as ``adata``'s genes; ``obsm["X_pca"]``, ``varm["PCs"]``; ``uns["simulation"]``: ``"effects"`` (the true
    change of every condition's mean, conditions x genes), ``"predictable"`` (the part of it the vectors determine:
    ``sqrt(p) f`` of a single, ``additivity`` times the sum of its singles' plus the interaction for a double),
    ``"singles"``, ``"doubles"`` and the settings. ``adata`` is not changed.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, dtype=np.float64)  # [n, G]
    if len(x) < 40:
        raise ValueError(f"simulate_screen needs at least 40 control cells, got {len(x)}.")
    if not 0 <= predictable <= 1:
        raise ValueError(f"predictable must be in [0, 1], got {predictable!r}.")
    table = vectors.astype(np.float64)
    table = table[(table.abs().to_numpy().sum(1) > 0)]
    if n_singles < 2 or n_singles > len(table):
        raise ValueError(
            f"n_singles must be between 2 and the {len(table)} genes with a vector, got {n_singles}."
        )
    if n_doubles > n_singles * (n_singles - 1) // 2:
        raise ValueError(f"n_doubles={n_doubles} is more than the pairs of {n_singles} singles.")
    genes = sorted(rng.choice(np.asarray(table.index, dtype=object), size=n_singles, replace=False))
    v = table.loc[genes].to_numpy()  # [s, E]
    v = (v - v.mean(0)) / np.maximum(v.std(0), 1e-12)
    programs = _programs(x, n_programs)  # [G, h]
    h, E = programs.shape[1], v.shape[1]
    first, second = rng.normal(size=(E, 32)) / np.sqrt(E), rng.normal(size=(32, h)) / np.sqrt(32)

    def smooth(inputs: np.ndarray, w1=first, w2=second) -> np.ndarray:
        return _pattern(programs, np.tanh(inputs @ w1) @ w2)  # [k, G], rms 1

    sd = float(x.std(0).mean())
    sizes = effect_size * sd * np.exp(rng.normal(scale=0.5, size=(n_singles, 1)))  # [s, 1]
    known = sizes * np.sqrt(predictable) * smooth(v)  # [s, G]
    own = sizes * np.sqrt(1 - predictable) * _pattern(programs, rng.normal(size=(n_singles, h)))
    effects = {g: known[i] + own[i] for i, g in enumerate(genes)}
    predictable_part = {g: known[i] for i, g in enumerate(genes)}
    pairs = set()
    while len(pairs) < n_doubles:
        a, b = sorted(rng.choice(n_singles, size=2, replace=False))
        pairs.add((int(a), int(b)))
    w1b, w2b = rng.normal(size=(E, 32)) / np.sqrt(E), rng.normal(size=(32, h)) / np.sqrt(32)
    doubles = []
    for a, b in sorted(pairs):
        name = f"{genes[a]}+{genes[b]}"
        extra = interaction * float(sizes.mean()) * smooth((v[a] * v[b])[None], w1b, w2b)[0]
        effects[name] = additivity * (effects[genes[a]] + effects[genes[b]]) + extra
        predictable_part[name] = additivity * (known[a] + known[b]) + extra
        doubles.append(name)
    order = rng.permutation(len(x))
    controls, lenders = order[: len(x) // 2], order[len(x) // 2 :]
    centre = x[controls].mean(0)
    blocks, labels = [x[controls]], ["control"] * len(controls)
    for name, effect in effects.items():
        deviations = x[rng.choice(lenders, size=n_cells)] - x[lenders].mean(0)
        blocks.append(centre + effect + deviations)
        labels += [name] * n_cells
    out = ad.AnnData(
        np.concatenate(blocks).astype(np.float32),
        obs=pd.DataFrame({"cell_type": context, "condition": labels}),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    out.obs_names = [f"sim{i}" for i in range(out.n_obs)]
    out.obs["condition"] = out.obs["condition"].astype("category")
    conditions = list(effects)
    out.uns["simulation"] = {
        "effects": pd.DataFrame(
            np.stack(list(effects.values())), index=conditions, columns=list(out.var_names)
        ),
        "predictable": pd.DataFrame(
            np.stack([predictable_part[c] for c in conditions]), index=conditions, columns=list(out.var_names)
        ),
        "singles": list(genes),
        "doubles": doubles,
        "settings": {
            "predictable": predictable,
            "additivity": additivity,
            "interaction": interaction,
            "effect_size": effect_size,
            "n_cells": n_cells,
            "seed": seed,
        },
    }
    if n_pcs:
        sc.pp.pca(out, n_comps=min(n_pcs, out.n_vars - 1, out.n_obs - 1), random_state=seed)
    return out
