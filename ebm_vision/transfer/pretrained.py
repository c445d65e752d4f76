"""Loading a backbone for transfer: from any run of this project, or from another codebase.

`load_pretrained(path)` accepts
  - a run's workdir (its latest checkpoint), `<workdir>/checkpoints/<step>`, or for
    fine-tuning and the trained linear probe `<workdir>/best` (the best evaluation) or
    `<workdir>/best/<step>`: pretraining, fine-tuning and probe runs alike;
  - a big_vision .npz, a timm or Hugging Face safetensors file or folder (e.g. MAE's
    weights as timm publishes them): see `transfer/formats.py`.
It logs what it found, and fails in one line when the path is none of these.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from ebm_vision.models import create_vit
from ebm_vision.models.vit import ViT, resample_posemb
from ebm_vision.run import checkpointing, paths, run_config
from ebm_vision.run.errors import CheckpointError
from ebm_vision.transfer import formats

# The pytree of a checkpoint item: a run's train state or best/'s bare parameters.
STATE_ITEM, BEST_ITEM = "state", "default"


@dataclasses.dataclass
class Checkpoint:
  """A checkpoint of a run of this project, resolved from a user's path."""
  workdir: epath.Path
  item_dir: epath.Path  # The folder Orbax restores (<step>/state or best/<step>/default).
  step: int
  kind: str  # 'pretraining', 'fine-tuning', 'linear probe' or their 'best' evaluation.


def _latest_step(folder: epath.Path) -> Optional[int]:
  steps = [int(s.name) for s in folder.iterdir() if s.name.isdigit()] if folder.is_dir() else []
  return max(steps) if steps else None


def find_checkpoint(path) -> Checkpoint:
  """Resolves a workdir, checkpoints/<step>, best or best/<step> folder of a run."""
  path = paths.as_path(path)
  if path.name == STATE_ITEM or path.name == BEST_ITEM:
    path = path.parent
  if path.name.isdigit():  # checkpoints/<step> or best/<step>
    step, folder = int(path.name), path.parent
  else:
    folder = path / "checkpoints" if path.name != "best" else path
    step = _latest_step(folder)
    if step is None:
      what = "best evaluation" if path.name == "best" else "checkpoint"
      raise FileNotFoundError(f"{path} holds no {what} (looked in {folder}): give a run's "
                              "workdir, <workdir>/checkpoints/<step>, <workdir>/best, or a "
                              ".npz / safetensors file")
  best = folder.name == "best"
  item_dir = folder / str(step) / (BEST_ITEM if best else STATE_ITEM)
  if not item_dir.is_dir():
    raise FileNotFoundError(f"{folder / str(step)} is not a checkpoint of a run (no "
                            f"{item_dir.name}/ in it)")
  workdir = folder.parent
  mode = run_config.load(workdir).get("mode", "pretrain")
  kind = {"pretrain": "pretraining", "finetune": "fine-tuning"}.get(mode, mode.replace("_", " "))
  return Checkpoint(workdir, item_dir, step, f"best {kind}" if best else kind)


def checkpoint_step(path) -> int:
  """The training step of the checkpoint `load_pretrained(path)` loads (0 for other formats)."""
  return 0 if formats.detect(str(path)) else find_checkpoint(path).step


def restore_params(item_dir: epath.Path, group: Optional[str] = "model") -> dict:
  """Parameters of a checkpoint item as host numpy arrays: `params[group]` of a train state
  ('model' for pretraining, None for fine-tuning's whole params), or a best/ item's tree.
  A pretraining run that kept an EMA of its parameters (`ema_decay` > 0) gives the EMA.

  Only these are read (not the optimizer state), and whatever mesh and number of
  devices wrote them: restoring with the saved shardings fails on another topology.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointing.item_tree(item_dir)
  if item_dir.name == BEST_ITEM:
    item, path = tree, ()
  else:
    path = (params_key(tree),) + ((group,) if group else ())
    item = tree
    for key in path:
      item = item[key]
  on_host = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)

  def nest(x):
    for key in reversed(path):
      x = {key: x}
    return x
  restored = checkpointer.restore(item_dir, args=ocp.args.PyTreeRestore(
      item=nest(item), restore_args=nest(on_host), partial_restore=True))
  for key in path:
    restored = restored[key]
  return restored


def params_key(tree: dict) -> str:
  """Which parameters of a train state's tree transfer: 'ema_params' if kept, else 'params'."""
  return "ema_params" if "ema_params" in tree else "params"


def read_backbone(path: str, num_heads: Optional[int] = None):
  """(ViT params, model config, image size, description) of any checkpoint `path`."""
  fmt = formats.detect(str(path))
  if fmt is not None:
    params, spec, _ = formats.load(str(path), num_heads)
    return (params, ml_collections.ConfigDict(spec.model_config()), spec.image_size,
            f"a {fmt} checkpoint ({spec.depth}×{spec.width}, patch {spec.patch_size})")
  checkpoint = find_checkpoint(path)
  recorded = run_config.load(checkpoint.workdir)
  tree = checkpointing.item_tree(checkpoint.item_dir)
  group = "model" if "model" in tree.get("params", {}) else None
  params = restore_params(checkpoint.item_dir, group)
  ema = " (its EMA parameters)" if params_key(tree) == "ema_params" else ""
  return (params, recorded.model, recorded.data.image_size,
          f"the {checkpoint.kind} checkpoint of step {checkpoint.step} in {checkpoint.workdir}"
          f"{ema}")


