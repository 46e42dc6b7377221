"""Base + K steered views in one forward pass: the only module with forward hooks.

The input batch (B rows) runs once through blocks 0..L. At ``blocks.{L}.hook_out``
each row is fanned out to K+1 rows (view 0 plain, view k with ``steer[k-1]``
added from position ``start`` on), and blocks L+1.. run on B·(K+1) rows. The
prefix is computed once, not K+1 times. A pre-hook on every later block widens
the batch-leading tensors it is given (attention mask, rotary tables) to match.

The language-model head is never run here: :func:`steered_hidden` returns the
final-normed hidden states at the requested positions only, and
:class:`Unembedding` turns them into logits for just the rows (tokens) needed.
Nothing after the final block mixes positions, so that block's position-wise
parts (MLP, the norms after its attention, the attention output projection) and
the final norm run at the requested positions only. When the final block runs
fanned out (steering before it), all of it but the keys and values runs at the
requested positions only (``final_block.py``): the costly every-row-against-
every-row attention of the K+1 views is skipped. Both need the MLP to be
position-wise, as dense and token-routed MoE MLPs are.

Padding is on the right: with a causal mask, pad tokens after a sequence never
influence its real positions, and positions stay 0..n-1, so a record scores the
same alone or in a batch of mixed lengths.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from steerunc.scoring.final_block import FinalBlockAtReadRows, final_attention
from steerunc.scoring.model import LoadedModel

__all__ = ["Batch", "collate", "steered_hidden", "sequential_view_logits", "Unembedding", "hook_name"]


def hook_name(layer: int) -> str:
    """The TransformerLens 4 name of the residual stream after block ``layer``."""
    return f"blocks.{layer}.hook_out"


@dataclass
class Batch:
    """Right-padded token rows and the positions to read in each."""

    input_ids: Tensor  # [rows, pos] long
    attention_mask: Tensor  # [rows, pos] long, 1 = real token
    positions: Tensor  # [rows, n_read] long, indices into pos
    n_read: list[int]  # how many entries of ``positions`` are real, per row


def collate(rows: list[list[int]], read: list[list[int]], pad_id: int, device: torch.device) -> Batch:
    """Right-pad token rows; pad the lists of read positions by repeating the last."""
    if not rows or any(not r for r in rows):
        raise ValueError("collate needs non-empty rows")
    width = max(len(r) for r in rows)
    n_read = [len(p) for p in read]
    depth = max(n_read)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), depth), dtype=torch.long)
    for i, (row, pos) in enumerate(zip(rows, read)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        positions[i] = torch.tensor(pos + [pos[-1]] * (depth - len(pos)))
    return Batch(ids.to(device), mask.to(device), positions.to(device), n_read)


def _widen(value: Any, rows: int, views: int) -> Any:
    """Repeat every batch-leading tensor (first dim == rows, ≥ 2 dims) ``views`` times."""
    if isinstance(value, Tensor):
        if value.dim() >= 2 and value.shape[0] == rows:
            return value.repeat_interleave(views, dim=0)
        return value
    if isinstance(value, tuple):
        return tuple(_widen(v, rows, views) for v in value)
    if isinstance(value, list):
        return [_widen(v, rows, views) for v in value]
    if isinstance(value, dict):
        return {k: _widen(v, rows, views) for k, v in value.items()}
    return value


def _fan_out(steer: Tensor, start: int) -> Callable[..., Tensor]:
    views = steer.shape[0] + 1

    def hook(resid: Tensor, hook: Any) -> Tensor:
        rows, width, d_model = resid.shape
        out = resid.repeat_interleave(views, dim=0).view(rows, views, width, d_model)
        out[:, 1:, start:, :] += steer.to(resid.device, resid.dtype)[None, :, None, :]
        return out.view(rows * views, width, d_model)

    return hook


class _ReadPositionsOnly:
    """Run a position-wise module (an MLP, an output projection) at the read positions only.

    Registered on the final block: nothing after it mixes positions, so its
    position-wise parts are needed only where hidden states are read. Other
    positions get zeros, which the block adds to its residual and which are
    never read. The read positions of each row are ``positions`` (batch rows),
    repeated per view once the batch has been fanned out.
    """

    def __init__(self, positions: Tensor, views: int) -> None:
        self.positions = positions  # [rows, n_read]
        self.views = views
        self.index: Tensor | None = None
        self.shape: torch.Size | None = None

    def _index_for(self, x: Any) -> Tensor | None:
        rows, n_read = self.positions.shape
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[1] <= n_read:
            return None
        if x.shape[0] == rows * self.views:
            return self.positions.repeat_interleave(self.views, dim=0)
        return self.positions if x.shape[0] == rows else None

    def pre(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        self.index = self._index_for(args[0]) if args else None
        if self.index is None:
            return None
        x = args[0]
        self.shape = x.shape
        picked = x.gather(1, self.index[:, :, None].expand(-1, -1, x.shape[2]))
        return (picked,) + args[1:], kwargs

    def post(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        index, shape = self.index, self.shape
        self.index = self.shape = None
        if index is None or shape is None:
            return None
        out = output[0] if isinstance(output, tuple) else output
        full = out.new_zeros((shape[0], shape[1], out.shape[2]))
        full.scatter_(1, index[:, :, None].expand(-1, -1, out.shape[2]), out)
        return (full,) + tuple(output[1:]) if isinstance(output, tuple) else full


#: the final block's position-wise parts after its attention, by TransformerLens name
_POSITION_WISE = ("ln1_post", "ln2", "mlp", "ln2_post")


def _read_only_modules(bridge: Any, block: Any) -> list[Any]:
    """The modules after the final block's attention (its output projection, norms, MLP, and the
    final norm): position-wise, so they can run at the read positions only. The input norm
    stays whole: the attention's keys and values need every position."""
    found = [getattr(block, name, None) for name in _POSITION_WISE]
    found += [getattr(getattr(block, "attn", None), "o", None), getattr(bridge, "ln_final", None)]
    return [module for module in found if isinstance(module, torch.nn.Module)]


