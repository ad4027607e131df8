"""rlft: fine-tuning language models with likelihood and with reinforcement learning."""

__version__ = "0.1.0"
