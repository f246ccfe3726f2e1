"""Ray Tune hyper-parameter sweeps of segproto configs (docs/sweeps.md).

``search.space`` (space files, validation) and ``search.results`` (outputs) do not need Ray;
``search.sweep`` (the command line) and ``search.trial`` (one trial) import it when they run;
``search.asha`` (ASHA whose rungs survive ``--resume``) imports it at once.
"""
