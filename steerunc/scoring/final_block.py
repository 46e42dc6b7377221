"""The fanned-out final block, computed at the read positions only.

When steering happens before the final block, that block runs on B·(K+1) rows,
and it is most of what steering costs. Nothing in it but its attention mixes
positions, and only the read positions of its output are used, so
:class:`FinalBlockAtReadRows` (installed by ``views.steered_hidden`` as the
forwards of the final block and of its attention) runs it in two passes:

1. at every position up to its attention, which computes its output at the
   read rows only: queries at the read rows against keys and values of every
   position. It keeps that output and stops the pass;
2. on the read rows only (``[rows, n_read, d]``), the attention handing back
   what pass 1 kept: norms, MLP, residual adds and the final norm cost n_read
   positions instead of all.

The attention at the read rows has two implementations:

- *lean* (:func:`_lean_attention`): the model's own projections, norms and
  rotary embedding, with the query path (projection, norm, rotation) at the
  read rows only. It assumes the common layout of transformers' attention
  modules (``q_proj``/``k_proj``/``v_proj``/``o_proj``, optional per-head
  ``q_norm``/``k_norm``, the module's ``apply_rotary_pos_emb``), so it is
  **checked once per module** against the other implementation on the first
  batch it sees and used only if they agree;
- *dispatched*: the wrapped transformers module's own forward, told through
  ``config._attn_implementation`` to score with :func:`rows_attention`
  (``AttentionInterface``). A module that does not dispatch that way scores
  every row against every other: slower, not wrong.
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any, Callable

import torch
from torch import Tensor
from transformers import AttentionInterface

__all__ = ["FinalBlockAtReadRows", "final_attention", "rows_attention"]

log = logging.getLogger("steerunc")

#: the name :func:`rows_attention` is registered under in transformers' ``AttentionInterface``
ROWS = "steerunc_read_rows"
#: per transformers attention module: whether the lean attention agreed with the dispatched one
_LEAN_OK: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


class _ConfigView:
    """A model config seen through, with another attention implementation named."""

    def __init__(self, config: Any, implementation: str) -> None:
        self.__dict__["_config"] = config
        self.__dict__["_attn_implementation"] = implementation

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_config"], name)


def _mask_rows(mask: Tensor, index: Tensor, views: int, kv: int) -> Tensor:
    """Query rows ``index`` [rows, n] of a 4-D mask, for ``rows`` fanned-out rows: the mask may be
    the fanned-out one, the batch's own (fanned-out row r is batch row r // views; it is never
    copied ``views`` times) or one broadcast over rows. Returns [rows, mask heads, n, kv]."""
    rows = index.shape[0]
    mask = mask[..., :kv]
    if mask.shape[0] == rows:
        source = torch.arange(rows, device=index.device)
    elif mask.shape[0] == 1:
        source = torch.zeros(rows, dtype=torch.long, device=index.device)
    elif mask.shape[0] * views == rows:
        source = torch.arange(rows, device=index.device) // views
    else:
        raise ValueError(f"an attention mask for {mask.shape[0]} rows given to {rows} rows")
    return mask[source[:, None], :, index].permute(0, 2, 1, 3)


def _attend(
    q: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, index: Tensor, views: int,
    scaling: float, softcap: float | None, sliding_window: int | None,
) -> Tensor:
    """Query rows ``q`` [rows, heads, n, D] (at positions ``index``) against every key:
    transformers' eager attention, row by row. Returns [rows, n, heads, D]."""
    rows, heads, n, head_dim = q.shape
    kv_heads, kv = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query heads per key-value head (grouped-query attention)
    scores = torch.matmul(q.reshape(rows, kv_heads, groups * n, head_dim), key.transpose(2, 3)) * scaling
    scores = scores.view(rows, heads, n, kv)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None and mask.dim() == 4:
        picked = _mask_rows(mask, index, views, kv)
        if picked.dtype == torch.bool:
            scores = scores.masked_fill(~picked, torch.finfo(scores.dtype).min)
        else:
            scores = scores + picked.to(scores.dtype)
    else:  # no 4-D mask given: causal (and the sliding window), padding from a 2-D mask
        keys = torch.arange(kv, device=q.device)[None, None, :]
        allowed = keys <= index[:, :, None]
        if sliding_window:
            allowed = allowed & (keys > index[:, :, None] - sliding_window)
        if mask is not None:
            allowed = allowed & mask[:, None, :kv].bool()
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.matmul(weights.view(rows, kv_heads, groups * n, kv), value)
    return out.view(rows, heads, n, head_dim).transpose(1, 2)


