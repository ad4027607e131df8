"""Orbax checkpoints in a run's workdir: params, train state (optimizer, step, RNG) and meta.

Layout: DIR/checkpoints/<step>/{params, train, meta}. `params` is saved on its own so a later
stage can load one model without knowing the optimizer that trained it; `meta` (JSON) holds the
model configs by role, the objective and the data position.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from rlft.errors import CheckpointError
from rlft.models import ModelConfig
from rlft.train.state import TrainState, abstract_params


def checkpoint_dir(workdir: str) -> str:
    if "://" in str(workdir):  # gs://... and other object stores: keep the URL as it is
        return str(workdir).rstrip("/") + "/checkpoints"
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options, item_names=("params", "train", "meta")
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: TrainState, meta: dict[str, Any]
) -> None:
    """Save at `step` (the driver's loop step; for PPO an iteration, not an update)."""
    train = {"step": state.step, "opt_state": state.opt_state, "rng": state.rng}
    manager.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave(train),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )


def restore(manager: ocp.CheckpointManager, abstract_state: TrainState, step: int | None = None):
    """(state, meta) from the latest (or given) step, placed like `abstract_state`."""
    step = manager.latest_step() if step is None else step
    abstract_train = {
        "step": abstract_state.step,
        "opt_state": abstract_state.opt_state,
        "rng": abstract_state.rng,
    }
    out = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            train=ocp.args.StandardRestore(abstract_train),
            meta=ocp.args.JsonRestore(),
        ),
    )
    train = out["train"]
    state = TrainState(
        step=train["step"], params=out["params"], opt_state=train["opt_state"], rng=train["rng"]
    )
    return state, out["meta"]


def read_meta(workdir: str) -> tuple[int, dict[str, Any]]:
    """(latest step, meta) of a finished or running stage; clear error if there is none."""
    path = checkpoint_dir(workdir)
    manager = ocp.CheckpointManager(
        path,
        item_names=("params", "train", "meta"),
        options=ocp.CheckpointManagerOptions(create=False),
    )
    step = manager.latest_step() if epath.Path(path).exists() else None
    if step is None:
        raise CheckpointError(
            f"no checkpoint under {path}: run the stage that writes it first "
            f"(e.g. `rlft train --config=configs/sft.py:tiny --workdir="
            f"{workdir}`) or fix the init path in the config"
        )
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    return step, meta


_COMPUTE_ONLY = ("dtype", "remat")  # may differ between stages


def _check_config(source: str, role: str, saved: dict, cfg: ModelConfig) -> None:
    diffs = {
        k: (v, getattr(cfg, k))
        for k, v in saved.items()
        if k not in _COMPUTE_ONLY and getattr(cfg, k) != v
    }
    if diffs:
        raise CheckpointError(
            f"model config of {source} (role {role!r}) differs from this config: "
            + ", ".join(
                f"model.{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diffs.items()
            )
            + "; make config.model match the checkpoint (a vocab mismatch means the data's "
            "tokenizer differs from the one the checkpoint was trained with)"
        )


def _is_pretrained_dir(path: str) -> bool:
    return not epath.Path(checkpoint_dir(path)).exists() and any(
        os.path.isfile(os.path.join(path, f)) for f in ("config.json", "rlft_config.json")
    )


def _load_pretrained(path: str, cfg: ModelConfig, mesh) -> Any:
    """An HF GPT-NeoX or `rlft convert` directory's language model, placed on the mesh."""
    from rlft.convert import load_pretrained  # noqa: PLC0415  (lazy: HF readers)

    saved_cfg, params = load_pretrained(path)
    _check_config(path, "policy", saved_cfg.to_dict(), cfg)
    target = abstract_params("lm", cfg, mesh)
    return jax.tree.map(lambda x, t: jax.device_put(x.astype(t.dtype), t.sharding), params, target)


def load_params(workdir: str, role: str, kind: str, cfg: ModelConfig, mesh) -> Any:
    """One model's params from an earlier stage's latest checkpoint, checked against `cfg`.

    `workdir` may also be a pretrained language model (an HF GPT-NeoX directory or the output
    of `rlft convert --from-hf`); a scalar model then takes its backbone from it.
    """
    if _is_pretrained_dir(workdir):
        return _load_pretrained(workdir, cfg, mesh)
    step, meta = read_meta(workdir)
    models = meta.get("models", {})
    if role not in models:
        raise CheckpointError(
            f"checkpoint {checkpoint_dir(workdir)} (step {step}) has models "
            f"{sorted(models)}, not {role!r}; point the init path at a stage "
            f"that trains a {role}"
        )
    saved = models[role]
    if saved["kind"] != kind and not (saved["kind"] == "lm" and kind == "scalar"):
        raise CheckpointError(
            f"{workdir}: role {role!r} is a {saved['kind']!r} model, a {kind!r} model was expected"
        )
    _check_config(workdir, role, saved["config"], cfg)
    # Only this role is read (a partial restore): a PPO workdir's critic, or a 2.8B policy's
    # siblings, never reach memory when one model is asked for.
    target = {role: abstract_params(saved["kind"], cfg, mesh)}
    manager = ocp.CheckpointManager(checkpoint_dir(workdir), item_names=("params", "train", "meta"))
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            )
        ),
    )
    return restored["params"][role]
