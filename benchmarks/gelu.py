"""The train step with rlft's exact GELU against `jax.nn.gelu(approximate=False)`, in one process.

    python benchmarks/gelu.py [--objective reward] [--rounds 10] [--steps 3]

Both are exact GELU, x Phi(x): rlft's `rlft.models.transformer.gelu_exact` through erf (the
formula of torch's `F.gelu` and Hugging Face's GPT-NeoX), jax's through erfc, which XLA CPU
evaluates piecewise with selects. Both programs are traced in this process, one with each
GELU, and timed alternately (benchmarks/alternate.py says how, and what is printed).
"""

import contextlib
from functools import partial
from unittest import mock

import jax
from alternate import alternate, parser  # this directory, run as a script

import rlft.models.transformer as transformer


def _jax_gelu(x):
    return jax.nn.gelu(x, approximate=False)


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    variants = {
        "jax.nn.gelu (erfc)": partial(mock.patch.object, transformer, "gelu_exact", _jax_gelu),
        "rlft gelu_exact (erf)": contextlib.nullcontext,
    }
    return alternate(args, variants)


if __name__ == "__main__":
    main()
