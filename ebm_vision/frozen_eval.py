"""kNN and linear-probe top-1 of a frozen backbone (the fast path: features extracted once).

  python main.py --config=configs/linprobe_tiny_imagenet.py --workdir=$OUT \
      --config.pretrained=$PRETRAIN_WORKDIR

`config.pretrained=None` evaluates a randomly initialized backbone (the baseline).
"""
from __future__ import annotations

import functools
import json
import time

import jax
from absl import logging
from clu import metric_writers

from ebm_vision.data import input_pipeline
from ebm_vision.run import config_validation, paths
from ebm_vision.transfer import features, pretrained


def frozen_features(feature_fn, params, data_config, split: str, num_examples, batch_size: int):
  """Features and labels of the first `num_examples` (0: all) centre crops of `split`."""
  batches = input_pipeline.labeled_batches(data_config, split, batch_size, num_examples or None)
  return features.extract_features(feature_fn, params, batches)


def evaluate(config, workdir: str) -> dict[str, float]:
  """Runs kNN (mode 'knn') or `config.frozen.methods` and writes the results to `workdir`."""
  config_validation.validate_transfer(config, jax.device_count())
  config_validation.check_workdir(workdir)
  methods = ("knn",) if config.mode == "knn" else tuple(config.frozen.methods)
  input_pipeline.hide_accelerators_from_tf()
  model, params, step = pretrained.backbone(config)
  num_classes = input_pipeline.num_classes(config.data)
  per_block = "knn" in methods and config.frozen.knn_per_block
  feature_fn = features.make_feature_fn(model, config.data.pixel_mean, config.data.pixel_std,
                                        per_block=per_block)
  timings, start = {}, time.perf_counter()
  train_f, train_y = frozen_features(feature_fn, params, config.data, config.data.train_split,
                                     config.frozen.num_train_examples, config.batch_size)
  test_f, test_y = frozen_features(feature_fn, params, config.data, config.data.eval_split,
                                   config.frozen.num_eval_examples, config.batch_size)
  timings["features_seconds"] = time.perf_counter() - start
  if per_block:
    (train_f, train_blocks), (test_f, test_blocks) = train_f, test_f
  logging.info("Features: train %s, eval %s in %.1f s", train_f.shape, test_f.shape,
               timings["features_seconds"])
  results = {}
  if "knn" in methods:
    start = time.perf_counter()
    knn = functools.partial(features.knn_accuracy, num_classes=num_classes,
                            k=config.frozen.knn_k, temperature=config.frozen.knn_temperature)
    results["knn/top1"] = knn(train_f, train_y, test_f, test_y)
    timings["knn_seconds"] = time.perf_counter() - start
    if per_block:  # Block i + 1's features are column i.
      for i in range(train_blocks.shape[1]):
        results[f"knn/top1_block{i + 1}"] = knn(train_blocks[:, i], train_y,
                                                test_blocks[:, i], test_y)
  if "linear_probe" in methods:
    start = time.perf_counter()
    probe = features.fit_linear_probe(
        train_f, train_y, num_classes, epochs=config.frozen.probe_epochs,
        batch_size=config.frozen.probe_batch_size,
        learning_rate=config.frozen.probe_learning_rate,
        weight_decay=config.frozen.probe_weight_decay, seed=config.seed)
    accuracy = features.linear_probe_accuracy(probe, test_f, test_y)
    results["linear_probe/top1"], results["linear_probe/top5"] = accuracy["top1"], accuracy["top5"]
    timings["linear_probe_seconds"] = time.perf_counter() - start
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_scalars(step, {**results, **{f"time/{k}": v for k, v in timings.items()}})
  writer.flush()
  if jax.process_index() == 0:
    (paths.as_path(workdir) / "frozen_eval.json").write_text(json.dumps(
        {"pretrained": config.pretrained, "checkpoint_step": step, "num_train": len(train_y),
         "num_eval": len(test_y), **results, **timings}, indent=1))
  return {**results, **timings}

