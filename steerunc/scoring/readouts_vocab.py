"""Readouts over the whole vocabulary: the next token, and every token of a continuation.

Both apply the output head to every vocabulary entry, so both work in chunks
(of records, of positions) that hold at most ``readouts.CHUNK_VALUES`` view
logits; the small per-chunk results are written into buffers made once per
batch, which leave the device in one copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from steerunc.scoring.fusion import SCORE_NAMES, fuse
from steerunc.scoring.readouts import Item, Plan, Readout, chunk_size, to_host, top_view_of
from steerunc.records import ScoredRecord

__all__ = ["NextTokenReadout", "ContinuationReadout", "TokenNames"]


class TokenNames:
    """A unique, stable name for every vocabulary entry: its decoded text (``" time"``).

    Where several entries decode to the same text (byte pieces that are not
    whole characters all decode to U+FFFD; ids past the tokenizer's vocabulary
    to ``""``), each of them is named by its text followed by its id in angle
    brackets, ``"\\ufffd⟨169⟩"``, so the keys of ``probs`` never collide and one
    token has one name in every record. The whole vocabulary is decoded once,
    on first use (a second or two for 262k entries).
    """

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._names: list[str] | None = None

    def _decode_all(self) -> list[str]:
        ids = [[i] for i in range(self.vocab_size)]
        try:
            texts = list(self.tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False))
        except Exception:  # noqa: BLE001  (an id past the tokenizer's vocabulary may raise)
            texts = [self._decode_one(i) for i in range(self.vocab_size)]
        return texts

    def _decode_one(self, token: int) -> str:
        try:
            return str(self.tokenizer.decode([token], clean_up_tokenization_spaces=False))
        except Exception:  # noqa: BLE001
            return ""

    def __getitem__(self, token: int) -> str:
        if self._names is None:
            self._names = _unique(self._decode_all())
        return self._names[token]


def _unique(texts: list[str]) -> list[str]:
    """``texts`` with every text shared by several ids suffixed ``⟨id⟩`` (until all differ: a
    suffixed name cannot equal another, since its final ``⟨digits⟩`` names one id)."""
    names = list(texts)
    while True:
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        clashes = [ids for ids in seen.values() if len(ids) > 1]
        if not clashes:
            return names
        for ids in clashes:
            for i in ids:
                if not names[i].endswith(f"⟨{i}⟩"):
                    names[i] = f"{names[i]}⟨{i}⟩"


class NextTokenReadout(Readout):
    """No options, no continuation: the next-token distribution over the whole vocabulary.

    ``probs`` lists the ``top_tokens`` most likely tokens of each distribution,
    named by :class:`TokenNames`."""

    mode = "next_token"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token_names = TokenNames(self.context.tokenizer, self.context.unembed.vocab_size)

    def plan(self, items: list[Item]) -> Plan:
        return Plan(items, [item.text_ids for item in items], [[item.last] for item in items])

    def finish(self, plan: Plan, hidden: Tensor) -> list[ScoredRecord]:
        ctx = self.context
        n, views, k = len(plan.items), ctx.n_views, len(ctx.names)
        top_n = min(ctx.top_tokens, ctx.unembed.vocab_size)
        device = hidden.device
        values = torch.empty((n, views + 1, top_n), device=device)  # row 0 fused, then base, then views
        indices = torch.empty((n, views + 1, top_n), dtype=torch.long, device=device)
        scores = torch.empty((len(SCORE_NAMES), n), device=device)
        kl, weights = torch.empty((n, k), device=device), torch.empty((n, k), device=device)
        top, delta = torch.empty((n,), dtype=torch.long, device=device), torch.empty((n,), device=device)
        step = chunk_size(views * ctx.unembed.vocab_size, n)
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            z = ctx.unembed(hidden[lo:hi, :, 0])  # [c, K+1, V]
            fused = fuse(z, ctx.fusion)
            del z
            best = torch.cat([fused.fused_logp[:, None], fused.logp], dim=1).topk(top_n, dim=-1)
            values[lo:hi], indices[lo:hi] = best.values, best.indices
            for j, name in enumerate(SCORE_NAMES):
                scores[j, lo:hi] = fused.scores[name]
            kl[lo:hi], weights[lo:hi] = fused.view_kl, fused.weights
            at_base_top = best.indices[:, 1, :1, None].expand(-1, views, 1)  # the base view's top token
            view_top, view_delta = top_view_of(fused.logp.gather(-1, at_base_top).exp(), torch.zeros_like(top[lo:hi]))
            top[lo:hi], delta[lo:hi] = view_top, view_delta
            del fused, best
        probs_l, ids_l, scores_l, kl_l, weights_l, top_l, delta_l = (
            t.tolist() for t in to_host([values.exp(), indices, scores, kl, weights, top, delta])
        )
        names = ctx.names
        out = []
        for i, item in enumerate(plan.items):
            dists = [self._dist(ids_l[i][r], probs_l[i][r]) for r in range(views + 1)]
            out.append(self._record(
                item,
                prediction=dists[0][0], probs=dists[0][1],
                base_prediction=dists[1][0], base_probs=dists[1][1],
                scores={name: scores_l[j][i] for j, name in enumerate(SCORE_NAMES)},
                views={name: {"prediction": dists[q + 2][0], "probs": dists[q + 2][1], "kl": kl_l[i][q]}
                       for q, name in enumerate(names)},
                weights=dict(zip(names, weights_l[i])),
                top_view={"name": names[top_l[i]], "delta": delta_l[i]},
            ))
        return out

    def _dist(self, ids: list[int], probs: list[float]) -> tuple[str, dict[str, float]]:
        """(the most likely token's name, {name: probability}) for tokens listed most likely first."""
        words = [self.token_names[t] for t in ids]
        return words[0], dict(zip(words, probs))


class ContinuationReadout(Readout):
    """A given continuation: every one of its tokens, scored over the whole vocabulary.

    The positions of all the batch's continuations are fused together, in chunks
    of ``chunk_positions`` (fewer when a chunk would hold more than
    ``CHUNK_VALUES`` view logits); per-record sums, means and maxima are segment
    reductions over the batch."""

    mode = "continuation"

    def appended(self, item: Item) -> int:
        return len(item.targets or [])

    def plan(self, items: list[Item]) -> Plan:
        rows = [item.text_ids + (item.targets or []) for item in items]
        read = [list(range(item.last, item.last + len(item.targets or []))) for item in items]
        return Plan(items, rows, read)

    def chunk_positions(self) -> int:
        """Positions per chunk of vocabulary-wide work."""
        ctx = self.context
        return chunk_size(ctx.n_views * ctx.unembed.vocab_size, ctx.chunk_positions)

    def finish(self, plan: Plan, hidden: Tensor) -> list[ScoredRecord]:
        ctx = self.context
        device, k = hidden.device, len(ctx.names)
        lengths = [len(item.targets or []) for item in plan.items]
        segment = torch.repeat_interleave(torch.arange(len(lengths), device=device),
                                          torch.tensor(lengths, device=device))  # item of each position
        where = torch.cat([torch.arange(n, device=device) for n in lengths])  # position within its row
        target = torch.tensor([t for item in plan.items for t in item.targets or []], device=device)
        states = hidden[segment, :, where]  # [P, K+1, d]: every continuation position of the batch
        total = states.shape[0]
        scores = torch.empty((len(SCORE_NAMES), total), device=device)
        base_lp, fused_lp = torch.empty(total, device=device), torch.empty(total, device=device)
        view_lp, view_kl, weights = (torch.empty((total, k), device=device) for _ in range(3))
        step = self.chunk_positions()
        for lo in range(0, total, step):
            hi = min(lo + step, total)
            self._chunk(states[lo:hi], target[lo:hi], scores[:, lo:hi], base_lp[lo:hi], fused_lp[lo:hi],
                        view_lp[lo:hi], view_kl[lo:hi], weights[lo:hi])
        n = len(lengths)
        count = torch.tensor(lengths, device=device, dtype=torch.float32)

        def per_item(values: Tensor) -> Tensor:  # [P, ...] -> sums per item [n, ...]
            return torch.zeros((n, *values.shape[1:]), device=device).index_add_(0, segment, values)

        sums = per_item(scores.T)  # [n, S]
        maxima = torch.full((n, len(SCORE_NAMES)), -torch.inf, device=device).scatter_reduce_(
            0, segment[:, None].expand(-1, len(SCORE_NAMES)), scores.T, "amax")
        host = to_host([scores, base_lp, fused_lp, target, sums, sums / count[:, None], maxima,
                        per_item(view_kl) / count[:, None], per_item(view_lp), per_item(weights) / count[:, None],
                        per_item(base_lp[:, None])[:, 0], per_item(fused_lp[:, None])[:, 0]])
        (scores_l, base_l, fused_l, target_l, sums_l, means_l, maxima_l, kl_l, lp_l, weights_l,
         base_sum_l, fused_sum_l) = (t.tolist() for t in host)
        texts = ctx.tokenizer.batch_decode([[t] for t in target_l])
        names, out, lo = ctx.names, [], 0
        for i, item in enumerate(plan.items):
            hi = lo + lengths[i]
            tokens = [
                {"token": texts[p], "base_logprob": base_l[p], "fused_logprob": fused_l[p],
                 "scores": {name: scores_l[j][p] for j, name in enumerate(SCORE_NAMES)}}
                for p in range(lo, hi)
            ]
            lo = hi
            aggregates = {
                "mean": dict(zip(SCORE_NAMES, means_l[i])),
                "max": dict(zip(SCORE_NAMES, maxima_l[i])),
                "sum": dict(zip(SCORE_NAMES, sums_l[i])),
            }
            out.append(self._record(
                item, prediction=None, probs=None, base_prediction=None, base_probs=None,
                scores=dict(aggregates["mean"]),
                views={name: {"kl": kl_l[i][j], "logprob": lp_l[i][j]} for j, name in enumerate(names)},
                weights=dict(zip(names, weights_l[i])),
                tokens=tokens, score_aggregates=aggregates,
                extra={"base_logprob": base_sum_l[i], "fused_logprob": fused_sum_l[i]},
            ))
        return out

    def _chunk(
        self, states: Tensor, target: Tensor, scores: Tensor, base: Tensor, fused_lp: Tensor,
        view_lp: Tensor, view_kl: Tensor, weights: Tensor,
    ) -> None:
        """One chunk: ``states`` [chunk, K+1, d]; results written into the given slices.
        A function of its own so that the chunk's vocabulary-sized tensors die on return."""
        fused = fuse(self.context.unembed(states), self.context.fusion)  # over [chunk, K+1, V]
        for j, name in enumerate(SCORE_NAMES):
            scores[j] = fused.scores[name]
        base.copy_(fused.logp[:, 0].gather(-1, target[:, None])[:, 0])
        view_lp.copy_(fused.logp[:, 1:].gather(-1, target[:, None, None].expand(-1, view_lp.shape[1], 1))[..., 0])
        fused_lp.copy_(fused.fused_logp.gather(-1, target[:, None])[:, 0])
        view_kl.copy_(fused.view_kl)
        weights.copy_(fused.weights)
