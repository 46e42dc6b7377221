"""``Scorer``: records in, scored records out (views -> divergence -> fusion).

Three modes, chosen per record (docs/method.md):

- ``options``: the option distribution at the last position. Single-token
  options read only their rows of the output head; when any option spans
  several tokens, each option is appended to the text in its own row and
  scored by its full log-probability.
- ``continuation``: every position of the given continuation, full vocabulary,
  in chunks of positions so memory does not grow with length × vocabulary.
- ``next_token``: no options and no continuation: the whole-vocabulary
  next-token distribution at the last position.

Texts longer than the context are truncated from the left (the BOS token is
kept) and the record says how many tokens were dropped in ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch import Tensor

from steerunc.errors import InputError, VectorsError
from steerunc.fusion import SCORE_NAMES, FusionConfig, Fused, fuse
from steerunc.model import LoadedModel
from steerunc.records import ErrorRecord, Record, ScoredRecord
from steerunc.vectors import SteeringVectors, default_vectors
from steerunc.views import Unembedding, collate, steered_hidden

__all__ = ["ScoreConfig", "Scorer"]

Result = ScoredRecord | ErrorRecord


@dataclass(frozen=True)
class ScoreConfig:
    """How to steer and fuse. ``coeff`` is relative to the typical residual norm at
    the layer: 1.0 adds a vector as long as an average residual vector."""

    coeff: float = 0.25
    layer: int | None = None  # None: the vectors' layer (default set: about 3/4 of depth)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    batch_size: int = 8  # rows per forward pass (before the K+1 fan-out)
    start: int | None = None  # first steered position; None: 1 if a BOS token is prepended, else 0
    max_tokens: int | None = None  # None: the model's context length
    chunk_positions: int = 16  # positions per chunk of full-vocabulary work
    top_tokens: int = 5  # tokens listed in ``probs`` when scoring over the vocabulary


@dataclass
class _Prepared:
    record: Record
    rows: list[list[int]]
    read: list[list[int]]
    option_ids: list[list[int]] | None = None
    targets: list[int] | None = None  # continuation tokens
    truncated: int = 0

    @property
    def single_token_options(self) -> bool:
        return self.option_ids is not None and len(self.rows) == 1


class Scorer:
    """Score records with a model read plainly and under K steering vectors.

    >>> from steerunc import load_model, Scorer
    >>> scorer = Scorer(load_model("tiny-random", device="cpu"))
    >>> out = scorer.score_text("Is this comment offensive? Answer:", options=["Yes", "No"])
    >>> sorted(out.scores) == sorted(["msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"])
    True
    """

    def __init__(
        self, model: LoadedModel, vectors: SteeringVectors | None = None, config: ScoreConfig = ScoreConfig()
    ) -> None:
        if vectors is None:
            vectors = default_vectors(model, config.layer)
        vectors.check_model(model)
        if config.layer is not None and config.layer != vectors.layer:
            raise VectorsError(
                f"--layer {config.layer} asked for, but the vectors were built at layer {vectors.layer}"
            )
        if config.batch_size < 1 or config.chunk_positions < 1:
            raise ValueError("batch_size and chunk_positions must be >= 1")
        self.model = model
        self.vectors = vectors
        self.config = config
        self.names = list(vectors.names)
        self.layer = vectors.layer
        self.steer = vectors.scaled(config.coeff).to(model.device, model.dtype)
        self.unembed = Unembedding(model)
        self.start = config.start if config.start is not None else (1 if model.bos_id is not None else 0)
        self.max_tokens = min(config.max_tokens or model.n_ctx, model.n_ctx)

    # ------------------------------------------------------------------ public
    def score(self, records: Iterable[Record | str | ErrorRecord], options: list[str] | None = None) -> list[Result]:
        """Score records (or plain strings, with ``options`` for all of them)."""
        return list(self.score_iter(records, options))

    def score_text(
        self, text: str, options: list[str] | None = None, continuation: str | None = None
    ) -> ScoredRecord:
        """Score one string; raise :class:`InputError` instead of returning an error record."""
        (result,) = self.score_iter([Record(text=text, options=options, continuation=continuation)])
        if isinstance(result, ErrorRecord):
            raise InputError(result.error)
        return result

    def score_iter(
        self, records: Iterable[Record | str | ErrorRecord], options: list[str] | None = None
    ) -> Iterator[Result]:
        """Yield one result per item, in order; bad records become ``ErrorRecord``s.

        ``ErrorRecord`` items (lines that failed to parse upstream) pass through in place.
        """
        pending: list[_Prepared | ErrorRecord] = []
        rows = 0
        for record in records:
            if isinstance(record, ErrorRecord):
                pending.append(record)
                continue
            if isinstance(record, str):
                record = Record(text=record, options=options)
            try:
                prepared: _Prepared | ErrorRecord = self._prepare(record)
                rows += len(prepared.rows)  # type: ignore[union-attr]
            except InputError as exc:
                prepared = ErrorRecord(record.line, exc.message, record.id)
            pending.append(prepared)
            if rows >= self.config.batch_size:
                yield from self._run(pending)
                pending, rows = [], 0
        if pending:
            yield from self._run(pending)

    # --------------------------------------------------------------- preparing
    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _prepare(self, record: Record) -> _Prepared:
        text_ids = self._encode(record.text, special=True)
        n_special = 1 if text_ids and text_ids[0] == self.model.bos_id else 0
        if len(text_ids) <= n_special:
            raise InputError("'text' has no tokens")
        if record.mode == "options":
            sep = "" if record.text[-1].isspace() else " "
            option_ids = [self._encode(sep + option, special=False) for option in record.options or []]
            if any(not ids for ids in option_ids):
                raise InputError("an option has no tokens")
            single = all(len(ids) == 1 for ids in option_ids)
            extra = 0 if single else max(len(ids) for ids in option_ids)
        elif record.mode == "continuation":
            option_ids, single = None, False
            targets = self._encode(record.continuation or "", special=False)
            if not targets:
                raise InputError("'continuation' has no tokens")
            extra = len(targets)
        else:
            option_ids, single, extra = None, True, 0
        drop = len(text_ids) + extra - self.max_tokens
        if drop > 0:
            if len(text_ids) - n_special - drop < 1:
                raise InputError(
                    f"too long: {len(text_ids) + extra} tokens, the limit is {self.max_tokens} and the "
                    "options or continuation alone do not fit"
                )
            text_ids = text_ids[:n_special] + text_ids[n_special + drop :]
        last = len(text_ids) - 1
        drop = max(drop, 0)
        if record.mode == "continuation":
            return _Prepared(
                record, [text_ids + targets], [list(range(last, last + len(targets)))], targets=targets, truncated=drop
            )
        if single:
            return _Prepared(record, [text_ids], [[last]], option_ids, truncated=drop)
        assert option_ids is not None
        rows = [text_ids + ids for ids in option_ids]
        read = [list(range(last, last + len(ids))) for ids in option_ids]
        return _Prepared(record, rows, read, option_ids, truncated=drop)

    # ----------------------------------------------------------------- running
    @torch.inference_mode()
    def _run(self, pending: list[_Prepared | ErrorRecord]) -> Iterator[Result]:
        prepared = [p for p in pending if isinstance(p, _Prepared)]
        hidden = None
        if prepared:
            rows = [row for p in prepared for row in p.rows]
            read = [pos for p in prepared for pos in p.read]
            batch = collate(rows, read, self.model.pad_id, self.model.device)
            hidden = steered_hidden(self.model, batch, self.steer, self.layer, self.start)
        offset = 0
        for item in pending:
            if isinstance(item, ErrorRecord):
                yield item
                continue
            assert hidden is not None
            n = len(item.rows)
            yield self._finish(item, hidden[offset : offset + n])
            offset += n

    def _finish(self, item: _Prepared, hidden: Tensor) -> ScoredRecord:
        """``hidden``: [rows, K+1, n_read, d] for this record."""
        if item.record.mode == "continuation":
            return self._finish_continuation(item, hidden[0, :, : len(item.targets or [])])
        if item.record.mode == "next_token":
            z = self.unembed(hidden[0, :, 0])  # [K+1, vocab]
            labels = None
        elif item.single_token_options:
            ids = torch.tensor([ids[0] for ids in item.option_ids or []], device=hidden.device)
            z = self.unembed(hidden[0, :, 0], ids)  # [K+1, C]; softmax over options ignores the shift
            labels = item.record.options
        else:
            columns = []
            for row, ids in enumerate(item.option_ids or []):
                logp = torch.log_softmax(self.unembed(hidden[row, :, : len(ids)]), dim=-1)  # [K+1, n, V]
                target = torch.tensor(ids, device=logp.device)
                columns.append(logp.gather(-1, target.expand(logp.shape[0], -1).unsqueeze(-1)).sum((-1, -2)))
            z = torch.stack(columns, dim=-1)  # [K+1, C] full option log-probabilities
            labels = item.record.options
        return self._build(item, fuse(z, self.config.fusion), z, labels)

    def _dist(self, logp: Tensor, labels: list[str] | None) -> tuple[str, dict[str, float]]:
        """(argmax label, probabilities); over a vocabulary only the top tokens are listed."""
        probs = logp.exp()
        if labels is not None:
            values = probs.tolist()
            return labels[int(probs.argmax())], {label: v for label, v in zip(labels, values)}
        top = probs.topk(self.config.top_tokens)
        # token strings, not decoded text: decoding can map different tokens to one string
        words = self.model.tokenizer.convert_ids_to_tokens(top.indices.tolist())
        return words[0], dict(zip(words, top.values.tolist()))

    def _build(self, item: _Prepared, fused: Fused, z: Tensor, labels: list[str] | None) -> ScoredRecord:
        record = item.record
        prediction, probs = self._dist(fused.fused_logp, labels)
        base_prediction, base_probs = self._dist(fused.logp[0], labels)
        views = {}
        for k, name in enumerate(self.names):
            view_pred, view_probs = self._dist(fused.logp[k + 1], labels)
            views[name] = {"prediction": view_pred, "probs": view_probs, "kl": float(fused.view_kl[k])}
        logits = base_logits = None
        if labels is not None:
            logits = dict(zip(labels, fused.fused_logits.tolist()))
            base_logits = dict(zip(labels, z[0].tolist()))
        return ScoredRecord(
            id=record.id,
            mode=record.mode,
            prediction=prediction,
            probs=probs,
            base_prediction=base_prediction,
            base_probs=base_probs,
            scores={name: float(fused.scores[name]) for name in SCORE_NAMES},
            views=views,
            logits=logits,
            base_logits=base_logits,
            weights=dict(zip(self.names, fused.weights.tolist())),
            label=record.label,
            human_probs=record.human_probs,
            truncated=item.truncated,
            line=record.line,
        )

    def _finish_continuation(self, item: _Prepared, hidden: Tensor) -> ScoredRecord:
        """``hidden``: [K+1, n_tokens, d]. Full-vocabulary work in chunks of positions."""
        targets = item.targets or []
        per_token: dict[str, list[Tensor]] = {name: [] for name in SCORE_NAMES}
        base_lp, fused_lp, view_lp, view_kl, weights = [], [], [], [], []
        step = self.config.chunk_positions
        for lo in range(0, len(targets), step):
            z = self.unembed(hidden[:, lo : lo + step]).transpose(0, 1)  # [chunk, K+1, V]
            fused = fuse(z, self.config.fusion)
            target = torch.tensor(targets[lo : lo + step], device=z.device)
            for name in SCORE_NAMES:
                per_token[name].append(fused.scores[name])
            base_lp.append(fused.logp[:, 0].gather(-1, target[:, None])[:, 0])
            view_lp.append(fused.logp[:, 1:].gather(-1, target[:, None, None].expand(-1, len(self.names), 1))[..., 0])
            fused_lp.append(fused.fused_logp.gather(-1, target[:, None])[:, 0])
            view_kl.append(fused.view_kl)
            weights.append(fused.weights)
        scores = {name: torch.cat(values) for name, values in per_token.items()}
        base_t, fused_t = torch.cat(base_lp), torch.cat(fused_lp)
        kl_t, lp_t, w_t = torch.cat(view_kl), torch.cat(view_lp), torch.cat(weights)
        decode = self.model.tokenizer.decode
        tokens = [
            {
                "token": decode([tok]),
                "base_logprob": float(base_t[i]),
                "fused_logprob": float(fused_t[i]),
                "scores": {name: float(scores[name][i]) for name in SCORE_NAMES},
            }
            for i, tok in enumerate(targets)
        ]
        aggregates = {
            "mean": {name: float(v.mean()) for name, v in scores.items()},
            "max": {name: float(v.max()) for name, v in scores.items()},
            "sum": {name: float(v.sum()) for name, v in scores.items()},
        }
        views = {
            name: {"kl": float(kl_t[:, k].mean()), "logprob": float(lp_t[:, k].sum())}
            for k, name in enumerate(self.names)
        }
        record = item.record
        return ScoredRecord(
            id=record.id,
            mode="continuation",
            prediction=None,
            probs=None,
            base_prediction=None,
            base_probs=None,
            scores=dict(aggregates["mean"]),
            views=views,
            weights=dict(zip(self.names, w_t.mean(0).tolist())),
            tokens=tokens,
            score_aggregates=aggregates,
            truncated=item.truncated,
            line=record.line,
            extra={"base_logprob": float(base_t.sum()), "fused_logprob": float(fused_t.sum())},
        )
