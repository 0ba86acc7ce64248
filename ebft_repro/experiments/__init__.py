"""Layer 4, experiments: everything that runs many trainings or reads their results.

- ``cli`` (``python -m ebft_repro``) and ``prepare``: the command line, and data/base-model preparation.
- ``runner``: the reproduction (learning-rate grids, seeds, caching) and ``report``: tables and verdicts.
- ``plotting``, ``ablations``, ``bench``/``bench_step`` (speed), ``precision`` (bf16 features),
  ``memory_model`` and ``scaling`` (memory at the paper's scale: the estimates, and their table).
"""
