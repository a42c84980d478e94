"""Prompts from ``--prompts-file``: one per line, or JSONL objects with a ``"prompt"`` field.

    from fksteer.commands.prompts import read_prompts_file
    prompts = read_prompts_file("prompts.txt")
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_prompts_file"]


def read_prompts_file(path: str | Path) -> list[str]:
    """The file's prompts; blank lines are skipped. Raises a ValueError naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {path}: no such file.")
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"--prompts-file {path}, line {number}: invalid JSON ({error.msg}); write "
                    'one prompt per line or {"prompt": "..."} objects.'
                ) from None
            if not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
                raise ValueError(
                    f"--prompts-file {path}, line {number}: a JSONL line needs a non-empty "
                    '"prompt" string.'
                )
            prompts.append(record["prompt"].strip())
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(
            f"--prompts-file {path} holds no prompts: write one prompt per line (or JSONL with "
            'a "prompt" field).'
        )
    return prompts
