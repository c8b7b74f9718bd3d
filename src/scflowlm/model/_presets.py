"""Named settings of CaLMFlowModel: the CPU default, and presets that follow the paper for a GPU."""

from __future__ import annotations

__all__ = ["PRESETS"]

#: ``CaLMFlowModel(adata, **PRESETS[name])``. ``"cpu"``: the defaults, chosen on the scoreboard of held-out real
#: conditions (``docs/benchmarks.md``): the paper's single-cell backbone (2 blocks x 64) with 4 time points of one
#: token, trained in a few CPU minutes. ``"paper"``: the paper's single-cell setting (16 time points of one token,
#: latent 32) on the same backbone; on a GPU. ``"pythia-160m"``: a pretrained Pythia-160M backbone (downloaded once
#: from the Hugging Face Hub) with 16 time points of 4 tokens; a GPU with bf16 (``train(precision="bf16-mixed")``).
PRESETS: dict[str, dict] = {
    "cpu": {},
    "paper": {"n_time_points": 16, "n_space_tokens": 1, "n_latent": 32},
    "pythia-160m": {
        "backbone": "EleutherAI/pythia-160m",
        "n_time_points": 16,
        "n_space_tokens": 4,
        "n_latent": 32,
    },
}
