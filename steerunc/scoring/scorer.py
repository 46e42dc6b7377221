"""``Scorer``: records in, scored records out. The batcher.

It gathers records into batches of about ``batch_size`` rows, tokenises each
batch with one tokenizer call per kind of text (option lists are encoded once
per distinct list), cuts texts that do not fit, hands each mode's records to its
readout (``readouts.py``: ``plan`` -> one steered pass, ``views.py`` ->
``finish``), and yields the results in input order. Three readouts, one per mode
(docs/method.md):

- ``options``: the option distribution at the last position;
- ``continuation``: every position of a given continuation, full vocabulary;
- ``next_token``: neither: the whole-vocabulary next-token distribution.

Texts longer than the context are truncated from the left (the BOS token is
kept) and the record says how many tokens were dropped in ``truncated``. Work
per record is bounded by the context, not by the input: only the last
``max_tokens * 16`` characters of a text are tokenized (more, four-fold at a
time, while they give too few tokens), and then ``truncated`` counts the tokens
dropped from those characters, a lower bound. An option or a continuation
longer than that cannot fit and is refused unread.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping

import torch

from steerunc import __version__
from steerunc.errors import InputError, VectorsError
from steerunc.records import ErrorRecord, Record, ScoredRecord, id_of, record_from_json
from steerunc.scoring.fusion import FusionConfig
from steerunc.scoring.model import LoadedModel
from steerunc.scoring.prompting import chat_text, has_chat_template
from steerunc.scoring.readouts import Item, OptionsReadout, Plan, Readout, ReadoutContext
from steerunc.scoring.readouts_vocab import ContinuationReadout, NextTokenReadout
from steerunc.scoring.vectors import SteeringVectors
from steerunc.scoring.vectors_default import default_vectors
from steerunc.scoring.views import Unembedding, collate, steered_hidden

__all__ = ["ScoreConfig", "Scorer"]

log = logging.getLogger(__name__)

Result = ScoredRecord | ErrorRecord
Input = Record | str | Mapping[str, Any] | ErrorRecord

#: characters read per token of context before tokenizing (no tokenizer needs that many for a
#: token on real text); and the tokens beyond the context that make a cut tail safe to use
_CHARS_PER_TOKEN = 16
_CUT_MARGIN = 64
#: distinct option lists whose encodings are kept
_OPTION_CACHE = 4096


@dataclass(frozen=True)
class ScoreConfig:
    """How to steer and fuse. ``coeff`` is relative to the typical residual norm at
    the layer: 1.0 adds a vector as long as an average residual vector."""

    coeff: float = 0.1  # chosen on dev data: docs/results.md, "Sweep"
    layer: int | None = None  # None: the vectors' layer (default set: the model's default_layer)
    center: bool | None = None  # steer with the vectors minus their mean; None: when K >= 2 (SteeringVectors.centered)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    batch_size: int = 8  # rows per forward pass (before the K+1 fan-out)
    start: int | None = None  # first steered position; None: 1 if a BOS token is prepended, else 0
    max_tokens: int | None = None  # None: the model's context length
    chunk_positions: int = 16  # positions per chunk of full-vocabulary work (fewer if a chunk
    # would hold more than 2**23 view logits: 4 positions for K = 6 and Gemma's vocabulary)
    top_tokens: int = 5  # tokens listed in ``probs`` when scoring over the vocabulary
    chat: bool = False  # read texts through the chat template (a record's "chat" field overrides)


def vectors_digest(vectors: SteeringVectors) -> str:
    """A short sha256 of the vectors' float32 values, names and layer: which vectors scored."""
    digest = hashlib.sha256(vectors.vectors.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(json.dumps({"names": list(vectors.names), "layer": vectors.layer}).encode("utf-8"))
    return digest.hexdigest()[:16]


class Scorer:
    """Score records with a model read plainly and under K steering vectors.

    >>> from steerunc import load_model, Scorer
    >>> scorer = Scorer(load_model("tiny-random", device="cpu"))
    >>> out = scorer.score_text("Is this comment offensive? Answer:", options=["Yes", "No"])
    >>> sorted(out.scores) == sorted(["msp", "entropy", "mutual_info", "mean_kl", "flip_rate", "fused_entropy"])
    True
    >>> scorer.score([{"id": 1, "text": "Answer:", "options": ["Yes", "No"]}])[0].id
    1
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
        self._provenance = {
            "steerunc": __version__,
            "model": model.model_id,
            "model_fingerprint": model.fingerprint,
            "vectors": vectors_digest(vectors),
            "layer": self.layer,
            "perspectives": list(self.names),
            "coeff": float(config.coeff),
            "center": bool(self.centred),
            "tau": float(config.fusion.tau),
            "alpha": float(config.fusion.alpha),
            "fusion": config.fusion.method,
            "chat": bool(config.chat),  # the run's; a record's own provenance says how it was read
        }
        context = ReadoutContext(
            names=self.names, unembed=self.unembed, fusion=config.fusion, device=model.device,
            tokenizer=model.tokenizer, top_tokens=config.top_tokens, chunk_positions=config.chunk_positions,
            provenance=self._provenance,
        )
        #: one readout per mode, in the order a mixed batch runs them
        self.readouts: dict[str, Readout] = {
            r.mode: r for r in (OptionsReadout(context), ContinuationReadout(context), NextTokenReadout(context))
        }
        self._warned_chat = False
        self._options: dict[tuple[tuple[str, ...], str], list[list[int]] | InputError] = {}

    def score_df(self, df: Any, text: str = "text", **kwargs: Any) -> Any:
        """Score a pandas DataFrame: :func:`steerunc.integrations.frames.score_df` with this scorer."""
        from steerunc.integrations.frames import score_df

        return score_df(self, df, text, **kwargs)

    @property
    def provenance(self) -> dict[str, Any]:
        """The settings every scored record carries in ``provenance`` (a copy)."""
        return dict(self._provenance, perspectives=list(self.names))

    # ------------------------------------------------------------------ public
    def score(self, records: Iterable[Input], options: list[str] | None = None) -> list[Result]:
        """Score records: ``Record``s, dicts (read like a JSONL input line) or plain strings
        (``options`` for all of them, and the default for dicts without their own)."""
        return list(self.score_iter(records, options))

    def score_text(
        self, text: str, options: list[str] | None = None, continuation: str | None = None
    ) -> ScoredRecord:
        """Score one string; raise :class:`InputError` instead of returning an error record."""
        (result,) = self.score_iter([Record(text=text, options=options, continuation=continuation)])
        if isinstance(result, ErrorRecord):
            raise InputError(result.error)
        return result

    def score_iter(self, records: Iterable[Input], options: list[str] | None = None) -> Iterator[Result]:
        """Yield one result per item, in order; bad records become ``ErrorRecord``s.

        ``ErrorRecord`` items (lines that failed to parse upstream) pass through in place.
        """
        pending: list[Record | ErrorRecord] = []
        rows = 0
        for item in records:
            record = self._as_record(item, options)
            pending.append(record)
            if isinstance(record, Record):
                rows += self._rows_of(record)
            if rows >= self.config.batch_size:
                yield from self._run(pending)
                pending, rows = [], 0
        if pending:
            yield from self._run(pending)

    # --------------------------------------------------------------- preparing
    @staticmethod
    def _as_record(item: Input, options: list[str] | None) -> Record | ErrorRecord:
        if isinstance(item, (Record, ErrorRecord)):
            return item
        if isinstance(item, str):
            return Record(text=item, options=options)
        if isinstance(item, Mapping):
            data = dict(item)
            try:
                return record_from_json(data, line=None, default_options=options)
            except InputError as exc:
                try:
                    rid = id_of(data)
                except InputError:
                    rid = None
                return ErrorRecord(None, exc.message, rid)
        raise TypeError(f"cannot score a {type(item).__name__}: give Records, dicts or strings")

    def _rows_of(self, record: Record) -> int:
        """Rows the record will take in the forward pass (one per option if an option has several tokens)."""
        if record.mode != "options":
            return 1
        encoded = self._option_ids(record)
        if isinstance(encoded, InputError):
            return 0
        return 1 if all(len(ids) == 1 for ids in encoded) else len(encoded)

    def _encode_many(self, texts: list[str], special: bool) -> list[list[int] | InputError]:
        """Token ids of each text, from one tokenizer call (one per text only if that call fails,
        to tell which text the tokenizer cannot read)."""
        if not texts:
            return []
        tokenizer = self.model.tokenizer
        try:
            return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
        except Exception:  # noqa: BLE001  (a tokenizer raises many kinds on text it cannot take)
            pass
        out: list[list[int] | InputError] = []
        for text in texts:
            try:
                out.append(list(tokenizer(text, add_special_tokens=special)["input_ids"]))
            except Exception as exc:  # noqa: BLE001
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                out.append(InputError(f"the tokenizer cannot read this text: {first}"))
        return out

    def _encode_bounded(
        self, texts: list[str], special: bool, keep_end: bool
    ) -> list[tuple[list[int], bool] | InputError]:
        """Tokens of each text, read from at most about the context's worth of characters.

        Reads the last (``keep_end``) or first ``max_tokens * 16`` characters, four
        times more while they give no more tokens than the context plus a margin.
        Returns, per text, the tokens and whether characters were left unread, which
        happens only when those read already hold more tokens than fit. One tokenizer
        call per round."""
        results: list[tuple[list[int], bool] | InputError | None] = [None] * len(texts)
        todo = list(range(len(texts)))
        window = self.max_tokens * _CHARS_PER_TOKEN
        while todo:
            whole = [i for i in todo if len(texts[i]) <= window]
            for i, ids in zip(whole, self._encode_many([texts[i] for i in whole], special)):
                results[i] = ids if isinstance(ids, InputError) else (ids, False)
            cut = [i for i in todo if len(texts[i]) > window]
            parts = [texts[i][-window:] if keep_end else texts[i][:window] for i in cut]
            todo = []
            for i, ids in zip(cut, self._encode_many(parts, special)):
                if isinstance(ids, InputError):
                    results[i] = ids
                elif len(ids) > self.max_tokens + _CUT_MARGIN:
                    results[i] = (ids, True)
                else:
                    todo.append(i)
            window *= 4
        return results  # type: ignore[return-value]

    def _parts(self, texts: list[str], what: str) -> list[list[int] | InputError]:
        """Tokens of options or continuations, which must fit whole."""
        out: list[list[int] | InputError] = []
        for result in self._encode_bounded(texts, special=False, keep_end=False):
            if isinstance(result, InputError):
                out.append(result)
            elif result[1]:
                out.append(InputError(f"too long: {what} alone has more than {self.max_tokens} tokens, the limit"))
            else:
                out.append(result[0])
        return out

    def _option_ids(self, record: Record) -> list[list[int]] | InputError:
        """Each option's tokens after the record's text (a leading space unless the text ends
        in whitespace), encoded once per distinct option list."""
        sep = "" if record.text[-1:].isspace() else " "
        key = (tuple(record.options or ()), sep)
        if key not in self._options:
            encoded = self._parts([sep + option for option in key[0]], "an option")
            error = next((e for e in encoded if isinstance(e, InputError)), None)
            if error is None and any(not ids for ids in encoded):
                error = InputError("an option has no tokens")
            if len(self._options) >= _OPTION_CACHE:
                self._options.clear()
            self._options[key] = error if error is not None else [ids for ids in encoded if isinstance(ids, list)]
        return self._options[key]

    def _prepare(self, records: list[Record]) -> list[Item | ErrorRecord]:
        """Tokenise a batch: one call for the texts, one for the continuations; cut to fit.

        A chat record's text is first put into the chat template, which writes the special
        tokens itself, so it is tokenized without adding them again."""
        chat = [self._chat(r) for r in records]
        records = [r for r, _ in chat]
        texts: list[tuple[list[int], bool] | InputError] = [e or ([], False) for _, e in chat]
        for special in (True, False):
            idx = [i for i, (r, e) in enumerate(chat) if e is None and bool(r.chat) != special]
            if not idx:
                continue
            for i, enc in zip(idx, self._encode_bounded([records[i].text for i in idx], special=special, keep_end=True)):
                texts[i] = enc
        continued = [i for i, r in enumerate(records) if r.mode == "continuation"]
        targets = dict(zip(continued, self._parts([records[i].continuation or "" for i in continued], "the continuation")))
        out: list[Item | ErrorRecord] = []
        for i, record in enumerate(records):
            try:
                out.append(self._fit(record, texts[i], targets.get(i)))
            except InputError as exc:
                out.append(ErrorRecord(record.line, exc.message, record.id))
        return out

    def _chat(self, record: Record) -> tuple[Record, InputError | None]:
        """The record with its text in the chat template when it (or the run) asks for it.

        A model without a chat template (a base model such as Gemma 3 270M as converted,
        or tiny test models) reads such a record as plain text, and the run says so once."""
        if not (record.chat if record.chat is not None else self.config.chat):
            return replace(record, chat=False), None
        if not has_chat_template(self.model.tokenizer):
            if not self._warned_chat:
                self._warned_chat = True
                log.warning("%s has no chat template: records that ask for one are read as plain text",
                            self.model.model_id)
            return replace(record, chat=False), None
        try:
            return replace(record, text=chat_text(self.model.tokenizer, record.text), chat=True), None
        except InputError as exc:
            return record, exc

    def _fit(
        self, record: Record, text: tuple[list[int], bool] | InputError, targets: list[int] | InputError | None
    ) -> Item:
        if isinstance(text, InputError):
            raise text
        text_ids = text[0]
        n_special = 1 if self.model.prepends_bos and text_ids and text_ids[0] == self.model.bos_id else 0
        if len(text_ids) <= n_special:
            raise InputError("'text' has no tokens")
        item = Item(record, text_ids)
        if record.mode == "options":
            option_ids = self._option_ids(record)
            if isinstance(option_ids, InputError):
                raise option_ids
            item.option_ids = option_ids
        elif record.mode == "continuation":
            if isinstance(targets, InputError):
                raise targets
            if not targets:
                raise InputError("'continuation' has no tokens")
            item.targets = targets
        extra = self.readouts[record.mode].appended(item)
        drop = len(text_ids) + extra - self.max_tokens
        if drop > 0:
            if len(text_ids) - n_special - drop < 1:
                raise InputError(
                    f"too long: {len(text_ids) + extra} tokens, the limit is {self.max_tokens} and the "
                    "options or continuation alone do not fit"
                )
            item.text_ids = text_ids[:n_special] + text_ids[n_special + drop :]
            item.truncated = drop
        return item

    # ----------------------------------------------------------------- running
    @torch.inference_mode()
    def _run(self, pending: list[Record | ErrorRecord]) -> Iterator[Result]:
        records = [r for r in pending if isinstance(r, Record)]
        prepared = iter(self._prepare(records))
        results: list[Result | None] = []
        groups: dict[str, list[tuple[int, Item]]] = {}
        for position, entry in enumerate(pending):
            ready = entry if isinstance(entry, ErrorRecord) else next(prepared)
            if isinstance(ready, Item):
                groups.setdefault(ready.record.mode, []).append((position, ready))
                results.append(None)
            else:
                results.append(ready)
        for mode, readout in self.readouts.items():
            group = groups.get(mode)
            if not group:
                continue
            plan = readout.plan([item for _, item in group])
            hidden = self._hidden(plan)
            finished = readout.finish(plan, hidden)
            del hidden
            if len(finished) != len(group):
                raise RuntimeError(f"the {mode} readout returned {len(finished)} records for {len(group)} items")
            for (position, _), scored in zip(group, finished):
                results[position] = scored
        yield from (result for result in results if result is not None)  # every position is filled

    def _hidden(self, plan: Plan) -> torch.Tensor:
        """The final-normed hidden states of every view at the plan's read positions,
        ``[rows, K+1, n_read, d_model]`` (one steered pass: ``views.steered_hidden``)."""
        batch = collate(plan.rows, plan.read, self.model.pad_id, self.model.device)
        return steered_hidden(self.model, batch, self.steer, self.layer, self.start)

    def _chunk_positions(self) -> int:
        """Positions per chunk of continuation work (see ``ContinuationReadout.chunk_positions``)."""
        readout = self.readouts["continuation"]
        assert isinstance(readout, ContinuationReadout)
        return readout.chunk_positions()