def rows_attention(
    module: Any, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, softcap: float | None = None, sliding_window: int | None = None, **_: Any,
) -> tuple[Tensor, None]:
    """Attention with queries at the read positions only, as an ``AttentionInterface`` function.

    Keys and values cover every position; the query rows are those of
    ``module._steerunc_read`` ([rows, n_read]); the output is zero elsewhere."""
    index: Tensor = module.__dict__["_steerunc_read"]
    views: int = module.__dict__.get("_steerunc_views", 1)
    rows, heads, width, head_dim = query.shape
    n = index.shape[1]
    q = query.gather(2, index[:, None, :, None].expand(rows, heads, n, head_dim))
    scale = scaling if scaling is not None else head_dim**-0.5
    out = _attend(q, key, value, attention_mask, index, views, scale, softcap, sliding_window)
    full = query.new_zeros((rows, width, heads, head_dim))
    full.scatter_(1, index[:, :, None, None].expand(rows, n, heads, head_dim), out)
    return full, None


AttentionInterface.register(ROWS, rows_attention)


def _rows(x: Tensor, index: Tensor) -> Tensor:
    """``x`` [rows or 1, pos, d] at ``index`` [rows, n] -> [rows, n, d]."""
    x = x.expand(index.shape[0], -1, -1)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def _rope(inner: Any) -> Callable[..., tuple[Tensor, Tensor]] | None:
    return getattr(sys.modules.get(type(inner).__module__), "apply_rotary_pos_emb", None)


def _lean_ready(inner: Any) -> bool:
    """Whether ``inner`` has what the lean attention uses."""
    parts = ("q_proj", "k_proj", "v_proj", "o_proj")
    return all(isinstance(getattr(inner, p, None), torch.nn.Module) for p in parts) and (
        isinstance(getattr(inner, "head_dim", None), int) and _rope(inner) is not None
    )


def _lean_attention(inner: Any, hidden: Tensor, index: Tensor, views: int, kwargs: dict[str, Any]) -> Tensor:
    """The attention output at the read rows, [rows, n, d]: queries projected, normed and
    rotated at the read rows only; keys and values at every position."""
    rows, width, _ = hidden.shape
    head_dim = inner.head_dim
    q = inner.q_proj(_rows(hidden, index)).view(rows, index.shape[1], -1, head_dim).transpose(1, 2)
    k = inner.k_proj(hidden).view(rows, width, -1, head_dim).transpose(1, 2)
    v = inner.v_proj(hidden).view(rows, width, -1, head_dim).transpose(1, 2)
    if getattr(inner, "q_norm", None) is not None:
        q = inner.q_norm(q)
    if getattr(inner, "k_norm", None) is not None:
        k = inner.k_norm(k)
    rope = _rope(inner)
    if rope is None:
        raise RuntimeError(f"{type(inner).__name__} has no apply_rotary_pos_emb beside it")
    cos, sin = kwargs["position_embeddings"]
    q = rope(q, q, _rows(cos, index), _rows(sin, index))[0]
    k = rope(k, k, cos, sin)[1]
    scaling = getattr(inner, "scaling", None)
    out = _attend(
        q, k, v, kwargs.get("attention_mask"), index, views, scaling if scaling is not None else head_dim**-0.5,
        getattr(inner, "attn_logit_softcapping", None), getattr(inner, "sliding_window", None),
    )
    return inner.o_proj(out.reshape(rows, index.shape[1], -1))