@torch.no_grad()
def steered_hidden(model: LoadedModel, batch: Batch, steer: Tensor, layer: int, start: int = 0) -> Tensor:
    """Final-normed hidden states of every view at the batch's read positions.

    Args:
        steer: ``[K, d_model]`` vectors already scaled to the size to add.
        layer: steer at ``blocks.{layer}.hook_out``.
        start: first position that is steered.

    Returns:
        ``[rows, K+1, n_read, d_model]``; view 0 is the plain model.
    """
    if not 0 <= layer < model.n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {model.n_layers} blocks")
    if steer.dim() != 2 or steer.shape[1] != model.d_model:
        raise ValueError(f"steer must be [K, {model.d_model}], got {list(steer.shape)}")
    rows = batch.input_ids.shape[0]
    views = steer.shape[0] + 1
    bridge = model.bridge

    def widen_inputs(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # args[0] (hidden states) is already widened by the fan-out hook
        return (args[:1] + _widen(args[1:], rows, views), _widen(kwargs, rows, views))

    def widen_but_the_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # the final block at its read rows takes the batch's own mask (it reads a few rows of it)
        mask = kwargs.get("attention_mask")
        args, kwargs = widen_inputs(module, args, {k: v for k, v in kwargs.items() if k != "attention_mask"})
        return args, kwargs if mask is None else dict(kwargs, attention_mask=mask)

    with ExitStack() as stack:
        stack.enter_context(bridge.hooks(fwd_hooks=[(hook_name(layer), _fan_out(steer, start))]))
        blocks = list(bridge.blocks)
        inner = final_attention(blocks[-1]) if layer < model.n_layers - 1 else None
        for block in blocks[layer + 1 :]:
            widen = widen_but_the_mask if inner is not None and block is blocks[-1] else widen_inputs
            handle = block.register_forward_pre_hook(widen, with_kwargs=True)
            stack.callback(handle.remove)
        for module in _read_only_modules(bridge, blocks[-1]):
            sparse = _ReadPositionsOnly(batch.positions, views)
            for handle in (
                module.register_forward_pre_hook(sparse.pre, with_kwargs=True),
                module.register_forward_hook(sparse.post, with_kwargs=True),
            ):
                stack.callback(handle.remove)
        final = None
        if inner is not None:  # the final block runs fanned out: at the read positions only
            final = FinalBlockAtReadRows(blocks[-1], inner, batch.positions, views)
            # (a bridge component passes attribute writes on to the wrapped module: set __dict__)
            for module, forward in ((blocks[-1], final.forward), (blocks[-1].attn, final.attention)):
                module.__dict__["forward"] = forward
                stack.callback(module.__dict__.pop, "forward", None)
        decoder = model.hf_model.get_decoder()
        out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    hidden = hidden.view(rows, views, hidden.shape[1], hidden.shape[2])
    if final is not None and final.shrunk:  # already at the read positions, in order
        return hidden
    index = batch.positions[:, None, :, None].expand(rows, views, batch.positions.shape[1], hidden.shape[3])
    return hidden.gather(2, index)


class Unembedding:
    """The model's output head, applied to chosen hidden states and vocabulary rows, in float32.

    Whatever the model's dtype, the head multiplies in float32: in bfloat16 a
    logit lands on a grid of 0.125 near 20, and dividing by tau = 0.4 magnifies
    that into errors of 15-30 % in ``mutual_info`` and ``mean_kl``. Option rows
    are converted per call; the full vocabulary (next-token and continuation
    modes) uses a float32 copy of the head made on first use (vocabulary ×
    d_model × 4 bytes: 0.7 GB for Gemma 3 270M, none when the model is float32).
    """

    def __init__(self, model: LoadedModel) -> None:
        head = model.hf_model.get_output_embeddings()
        linear = getattr(head, "original_component", None) or head
        self.weight: Tensor = linear.weight  # [vocab, d_model], in the model's dtype
        bias: Tensor | None = getattr(linear, "bias", None)
        self.bias: Tensor | None = None if bias is None else bias.float()
        self.softcap: float | None = getattr(model.hf_model.config, "final_logit_softcapping", None)
        self._weight32: Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def _full_weight(self) -> Tensor:
        if self.weight.dtype == torch.float32:
            return self.weight
        if self._weight32 is None:
            self._weight32 = self.weight.float()
        return self._weight32

    @torch.no_grad()
    def __call__(self, hidden: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """Logits ``[..., n_tokens]`` (all tokens when ``token_ids`` is None), computed in float32.

        ``token_ids`` ``[n_tokens]``: the same tokens for every hidden state; ``[B, n_tokens]``:
        tokens per item, for ``hidden`` ``[B, ..., d_model]``."""
        if token_ids is not None and token_ids.dim() == 2:
            weight = self.weight[token_ids].float()  # [B, n_tokens, d_model]
            rows = hidden.float().reshape(hidden.shape[0], -1, hidden.shape[-1])
            logits = (rows @ weight.transpose(1, 2)).view(*hidden.shape[:-1], token_ids.shape[1])
            if self.bias is not None:
                logits = logits + self.bias[token_ids].view(
                    token_ids.shape[0], *([1] * (hidden.dim() - 2)), token_ids.shape[1])
            return self._capped(logits)
        weight = self._full_weight() if token_ids is None else self.weight[token_ids].float()
        logits = hidden.float() @ weight.T
        if self.bias is not None:
            logits = logits + (self.bias if token_ids is None else self.bias[token_ids])
        return self._capped(logits)

    def _capped(self, logits: Tensor) -> Tensor:
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@torch.no_grad()
def sequential_view_logits(
    model: LoadedModel, input_ids: list[int], steer: Tensor, layer: int, start: int = 0
) -> Tensor:
    """The straightforward reference: K+1 separate batch-of-one passes, full logits.

    This is what the seed work did; tests compare :func:`steered_hidden` with it
    and the speed benchmark times it. Returns ``[K+1, pos, vocab]``.
    """
    ids = torch.tensor([input_ids], device=model.device)
    out = []
    for k in range(steer.shape[0] + 1):
        hooks = []
        if k > 0:
            vector = steer[k - 1]

            def add(resid: Tensor, hook: Any, vector: Tensor = vector) -> Tensor:
                resid = resid.clone()
                resid[:, start:, :] += vector.to(resid.device, resid.dtype)
                return resid

            hooks.append((hook_name(layer), add))
        with model.bridge.hooks(fwd_hooks=hooks):
            out.append(model.hf_model(input_ids=ids, use_cache=False).logits[0].float())
    return torch.stack(out)
