"""Read a run's ``--config FILE``: TOML (tomllib), or YAML when PyYAML is importable.

    from fksteer.commands.config_file import read_config_file
    values = read_config_file("run.toml")    # {"num_particles": 8, "lmbda": "ramp:0:10", ...}

The file is a flat mapping whose keys are FKConfig fields and the command's option names
(``num-particles`` and ``num_particles`` both work). Values keep the file's types; the command
validates them like command-line values. Unknown keys are errors naming the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["read_config_file"]


def read_config_file(path: str | Path, valid_keys: set[str]) -> dict[str, Any]:
    """The mapping in ``path`` with keys normalised to ``snake_case`` and checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file; pass a TOML or YAML file.")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError(
                f"--config {path}: reading YAML needs PyYAML (pip install pyyaml); or write the "
                "same keys as TOML."
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"--config {path}: not valid YAML ({error}).") from None
        data = {} if data is None else data
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(
                f"--config {path}: not valid TOML ({error}); name a .yaml file for YAML."
            ) from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of option = value at the top.")
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in valid_keys:
            raise ValueError(
                f"--config {path}: unknown key {key!r}; valid keys: "
                f"{', '.join(sorted(valid_keys))}."
            )
        values[name] = value
    return values
