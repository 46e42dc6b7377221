"""Steering vectors: build from paired texts (:mod:`.pairs`), save/load as safetensors + metadata.

A vector is the mean difference of the residual stream at ``blocks.{L}.hook_out``
between paired texts, read at each text's last token (METHOD.md §1). The file
records the model (id and weight fingerprint), width, layer, hook, position
rule, pair counts and norms, so it cannot be applied to the wrong model. The
typical residual norm at the layer is stored too: ``--coeff`` is relative to it.
The shipped default set, made into vectors for a model: :mod:`.vectors_default`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from steerunc import __version__
from steerunc.errors import VectorsError
from steerunc.scoring.model import LoadedModel
from steerunc.scoring.pairs import Pair, read_expectations, read_pairs  # re-exported: their old home
from steerunc.scoring.prompting import chat_text, has_chat_template

__all__ = ["Pair", "SteeringVectors", "read_pairs", "read_expectations", "build_vectors", "build_vectors_by_layer", "load_vectors"]

log = logging.getLogger("steerunc")

FORMAT = "steerunc-vectors/1"
POSITION_RULE = "last"


@dataclass
class SteeringVectors:
    """K named directions for one model and layer, with their provenance."""

    names: list[str]
    vectors: Tensor  # [K, d_model], float32, raw mean differences
    layer: int
    model_id: str
    fingerprint: str
    resid_norm: float  # mean L2 norm of the residual at the layer (not BOS)
    n_pairs: list[int]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def expectations(self) -> dict[str, str]:
        """The option each perspective should make more likely on its probe, as declared by the
        ``expect`` fields of the file the vectors were built from (``steerunc vectors check``);
        perspectives without one are absent."""
        raw = self.meta.get("expect")
        return dict(json.loads(raw)) if raw else {}

    @property
    def norms(self) -> list[float]:
        return [float(n) for n in self.vectors.norm(dim=1)]

    def scaled(self, coeff: float | list[float]) -> Tensor:
        """Unit directions times ``coeff`` × the typical residual norm: ``[K, d_model]``."""
        coeffs = torch.as_tensor(coeff, dtype=torch.float32, device=self.vectors.device).reshape(-1, 1)
        unit = self.vectors / self.vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return unit * coeffs * self.resid_norm

    def centered(self) -> "SteeringVectors":
        """The vectors minus their mean over the K perspectives (docs/method.md, "Centring").

        Mean-difference vectors of one task often share one dominant direction
        (answer-recipe vectors are mostly "say the harsher label"): steered along
        it, every view moves the same way and the views never disagree with each
        other. Centring keeps what tells the perspectives apart. Needs K >= 2.
        """
        if len(self.names) < 2:
            raise VectorsError("centring needs at least 2 perspectives: one vector minus its mean is zero")
        rows = self.vectors - self.vectors.mean(dim=0, keepdim=True)
        small = [n for n, norm in zip(self.names, rows.norm(dim=1).tolist()) if norm < 1e-6 * self.resid_norm]
        if small:
            raise VectorsError(f"perspective(s) {', '.join(small)} equal the mean of all: nothing left after centring")
        return SteeringVectors(
            names=list(self.names), vectors=rows, layer=self.layer, model_id=self.model_id,
            fingerprint=self.fingerprint, resid_norm=self.resid_norm, n_pairs=list(self.n_pairs),
            meta={**self.meta, "centered": "true"},
        )

    def mean_cosine(self) -> float | None:
        """Mean cosine similarity between distinct vectors (None for K = 1): near 1 means
        the perspectives are one direction, and centring is worth trying."""
        k = len(self.names)
        if k < 2:
            return None
        unit = self.vectors / self.vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = unit @ unit.T
        return float((cos.sum() - cos.diagonal().sum()) / (k * (k - 1)))

    def check_model(self, model: LoadedModel) -> None:
        """Raise :class:`VectorsError` unless these vectors were made for ``model``."""
        if self.d_model != model.d_model or self.fingerprint != model.fingerprint:
            raise VectorsError(
                f"steering vectors were built for model {self.model_id!r} (width {self.d_model}, "
                f"fingerprint {self.fingerprint}), not for the loaded {model.model_id!r} "
                f"(width {model.d_model}, fingerprint {model.fingerprint}); rebuild them with "
                f"'steerunc vectors build --model {model.name}'"
            )
        if not 0 <= self.layer < model.n_layers:
            raise VectorsError(f"vectors are for layer {self.layer}, the model has {model.n_layers} blocks")

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        meta = {
            "format": FORMAT,
            "model_id": self.model_id,
            "model_fingerprint": self.fingerprint,
            "d_model": str(self.d_model),
            "layer": str(self.layer),
            "hook": f"blocks.{self.layer}.hook_out",
            "position_rule": POSITION_RULE,
            "perspectives": json.dumps(self.names),
            "n_pairs": json.dumps(self.n_pairs),
            "norms": json.dumps(self.norms),
            "mean_cosine": json.dumps(self.mean_cosine()),
            "resid_norm": repr(self.resid_norm),
            "steerunc_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        meta.update({k: v for k, v in self.meta.items() if k not in meta})
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        save_file({"vectors": self.vectors.contiguous().float().cpu()}, tmp, metadata=meta)
        os.replace(tmp, path)


def load_vectors(path: str, model: LoadedModel | None = None) -> SteeringVectors:
    """Read a vector file (safetensors; never pickle); check it fits ``model`` if given."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise VectorsError(f"{path}: no such vector file")
    try:
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
            tensor = handle.get_tensor("vectors")
    except Exception as exc:  # safetensors raises its own error types
        raise VectorsError(f"{path}: not a steerunc vector file ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise VectorsError(f"{path}: not a steerunc vector file (format {meta.get('format')!r})")
    vectors = _from_file(path, meta, tensor)
    if model is not None:
        try:
            vectors.check_model(model)
        except VectorsError as exc:
            raise VectorsError(f"{path}: {exc}") from exc
    return vectors


def _from_file(path: str, meta: dict[str, str], tensor: Tensor) -> SteeringVectors:
    """Vectors from a file's metadata and tensor, every field checked for its meaning:
    VectorsError naming the file and the field otherwise."""

    def bad(name: str, why: str) -> VectorsError:
        return VectorsError(f"{path}: field '{name}' {why}")

    def get(name: str) -> str:
        if name not in meta:
            raise bad(name, "is missing (incomplete metadata)")
        return meta[name]

    def json_list(name: str) -> list[Any]:
        try:
            value = json.loads(get(name))
        except (ValueError, RecursionError):
            raise bad(name, f"is not JSON: {meta[name][:60]!r}") from None
        if not isinstance(value, list):
            raise bad(name, f"must be a JSON list, got {meta[name][:60]!r}")
        return value

    if tensor.dim() != 2:
        raise bad("vectors", f"must be a 2-D tensor [K, d_model], got shape {list(tensor.shape)}")
    if not tensor.is_floating_point():
        raise bad("vectors", f"must hold floating-point numbers, got {tensor.dtype}")
    k, width = tensor.shape
    if k == 0 or width == 0:
        raise bad("vectors", f"holds no vectors (shape {list(tensor.shape)})")
    vectors = tensor.float()
    if not bool(torch.isfinite(vectors).all()):
        raise bad("vectors", "holds NaN or infinite values")
    zero = [i for i, norm in enumerate(vectors.norm(dim=1).tolist()) if not norm > 0]
    if zero:
        raise bad("vectors", f"has zero vector(s) at row(s) {zero}: nothing to steer along")
    names = json_list("perspectives")
    if not all(isinstance(n, str) and n.strip() for n in names):
        raise bad("perspectives", "must be a list of non-empty names")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise bad("perspectives", f"has duplicate names: {', '.join(dupes)}")
    if len(names) != k:
        raise VectorsError(f"{path}: {len(names)} names in 'perspectives' for {k} vectors")
    n_pairs = json_list("n_pairs")
    if len(n_pairs) != k or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in n_pairs):
        raise bad("n_pairs", f"must list {k} pair counts (integers >= 0)")
    if "norms" in meta:
        norms = json_list("norms")
        if len(norms) != k or not all(
            isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) and n >= 0 for n in norms
        ):
            raise bad("norms", f"must list {k} finite norms")
    if "expect" in meta:
        try:
            expect = json.loads(meta["expect"])
        except (ValueError, RecursionError):
            raise bad("expect", f"is not JSON: {meta['expect'][:60]!r}") from None
        if not isinstance(expect, dict) or not all(
            isinstance(k, str) and k in names and isinstance(v, str) and v.strip() for k, v in expect.items()
        ):
            raise bad("expect", "must map perspective names to option names")
    try:
        layer = int(get("layer"))
    except ValueError:
        raise bad("layer", f"must be an integer, got {meta['layer'][:60]!r}") from None
    if layer < 0:
        raise bad("layer", f"must be >= 0, got {layer}")
    if "d_model" in meta and meta["d_model"].strip() != str(width):
        raise bad("d_model", f"says {meta['d_model'][:60]!r}, the vectors are {width} wide")
    try:
        resid_norm = float(get("resid_norm"))
    except ValueError:
        raise bad("resid_norm", f"must be a number, got {meta['resid_norm'][:60]!r}") from None
    if not (math.isfinite(resid_norm) and resid_norm > 0):
        raise bad("resid_norm", f"must be a positive finite number, got {resid_norm}")
    return SteeringVectors(
        names=names,
        vectors=vectors,
        layer=layer,
        model_id=get("model_id"),
        fingerprint=get("model_fingerprint"),
        resid_norm=resid_norm,
        n_pairs=n_pairs,
        meta=meta,
    )


