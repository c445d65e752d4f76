"""Supervised transfer by training: fine-tuning (MAE's recipe) and the trained linear probe.

  python main.py --config=configs/finetune_tiny_imagenet.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR

mode='finetune': layer-wise learning-rate decay, drop path, mixup + cutmix, label
smoothing, AdamW with warm-up and cosine decay, optionally the head alone first
(LP-FT). mode='linear_probe' with frozen.fast=False: frozen backbone, BatchNorm without
affine, a linear head trained with the same optimizer on augmented images (MAE's linear
probe). Both evaluate top-1/top-5 on the eval split every `finetune.eval_every_steps`;
`checkpoints/` holds the latest states (resume), `best/` the ViT parameters with the best
top-1 (for the probe, with the feature standardization folded into the head).
"""
from __future__ import annotations

import functools

import jax
import orbax.checkpoint as ocp
from absl import logging

from ebm_vision.data import input_pipeline
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning
from ebm_vision.run import checkpointing, config_validation, loop, paths
from ebm_vision.run.optimizer import create_optimizer, layer_decay_scales, trainable_last_blocks
from ebm_vision.transfer import classification, pretrained


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
  config = loop.schedule_in_steps(config)
  with loop.setup(config, workdir, config_validation.validate_transfer) as run:
    # ---------------------------------------------------- model and optimizer
    probe = config.mode == "linear_probe"
    num_classes = input_pipeline.num_classes(config.data)
    model, params, _ = pretrained.backbone(
        config, num_classes=num_classes,
        drop_path_rate=0. if probe else config.finetune.drop_path_rate)
    config = config.copy_and_resolve_references()  # Recorded with the backbone's architecture.
    config.model.update(pretrained.architecture(model))
    is_head = jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[0], "key", None) == "head", params)
    if probe:  # Only the head learns; the backbone holds no optimizer moments.
      scales, trainable, head_only_steps = None, is_head, 0
    else:
      scales = layer_decay_scales(params, model.depth, config.finetune.layer_decay)
      trainable = trainable_last_blocks(params, model.depth, config.finetune.train_last_blocks)
      head_only_steps = round(config.finetune.head_only_fraction * config.num_train_steps)
    tx, schedule = create_optimizer(config.optimizer, config.batch_size, config.num_train_steps,
                                    lr_scales=scales, trainable=trainable,
                                    delayed=jax.tree.map(lambda h: not h, is_head),
                                    delay_steps=head_only_steps)
    init = functools.partial(
        classification.init_probe_state if probe else classification.init_state, params, tx)
    state_sharding = partitioning.state_shardings(
        jax.eval_shape(init, jax.random.PRNGKey(config.seed)), run.mesh)

    # ------------------------------------------------ fresh or resumed state
    manager = checkpointing.create_manager(workdir, config)
    best = ocp.CheckpointManager(
        paths.as_path(workdir) / "best",
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["eval/top1"],
                                             best_mode="max"))
    state = loop.restore_or_init(run, config, manager, init, state_sharding)
    job = (f"{'Linear probe' if probe else 'Fine-tuning'} of "
           f"{config.pretrained or 'a random init'}")
    logging.info("%s", loop.startup_summary(run, config, job, model, state["params"],
                                            int(state["step"]),
                                            config.data.train_split))
    train_iter = input_pipeline.create_train_iterator(
        config.data, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        start_step=int(state["step"]), workdir=workdir, with_labels=True)
    step_fn = partitioning.jit(
        functools.partial(classification.probe_train_step if probe else classification.train_step,
                          model=model, config=config, tx=tx, schedule=schedule,
                          num_classes=num_classes), run.mesh,
        in_shardings=(state_sharding, mesh_lib.batch_sharding(run.mesh)),
        out_shardings=(state_sharding, mesh_lib.replicated(run.mesh)), donate_argnums=(0,))

    # ------------------------------------------------- evaluation, best/, loop
    def evaluate_every(step, state, is_last):
      if not (step % config.finetune.eval_every_steps == 0 or is_last):
        return None
      params = state["params"]
      if probe:
        params = classification.fold_standardization(params, state["probe_stats"])
      scalars = evaluate(params, config, model)
      run.writer.write_scalars(step, scalars)
      best.save(step, args=ocp.args.StandardSave(params), metrics=scalars)
      logging.info("step %d: top-1 %.4f, top-5 %.4f", step, scalars["eval/top1"],
                   scalars["eval/top5"])
      return scalars

    scalars = loop.train_loop(run, config, manager, state, step_fn, train_iter,
                              evaluate=evaluate_every)
    best.wait_until_finished()
    for m in (manager, best):
      m.close()
    return scalars
