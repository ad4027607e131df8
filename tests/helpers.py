"""Helpers the tests share (not part of rlft: they point into this repository's checkout)."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_CONFIGS = os.path.join(REPO, "configs")  # the runnable config documents
