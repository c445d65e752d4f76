"""Supervised transfer by training: fine-tuning (MAE's recipe) and the trained linear probe.

  python main.py --config=configs/finetune_tiny_imagenet.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR

mode='finetune': layer-wise learning-rate decay, drop path, mixup + cutmix, label
smoothing, AdamW with warm-up and cosine decay. mode='linear_probe' with
frozen.fast=False: frozen backbone, BatchNorm without affine, a linear head trained
with the same optimizer on augmented images (MAE's linear probe). Both evaluate
top-1/top-5 on the eval split every `finetune.eval_every_steps`; `checkpoints/`
holds the latest states (resume), `best/` the ViT parameters with the best top-1
(for the probe, with the feature standardization folded into the head).
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions

from ebm_vision import checkpointing, classification, config_validation, input_pipeline
from ebm_vision import mesh as mesh_lib
from ebm_vision import partitioning, paths, preemption, pretrained
from ebm_vision.frozen_eval import backbone
from ebm_vision.optimizer import create_optimizer, layer_decay_scales
from ebm_vision.train import first_non_finite, save_checkpoint, step_metrics


def evaluate(params, config, model) -> dict[str, float]:
  """Top-1 and top-5 accuracy on the whole eval split (centre crops)."""
  totals = {"top1": 0., "top5": 0., "count": 0.}
  for batch in input_pipeline.labeled_batches(config.data, config.data.eval_split,
                                              config.batch_size):
    counts = classification.eval_step(params, batch, model=model,
                                      pixel_mean=tuple(config.data.pixel_mean),
                                      pixel_std=tuple(config.data.pixel_std))
    totals = {k: totals[k] + float(v) for k, v in counts.items()}
  return {"eval/top1": totals["top1"] / totals["count"],
          "eval/top5": totals["top5"] / totals["count"]}


def train_and_evaluate(config, workdir: str) -> dict:
  """Fine-tunes `config.pretrained` (or a random init) on `config.data`; returns the last metrics."""
  config_validation.validate_transfer(config, jax.device_count())
  config_validation.check_workdir(workdir)
  input_pipeline.hide_accelerators_from_tf()
  mesh = mesh_lib.create_mesh(config.mesh)
  replicated = mesh_lib.replicated(mesh)
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True)
  if jax.process_index() == 0:
    pretrained.save_run_config(workdir, config)

  # ---------------------------------------------------- model and optimizer
  probe = config.mode == "linear_probe"
  num_classes = input_pipeline.num_classes(config.data)
  model, params, _ = backbone(config, num_classes=num_classes,
                              drop_path_rate=0. if probe else config.finetune.drop_path_rate)
  if probe:  # Only the head learns.
    scales = jax.tree_util.tree_map_with_path(
        lambda path, _: float(getattr(path[0], "key", None) == "head"), params)
  else:
    scales = layer_decay_scales(params, model.depth, config.finetune.layer_decay)
  tx, schedule = create_optimizer(config.optimizer, config.batch_size, config.num_train_steps,
                                  lr_scales=scales)
  init = functools.partial(
      classification.init_probe_state if probe else classification.init_state, params, tx)
  abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  state_sharding = partitioning.state_shardings(abstract_state, tx, mesh)

  # ------------------------------------------------ fresh or resumed state
  manager = checkpointing.create_manager(workdir, config)
  best = ocp.CheckpointManager(
      paths.as_path(workdir) / "best",
      options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["eval/top1"],
                                           best_mode="max"))
  state = checkpointing.restore_latest(
      manager, checkpointing.abstract_like(abstract_state, state_sharding))
  if state is None:
    state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  start_step = int(state["step"])
  train_iter = input_pipeline.create_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      start_step=start_step, workdir=workdir, with_labels=True)

  step_fn = partitioning.jit(
      functools.partial(classification.probe_train_step if probe else classification.train_step,
                        model=model, config=config, tx=tx, schedule=schedule,
                        num_classes=num_classes), mesh,
      in_shardings=(state_sharding, mesh_lib.batch_sharding(mesh)),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))

  # ------------------------------------------------------------------ loop
  progress = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps,
                                             writer=writer, every_steps=config.log_every_steps)
  scalars, pending, pending_from = {}, [], start_step + 1
  with preemption.PreemptionWatch(manager) as watch:
    for step in range(start_step + 1, config.num_train_steps + 1):
      state, metrics = step_fn(state, mesh_lib.global_batch(next(train_iter), mesh))
      pending.append(metrics["loss"])
      progress(step)
      stop = watch.stop_requested(step)
      is_last = step == config.num_train_steps
      saving = is_last or stop or manager.should_save(step)
      if saving or step % config.log_every_steps == 0:
        bad = first_non_finite(pending_from, pending)
        if bad is not None:
          raise FloatingPointError(f"non-finite loss at step {bad}; the last good checkpoint is "
                                   f"step {manager.latest_step()} in {workdir}")
        scalars = step_metrics(metrics, "train/")
        scalars["train/loss"] = float(np.mean(jax.device_get(pending)))
        writer.write_scalars(step, scalars)
        pending, pending_from = [], step + 1
      if step % config.finetune.eval_every_steps == 0 or is_last:
        params = state["params"]
        if probe:
          params = classification.fold_standardization(params, state["probe_stats"])
        eval_scalars = evaluate(params, config, model)
        writer.write_scalars(step, eval_scalars)
        scalars.update(eval_scalars)
        best.save(step, args=ocp.args.StandardSave(params), metrics=eval_scalars)
        logging.info("step %d: top-1 %.4f, top-5 %.4f", step, eval_scalars["eval/top1"],
                     eval_scalars["eval/top5"])
      if saving:
        save_checkpoint(manager, step, state, train_iter, config, workdir, force=is_last or stop)
      if stop:
        logging.warning("Stopped for preemption after saving step %d in %s; the next launch "
                        "resumes from it.", step, workdir)
        break
  for m in (manager, best):
    m.wait_until_finished()
    m.close()
  writer.flush()
  return scalars
