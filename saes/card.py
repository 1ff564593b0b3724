"""Hugging Face model-card front matter for SAE releases and their SAELens exports.

The block is YAML between ``---`` lines at the top of a ``README.md`` (license, base_model, datasets,
library_name, tags), so a release folder can be pushed to a model hub as it is. Every value is written as a
JSON string, which YAML reads back unchanged, so no YAML library is needed to write it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SAE_WEIGHTS_LICENSE = "apache-2.0"
"""Licence of the SAE weights we publish (the project's and the base model's)."""
LIBRARY_NAME = "s3-attention"
"""``library_name`` of a release folder (the SAELens export says ``saelens``)."""
CARD_TAGS = ("sparse-autoencoder", "top-k-sae", "attention", "interpretability", "s3-attention")


def front_matter(
    config: Mapping[str, Any], *, library_name: str = LIBRARY_NAME, extra_tags: Sequence[str] = ()
) -> str:
    """The ``---`` YAML block (ending in a blank line) for the card of the release ``config``."""
    entries: list[tuple[str, Any]] = [
        ("license", str(config.get("license", SAE_WEIGHTS_LICENSE))),
        ("base_model", str(config["model_id"])),
        ("datasets", [str(config["dataset"])]),
        ("library_name", library_name),
        ("tags", [*CARD_TAGS, *extra_tags]),
    ]
    lines = ["---"]
    for key, value in entries:
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines.extend(f"- {json.dumps(item)}" for item in value)
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join([*lines, "---", "", ""])


def strip_front_matter(card: str) -> str:
    """``card`` without a leading ``---`` YAML block (unchanged when it has none)."""
    if not card.startswith("---\n"):
        return card
    end = card.find("\n---\n", 4)
    return card if end < 0 else card[end + 5 :].lstrip("\n")