@torch.no_grad()
def _last_token_acts(
    model: LoadedModel, texts: list[str], layers: list[int], batch_size: int, special: bool = True
) -> dict[int, tuple[Tensor, Tensor, Tensor]]:
    """Per layer: the residual at its hook, last token of each text; each text's sum and count of
    token norms. One pass, stopped after the deepest layer. ``special=False`` for texts that
    already hold their special tokens (the chat template's)."""
    from steerunc.scoring.views import hook_name

    captured: dict[int, Tensor] = {}

    class _Stop(Exception):
        pass

    def grab(resid: Tensor, hook: Any, layer: int = 0) -> Tensor:
        captured[layer] = resid
        if layer == max(layers):
            raise _Stop  # later blocks are not needed
        return resid

    out: dict[int, tuple[list[Tensor], list[Tensor], list[Tensor]]] = {layer: ([], [], []) for layer in layers}
    skip = 1 if model.prepends_bos else 0
    hooks = [(hook_name(layer), functools.partial(grab, layer=layer)) for layer in set(layers)]
    for i in range(0, len(texts), batch_size):
        enc = model.tokenizer(texts[i : i + batch_size], padding=True, padding_side="right", return_tensors="pt",
                              add_special_tokens=special)
        ids = enc["input_ids"].to(model.device)
        mask = enc["attention_mask"].to(model.device)
        try:
            with model.bridge.hooks(fwd_hooks=hooks):
                model.hf_model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)
        except _Stop:
            pass
        last = mask.sum(1) - 1
        for layer, (acts, norm_sums, norm_counts) in out.items():
            resid = captured[layer].float()
            acts.append(resid[torch.arange(len(last)), last])
            norm_sums.append((resid[:, skip:].norm(dim=-1) * mask[:, skip:]).sum(1).double().cpu())
            norm_counts.append(mask[:, skip:].sum(1).cpu())
        captured.clear()
    return {layer: (torch.cat(a).cpu(), torch.cat(s), torch.cat(c)) for layer, (a, s, c) in out.items()}


