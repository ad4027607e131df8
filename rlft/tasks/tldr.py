"""`tldr`: Reddit TL;DR as a Task, so `rlft reproduce` runs on the paper's data (docs/tldr.md).

Prompts are the tokenised, left-padded queries of the TL;DR SFT set, built by the same data
pipeline `rlft train` reads (rlft.data.sources.tldr_bundle: TFDS builders, query format, post
truncation, the .npz cache). `sample_prompts` draws from the `train_split` pool (SFT and
preference prompts), `sample_eval_prompts` from `eval_split` (held-out evaluation), each
without replacement until its pool is used up, then from a fresh permutation, so drawing the
pool's size is one epoch. The demonstrator is the post's own reference summary (the author's
TL;DR). Posts whose summary + EOS exceeds response_len are not in the pools (the pipeline
drops them). PAD and EOS are the tokenizer's ([PAD] and <|endoftext|>), not ids 0 and 1.

Gold reward (`judge`):
  rouge  ROUGE-L F1 (rlft.data.judges.rouge_l: lowercased whitespace words of the decoded
         text) of the response before its first EOS against the post's reference summary,
         in [0, 1]: the paper's ROUGE experiment. A response without EOS is scored on all
         its tokens.
  rm     a gold reward model: the `reward` model of an `rlft train` reward-stage workdir
         (`gold_rm`, e.g. trained on all human comparisons), through
         rlft.data.judges.RewardModelJudge. It must share this task's tokenizer and lengths.
Either way ROUGE-L is also reported as the part `rouge_l`.
"""

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from rlft.data.arrays import pack_sequences
from rlft.data.judges import RewardModelJudge, rouge_l
from rlft.data.tldr.format import MAX_QUERY_LEN, SFT_RESPONSE_LEN, TextTokenizer
from rlft.tasks.base import Task, split_response

JUDGES = ("rouge", "rm")
Pool = tuple[list[list[int]], list[list[int]]]  # (prompts, references incl. EOS), row-aligned


@dataclasses.dataclass(frozen=True)
class TldrTaskConfig:
    data_dir: str = ""  # TFDS data_dir holding (or to hold) tldr_sft/ (TldrDataConfig)
    manual_dir: str = ""  # downloaded files; read only to prepare what data_dir lacks
    tokenizer: str = ""  # dir with tokenizer.json (the policy checkpoint's) or the file
    max_query_len: int = MAX_QUERY_LEN  # P: query tokens, post cut to fit
    response_len: int = SFT_RESPONSE_LEN  # R: summary + EOS; posts with longer ones left out
    train_split: str = "train"  # TldrSft split: SFT demonstrations and preference prompts
    eval_split: str = "validation"  # TldrSft split: held-out evaluation prompts
    max_rows: int = 0  # rows read per split (0 = all); smoke runs
    write_fixture: bool = False  # smoke: fixture files + a BPE tokenizer where missing
    judge: str = "rouge"  # gold reward: rouge (vs the reference summary) | rm (gold_rm)
    gold_rm: str = ""  # judge=rm: workdir of an `rlft train` reward stage (its class: its meta)

    def __post_init__(self):
        if self.judge not in JUDGES:
            raise ValueError(f"tldr: judge={self.judge!r}; choose from {list(JUDGES)}")
        if (self.judge == "rm") != bool(self.gold_rm):
            raise ValueError("tldr: judge='rm' needs gold_rm (a reward-stage workdir), and only it")


@dataclasses.dataclass(frozen=True)
class TldrData:
    """What the task needs from the data pipeline: token pools and a tokenizer."""

    train: Pool
    eval: Pool
    decode: Callable[[Sequence[int]], str]
    vocab_size: int  # including [PAD]
    pad_id: int
    eos_id: int


def load_data(cfg: TldrTaskConfig) -> TldrData:
    """Both pools through rlft.data.sources (prepared and cached like `rlft train`'s arrays)."""
    # Both import JAX (data.sources for the process rank, rlft.models' package for the
    # networks): here, not at the top, so rlft.tasks stays importable without it.
    from rlft.data.sources import NO_VOCAB_LIMIT, TldrDataConfig, tldr_bundle  # noqa: PLC0415
    from rlft.models.hf_files import load_tokenizer  # noqa: PLC0415

    pools, p = {}, cfg.max_query_len
    for name, split in (("train", cfg.train_split), ("eval", cfg.eval_split)):
        data = TldrDataConfig(
            data_dir=cfg.data_dir,
            manual_dir=cfg.manual_dir,
            tokenizer=cfg.tokenizer,
            max_query_len=p,
            response_len=cfg.response_len,
            sft_split=split,
            parts=("sft",),
            max_rows=cfg.max_rows,
            write_fixture=cfg.write_fixture,
        )
        bundle = tldr_bundle(data, progress=False)
        rows = list(zip(bundle.sft["tokens"], bundle.sft["mask"].astype(bool), strict=True))
        pools[name] = (
            [t[:p][m[:p]].tolist() for t, m in rows],
            [t[p:][m[p:]].tolist() for t, m in rows],
        )
    tok = TextTokenizer.from_hf(load_tokenizer(cfg.tokenizer, vocab_size=NO_VOCAB_LIMIT))
    return TldrData(
        train=pools["train"],
        eval=pools["eval"],
        decode=tok.decode,
        vocab_size=bundle.vocab_size,
        pad_id=bundle.pad_id,
        eos_id=bundle.eos_id,
    )


