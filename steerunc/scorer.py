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
kept) and the record says how many tokens were dropped in ``truncated``. Work
per record is bounded by the context, not by the input: only the last
``max_tokens * 16`` characters of a text are tokenized (more, four-fold at a
time, while they give too few tokens), and then ``truncated`` counts the tokens
dropped from those characters, a lower bound. An option or a continuation
longer than that cannot fit and is refused unread.
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

#: most view-logit values one chunk of per-token work holds ([positions, K+1, vocab]):
#: 2**23 float32 values are 32 MiB, and fusing them needs about seven such tensors at once
_CHUNK_VALUES = 1 << 23
#: characters read per token of context before tokenizing (no tokenizer needs that many for a
#: token on real text); and the tokens beyond the context that make a cut tail safe to use
_CHARS_PER_TOKEN = 16
_CUT_MARGIN = 64


@dataclass(frozen=True)
class ScoreConfig:
    """How to steer and fuse. ``coeff`` is relative to the typical residual norm at
    the layer: 1.0 adds a vector as long as an average residual vector."""

    coeff: float = 0.1  # chosen on dev data: docs/results.md, "Sweep"
    layer: int | None = None  # None: the vectors' layer (default set: the second-to-last block)
    center: bool | None = None  # steer with the vectors minus their mean; None: when K >= 2 (SteeringVectors.centered)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    batch_size: int = 8  # rows per forward pass (before the K+1 fan-out)
    start: int | None = None  # first steered position; None: 1 if a BOS token is prepended, else 0
    max_tokens: int | None = None  # None: the model's context length
    chunk_positions: int = 16  # positions per chunk of full-vocabulary work (fewer if a chunk
    # would hold more than 2**23 view logits: 4 positions for K = 6 and Gemma's vocabulary)
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
        self.centred = config.center if config.center is not None else len(vectors.names) >= 2
        applied = vectors.centered() if self.centred else vectors
        self.steer = applied.scaled(config.coeff).to(model.device, model.dtype)
        self.unembed = Unembedding(model)
        self.start = config.start if config.start is not None else (1 if model.prepends_bos else 0)
        self.max_tokens = min(config.max_tokens or model.n_ctx, model.n_ctx)
        self._indices: dict[tuple[int, ...], Tensor] = {}

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
        try:
            return list(self.model.tokenizer(text, add_special_tokens=special)["input_ids"])
        except Exception as exc:  # noqa: BLE001  (a tokenizer raises many kinds on text it cannot take)
            raise InputError(f"the tokenizer cannot read this text: {str(exc).splitlines()[0][:200]}") from exc

    def _encode_bounded(self, text: str, special: bool, keep_end: bool) -> tuple[list[int], bool]:
        """Tokens of ``text`` read from at most about the context's worth of characters.

        Reads the last (``keep_end``) or first ``max_tokens * 16`` characters,
        four times more while they give no more tokens than the context plus a
        margin. Returns the tokens and whether characters were left unread, which
        happens only when those read already hold more tokens than fit."""
        window = self.max_tokens * _CHARS_PER_TOKEN
        while len(text) > window:
            ids = self._encode(text[-window:] if keep_end else text[:window], special)
            if len(ids) > self.max_tokens + _CUT_MARGIN:
                return ids, True
            window *= 4
        return self._encode(text, special), False

    def _encode_part(self, text: str, what: str) -> list[int]:
        """Tokens of an option or continuation, which must fit whole."""
        ids, cut = self._encode_bounded(text, special=False, keep_end=False)
        if cut:
            raise InputError(f"too long: {what} alone has more than {self.max_tokens} tokens, the limit")
        return ids

    def _prepare(self, record: Record) -> _Prepared:
        text_ids, _ = self._encode_bounded(record.text, special=True, keep_end=True)
        n_special = 1 if self.model.prepends_bos and text_ids and text_ids[0] == self.model.bos_id else 0
        if len(text_ids) <= n_special:
            raise InputError("'text' has no tokens")
        if record.mode == "options":
            sep = "" if record.text[-1].isspace() else " "
            option_ids = [self._encode_part(sep + option, "an option") for option in record.options or []]
            if any(not ids for ids in option_ids):
                raise InputError("an option has no tokens")
            single = all(len(ids) == 1 for ids in option_ids)
            extra = 0 if single else max(len(ids) for ids in option_ids)
        elif record.mode == "continuation":
            option_ids, single = None, False
            targets = self._encode_part(record.continuation or "", "the continuation")
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
        done: dict[int, ScoredRecord] = {}
        if prepared:
            rows = [row for p in prepared for row in p.rows]
            read = [pos for p in prepared for pos in p.read]
            batch = collate(rows, read, self.model.pad_id, self.model.device)
            hidden = steered_hidden(self.model, batch, self.steer, self.layer, self.start)
            done = self._finish_batch(prepared, hidden)
        for item in pending:
            yield item if isinstance(item, ErrorRecord) else done[id(item)]

    def _finish_batch(self, prepared: list[_Prepared], hidden: Tensor) -> dict[int, ScoredRecord]:
        """``hidden``: [rows, K+1, n_read, d] for the whole batch; results keyed by ``id(item)``."""
        done: dict[int, ScoredRecord] = {}
        options: list[tuple[_Prepared, Tensor]] = []
        offset = 0
        for item in prepared:
            part = hidden[offset : offset + len(item.rows)]
            offset += len(item.rows)
            if item.record.mode == "continuation":
                done[id(item)] = self._finish_continuation(item, part[0, :, : len(item.targets or [])])
            elif item.record.mode == "next_token":
                done[id(item)] = self._finish_vocabulary(item, self.unembed(part[0, :, 0]))  # [K+1, vocab]
            else:
                options.append((item, self._option_logits(item, part)))
        # the option logits of the whole batch leave the device in one copy; fusing a
        # [K+1, C] table is cheaper on the host than launching kernels for it
        for (item, _), z in zip(options, _to_host([z for _, z in options])):
            done[id(item)] = self._build(item, fuse(z, self.config.fusion), z, item.record.options)
        return done

    def _index(self, ids: list[int]) -> Tensor:
        """Token ids as a tensor on the model's device, made once per distinct list."""
        key = tuple(ids)
        if key not in self._indices:
            if len(self._indices) >= 4096:
                self._indices.clear()
            self._indices[key] = torch.tensor(ids, dtype=torch.long, device=self.model.device)
        return self._indices[key]

    def _option_logits(self, item: _Prepared, hidden: Tensor) -> Tensor:
        """``[K+1, C]`` option scores: logits of single-token options (their rows of the
        head only; a softmax over options ignores the shift), else full log-probabilities."""
        option_ids = item.option_ids or []
        if item.single_token_options:
            return self.unembed(hidden[0, :, 0], self._index([ids[0] for ids in option_ids]))
        columns = []
        for row, ids in enumerate(option_ids):
            z = self.unembed(hidden[row, :, : len(ids)])  # [K+1, n, V]
            target = self._index(ids).expand(z.shape[0], -1).unsqueeze(-1)
            columns.append((z.gather(-1, target)[..., 0] - z.logsumexp(-1)).sum(-1))
        return torch.stack(columns, dim=-1)  # [K+1, C] full option log-probabilities

    def _finish_vocabulary(self, item: _Prepared, z: Tensor) -> ScoredRecord:
        """Next-token mode: fuse on the device, bring back the top tokens and the scores."""
        fused = fuse(z, self.config.fusion)
        top = torch.cat([fused.fused_logp[None], fused.logp]).topk(self.config.top_tokens, dim=-1)
        small = [top.values, top.indices, fused.weights, fused.view_kl, fused.view_js]
        values, indices, weights, view_kl, view_js, *scores = _to_host(small + [fused.scores[n] for n in SCORE_NAMES])
        host = Fused(values[1:], values[0], values[0], weights, view_kl, view_js, dict(zip(SCORE_NAMES, scores)))
        return self._build(item, host, values, None, indices)

    def _dist(self, logp: Tensor, labels: list[str] | None, ids: Tensor | None = None) -> tuple[str, dict[str, float]]:
        """(argmax label, probabilities); over a vocabulary only the top tokens are listed.

        ``ids``: the vocabulary ids of the entries of ``logp`` when it holds top tokens only."""
        probs = logp.exp()
        if labels is not None:
            values = probs.tolist()
            return labels[int(probs.argmax())], {label: v for label, v in zip(labels, values)}
        top = probs.topk(min(self.config.top_tokens, probs.shape[-1]))
        token_ids = top.indices if ids is None else ids[top.indices]
        # token strings, not decoded text: decoding can map different tokens to one string
        words = self.model.tokenizer.convert_ids_to_tokens(token_ids.tolist())
        return words[0], dict(zip(words, top.values.tolist()))

    def _build(
        self, item: _Prepared, fused: Fused, z: Tensor, labels: list[str] | None, ids: Tensor | None = None
    ) -> ScoredRecord:
        """Host tensors in, a record out. ``ids`` (vocabulary mode): row r of ``ids`` names
        the tokens of ``fused.fused_logp`` (r = 0) and ``fused.logp[r - 1]``."""
        record = item.record

        def pick(row: int) -> Tensor | None:
            return None if ids is None else ids[row]

        prediction, probs = self._dist(fused.fused_logp, labels, pick(0))
        base_prediction, base_probs = self._dist(fused.logp[0], labels, pick(1))
        views = {}
        for k, name in enumerate(self.names):
            view_pred, view_probs = self._dist(fused.logp[k + 1], labels, pick(k + 2))
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

    def _chunk_positions(self) -> int:
        """Positions per chunk: ``chunk_positions``, fewer when one chunk's view logits
        (positions × (K+1) × vocabulary) would exceed ``_CHUNK_VALUES``."""
        per_position = (len(self.names) + 1) * self.unembed.vocab_size
        return max(1, min(self.config.chunk_positions, _CHUNK_VALUES // per_position))

    def _finish_continuation(self, item: _Prepared, hidden: Tensor) -> ScoredRecord:
        """``hidden``: [K+1, n_tokens, d]. Full-vocabulary work in chunks of positions,
        written into buffers allocated once, so peak memory is one chunk's, whatever the length."""
        targets = item.targets or []
        n, k = len(targets), len(self.names)
        device = hidden.device
        scores = torch.empty((len(SCORE_NAMES), n), device=device)
        base_t, fused_t = torch.empty(n, device=device), torch.empty(n, device=device)
        lp_t, kl_t, w_t = (torch.empty((n, k), device=device) for _ in range(3))
        target_t = torch.tensor(targets, dtype=torch.long, device=device)
        step = self._chunk_positions()
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            self._continuation_chunk(
                hidden[:, lo:hi], target_t[lo:hi], scores[:, lo:hi], base_t[lo:hi], fused_t[lo:hi],
                lp_t[lo:hi], kl_t[lo:hi], w_t[lo:hi],
            )
        scores, base_t, fused_t, lp_t, kl_t, w_t = _to_host([scores, base_t, fused_t, lp_t, kl_t, w_t])
        per_name = dict(zip(SCORE_NAMES, scores))
        columns = [values.tolist() for values in scores]
        base_list, fused_list = base_t.tolist(), fused_t.tolist()
        decode = self.model.tokenizer.decode
        tokens = [
            {
                "token": decode([tok]),
                "base_logprob": base_list[i],
                "fused_logprob": fused_list[i],
                "scores": {name: columns[j][i] for j, name in enumerate(SCORE_NAMES)},
            }
            for i, tok in enumerate(targets)
        ]
        aggregates = {
            "mean": {name: float(v.mean()) for name, v in per_name.items()},
            "max": {name: float(v.max()) for name, v in per_name.items()},
            "sum": {name: float(v.sum()) for name, v in per_name.items()},
        }
        views = {
            name: {"kl": float(kl_t[:, j].mean()), "logprob": float(lp_t[:, j].sum())}
            for j, name in enumerate(self.names)
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

    def _continuation_chunk(
        self, hidden: Tensor, target: Tensor, scores: Tensor, base: Tensor, fused_lp: Tensor,
        view_lp: Tensor, view_kl: Tensor, weights: Tensor,
    ) -> None:
        """One chunk: ``hidden`` [K+1, chunk, d]; results written into the given slices.
        A function of its own so that the chunk's vocabulary-sized tensors die on return."""
        z = self.unembed(hidden.transpose(0, 1))  # [chunk, K+1, V]
        fused = fuse(z, self.config.fusion)
        for j, name in enumerate(SCORE_NAMES):
            scores[j] = fused.scores[name]
        base.copy_(fused.logp[:, 0].gather(-1, target[:, None])[:, 0])
        view_lp.copy_(fused.logp[:, 1:].gather(-1, target[:, None, None].expand(-1, view_lp.shape[1], 1))[..., 0])
        fused_lp.copy_(fused.fused_logp.gather(-1, target[:, None])[:, 0])
        view_kl.copy_(fused.view_kl)
        weights.copy_(fused.weights)


def _to_host(tensors: list[Tensor]) -> list[Tensor]:
    """Small result tensors on the host, in one device-to-host copy (as they are on CPU)."""
    if all(t.device.type == "cpu" for t in tensors):
        return list(tensors)
    return _packed_to_host(tensors)


def _packed_to_host(tensors: list[Tensor]) -> list[Tensor]:
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).cpu()  # exact for float32 and ids
    return [part.to(t.dtype).view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