def build_vectors(
    model: LoadedModel,
    pairs: Iterable[Pair],
    layer: int | None = None,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> SteeringVectors:
    """One vector per perspective: mean over its pairs of a(positive) − a(negative); ``progress(done,
    total)`` is called after each perspective."""
    layer = model.default_layer if layer is None else layer
    return build_vectors_by_layer(model, pairs, [layer], batch_size, progress)[layer]


def build_vectors_by_layer(
    model: LoadedModel,
    pairs: Iterable[Pair],
    layers: list[int],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> dict[int, SteeringVectors]:
    """:func:`build_vectors` at several layers from one pass per text (a layer sweep's cost is
    that of its deepest layer)."""
    for layer in [x for x in layers if not 0 <= x < model.n_layers]:
        raise VectorsError(f"layer {layer} out of range: the model has {model.n_layers} blocks (0..{model.n_layers - 1})")
    grouped: dict[str, list[Pair]] = {}
    for pair in pairs:
        grouped.setdefault(pair.perspective, []).append(pair)
    if not grouped or not layers:
        raise VectorsError("no pairs to build vectors from" if layers else "no layer to build vectors at")
    diffs: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    norm_sum, norm_count = dict.fromkeys(layers, 0.0), dict.fromkeys(layers, 0)
    cache: dict[tuple[str, bool], dict[int, tuple[Tensor, float, int]]] = {}
    templated = has_chat_template(model.tokenizer)
    n_chat = sum(p.chat for group in grouped.values() for p in group)
    if n_chat and not templated:
        log.warning("%s has no chat template: %d pair(s) that ask for one are read as plain text",
                    model.model_id, n_chat)

    def acts(texts: list[str], chat: list[bool], layer: int) -> tuple[Tensor, float, int]:
        """A text shared by several pairs (one prompt under many feedbacks) runs once."""
        keys = [(chat_text(model.tokenizer, t), True) if c and templated else (t, False) for t, c in zip(texts, chat)]
        for via_template in (False, True):
            new = list(dict.fromkeys(k for k in keys if k not in cache and k[1] == via_template))
            if new:
                got = _last_token_acts(model, [k[0] for k in new], layers, batch_size, special=not via_template)
                for j, key in enumerate(new):
                    cache[key] = {at: (rows[j], float(sums[j]), int(counts[j])) for at, (rows, sums, counts) in got.items()}
        entries = [cache[k][layer] for k in keys]
        return torch.stack([e[0] for e in entries]), sum(e[1] for e in entries), sum(e[2] for e in entries)

    for done, group in enumerate(grouped.values(), start=1):
        for layer in layers:
            pos, s1, c1 = acts([p.positive for p in group], [p.chat for p in group], layer)
            neg, s2, c2 = acts([p.negative for p in group], [p.chat for p in group], layer)
            diffs[layer].append((pos - neg).mean(0))
            norm_sum[layer], norm_count[layer] = norm_sum[layer] + s1 + s2, norm_count[layer] + c1 + c2
        if progress is not None:
            progress(done, len(grouped))
    names, counts = list(grouped), [len(group) for group in grouped.values()]
    n_pairs = sum(counts)
    read = "plain text" if not (n_chat and templated) else (
        "chat template" if n_chat == n_pairs else f"chat template for {n_chat} of {n_pairs} pairs, else plain text")
    built = {}
    for layer in layers:
        stacked = torch.stack(diffs[layer])
        resid_norm = norm_sum[layer] / max(norm_count[layer], 1)
        for name, norm in zip(names, stacked.norm(dim=1).tolist()):
            if norm < 1e-4 * resid_norm:
                raise VectorsError(
                    f"perspective {name!r} gives a zero vector (norm {norm:.2e}): its positive and "
                    f"negative texts do not differ at blocks.{layer}.hook_out"
                )
        built[layer] = SteeringVectors(names, stacked, layer, model.model_id, model.fingerprint, resid_norm,
                                       counts, meta={"read": read})
    return built
