"""Loading a pretraining checkpoint as a plain Flax ViT for transfer."""
from __future__ import annotations

from typing import Optional

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from ebm_vision.models import create_vit
from ebm_vision.models.vit import ViT, resample_posemb
from ebm_vision.run import paths, run_config

def checkpoint_dir(path) -> tuple[epath.Path, epath.Path]:
  """(workdir, '<step>/state' folder) for a workdir or a checkpoints/<step> folder."""
  path = paths.as_path(path)
  if (path / "checkpoints").is_dir():
    steps = [int(s.name) for s in (path / "checkpoints").iterdir() if s.name.isdigit()]
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {path / 'checkpoints'}")
    return path, path / "checkpoints" / str(max(steps)) / "state"
  if path.name == "state":
    path = path.parent
  if (path / "state").is_dir():
    return path.parent.parent, path / "state"
  raise FileNotFoundError(f"{path} is neither a workdir with checkpoints/ nor a checkpoint")


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


def checkpoint_step(path) -> int:
  """The training step of the checkpoint `load_pretrained(path)` loads."""
  return int(checkpoint_dir(path)[1].parent.name)


def restore_params(state_dir: epath.Path, group: str = "model") -> dict:
  """`params[group]` of a checkpoint's '<step>/state' folder as host numpy arrays.

  Only these are read (not the optimizer state), and whatever mesh and number of
  devices wrote them: restoring with the saved shardings fails on another topology.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(state_dir).item_metadata.tree["params"][group]
  on_host = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
      item={"params": {group: tree}}, restore_args={"params": {group: on_host}},
      partial_restore=True))["params"][group]


def load_pretrained(path: str, *, image_size: Optional[int] = None,
                    num_classes: Optional[int] = None, model_config=None,
                    drop_path_rate: Optional[float] = None, pool_type: Optional[str] = None,
                    rng: Optional[jax.Array] = None) -> tuple[ViT, dict]:
  """A ViT and its params from a pretraining checkpoint, ready for transfer.

  Args:
    path: a pretraining workdir (its latest checkpoint) or a `checkpoints/<step>` folder.
    image_size: resolution to transfer at (default: the pretraining one); learned
      position embeddings are resampled to the new patch grid (sin-cos ones are
      recomputed).
    num_classes: adds a freshly initialized (zero) classification `head`.
    model_config: the model section to build; default: the run's own (config.json).
      Loading into a different architecture fails with the mismatched shapes.
    drop_path_rate: overrides the model's stochastic depth (fine-tuning uses it).
    pool_type: overrides the pooled feature, 'gap' or 'token'; a class token the
      checkpoint lacks starts at zero, like the head.
    rng: initializes the parameters the checkpoint does not have (head, class token).

  Returns:
    (model, params): `model.apply({'params': params}, images)` gives the dict of
    ViT outputs; pretraining-only state (step sizes, optimizer) is dropped.
  """
  workdir, state_dir = checkpoint_dir(path)
  if model_config is None or image_size is None:
    recorded = run_config.load(workdir)
    model_config = model_config or recorded.model
    image_size = image_size or recorded.data.image_size
  model_config = ml_collections.ConfigDict(model_config)
  if drop_path_rate is not None:
    model_config.drop_path_rate = drop_path_rate
  if pool_type is not None:
    model_config.pool_type = pool_type
  model = create_vit(model_config, num_classes=num_classes)
  size = image_size
  fresh = model.init(rng if rng is not None else jax.random.PRNGKey(0),
                     np.zeros((1, size, size, 3), np.float32))["params"]
  loaded = restore_params(state_dir)
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
    raise ValueError("checkpoint does not fit the model: " + "; ".join(
        mismatched + [f"{k}: not in checkpoint" for k in missing]))
  params = {k: flat_loaded.get(k, v) for k, v in flat_fresh.items()}
  params = jax.tree.map(np.asarray, flax.traverse_util.unflatten_dict(params, sep="/"))
  return model, params