def draw(pool_size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pool indices: without replacement until the pool is used up, then a new permutation."""
    reps = max(1, -(-n // pool_size))
    return np.concatenate([rng.permutation(pool_size) for _ in range(reps)])[:n]


class TldrTask(Task):
    name = "tldr"

    def __init__(self, cfg: TldrTaskConfig, data: TldrData | None = None):
        super().__init__(cfg)
        self.data = data if data is not None else load_data(cfg)
        self.pad_id, self.eos_id = self.data.pad_id, self.data.eos_id
        self.references: dict[tuple[int, ...], list[int]] = {}
        for split in (self.data.eval, self.data.train):  # a post in both: the train reference
            if not split[0]:
                raise ValueError("tldr: a prompt pool is empty (see response_len, max_rows)")
            self.references |= {tuple(p): r for p, r in zip(*split, strict=True)}
        self._reference_text: dict[tuple[int, ...], str] = {}
        self._rm_judge = None

    @property
    def vocab_size(self) -> int:
        return self.data.vocab_size

    @property
    def prompt_len(self) -> int:
        return self.cfg.max_query_len

    @property
    def response_len(self) -> int:
        return self.cfg.response_len

    def sample_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        prompts = self.data.train[0]
        return [list(prompts[i]) for i in draw(len(prompts), n, rng)]

    def sample_eval_prompts(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        prompts = self.data.eval[0]
        return [list(prompts[i]) for i in draw(len(prompts), n, rng)]

    def reference(self, prompt: Sequence[int]) -> list[int]:
        """The post's reference summary tokens, EOS included."""
        key = tuple(int(t) for t in prompt)
        if key not in self.references:
            raise ValueError(
                f"tldr: prompt of {len(key)} tokens (starting {list(key[:8])}) is not a query "
                f"of the {self.cfg.train_split!r} or {self.cfg.eval_split!r} pools"
            )
        return self.references[key]

    def demonstrate(self, prompts, rng: np.random.Generator) -> list[list[int]]:
        return [list(self.reference(p)) for p in prompts]

    def reference_text(self, prompt: Sequence[int]) -> str:
        key = tuple(int(t) for t in prompt)
        if key not in self._reference_text:
            content, _ = split_response(self.reference(key), self.eos_id)
            self._reference_text[key] = self.data.decode(content)
        return self._reference_text[key]

    def score_one(self, prompt, content, has_eos) -> dict:
        f = rouge_l(self.data.decode(content), self.reference_text(prompt))
        return {"reward": f, "rouge_l": f, "length": float(len(content)), "has_eos": float(has_eos)}

    def gold_reward_parts(
        self, prompt_NxP, prompt_mask_NxP, response_NxR, response_mask_NxR
    ) -> dict[str, np.ndarray]:
        parts = super().gold_reward_parts(
            prompt_NxP, prompt_mask_NxP, response_NxR, response_mask_NxR
        )
        if self.cfg.judge == "rm" and len(parts["reward"]):
            p_mask, r_mask = np.asarray(prompt_mask_NxP, bool), np.asarray(response_mask_NxR, bool)
            prompts = [p[m].tolist() for p, m in zip(np.asarray(prompt_NxP), p_mask, strict=True)]
            responses = [
                _through_eos(r[m].tolist(), self.eos_id)
                for r, m in zip(np.asarray(response_NxR), r_mask, strict=True)
            ]
            parts["reward"] = self.rm_judge().scores(prompts, responses)
        return parts

    def rm_judge(self) -> RewardModelJudge:
        """The gold reward model as a judge, loaded on first use."""
        if self._rm_judge is None:
            score = gold_rm_scorer(self.cfg.gold_rm)

            def score_fn(prompts, responses):
                p, r = self.prompt_len, self.response_len
                return score(pack_sequences(prompts, responses, p, r, self.pad_id))

            self._rm_judge = RewardModelJudge(score_fn)
        return self._rm_judge

    def describe(self) -> str:
        judge = (
            "ROUGE-L F1 against the post's reference summary"
            if self.cfg.judge == "rouge"
            else f"a gold reward model ({self.cfg.gold_rm})"
        )
        return (
            f"tldr: Reddit TL;DR posts ({self.cfg.train_split} split for SFT and preference "
            f"prompts, {self.cfg.eval_split} for evaluation); the demonstrator is the human "
            f"reference summary and the gold reward is {judge}. With ROUGE the verifier must "
            "know the reference, the very thing a generator must produce, so, as in the "
            "synthetic `rouge` task, no generation-verification gap is built in (the paper's "
            "ROUGE experiment); a gold RM judges by a learned, possibly simpler, criterion."
        )


def _through_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def gold_rm_scorer(workdir: str) -> Callable[[dict], np.ndarray]:
    """Scores [N] of {'tokens', 'mask', 'loss_mask'} under the reward model saved in workdir,
    read as the class its checkpoint records (rlft.rollout.scoring.load_reward_model)."""
    # JAX only for judge=rm: rlft.tasks (numpy verifiers and tables) stays importable without it.
    from rlft.parallel import make_mesh  # noqa: PLC0415
    from rlft.rollout.scoring import load_reward_model, reward_model_config, rm_scores  # noqa: PLC0415

    cfg, mesh = reward_model_config(workdir), make_mesh(-1, 1)
    params, model_class = load_reward_model(workdir, cfg, mesh)
    return lambda arrays: rm_scores(cfg, params, arrays, mesh, model_class=model_class)
