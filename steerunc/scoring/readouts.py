"""Readouts: what is read from the K+1 views of a batch, one class per mode.

A readout works on a whole batch in two steps:

- ``plan(items)``: tokenised records -> a :class:`Plan`: the token rows to run and,
  per row, the positions whose hidden states it needs;
- ``finish(plan, hidden)``: the final-normed hidden states of every view at those
  positions, ``[rows, K+1, n_read, d_model]`` (``views.steered_hidden``) -> one
  :class:`~steerunc.records.ScoredRecord` per item, in the plan's order.

The output head, the fusion and every score run once per batch on ``[B, K+1, C]``
tensors (records with fewer options than ``C`` are padded and masked), the results
leave the device in one copy per batch, and the output records are built from host
lists. :class:`OptionsReadout` is here; the vocabulary-wide readouts (next token,
continuation) are in ``readouts_vocab.py``. A new mode is one new :class:`Readout`
subclass and a line in ``Scorer``'s choice of readout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from steerunc.scoring.fusion import SCORE_NAMES, FusionConfig, fuse
from steerunc.records import Record, ScoredRecord
from steerunc.scoring.views import Unembedding

__all__ = ["Item", "Plan", "ReadoutContext", "Readout", "OptionsReadout", "chunk_size", "to_host"]

#: most view-logit values one chunk of vocabulary-wide work holds (e.g. [positions, K+1, vocab]):
#: 2**23 float32 values are 32 MiB, and fusing them needs about seven such tensors at once
CHUNK_VALUES = 1 << 23


@dataclass
class Item:
    """A record with its tokens, cut to fit the context (``Scorer`` makes these)."""

    record: Record
    text_ids: list[int]
    truncated: int = 0
    option_ids: list[list[int]] | None = None  # options mode: each option's tokens
    targets: list[int] | None = None  # continuation mode: the continuation's tokens

    @property
    def last(self) -> int:
        """The text's last position: the one that predicts what follows the text."""
        return len(self.text_ids) - 1


@dataclass
class Plan:
    """What to run for a batch of items: token rows and, per row, the positions to read.

    Readouts keep their own bookkeeping (index tensors made once per batch) in ``data``."""

    items: list[Item]
    rows: list[list[int]]
    read: list[list[int]]
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadoutContext:
    """What every readout needs from the scorer, fixed for its lifetime."""

    names: list[str]  # the K perspectives, in order
    unembed: Unembedding
    fusion: FusionConfig
    device: torch.device
    tokenizer: Any
    top_tokens: int = 5
    chunk_positions: int = 16
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_views(self) -> int:
        return len(self.names) + 1


class Readout(ABC):
    """One scoring mode: ``plan`` a batch, then ``finish`` it from the views' hidden states."""

    mode: str = ""

    def __init__(self, context: ReadoutContext) -> None:
        self.context = context

    def appended(self, item: Item) -> int:
        """Tokens the readout appends after the text (they must fit in the context with it)."""
        return 0

    @abstractmethod
    def plan(self, items: list[Item]) -> Plan:
        """Rows to run and positions to read for ``items`` (at least one)."""

    @abstractmethod
    def finish(self, plan: Plan, hidden: Tensor) -> list[ScoredRecord]:
        """``hidden``: ``[len(plan.rows), K+1, n_read, d_model]`` -> one record per item."""

    def _record(self, item: Item, **fields: Any) -> ScoredRecord:
        """A scored record carrying the item's own fields and the scorer's provenance."""
        record = item.record
        return ScoredRecord(
            id=record.id, mode=self.mode, label=record.label, human_probs=record.human_probs, group=record.group,
            truncated=item.truncated, line=record.line,
            # how this record was read: its own "chat" field may differ from the run's --chat
            provenance=dict(self.context.provenance, chat=bool(record.chat)), **fields,
        )


