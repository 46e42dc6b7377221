"""How a record's text is put to the model: as it is, or as the user turn of its chat template.

An instruct model is trained to answer inside its chat template. With
``chat=True`` the text becomes the user turn and the answer is read at the
start of the assistant turn: the template's own text (a default system turn
included, as the template writes it) comes before it, and since the assistant
turn starts after a newline the options are read without a leading space.
docs/models.md says when it helps (measured with benchmarks/bench_chat.py).
"""

from __future__ import annotations

from typing import Any

from steerunc.errors import InputError

__all__ = ["chat_text", "has_chat_template"]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_text(tokenizer: Any, text: str) -> str:
    """``text`` as the user turn, ending where the assistant's answer starts (special tokens
    written out as text: tokenize the result without adding special tokens again)."""
    if not has_chat_template(tokenizer):
        raise InputError("chat: this model's tokenizer has no chat template")
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    if not isinstance(out, str) or not out:
        raise InputError("chat: the chat template gave no text")
    return out
