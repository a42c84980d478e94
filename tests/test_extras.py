"""A missing optional dependency names the fksteer extra that installs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

import fksteer
from fksteer.extras import EXTRA_OF_MODULE, missing_extra_hint, with_install_hint

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _extra_requirements(extras: dict[str, list[str]], name: str) -> set[str]:
    """Normalised distribution names an extra installs, following fksteer[...] references."""
    names: set[str] = set()
    for requirement in extras[name]:
        base = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0]
        if base == "fksteer":
            for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                names |= _extra_requirements(extras, inner.strip())
        else:
            names.add(re.sub(r"[-_.]+", "-", base).lower())
    return names


def test_each_module_maps_to_an_extra_that_installs_its_distribution():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    providers = packages_distributions()
    for module, extra in EXTRA_OF_MODULE.items():
        installed = _extra_requirements(extras, extra)
        assert installed <= _extra_requirements(extras, "all") or extra == "all"
        distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [])}
        if distributions:  # importable here: the extra must be what installed it
            transitive = {"safetensors": {"transformers"}}.get(module, set())
            assert distributions & installed or transitive & installed, (module, extra)


def test_the_hint_names_the_extra_of_a_missing_module_only():
    try:
        import fksteer_no_such_module  # noqa: F401
    except ModuleNotFoundError as error:
        assert missing_extra_hint(error) is None
    missing = ModuleNotFoundError("No module named 'diffusers'", name="diffusers")
    assert missing_extra_hint(missing) == "pip install 'fksteer[diffusers]'"
    assert "fksteer[diffusers]" in with_install_hint(missing)
    assert with_install_hint(ValueError("bad")) == "bad"


@pytest.mark.parametrize("argv, extra", [(["demo"], "diffusers"), (["text"], "text")])
def test_the_command_line_names_the_extra_when_a_library_is_missing(argv, extra, tmp_path):
    """The import system refuses the library (None in sys.modules), as if it were not installed.

    The demo's embedded model runs without diffusers; its images need Pillow, of the same extra.
    """
    blocked = {"diffusers": "PIL", "text": "transformers"}[extra]
    program = (f"import sys; sys.modules[{blocked!r}] = None; from fksteer.cli import main; "
               f"sys.exit(main({[*argv, '--out', str(tmp_path / 'run')]!r}))")
    source = str(Path(fksteer.__file__).resolve().parent.parent)  # this fksteer, from anywhere
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": source})
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("fksteer: error:") and f"pip install 'fksteer[{extra}]'" in last
    assert not (tmp_path / "run").exists()


def test_require_extra_names_the_extra_when_the_module_is_missing():
    program = ("import sys; sys.modules['diffusers'] = None\n"
               "from fksteer.extras import require_extra\n"
               "try:\n    require_extra('diffusers', 'a diffusers pipeline')\n"
               "except ModuleNotFoundError as error:\n"
               "    print(error.name, '|', error)\n")
    source = str(Path(fksteer.__file__).resolve().parent.parent)
    run = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": source}, check=True)
    name, message = run.stdout.strip().split(" | ")
    assert name == "diffusers"
    assert message.startswith("a diffusers pipeline needs")
    assert "pip install 'fksteer[diffusers]'" in message
