"""Repo-root pytest configuration: loaded for tests/ and for `pytest --nbmake notebooks/`.

Kernels started by nbmake inherit this environment, so notebooks run in tiny mode under pytest.
"""

import os

os.environ.setdefault("EBFT_RUN_MODE", "tiny")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