def chunk_size(per_unit: int, wanted: int) -> int:
    """Units (positions, rows) per chunk: ``wanted``, fewer when one chunk would hold more than
    ``CHUNK_VALUES`` view logits (``per_unit`` each), at least 1."""
    return max(1, min(wanted, CHUNK_VALUES // max(per_unit, 1)))


def to_host(tensors: list[Tensor]) -> list[Tensor]:
    """Result tensors on the host, in one device-to-host copy (as they are, on CPU)."""
    if all(t.device.type == "cpu" for t in tensors):
        return list(tensors)
    return packed_to_host(tensors)


def packed_to_host(tensors: list[Tensor]) -> list[Tensor]:
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).cpu()  # exact for float32 and ids
    return [part.to(t.dtype).view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def top_view_of(probs: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
    """The view that moves the base prediction's probability most.

    ``probs`` [..., K+1, C] at temperature 1, ``base`` [...] the base prediction's index.
    Returns (the view's index among the K steered views, its signed change
    ``p_k(base) - p_0(base)``); ties go to the first view."""
    at = base[..., None, None].expand(*probs.shape[:-1], 1)
    p = probs.gather(-1, at)[..., 0]  # [..., K+1]
    delta = p[..., 1:] - p[..., :1]
    top = delta.abs().argmax(-1)
    return top, delta.gather(-1, top[..., None])[..., 0]


class OptionsReadout(Readout):
    """Options: the option distribution after the text, per view.

    A record whose options are one token each is one row, read at its last
    position, and only its options' rows of the head are applied. A record with
    a longer option has one row per option (the option appended to the text),
    each scored by its full log-probability ``Σ log p(token)``; those rows need
    the whole vocabulary and run in chunks of rows.
    """

    mode = "options"

    def appended(self, item: Item) -> int:
        ids = item.option_ids or []
        return 0 if all(len(o) == 1 for o in ids) else max(len(o) for o in ids)

    def plan(self, items: list[Item]) -> Plan:
        rows: list[list[int]] = []
        read: list[list[int]] = []
        single: list[tuple[int, int]] = []  # (row, item)
        multi: list[tuple[int, int, int]] = []  # (row, item, option)
        width = max(len(item.option_ids or []) for item in items)
        first_ids = []  # per single-token item: its option ids, padded to ``width``
        targets: list[list[int]] = []
        for i, item in enumerate(items):
            options = item.option_ids or []
            if all(len(o) == 1 for o in options):
                single.append((len(rows), i))
                first_ids.append([o[0] for o in options] + [options[0][0]] * (width - len(options)))
                rows.append(item.text_ids)
                read.append([item.last])
                continue
            for c, option in enumerate(options):
                multi.append((len(rows), i, c))
                targets.append(option)
                rows.append(item.text_ids + option)
                read.append(list(range(item.last, item.last + len(option))))
        device = self.context.device
        mask = torch.tensor([[c < len(item.option_ids or []) for c in range(width)] for item in items])
        data: dict[str, Any] = {"width": width, "mask": mask.to(device)}
        if single:
            data["single"] = torch.tensor(single, dtype=torch.long, device=device).T  # [2, n_single]
            data["single_ids"] = torch.tensor(first_ids, dtype=torch.long, device=device)
        if multi:
            depth = max(len(t) for t in targets)
            data["multi"] = torch.tensor(multi, dtype=torch.long, device=device).T  # [3, n_rows]
            data["targets"] = torch.tensor([t + [t[-1]] * (depth - len(t)) for t in targets], device=device)
            data["target_mask"] = torch.tensor([[j < len(t) for j in range(depth)] for t in targets], device=device)
        return Plan(items, rows, read, data)

    def option_logits(self, plan: Plan, hidden: Tensor) -> Tensor:
        """``[B, K+1, C]`` option scores: the logits of one-token options (a softmax over the
        options ignores their shift), else full log-probabilities; padded entries are 0."""
        data = plan.data
        z = torch.zeros((len(plan.items), hidden.shape[1], data["width"]), device=hidden.device)
        if "single" in data:
            rows, items = data["single"]
            z[items] = self.context.unembed(hidden[rows, :, 0], data["single_ids"])
        if "multi" in data:
            rows, items, options = data["multi"]
            z[items, :, options] = self._full_logprobs(hidden[rows], data["targets"], data["target_mask"])
        return z

    def _full_logprobs(self, hidden: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        """``hidden`` [R, K+1, n_read, d]: each row's Σ log p(token) over its real positions, [R, K+1]."""
        rows, views, depth = targets.shape[0], hidden.shape[1], targets.shape[1]
        out = torch.empty((rows, views), device=hidden.device)
        step = chunk_size(views * depth * self.context.unembed.vocab_size, rows)
        for lo in range(0, rows, step):
            hi = min(lo + step, rows)
            logits = self.context.unembed(hidden[lo:hi, :, :depth])  # [r, K+1, depth, V]
            picked = logits.gather(-1, targets[lo:hi, None, :, None].expand(-1, views, -1, 1))[..., 0]
            logp = (picked - logits.logsumexp(-1)).masked_fill(~mask[lo:hi, None, :], 0.0)
            out[lo:hi] = logp.sum(-1)
            del logits
        return out

    def finish(self, plan: Plan, hidden: Tensor) -> list[ScoredRecord]:
        z = self.option_logits(plan, hidden)
        fused = fuse(z.double(), self.context.fusion, plan.data["mask"])  # small: compared in float64
        probs, view_probs = fused.fused_logp.exp(), fused.logp.exp()
        view_pred = view_probs.argmax(-1)  # [B, K+1]
        top, delta = top_view_of(view_probs, view_pred[:, 0])
        host = to_host([
            probs, view_probs, probs.argmax(-1), view_pred, fused.fused_logits, z[:, 0], fused.view_kl,
            fused.weights, torch.stack([fused.scores[name] for name in SCORE_NAMES]), top, delta,
        ])
        (probs_l, view_probs_l, pred_l, view_pred_l, fused_logits_l, base_logits_l, kl_l, weights_l,
         scores_l, top_l, delta_l) = (t.tolist() for t in host)
        names = self.context.names
        out = []
        for i, item in enumerate(plan.items):
            labels = item.record.options or []
            views = {
                name: {
                    "prediction": labels[view_pred_l[i][k + 1]],
                    "probs": dict(zip(labels, view_probs_l[i][k + 1])),
                    "kl": kl_l[i][k],
                }
                for k, name in enumerate(names)
            }
            out.append(self._record(
                item,
                prediction=labels[pred_l[i]],
                probs=dict(zip(labels, probs_l[i])),
                base_prediction=labels[view_pred_l[i][0]],
                base_probs=dict(zip(labels, view_probs_l[i][0])),
                scores={name: scores_l[j][i] for j, name in enumerate(SCORE_NAMES)},
                views=views,
                logits=dict(zip(labels, fused_logits_l[i])),
                base_logits=dict(zip(labels, base_logits_l[i])),
                weights=dict(zip(names, weights_l[i])),
                top_view={"name": names[top_l[i]], "delta": delta_l[i]},
            ))
        return out
