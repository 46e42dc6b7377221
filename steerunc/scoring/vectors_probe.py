"""The model side of ``steerunc vectors check``: option probabilities of probe records,
plain and steered by +v_k and -v_k (:mod:`steerunc.scoring.vectors_check` judges them).

Vectors are scaled and, with K >= 2, centred exactly as
:class:`~steerunc.scoring.scorer.Scorer` does by default; probabilities are at the
model's own temperature; options of several tokens are scored by their full
log-probability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from steerunc.errors import InputError
from steerunc.records import Record
from steerunc.scoring.model import LoadedModel
from steerunc.scoring.prompting import chat_text, has_chat_template
from steerunc.scoring.vectors import SteeringVectors
from steerunc.scoring.views import Unembedding, collate, steered_hidden

__all__ = ["ProbeRun", "probe_probabilities"]

#: characters of a text read per token of context (as the scorer does: no tokenizer needs more)
_CHARS_PER_TOKEN = 16


@dataclass
class ProbeRun:
    """Option probabilities (temperature 1) of every probe record, plain and steered by ±v_k."""

    names: list[str]
    records: list[Record]
    base: list[np.ndarray]  # per record [C_r]
    plus: list[np.ndarray]  # per record [K, C_r]: steered by +v_k
    minus: list[np.ndarray]  # per record [K, C_r]: steered by -v_k
    layer: int
    coeff: float
    centered: bool


@dataclass
class _Prepared:
    rows: list[list[int]]
    read: list[list[int]]
    option_ids: list[list[int]]

    @property
    def single(self) -> bool:
        return len(self.rows) == 1


def _encode(model: LoadedModel, text: str, special: bool) -> list[int]:
    try:
        return list(model.tokenizer(text, add_special_tokens=special)["input_ids"])
    except Exception as exc:  # noqa: BLE001  (tokenizers raise many kinds)
        raise InputError(f"the tokenizer cannot read this text: {str(exc).splitlines()[0][:200]}") from exc


def _prepare(model: LoadedModel, record: Record, max_tokens: int) -> _Prepared:
    """Token rows as the scorer builds them: a record that asks for the chat template is read
    through it (when the model has one); options joined with a space unless the text ends in
    whitespace; one row when every option is one token, else one row per option; a text too
    long is cut from the left, keeping BOS."""
    text, special = record.text, True
    if record.chat and has_chat_template(model.tokenizer):
        text, special = chat_text(model.tokenizer, text), False  # the template writes the special tokens
    window = max_tokens * _CHARS_PER_TOKEN
    text_ids = _encode(model, text[-window:] if len(text) > window else text, special)
    n_special = 1 if model.prepends_bos and text_ids and text_ids[0] == model.bos_id else 0
    if len(text_ids) <= n_special:
        raise InputError("'text' has no tokens", line=record.line)
    sep = "" if text[-1].isspace() else " "
    option_ids = [_encode(model, sep + option, False) for option in record.options or []]
    if any(not ids for ids in option_ids):
        raise InputError("an option has no tokens", line=record.line)
    single = all(len(ids) == 1 for ids in option_ids)
    extra = 0 if single else max(len(ids) for ids in option_ids)
    drop = len(text_ids) + extra - max_tokens
    if drop > 0:
        if len(text_ids) - n_special - drop < 1:
            raise InputError(f"too long: the options alone do not fit in {max_tokens} tokens", line=record.line)
        text_ids = text_ids[:n_special] + text_ids[n_special + drop :]
    last = len(text_ids) - 1
    if single:
        return _Prepared([text_ids], [[last]], option_ids)
    rows = [text_ids + ids for ids in option_ids]
    read = [list(range(last, last + len(ids))) for ids in option_ids]
    return _Prepared(rows, read, option_ids)


def _option_logp(unembed: Unembedding, item: _Prepared, hidden: Tensor, device: torch.device) -> Tensor:
    """``[views, C]`` option scores: single-token option logits, else full option log-probabilities."""
    if item.single:
        first = torch.tensor([ids[0] for ids in item.option_ids], device=device)
        return unembed(hidden[0, :, 0], first)
    columns = []
    for row, ids in enumerate(item.option_ids):
        z = unembed(hidden[row, :, : len(ids)])  # [views, n, vocab]
        target = torch.tensor(ids, device=device).expand(z.shape[0], -1).unsqueeze(-1)
        columns.append((z.gather(-1, target)[..., 0] - z.logsumexp(-1)).sum(-1))
    return torch.stack(columns, dim=-1)


@torch.inference_mode()
def probe_probabilities(
    model: LoadedModel,
    vectors: SteeringVectors,
    records: Sequence[Record],
    coeff: float = 0.1,
    center: bool | None = None,
    batch_size: int = 8,
    start: int | None = None,
    progress: Any = None,
) -> ProbeRun:
    """Run the probe: view 0 plain, views 1..K steered by +v_k, views K+1..2K by -v_k, in one pass per batch.

    The vectors are applied as the scorer applies them by default: centred when
    ``center`` is None and K >= 2, scaled to ``coeff`` × the residual norm,
    steered from position 1 when the tokenizer prepends BOS. ``progress(done)``
    is called with the number of records done after each batch.
    """
    vectors.check_model(model)
    if not math.isfinite(coeff):
        raise ValueError(f"coeff must be finite, got {coeff}")
    centred = center if center is not None else len(vectors.names) >= 2
    applied = vectors.centered() if centred else vectors
    scaled = applied.scaled(coeff)
    steer = torch.cat([scaled, -scaled]).to(model.device, model.dtype)
    start = start if start is not None else (1 if model.prepends_bos else 0)
    unembed = Unembedding(model)
    k = len(vectors.names)
    prepared = []
    for record in records:
        try:
            prepared.append(_prepare(model, record, model.n_ctx))
        except InputError as exc:
            raise InputError(exc.message, line=record.line) from exc
    base: list[np.ndarray] = []
    plus: list[np.ndarray] = []
    minus: list[np.ndarray] = []
    i = 0
    while i < len(prepared):
        group: list[_Prepared] = []
        rows = 0
        while i < len(prepared) and (not group or rows + len(prepared[i].rows) <= batch_size):
            group.append(prepared[i])
            rows += len(prepared[i].rows)
            i += 1
        batch = collate(
            [r for p in group for r in p.rows], [r for p in group for r in p.read], model.pad_id, model.device
        )
        hidden = steered_hidden(model, batch, steer, vectors.layer, start)  # [rows, 2K+1, n_read, d]
        offset = 0
        for item in group:
            logp = _option_logp(unembed, item, hidden[offset : offset + len(item.rows)], model.device)
            offset += len(item.rows)
            probs = logp.float().softmax(-1).double().cpu().numpy()  # [2K+1, C]
            base.append(probs[0])
            plus.append(probs[1 : k + 1])
            minus.append(probs[k + 1 :])
        if progress is not None:
            progress(i)
    return ProbeRun(list(vectors.names), list(records), base, plus, minus, vectors.layer, coeff, centred)


