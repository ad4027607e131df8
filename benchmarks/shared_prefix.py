"""The reward and DPO steps with each pair's prompt run once, against whole rows, in one process.

    python benchmarks/shared_prefix.py [--objective reward] [--prompt-len 64] [--rounds 10]

A preference pair's chosen and rejected rows share their prompt columns. With
`Models.pair_prefix_len` set (the reward and DPO stages set it from their data,
`rlft.data.arrays.shared_prefix_len`), `rlft.models.backbone_hidden` runs those columns once
per pair into a KV cache, and both responses attend over it; without it, each row runs whole.
Both programs are traced in this process and timed alternately (benchmarks/alternate.py says
how, and what is printed). The backbone's tokens per pair fall from 2 (P + R) to P + 2 R.
"""

from functools import partial
from unittest import mock

import train_step  # this directory, run as a script
from alternate import alternate, parser

from rlft.data import shared_prefix_len
from rlft.objectives import Models


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    if args.objective == "sft":
        raise SystemExit("--objective: sft has no pairs; choose reward or dpo")
    prefix = shared_prefix_len(train_step.pythia_pairs(8, args.prompt_len, 53, args.vocab))
    print(f"shared prefix: {prefix} columns of {args.prompt_len + 53}")
    variants = {
        "whole rows": partial(mock.patch.object, train_step, "Models", Models),
        "prompt once per pair": partial(
            mock.patch.object, train_step, "Models", partial(Models, pair_prefix_len=prefix)
        ),
    }
    return alternate(args, variants)


if __name__ == "__main__":
    main()
