"""The command line starts light: building the parser (``fksteer --help``) imports no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fksteer

SOURCE = str(Path(fksteer.__file__).resolve().parent.parent)  # this fksteer, in a subprocess


def _fresh_python(program: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": SOURCE}, check=True)


def test_building_the_parser_imports_no_torch_and_offers_every_registered_name():
    program = (
        "import json, sys\n"
        "import fksteer.cli\n"
        "parser = fksteer.cli.build_parser()\n"
        "help = parser._subparsers._group_actions[0].choices['sample'].format_help()\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL')\n"
        "               if m in sys.modules)\n"
        "print(json.dumps({'heavy': heavy, 'help': help}))\n"
    )
    answer = json.loads(_fresh_python(program).stdout)
    assert answer["heavy"] == []
    from fksteer.smc.potentials import POTENTIALS
    from fksteer.smc.resampling import RESAMPLING_SCHEMES

    for name in [*POTENTIALS, *RESAMPLING_SCHEMES]:  # the parser's choices are the registries
        assert name in answer["help"], name


def test_help_exits_0_without_torch():
    run = _fresh_python(
        "import sys\nfrom fksteer.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit_:\n    code = exit_.code\n"
        "print('torch' in sys.modules, code)\n"
    )
    assert run.stdout.split()[-2:] == ["False", "0"]


def test_the_parser_is_built_from_one_small_function_per_command():
    import ast
    import inspect

    import fksteer.cli
    from fksteer.commands import bench

    for module in (fksteer.cli, bench):
        source = inspect.getsource(module)
        lines = source.splitlines()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                first = node.body[0]  # the docstring does not count
                docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                start = first.end_lineno + 1 if docstring else first.lineno
                code = [lines[i - 1].strip() for i in range(start, node.end_lineno + 1)]
                count = sum(1 for line in code if line and not line.startswith("#"))
                assert count <= 60, (module.__name__, node.name, count)
