"""The JAX half of `rlft reproduce`: from a reproduce config to the records the report reads.

run.py loops over tasks, seeds, pair sources and budgets; seed.py draws one (task, seed) and
trains its SFT; budget.py trains a budget's reward models and runs its arms (arm_runs.py) and
diagnostics (diagnostics.py, control.py with the exact tabular solve of isomorphic.py);
evaluate.py and pairs.py sample, score and label; training.py turns the config's stage recipes
(spec.py) into `rlft train` configs; units.py fingerprints every unit so a workdir is a record.
"""