class _Captured(Exception):
    """Stops the final block's first pass once its attention has the read rows."""


class FinalBlockAtReadRows:
    """The forwards of the fanned-out final block and of its attention (see the module doc)."""

    def __init__(self, block: Any, inner: Any, positions: Tensor, views: int) -> None:
        self.block, self.inner, self.views = block, inner, views
        self.index = positions.repeat_interleave(views, dim=0)  # [rows * views, n_read]
        self.kept: tuple[Any, ...] | None = None
        self.shrunk = False

    def _dispatched(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        state = self.inner.__dict__
        config = state["config"]
        state["config"], state["_steerunc_read"], state["_steerunc_views"] = _ConfigView(config, ROWS), self.index, self.views
        mask = kwargs.get("attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 4 and mask.shape[0] * self.views == self.index.shape[0] > mask.shape[0]:
            kwargs = dict(kwargs, attention_mask=mask.repeat_interleave(self.views, dim=0))  # a module scoring all rows
        try:
            out = self.inner(*args, **kwargs)
        finally:
            state["config"] = config
            del state["_steerunc_read"], state["_steerunc_views"]
        parts = tuple(out) if isinstance(out, tuple) else (out,)
        return (_rows(parts[0], self.index),) + parts[1:]

    def attention(self, *args: Any, **kwargs: Any) -> Any:
        """Forward of the block's attention component."""
        if self.kept is not None:  # pass 2
            return self.kept if len(self.kept) > 1 else self.kept[0]
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if not isinstance(hidden, Tensor) or hidden.shape[0] != self.index.shape[0]:
            raise RuntimeError("the final block was given rows the fan-out did not make")
        lean_ok = _LEAN_OK.get(self.inner)
        if lean_ok is None:  # first use: check the lean attention against the dispatched one
            dispatched = self._dispatched(args, kwargs)
            lean = self._lean_if_agrees(hidden, kwargs, dispatched[0])
            _LEAN_OK[self.inner] = lean is not None
            # the lean result when it agrees, so that every batch, this one too, takes the same path
            self.kept = dispatched if lean is None else (lean, None)
        elif lean_ok and "position_embeddings" in kwargs:
            self.kept = (_lean_attention(self.inner, hidden, self.index, self.views, kwargs), None)
        else:
            self.kept = self._dispatched(args, kwargs)
        raise _Captured

    def _lean_if_agrees(self, hidden: Tensor, kwargs: dict[str, Any], reference: Tensor) -> Tensor | None:
        """The lean attention's output, if it gives what the dispatched one gave (``reference``)."""
        if not _lean_ready(self.inner) or "position_embeddings" not in kwargs:
            return None
        try:
            lean = _lean_attention(self.inner, hidden, self.index, self.views, kwargs)
        except Exception as exc:  # noqa: BLE001  (another layout: fall back, never fail)
            log.debug("lean final-block attention unavailable: %s", exc)
            return None
        if lean.shape != reference.shape:
            return None
        tolerance = 1e-4 if reference.dtype in (torch.float32, torch.float64) else 3e-2
        if bool(((lean - reference).abs().max() <= tolerance * (1.0 + reference.abs().max())).item()):
            return lean
        log.debug("lean final-block attention disagrees for %s: using the dispatched one", type(self.inner).__name__)
        return None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Forward of the block."""
        run = type(self.block).forward
        try:
            return run(self.block, *args, **kwargs)
        except _Captured:
            pass
        self.shrunk = True
        if args:
            args = (_rows(args[0], self.index),) + args[1:]
        else:
            kwargs = dict(kwargs, hidden_states=_rows(kwargs["hidden_states"], self.index))
        return run(self.block, *args, **kwargs)


def final_attention(block: Any) -> Any | None:
    """The transformers attention module inside the final block's bridge component, when it
    names its config (such modules dispatch through ``AttentionInterface``)."""
    component = getattr(block, "attn", None)
    inner = getattr(component, "original_component", None)
    if inner is None or "config" not in getattr(inner, "__dict__", {}):
        return None
    return inner
