"""``leaderboard.md`` and the per-env plots, regenerated from ``results/`` and nothing else
(``cfbench-leaderboard``, whose command lives in ``cfbench.app.commands``: it can re-run a record,
which needs the zoo; this package does not know it). One module per job: ``standings`` (which
records rank, and their tables), ``markdown`` (the page's text), ``plots``, ``regenerate`` (the
files, under the folder's lock), ``submission`` and ``comparison``.
"""
