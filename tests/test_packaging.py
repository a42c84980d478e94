"""The distributions: ``python -m build`` makes an sdist, then a wheel from it, and both carry
every embedded weight file tracked in git, byte for byte; ``twine check`` passes.

The build runs on a copy of the checkout's tracked (and new, not ignored) files, as a fresh
clone would have them, so weights lying untracked in the working tree cannot hide a gap.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = "src/fksteer/embedded/weights"

pytest.importorskip("build", reason="pip install 'fksteer[dev]' (build, twine)")


def _git_files(*args: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listing = subprocess.run(["git", "ls-files", *args], cwd=ROOT, capture_output=True,
                             text=True, check=True)
    return [name for name in listing.stdout.splitlines() if (ROOT / name).is_file()]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(source: Path, out: Path, kind: str) -> None:
    build = subprocess.run([sys.executable, "-m", "build", kind, "--outdir", str(out),
                            str(source)], capture_output=True, text=True, cwd=out)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory) -> dict[str, Path]:
    """{"sdist": ..., "wheel": ...} built from a copy of the tracked files."""
    source = tmp_path_factory.mktemp("checkout")
    for name in _git_files("--cached", "--others", "--exclude-standard"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    _build(source, out, "--sdist")
    (sdist,) = out.glob("fksteer-*.tar.gz")
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    (tree,) = unpacked.iterdir()
    _build(tree, out, "--wheel")  # the wheel from the sdist alone, as `python -m build` does
    (wheel,) = out.glob("fksteer-*-py3-none-any.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_the_wheel_and_sdist_carry_every_tracked_embedded_weight(distributions):
    tracked = {name: _digest((ROOT / name).read_bytes()) for name in _git_files(WEIGHTS)}
    assert any(name.endswith(".safetensors") for name in tracked)
    with zipfile.ZipFile(distributions["wheel"]) as wheel:
        in_wheel = {info.filename: info for info in wheel.infolist()}
        for name, digest in tracked.items():
            inside = name.removeprefix("src/")
            assert inside in in_wheel, f"{inside} is missing from the wheel"
            assert _digest(wheel.read(inside)) == digest, f"{inside} differs in the wheel"
    assert not any(name.startswith(("tests/", "scripts/")) for name in in_wheel)  # lean
    with tarfile.open(distributions["sdist"]) as sdist:
        prefix = sdist.getnames()[0].split("/")[0]
        for name, digest in tracked.items():
            member = sdist.extractfile(f"{prefix}/{name}")
            assert member is not None and _digest(member.read()) == digest, name


def test_the_sdist_carries_the_tests_and_training_scripts(distributions):
    with tarfile.open(distributions["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = set(_git_files("tests", "scripts"))
    assert wanted and wanted <= names, sorted(wanted - names)


def test_twine_check_passes(distributions):
    pytest.importorskip("twine")
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                            *map(str, distributions.values())], capture_output=True, text=True,
                           cwd=distributions["wheel"].parent)
    assert check.returncode == 0, check.stdout + check.stderr
