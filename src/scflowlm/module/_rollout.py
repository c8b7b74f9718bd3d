"""CaLMFlow's generation: the autoregressive rollout with a key/value cache, and many conditions in batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from scflowlm.nn import KVStorage, SharedPrefixDecoder, backbone_forward, can_decode_shared, new_kv_cache

from ._volterra import condition_sequences, step_noise

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CaLMFlowGeneration"]


class CaLMFlowGeneration:
    """The generation half of :class:`~scflowlm.module.CaLMFlowModule` (its prefix, cache, tokenizer and head)."""

    #: whether cached generation may take :class:`~scflowlm.nn.SharedPrefixDecoder` (one token a step on a CPU)
    shared_prefix_decoding: bool = True

    def _decodes_shared(self, n_trajectories: int) -> bool:
        """Whether the cached steps run as :class:`~scflowlm.nn.SharedPrefixDecoder`.

        One new token a step (``M * K == 1``), a GPT-NeoX trunk, on a CPU (a GPU's kernels take transformers' path).
        """
        return (
            self.shared_prefix_decoding
            and n_trajectories * self.n_space_tokens == 1
            and self.x_mean.device.type == "cpu"
            and can_decode_shared(self.backbone)
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def rollout(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        x0: torch.Tensor,
        *,
        rows: torch.Tensor | None = None,
        members: torch.Tensor | None = None,
        in_head_start: torch.Tensor | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        kv_storage: KVStorage | None = None,
    ) -> torch.Tensor:
        """Autoregressive rollout of ``S`` sequences from standardised start states.

        Each prompt is encoded once; with ``use_cache`` every step then feeds only the ``M*K`` tokens of the
        newest state (with one token a step on a CPU through :class:`~scflowlm.nn.SharedPrefixDecoder`, which keeps
        each prompt's keys and values once). Without it, the whole sequence is recomputed at every step (the
        reference for the cache).

        Parameters
        ----------
        prompt_ids, prompt_mask
            ``[C, L]`` prompts (left-padded).
        x0
            ``[S, M, D]`` standardised start states.
        rows
            ``[S]`` prompt of each sequence; default: the one prompt (``C = 1``) or one per sequence (``C = S``).
        members, in_head_start
            ``[C, P]`` the single perturbations of the prompts' conditions (see :meth:`prefix`; ``None``: none).
        temperature
            ``tau``: scales the latent variance.
        noise, generator
            ``[S, N-1, M, Z]`` standard normal latent noise of every step; default: drawn from the torch ``generator``.
        use_cache, kv_storage
            Use the key/value cache; the memory to keep it in, reused by the next call given the same
            (:class:`~scflowlm.nn.KVStorage`).

        Returns
        -------
        ``[S, N, M, D]`` standardised path; ``[:, -1]`` are the generated cells.
        """
        (S, M, _), N = x0.shape, self.n_time_points
        prompt_ids, prompt_mask = prompt_ids.to(x0.device), prompt_mask.to(x0.device)
        if rows is None:
            rows = torch.zeros(S, dtype=torch.long) if prompt_ids.shape[0] == 1 else torch.arange(S)
        rows = rows.to(x0.device)
        dt, path = self.times[1:] - self.times[:-1], [x0]
        decoder = None
        if use_cache and self._decodes_shared(M):  # the prompts' keys kept once, the layers run directly
            emb, pmask = self.prefix(prompt_ids, prompt_mask, members, in_head_start)  # [C, L+1, H], [C, L+1]
            cache, padded = new_kv_cache(), not bool(pmask.all())
            backbone_forward(self.backbone, emb, attention_mask=pmask if padded else None, cache=cache)
            decoder = SharedPrefixDecoder(self.backbone, cache, rows, pmask if padded else None, N - 1)
        elif use_cache:  # mask [S, L+1] grows by M*K a step, into room reserved for every step's tokens
            room = (N - 1) * M * self.n_space_tokens
            cache, mask = self._prompt_cache(
                prompt_ids, prompt_mask, rows, members, in_head_start, room, kv_storage
            )
        else:
            emb, pmask = self.prefix(prompt_ids, prompt_mask, members, in_head_start)  # [C, L+1, H], [C, L+1]
        for i in range(N - 1):
            if decoder is not None:
                h = decoder(self.state_tokenizer(path[-1][:, None], time_index=i))  # [S, 1, H]
            elif use_cache:
                tokens = self.state_tokenizer(path[-1][:, None], time_index=i)  # [S, M*K, H]
                if mask is not None:
                    mask = torch.cat([mask, mask.new_ones(S, tokens.shape[1])], dim=1)  # [S, L+1+(i+1)*M*K]
                h = backbone_forward(self.backbone, tokens, attention_mask=mask, cache=cache)  # [S, M*K, H]
            else:
                tokens = self.state_tokenizer(torch.stack(path, dim=1))  # [S, (i+1)*M*K, H]
                h = self._run(emb[rows], pmask[rows], tokens)[:, -M * self.n_space_tokens :]
            eps = None if noise is None else noise[:, i]  # [S, M, Z]
            v = self.head.sample(h.reshape(S, M, -1), temperature=temperature, noise=eps, generator=generator)
            path.append(path[-1] + dt[i] * v)  # [S, M, D]
        return torch.stack(path, dim=1)

    @torch.no_grad()
    def sample(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        rows: torch.Tensor,
        *,
        members: torch.Tensor | None = None,
        in_head_start: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
        generators: Sequence[torch.Generator],
        temperature: float = 1.0,
        batch_size: int = 256,
        use_cache: bool = True,
        return_path: bool = False,
    ) -> torch.Tensor:
        """Generate cells of several conditions at once; raw coordinates in, raw coordinates out.

        The cells of one condition are grouped ``M`` to a sequence; sequences of any conditions are rolled out
        together, ``batch_size`` cells at a time, each prompt encoded once per batch. All randomness of the
        cells of condition ``c`` (noise start states, latent noise) comes from ``generators[c]`` in a fixed order,
        so the cells do not depend on ``batch_size`` or on the other conditions in the call.

        Parameters
        ----------
        prompt_ids, prompt_mask
            ``[C, L]`` prompts of the C conditions of this call (left-padded).
        rows
            ``[n]`` condition of each cell.
        members, in_head_start
            ``[C, P]`` the single perturbations of the C conditions and which are in their head start (see
            :meth:`prefix`).
        x0
            ``[n, D]`` raw start states (a control source), or ``None`` for ``N(0, I)`` noise.
        shift
            ``[n, D]`` raw head start of each cell, added to every state of its path (see :meth:`head_start`).
        generators
            One torch generator per condition.
        temperature
            ``tau >= 0``: scales the latent variance.
        batch_size
            Cells rolled out at once (bounds memory).
        use_cache
            Use the key/value cache.
        return_path
            Return every state of the path ``[n, N, D]`` instead of the end point ``[n, D]``.
        """
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        n, M, N = len(rows), self.n_trajectories, self.n_time_points
        z0 = self.start_states(rows, x0, generators).cpu()  # [n, D] standardised
        noise = None  # [n, N-1, Z]
        if self.head.mode != "none":
            noise = step_noise(rows, generators, N - 1, self.head.n_latent, dtype=z0.dtype)
        seqs, real = condition_sequences(rows, M)  # [S, M] cells, [S, M] not a filling repeat
        out = torch.empty((n, N, z0.shape[1]) if return_path else (n, z0.shape[1]), dtype=z0.dtype)
        device = self.x_mean.device
        per, storage = max(batch_size // M, 1), KVStorage()  # one cache memory for every batch
        for start in range(0, len(seqs), per):
            seq, keep = seqs[start : start + per], real[start : start + per]  # [s, M]
            eps = None if noise is None else noise[seq].transpose(1, 2).to(device)  # [s, N-1, M, Z]
            path = self.rollout(
                prompt_ids,
                prompt_mask,
                z0[seq].to(device),
                rows=rows[seq[:, 0]],
                members=members,
                in_head_start=in_head_start,
                temperature=temperature,
                noise=eps,
                use_cache=use_cache,
                kv_storage=storage,
            )  # [s, N, M, D]
            path = self.unstandardize(path).transpose(1, 2).cpu()  # [s, M, N, D]
            out[seq[keep]] = path[keep] if return_path else path[keep][:, -1]
        if shift is not None:
            out = out + (shift.unsqueeze(1) if return_path else shift).to(out)
        return out
