"""The application: everything that both trains and evaluates, and the only package that knows
the policy zoo.

- ``spec``: one run (``RunSpec``): its record's name, cache key, command line and checks;
- ``cache``: training through the checkpoint cache;
- ``run``: train, evaluate, probe, write the record;
- ``verify``: re-run a record's episodes;
- ``commands``: ``cfbench-train``, ``cfbench-eval``, ``cfbench-leaderboard``;
- ``sweep``: ``cfbench-sweep``, grids of runs, locally or on Ray;
- ``figure``: ``cfbench-figure``;
- ``ablation``: train variants of a policy and measure them on the validation seeds.

Layers (``tests/test_layers.py`` follows imports transitively): only this package imports
``policies``; ``policies`` imports only the core (``cfbench`` outside this package); the core
never reaches the zoo: the evaluator drives any object with the shape of
``cfbench.interface.Agent``.
"""
