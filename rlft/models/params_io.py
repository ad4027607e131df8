"""Model params on disk: rlft params directories, a run's checkpoint meta, and one model's params.

Two layouts hold params:

    rlft params directory (`rlft convert --from-hf`, `save_params_dir`)
        rlft_config.json   {"format": "rlft-params/1", "kind": "lm", "model": ModelConfig fields,
                            "hf_config": token ids kept from the source config.json}
        params/            orbax StandardCheckpointer tree of LanguageModel params (float32)
        tokenizer.json ... tokenizer files copied from the source, when it has them

    a run's workdir (`rlft train`, written by rlft.train.checkpoint)
        checkpoints/<step>/{params, train, meta}: `params` by role, `meta` (JSON) with the model
        configs by role ({"models": {role: {"kind", "config", ...}}}), objective, data position

`load_params` reads one role's params from either (or from an HF GPT-NeoX directory), checked
against the config the caller expects and placed on the caller's mesh.
"""

import json
import os
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh

from rlft.errors import CheckpointError
from rlft.models import param_shapes
from rlft.models.config import ModelConfig
from rlft.models.hf import CONFIG_FILE, RLFT_CONFIG_FILE
from rlft.models.hf_files import load_hf_checkpoint
from rlft.models.quiet_restore import quiet_failed_restore
from rlft.parallel import logical_shardings

FORMAT = "rlft-params/1"
PARAMS_DIR = "params"
CHECKPOINT_ITEMS = ("params", "train", "meta")  # one step of a run's checkpoints
_COMPUTE_ONLY = ("dtype", "remat")  # may differ between the stage that saved and the one reading


def abstract_params(kind: str, cfg: ModelConfig, mesh: Mesh | None = None):
    """ShapeDtypeStructs of one model's params: restore targets.

    With `mesh`, each leaf carries its logical-axis sharding (orbax restores onto the mesh);
    without, orbax restores numpy arrays.
    """
    boxed = param_shapes(kind, cfg)
    if mesh is None:
        return nn.unbox(boxed)
    shardings = logical_shardings(boxed, mesh)
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings
    )


# rlft params directories ---------------------------------------------------------------------


def save_params_dir(path: str, cfg: ModelConfig, params, hf_config: dict[str, Any] | None = None):
    """Write an rlft params directory (layout in the module docstring)."""
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    meta = {"format": FORMAT, "kind": "lm", "model": cfg.to_dict(), "hf_config": hf_config or {}}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, PARAMS_DIR), params)
        ckptr.wait_until_finished()
    with open(os.path.join(path, RLFT_CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def load_params_dir(path: str) -> tuple[ModelConfig, Any, dict[str, Any]]:
    """(cfg, numpy params, kept HF config fields) of an rlft params directory.

    Raises ValueError if `rlft_config.json` is not an rlft-params/1 language model.
    """
    path = os.path.abspath(path)
    with open(os.path.join(path, RLFT_CONFIG_FILE)) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT or meta.get("kind") != "lm":
        raise ValueError(
            f"{path}/{RLFT_CONFIG_FILE}: format {meta.get('format')!r}, kind "
            f"{meta.get('kind')!r}; expected {FORMAT!r}, 'lm' (written by "
            f"`rlft convert --from-hf`)"
        )
    cfg = ModelConfig(**meta["model"])
    params_dir = os.path.join(path, PARAMS_DIR)
    with ocp.StandardCheckpointer() as ckptr, quiet_failed_restore(params_dir):
        params = ckptr.restore(params_dir, abstract_params("lm", cfg))
    return cfg, params, meta.get("hf_config", {})


def load_pretrained(path: str) -> tuple[ModelConfig, Any]:
    """(cfg, float32 numpy params) from an HF GPT-NeoX directory or an rlft params directory.

    Place them on devices with `jax.device_put(params, shardings)`. Raises FileNotFoundError if
    `path` is neither.
    """
    if os.path.isfile(os.path.join(path, RLFT_CONFIG_FILE)):
        cfg, params, _ = load_params_dir(path)
        return cfg, params
    if os.path.isfile(os.path.join(path, CONFIG_FILE)):
        return load_hf_checkpoint(path)
    raise FileNotFoundError(
        f"{path} is neither an rlft params directory ({RLFT_CONFIG_FILE} + "
        f"{PARAMS_DIR}/) nor an HF checkpoint ({CONFIG_FILE} + "
        f"model.safetensors)"
    )


# A run's checkpoints -------------------------------------------------------------------------


def checkpoint_dir(workdir: str) -> str:
    """WORKDIR/checkpoints; an object-store URL (gs://...) is kept as it is."""
    if "://" in str(workdir):
        return str(workdir).rstrip("/") + "/checkpoints"
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def reading_manager(workdir: str) -> ocp.CheckpointManager:
    """A CheckpointManager on `workdir`'s checkpoints that only reads: it never creates the
    directory (sampling, evaluating and loading an earlier stage leave a workdir as it was)."""
    return ocp.CheckpointManager(
        checkpoint_dir(workdir),
        item_names=CHECKPOINT_ITEMS,
        options=ocp.CheckpointManagerOptions(create=False),
    )


def read_meta(workdir: str, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """(step, meta) of the latest (or given) step of a finished or running stage.

    Raises CheckpointError, naming the command that writes one, if there is no checkpoint;
    a given step that does not restore raises what Orbax raises.
    """
    path = checkpoint_dir(workdir)
    manager = reading_manager(workdir)
    if step is None:
        step = manager.latest_step() if epath.Path(path).exists() else None
    if step is None:
        raise CheckpointError(
            f"no checkpoint under {path}: run the stage that writes it first "
            f"(e.g. `rlft train --config=configs/sft.py:tiny --workdir="
            f"{workdir}`) or fix the init path in the config"
        )
    with quiet_failed_restore(f"{path}/{step}"):
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        meta = manager.restore(step, args=args)["meta"]
    return step, meta


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
        os.path.isfile(os.path.join(path, f)) for f in (CONFIG_FILE, RLFT_CONFIG_FILE)
    )


def _load_pretrained_on(path: str, cfg: ModelConfig, mesh: Mesh) -> Any:
    """An HF GPT-NeoX or rlft params directory's language model, placed on the mesh."""
    saved_cfg, params = load_pretrained(path)
    _check_config(path, "policy", saved_cfg.to_dict(), cfg)
    target = abstract_params("lm", cfg, mesh)
    return jax.tree.map(lambda x, t: jax.device_put(x.astype(t.dtype), t.sharding), params, target)


def load_params(
    workdir: str,
    role: str,
    kind: str,
    cfg: ModelConfig,
    mesh: Mesh,
    step: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Any:
    """One model's params from an earlier stage's latest (or given) checkpoint step, checked
    against `cfg`.

    `workdir` may also be a pretrained language model (an HF GPT-NeoX directory or the output
    of `rlft convert --from-hf`) when no step is given; a scalar model then takes its backbone
    from it. Raises CheckpointError if the checkpoint is missing, lacks `role`, holds another
    model kind, or its model config differs from `cfg` (dtype and remat aside); a given step
    that does not restore raises what Orbax raises. `meta`, that step's record as `read_meta`
    returned it, saves reading it again (it needs `step`).
    """
    if step is None and _is_pretrained_dir(workdir):
        return _load_pretrained_on(workdir, cfg, mesh)
    if meta is None or step is None:
        step, meta = read_meta(workdir, step)
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
    with quiet_failed_restore(f"{checkpoint_dir(workdir)}/{step}"):
        restored = reading_manager(workdir).restore(
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