def backbone(config, num_classes=None, drop_path_rate=None):
  """(model, params, step) from `config.pretrained`, or a random init of `config.model`
  (step 0): the backbone a transfer run starts from."""
  if config.pretrained:
    model, params = load_pretrained(
        config.pretrained, image_size=config.data.image_size, num_classes=num_classes,
        drop_path_rate=drop_path_rate, pool_type=config.model.pool_type,
        rng=jax.random.PRNGKey(config.seed))
    return model, params, checkpoint_step(config.pretrained)
  model_config = config.model.copy_and_resolve_references()
  if drop_path_rate is not None:
    model_config.drop_path_rate = drop_path_rate
  model = create_vit(model_config, num_classes=num_classes)
  size = config.data.image_size
  params = model.init(jax.random.PRNGKey(config.seed), np.zeros((1, size, size, 3)))["params"]
  return model, params, 0


def architecture(model: ViT) -> dict:
  """The `config.model` fields that describe `model` (recorded by transfer runs)."""
  return dict(width=model.width, depth=model.depth, mlp_dim=model.mlp_dim,
              num_heads=model.num_heads, patch_size=model.patch_size, posemb=model.posemb,
              pool_type=model.pool_type, class_token=model.has_class_token)


def load_pretrained(path: str, *, image_size: Optional[int] = None,
                    num_classes: Optional[int] = None, model_config=None,
                    drop_path_rate: Optional[float] = None, pool_type: Optional[str] = None,
                    rng: Optional[jax.Array] = None,
                    num_heads: Optional[int] = None) -> tuple[ViT, dict]:
  """A ViT and its params from a checkpoint (see the module docstring), ready for transfer.

  Args:
    path: a run's workdir / checkpoints/<step> / best[/<step>], or a big_vision .npz,
      timm or Hugging Face safetensors file or folder.
    image_size: resolution to transfer at (default: the checkpoint's); learned
      position embeddings are resampled to the new patch grid (sin-cos ones are
      recomputed).
    num_classes: adds a freshly initialized (zero) classification `head` (a head in the
      checkpoint is replaced).
    model_config: the model section to build; default: the checkpoint's own.
      Loading into a different architecture fails with the mismatched shapes.
    drop_path_rate: overrides the model's stochastic depth (fine-tuning uses it).
    pool_type: overrides the pooled feature, 'gap' or 'token'; a class token the
      checkpoint lacks starts at zero, like the head.
    rng: initializes the parameters the checkpoint does not have (head, class token).
    num_heads: attention heads of a timm checkpoint of a non-standard width.

  Returns:
    (model, params): `model.apply({'params': params}, images)` gives the dict of
    ViT outputs; pretraining-only state (step sizes, read-out, optimizer) is dropped.
  """
  loaded, own_config, own_size, description = read_backbone(path, num_heads)
  logging.info("Loading the backbone of %s", description)
  model_config = ml_collections.ConfigDict(model_config or own_config)
  image_size = image_size or own_size
  if drop_path_rate is not None:
    model_config.drop_path_rate = drop_path_rate
  if pool_type is not None:
    model_config.pool_type = pool_type
  if model_config.pool_type == "token":
    model_config.class_token = True
  model = create_vit(model_config, num_classes=num_classes)
  size = image_size
  fresh = model.init(rng if rng is not None else jax.random.PRNGKey(0),
                     np.zeros((1, size, size, 3), np.float32))["params"]
  loaded = {k: v for k, v in loaded.items() if k != "head"}
  if "pos_embedding" in loaded and "pos_embedding" in fresh:
    grid = (size // model.patch_size,) * 2
    loaded = {**loaded, "pos_embedding": resample_posemb(loaded["pos_embedding"], grid)}

  flat_fresh = flax.traverse_util.flatten_dict(fresh, sep="/")
  flat_loaded = flax.traverse_util.flatten_dict(loaded, sep="/")
  mismatched = [f"{k}: checkpoint {np.shape(flat_loaded[k])} vs model {np.shape(v)}"
                for k, v in flat_fresh.items()
                if k in flat_loaded and np.shape(flat_loaded[k]) != np.shape(v)]
  missing = [k for k in flat_fresh
             if k not in flat_loaded and not k.startswith("head/") and k != "cls"]
  if mismatched or missing:
    raise CheckpointError(f"{path} does not fit the model: " + "; ".join(
        mismatched + [f"{k}: not in checkpoint" for k in missing]))
  params = {k: flat_loaded.get(k, v) for k, v in flat_fresh.items()}
  params = jax.tree.map(np.asarray, flax.traverse_util.unflatten_dict(params, sep="/"))
  return model, params
