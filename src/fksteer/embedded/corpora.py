"""The English text corpora that install offline: the training data of the embedded text models.

    from fksteer.embedded.corpora import read_fortunes, read_kjv, read_chatterbot

- ``read_fortunes``: Debian's ``fortunes`` package (``apt-get install fortunes``), entries
  separated by ``%`` lines under /usr/share/games/fortunes.
- ``read_kjv``: the King James Bible, one verse per text, printed by the ``bible`` program of
  Debian's ``bible-kjv`` (``apt-get install bible-kjv``).
- ``read_chatterbot``: the English dialogue lines of PyPI's ``chatterbot-corpus``.

Each returns a list of ASCII strings with whitespace folded, in a fixed order.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["FORTUNES_DIR", "read_chatterbot", "read_fortunes", "read_kjv"]

FORTUNES_DIR = Path("/usr/share/games/fortunes")
_SKIPPED_FORTUNE_FILES = {"art", "ascii-art"}


def _fold(text: str) -> str:
    return " ".join(text.split())


def read_fortunes(
    directory: Path = FORTUNES_DIR, max_lines: int = 4, min_chars: int = 20, max_chars: int = 240
) -> list[str]:
    """Fortunes entries of 1..``max_lines`` lines and ``min_chars``..``max_chars`` characters."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(
            f"{directory} not found: install the corpus with `apt-get install fortunes`."
        )
    entries = []
    for path in sorted(Path(directory).iterdir()):
        if path.suffix in {".dat", ".u8"} or path.name in _SKIPPED_FORTUNE_FILES:
            continue
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            lines = [line.strip() for line in entry.strip().splitlines() if line.strip()]
            folded = _fold(" ".join(lines))
            if 1 <= len(lines) <= max_lines and min_chars <= len(folded) <= max_chars:
                if folded.isascii():
                    entries.append(folded)
    return entries


def read_kjv() -> list[str]:
    """The 31,102 verses of the King James Bible, without their references."""
    program = shutil.which("bible")
    if program is None:
        raise FileNotFoundError(
            "the `bible` program was not found: install it with `apt-get install bible-kjv`."
        )
    printed = subprocess.run(
        [program, "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True
    ).stdout
    verses = []
    for line in printed.splitlines():
        match = re.match(r"^\S+\d+:\d+\s+(.*)$", line.strip())
        if match and match.group(1).isascii():
            verses.append(_fold(match.group(1)))
    return verses


def read_chatterbot() -> list[str]:
    """Every English line of ``chatterbot-corpus`` (questions and answers alike)."""
    try:
        import chatterbot_corpus
        import yaml
    except ImportError as error:
        raise ImportError(
            "read_chatterbot needs chatterbot-corpus and PyYAML: pip install chatterbot-corpus"
        ) from error
    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    lines = []
    for path in sorted(folder.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in document.get("conversations", []):
            for line in conversation:
                if isinstance(line, str) and line.strip() and line.isascii():
                    lines.append(_fold(line))
    return lines
