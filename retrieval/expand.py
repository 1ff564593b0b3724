"""Question expansion (HyDE: Gao et al., 2022, "Precise Zero-Shot Dense Retrieval without Relevance Labels").

Before the question is coded, the index's model writes a short passage that answers it (greedy, so the
same question always gives the same passage); that passage (``expand`` hypothesis), or the question followed
by it (both), is what the SAEs code. A paraphrased question shares no word with its evidence ("Which vehicle
did the aunt purchase?" for "My mother's younger sister bought a red convertible"), but the passage the model
writes tends to use the words an answer would ("The aunt purchased a car from a local dealership"), and
their keys share features with the evidence's. The passage's facts may be wrong: only its words matter.
"""

from __future__ import annotations

import logging

from s3attn.lru import ByteLRU
from s3attn.retrieval.config import QuestionConfig
from s3attn.retrieval.generate import generate, user_turn

logger = logging.getLogger(__name__)


def hypothesis_prompt(tokenizer, question: str, template: str) -> str:
    """The instruction ``template`` (with ``{question}`` filled in), in the model's chat template when it has
    one, else as plain text on a line of its own."""
    return user_turn(tokenizer, template.replace("{question}", question), "\n")


class Expander:
    """The text the SAEs code for a question under a ``QuestionConfig``; written passages are kept (an LRU of
    ``cache_bytes`` of text) per (question, settings), so a question asked again (another mode, another
    budget) does not run the model again."""

    def __init__(self, model, tokenizer, cache_bytes: int = 1 << 20):
        self.model, self.tokenizer = model, tokenizer
        self._cache = ByteLRU(cache_bytes)

    def hypothesis(self, question: str, cfg: QuestionConfig) -> str:
        """The passage the model writes for ``question`` (one line; may be empty)."""
        key = (question, cfg.expand_tokens, cfg.expand_prompt)
        text = self._cache.get(key)
        if text is None:
            prompt = hypothesis_prompt(self.tokenizer, question, cfg.expand_prompt)
            text = " ".join(generate(self.model, self.tokenizer, prompt, cfg.expand_tokens)[0].split())
            self._cache.put(key, text, len(text) + len(question))
            logger.debug("hypothesis for %r: %r", question, text)
        return text

    def coded_text(self, question: str, cfg: QuestionConfig) -> str:
        """What the SAEs code: the question (``expand`` none, or when the model wrote nothing), the passage
        (hypothesis) or both, the question first."""
        if cfg.expand == "none":
            return question
        text = self.hypothesis(question, cfg)
        if not text:
            logger.warning(
                "--expand %s: the model wrote nothing for %r; coding the question", cfg.expand, question
            )
            return question
        return text if cfg.expand == "hypothesis" else f"{question} {text}"
