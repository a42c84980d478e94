"""The work behind each `fksteer` subcommand, one module per command or shared concept.

    from fksteer.commands.sample import run_sample         # fksteer sample (images)
    from fksteer.commands.text import run_text             # fksteer text (masked text models)
    from fksteer.commands.demo_image import run_image_demo # fksteer demo
    from fksteer.commands.demo_exact import run_demo       # fksteer demo --exact
    from fksteer.commands.bench import add_bench_parser    # fksteer bench SUITE (parsers, handlers)

Shared pieces: ``options`` (FKConfig fields and run options on the command line, merged with a
``--config`` file read by ``config_file``), ``prompts`` (prompt files), ``staging`` (an output
directory that appears whole or not at all), ``images`` (PNG tiles and grids), ``run_folder``
(results.jsonl, summary.json, trace.jsonl, config.json of a run; the JSON writers are
:mod:`fksteer.bench.records`'s), ``parsing`` (``--no-report``, progress bars, int lists: what the
parsers and handlers share),
``errors`` (how the command line ends on a mistake: one line, exit status 2), ``reward_option``
(``--reward`` checked before any model loads).

The modules the parser imports (``options``, ``bench``, ``parsing``, and the ``*_DEFAULTS`` of
``sample``, ``text``, ``gibbs``) import no torch, so ``fksteer --help`` stays fast; the work
imports it when it runs.
"""
