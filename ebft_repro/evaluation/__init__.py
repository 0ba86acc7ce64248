"""Layer 2, evaluation: what a model scores, never how it is trained.

- ``metrics``: pass@k, BLEU/chrF, answer extraction (pure functions).
- ``downstream``: validation CE, the feature-matching loss of rollouts, downstream accuracy, verifier rewards.
- ``sandbox`` (with its private ``_sandbox_*`` parts): runs generated code, isolated, and judges unit tests.
"""
