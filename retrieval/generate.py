"""The answering side of the question path: the answer prompt, greedy generation, and the reader model.

The reader is the model that answers. By default it is the index's own model; ``Retriever(..., reader=PATH)``
(``s3-index ask --reader PATH``) answers with another local Hugging Face causal LM instead, prompted with its
own tokenizer and chat template, while retrieval (the question's codes) keeps the index's model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from s3attn.models.loading import LoadedModel, load_model

ANSWER_INSTRUCTION = "Answer the question using the text above. Answer briefly."


def chat_prompt(tokenizer, context: str, question: str) -> str:
    """The answering prompt for ``tokenizer``'s model: its chat template around the context, the instruction
    and the question, or a plain ``...Answer:`` prompt for a tokenizer without a chat template."""
    content = (
        f"{context}\n\n{ANSWER_INSTRUCTION}\nQuestion: {question}" if context else f"Question: {question}"
    )
    return user_turn(tokenizer, content, "\nAnswer:")


def user_turn(tokenizer, content: str, plain_end: str) -> str:
    """``content`` as the user's turn of ``tokenizer``'s chat template, ready for the model's reply; for a
    tokenizer without a chat template (base models), ``content`` + ``plain_end`` as plain text."""
    if getattr(tokenizer, "chat_template", None) is None:
        return f"{content}{plain_end}"
    msgs = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """Greedy decoding; returns (answer text, prompt tokens)."""
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip(), int(ids.shape[1])


def load_reader(reader: str | Path | LoadedModel, dtype: torch.dtype) -> LoadedModel:
    """The reader as a LoadedModel: ``reader`` itself when already loaded, else ``load_model(reader, dtype)``
    (a local HF causal-LM folder, or ``smollm2-135m``)."""
    if isinstance(reader, LoadedModel):
        return reader
    return load_model(str(reader), dtype=dtype)
