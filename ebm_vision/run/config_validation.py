"""Start-up checks of a pretraining config: a bad value fails with the field's name."""
from __future__ import annotations

from ebm_vision.models import vit, vit_kwargs
from ebm_vision.objectives import corruptions, energy
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run import optimizer, paths
from ebm_vision.run.errors import RunError

DATA_SOURCES = ("tfds", "dead_leaves")  # Kept free of TensorFlow: see input_pipeline.


class ConfigError(RunError, ValueError):
  """A config field has a value the code cannot run with."""


def _choice(config, field: str, allowed) -> None:
  value = get_field(config, field)
  if value not in allowed:
    raise ConfigError(f"config.{field}={value!r}: must be one of {list(allowed)}")


def _check(ok: bool, config, field: str, requirement: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={get_field(config, field)!r}: {requirement}")


def get_field(config, field: str):
  """config.<field> for a dotted field name."""
  for part in field.split("."):
    config = config[part]
  return config


def check_schedule(config) -> None:
  """Exactly one of num_epochs / num_train_steps (and of the warm-up's), each positive."""
  for epochs, steps, minimum in (("num_epochs", "num_train_steps", 0),
                                 ("optimizer.warmup_epochs", "optimizer.warmup_steps", -1)):
    values = [get_field(config, f) for f in (epochs, steps)]
    if (values[0] is None) == (values[1] is None):
      raise ConfigError(f"config.{epochs}={values[0]!r}, config.{steps}={values[1]!r}: set one "
                        "of them and the other to None")
    field = epochs if values[0] is not None else steps
    _check(get_field(config, field) > minimum, config, field,
           "must be > 0" if minimum == 0 else "must be ≥ 0")


PRETRAIN_MODES = ("pretrain",)
METHODS = ("energy", "mae")
TRANSFER_MODES = ("linear_probe", "knn", "finetune")
FROZEN_METHODS = ("knn", "linear_probe")


def _validate_model_and_data(config, num_devices: int) -> dict:
  """Checks shared by every mode; returns the ViT's size."""
  try:
    kw = vit_kwargs(config.model)
  except ValueError:
    raise ConfigError(f"config.model.variant={config.model.variant!r}: must be "
                      f"'<size>/<patch>' with size in {list(vit.VARIANTS)}, e.g. 'B/16'"
                      ) from None
  _choice(config, "model.posemb", vit.POSEMBS)
  _choice(config, "model.pool_type", vit.POOLS)
  _choice(config, "model.compute_dtype", vit.DTYPES)
  _check(0 <= config.model.drop_path_rate < 1, config, "model.drop_path_rate", "must be in [0, 1)")
  _check(kw["width"] % kw["num_heads"] == 0, config, "model.num_heads",
         f"must divide the width {kw['width']}")
  if config.model.posemb == "sincos2d":
    _check(kw["width"] % 4 == 0, config, "model.posemb", f"needs width % 4 == 0 (width {kw['width']})")
  _check(config.data.image_size % kw["patch_size"] == 0, config, "data.image_size",
         f"must be divisible by the patch size {kw['patch_size']}")
  _choice(config, "data.source", DATA_SOURCES)
  _check(0 < config.data.crop_min_scale <= 1, config, "data.crop_min_scale", "must be in (0, 1]")
  _check(len(config.data.pixel_mean) == 3 and len(config.data.pixel_std) == 3, config,
         "data.pixel_mean", "pixel_mean and pixel_std need 3 values each")
  try:
    data, fsdp, _ = mesh_lib.mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _check(config.batch_size > 0 and config.batch_size % (data * fsdp) == 0, config, "batch_size",
         f"must be a positive multiple of mesh.data × mesh.fsdp = {data * fsdp}")
  _choice(config, "optimizer.mu_dtype", optimizer.MU_DTYPES)
  accum = config.get("grad_accum_steps", 1)
  _check(accum >= 1 and config.batch_size % (data * fsdp * accum) == 0, config,
         "grad_accum_steps", f"must be ≥ 1 and divide batch_size={config.batch_size} into "
         f"micro-batches that mesh.data × mesh.fsdp = {data * fsdp} divides")
  return kw


def validate_transfer(config, num_devices: int) -> None:
  """Raises ConfigError naming the first field of a transfer config that cannot work."""
  _choice(config, "mode", TRANSFER_MODES)
  depth = _validate_model_and_data(config, num_devices)["depth"]
  _check(config.data.source == "tfds", config, "data.source", "transfer needs labels: 'tfds'")
  for i, method in enumerate(config.frozen.methods):
    if method not in FROZEN_METHODS:
      raise ConfigError(f"config.frozen.methods[{i}]={method!r}: must be one of "
                        f"{list(FROZEN_METHODS)}")
  for field in ("frozen.knn_k", "frozen.knn_temperature", "frozen.probe_epochs",
                "frozen.probe_batch_size", "frozen.probe_learning_rate"):
    _check(get_field(config, field) > 0, config, field, "must be > 0")
  for field in ("frozen.num_train_examples", "frozen.num_eval_examples"):
    _check(get_field(config, field) >= 0, config, field, "must be ≥ 0 (0 = the whole split)")
  ft = config.finetune
  _check(0 < ft.layer_decay <= 1, config, "finetune.layer_decay", "must be in (0, 1]")
  _check(0 <= ft.drop_path_rate < 1, config, "finetune.drop_path_rate", "must be in [0, 1)")
  _check(0 <= ft.label_smoothing < 1, config, "finetune.label_smoothing", "must be in [0, 1)")
  for field in ("finetune.mixup_alpha", "finetune.cutmix_alpha"):
    _check(get_field(config, field) >= 0, config, field, "must be ≥ 0 (0 disables)")
  _check(0 <= ft.mix_switch_prob <= 1, config, "finetune.mix_switch_prob", "must be in [0, 1]")
  _check(0 <= ft.train_last_blocks <= depth, config, "finetune.train_last_blocks",
         f"must be in [0, {depth}] (0 = all blocks)")
  _check(0 <= ft.head_only_fraction < 1, config, "finetune.head_only_fraction",
         "must be in [0, 1) (0 = the whole network from the start)")
  check_schedule(config)
  for field in ("finetune.eval_every_steps", "log_every_steps",
                "checkpoint_every_steps", "max_checkpoints_to_keep"):
    _check(get_field(config, field) > 0, config, field, "must be > 0")


def validate_pretraining(config, num_devices: int) -> None:
  """Raises ConfigError naming the first field with a value that cannot work."""
  _choice(config, "mode", PRETRAIN_MODES)
  kw = _validate_model_and_data(config, num_devices)

  _choice(config, "method", METHODS)
  if config.method == "mae":
    _check(config.corruption.name == "mask", config, "corruption.name",
           "method='mae' pretrains on 'mask' only")
    _check(config.corruption.clean_image_fraction == 0, config,
           "corruption.clean_image_fraction", "must be 0 with method='mae' (energy only)")
    _check(config.loss.target == "pixels", config, "loss.target",
           "must be 'pixels' with method='mae' (energy only)")
    for field in ("eval_tasks", "viewer.tasks"):
      _check(set(get_field(config, field)) <= {"mask"}, config, field,
             "method='mae' restores only ('mask',)")
    for field in ("mae.decoder_width", "mae.decoder_depth", "mae.decoder_num_heads"):
      _check(get_field(config, field) > 0, config, field, "must be > 0")
    _check(config.mae.decoder_width % config.mae.decoder_num_heads == 0, config,
           "mae.decoder_num_heads", f"must divide mae.decoder_width={config.mae.decoder_width}")
  _choice(config, "energy.readout", energy.READOUTS)
  _choice(config, "energy.tokens", energy.ENERGY_TOKENS)
  _check(config.restore.num_steps >= 1, config, "restore.num_steps", "must be ≥ 1")
  _check(config.restore.init_step_size > 0, config, "restore.init_step_size", "must be > 0")
  _check(0 <= config.restore.step_size_jitter < 1, config, "restore.step_size_jitter",
         "must be in [0, 1)")
  _check(config.restore.langevin_noise_scale >= 0, config, "restore.langevin_noise_scale",
         "must be ≥ 0")
  _check(config.restore.interstep_noise_scale >= 0, config, "restore.interstep_noise_scale",
         "must be ≥ 0")
  _choice(config, "restore.update_region", energy.REGIONS)
  _choice(config, "restore.remat", energy.REMAT_POLICIES)
  _choice(config, "restore.second_order", energy.SECOND_ORDER_MODES)
  _choice(config, "restore.step_normalization", energy.STEP_NORMALIZATIONS)
  _check(config.restore.step_size_lr_multiplier > 0, config, "restore.step_size_lr_multiplier",
         "must be > 0")
  _choice(config, "loss.target", energy.LOSS_TARGETS)
  if config.loss.target != "pixels":
    cell, patch = config.loss.hog_cell_size, kw["patch_size"]
    _check(cell > 0 and patch % cell == 0, config, "loss.hog_cell_size",
           f"must be > 0 and divide model.patch_size={patch}")
  if config.loss.target == "pixels_and_hog":
    _check(config.loss.hog_weight > 0, config, "loss.hog_weight",
           "must be > 0 with loss.target='pixels_and_hog'")
  _choice(config, "loss.type", energy.LOSS_TYPES)
  _choice(config, "loss.region", energy.REGIONS)
  _choice(config, "loss.steps", energy.LOSS_STEPS)
  _choice(config, "loss.norm_pix_stats", energy.PATCH_STATS)
  _check(config.loss.norm_pix_eps > 0, config, "loss.norm_pix_eps", "must be > 0")
  cell, patch = config.loss.norm_pix_cell_size, kw["patch_size"]
  _check(cell == 0 or (cell > 0 and patch % cell == 0), config, "loss.norm_pix_cell_size",
         f"must be 0 (the patch size) or divide model.patch_size={patch}")
  for i, task in enumerate(config.loss.plain_pixel_tasks):
    if task not in corruptions.TASKS:
      raise ConfigError(f"config.loss.plain_pixel_tasks[{i}]={task!r}: must be one of "
                        f"{list(corruptions.TASKS)}")

  tasks = (*corruptions.CORRUPTIONS, *corruptions.COMBINATIONS)
  _choice(config, "corruption.name", tasks)
  _check(0 <= config.corruption.clean_image_fraction < 1, config,
         "corruption.clean_image_fraction", "must be in [0, 1)")
  for i, task in enumerate(config.eval_tasks):
    if task not in tasks:
      raise ConfigError(f"config.eval_tasks[{i}]={task!r}: must be one of {list(tasks)}")
  used = {config.corruption.name, *config.eval_tasks}
  for combination in corruptions.COMBINATIONS:
    if combination in used:
      for i, task in enumerate(config.corruption[combination].tasks):
        if task not in corruptions.CORRUPTIONS:
          raise ConfigError(f"config.corruption.{combination}.tasks[{i}]={task!r}: must be "
                            f"one of {list(corruptions.CORRUPTIONS)}")
      used |= set(config.corruption[combination].tasks)
  if "mix" in used:
    mix = config.corruption.mix
    _check(len(mix.weights) == len(mix.tasks) and min(mix.weights) >= 0 < sum(mix.weights),
           config, "corruption.mix.weights", "needs one weight ≥ 0 per task, not all 0")
  if "mask" in used:
    _check(0 < config.corruption.mask.ratio < 1, config, "corruption.mask.ratio", "must be in (0, 1)")
    _choice(config, "corruption.mask.fill", corruptions.MASK_FILLS)
    grid = config.data.image_size // kw["patch_size"]
    _check(config.corruption.mask.block_size >= 1 and grid % config.corruption.mask.block_size == 0,
           config, "corruption.mask.block_size", f"must divide the patch grid side {grid}")
  if "sort" in used:
    _check(0 < config.corruption.sort.ratio <= 1, config, "corruption.sort.ratio", "must be in (0, 1]")
  if "sr" in used:
    _check(all(f >= 2 and config.data.image_size % f == 0 for f in config.corruption.sr.factors)
           and len(config.corruption.sr.factors) > 0, config, "corruption.sr.factors",
           f"need factors ≥ 2 that divide data.image_size={config.data.image_size}")
    _choice(config, "corruption.sr.down_method", corruptions.DOWNSAMPLE_METHODS)
    _choice(config, "corruption.sr.up_method", corruptions.UPSAMPLE_METHODS)
  if "denoise" in used:
    d = config.corruption.denoise
    _check(0 <= d.sigma_min <= d.sigma_max, config, "corruption.denoise.sigma_min",
           f"need 0 ≤ sigma_min ≤ sigma_max (sigma_max={d.sigma_max})")

  knn = config.knn_monitor
  if knn.every_steps:
    _check(config.data.source == "tfds", config, "knn_monitor.every_steps",
           "the kNN monitor needs a labeled TFDS source (data.source='tfds'), or 0")
    for field in ("k", "temperature", "num_train_examples", "num_eval_examples"):
      _check(knn[field] > 0, config, f"knn_monitor.{field}", "must be > 0")
  check_schedule(config)
  for field in ("log_every_steps", "image_every_steps",
                "checkpoint_every_steps", "max_checkpoints_to_keep", "num_grid_images"):
    _check(get_field(config, field) > 0, config, field, "must be > 0")
  _check(config.optimizer.learning_rate_per_256 > 0, config,
         "optimizer.learning_rate_per_256", "must be > 0")
  _check(0 <= config.ema_decay < 1, config, "ema_decay", "must be in [0, 1) (0 = no EMA)")
  _check(config.time_budget_seconds >= 0, config, "time_budget_seconds", "must be ≥ 0 (0 = no limit)")
  _check(config.stop_after_steps >= 0, config, "stop_after_steps", "must be ≥ 0 (0 = no limit)")


def check_workdir(workdir: str) -> None:
  """Creates `workdir` (a local path or a gs:// URI) if needed; fails in one line if it
  cannot be written."""
  try:
    paths.ensure_writable(workdir)
  except Exception as e:  # pylint: disable=broad-except  # OSError here, tf.errors.* for gs://.
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    raise ConfigError(f"--workdir={workdir!r} is not writable: {reason}") from None
