"""What the tiny_imagenet_a benchmarks share: the benchmark ViT, overrides, and evaluation.

Every backbone of `ablation.py` and `time_to_accuracy.py` is the same ViT (flags
--width, --depth, --num_heads) pretrained at --batch_size, and is measured the same
way: kNN and linear probe on frozen features (configs/linprobe_tiny_imagenet.py), and
fine-tuning with one recipe on labeled subsets (configs/finetune_tiny_imagenet.py with
the --finetune_* flags). Importing this module defines those flags.
"""
import ast
import json
import os
import sys

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import common, finetune_tiny_imagenet, linprobe_tiny_imagenet

flags.DEFINE_integer("width", 128, "ViT width (the configs' Ti/8 is 192).")
flags.DEFINE_integer("depth", 4, "ViT blocks.")
flags.DEFINE_integer("num_heads", 4, "ViT heads.")
flags.DEFINE_integer("patch_size", 0, "ViT patch size; 0 keeps the configs' (8).")
flags.DEFINE_integer("image_size", 0, "Image size; 0 keeps the configs' (64).")
flags.DEFINE_string("builder_dir", None, "A prepared TFDS '<name>/<version>' folder to use "
                    "instead of tiny_imagenet_a (the tests' tiny data set).")
flags.DEFINE_integer("batch_size", 32, "Pretraining batch.")
flags.DEFINE_integer("warmup_steps", 50, "Pretraining warm-up steps.")
flags.DEFINE_integer("num_train_examples", 10000, "Train images whose frozen features are used.")
flags.DEFINE_integer("num_eval_examples", 5050, "Validation images classified from frozen "
                     "features (5,050 = the whole split).")
flags.DEFINE_list("finetune_splits", [], "Labeled train splits to fine-tune on, e.g. "
                  "train[:10%],train[:20%],train; empty = no fine-tuning. Each backbone is "
                  "fine-tuned once per split, with its own seed.")
flags.DEFINE_integer("finetune_steps", 2000, "Fine-tuning steps (same for every backbone).")
flags.DEFINE_integer("finetune_batch_size", 64, "Fine-tuning batch.")
flags.DEFINE_float("finetune_learning_rate_per_256", 1e-3, "Fine-tuning peak learning rate.")
flags.DEFINE_float("finetune_layer_decay", finetune_tiny_imagenet.get_config().finetune.layer_decay,
                   "Fine-tuning learning rate of block l scaled by decay^(depth + 1 − l) (default: "
                   "the config file's); 1 = one rate for every layer.")
flags.DEFINE_float("finetune_mixup_alpha", 0., "Mixup α of fine-tuning (0 = off).")
flags.DEFINE_float("finetune_cutmix_alpha", 0., "CutMix α of fine-tuning (0 = off).")
flags.DEFINE_float("finetune_head_only_fraction", 0., "Fraction of the fine-tuning steps in "
                   "which only the head learns (LP-FT; 0 = off).")
flags.DEFINE_integer("finetune_last_blocks", 0, "Also fine-tune only the last n blocks + head "
                     "(an extra row per split); 0 = no such row.")
flags.DEFINE_bool("finetune_whole", True, "Fine-tune the whole network (the 'ft' rows); "
                  "--nofinetune_whole with --finetune_last_blocks runs the last-block rows only.")
flags.register_multi_flags_validator(
    ["finetune_whole", "finetune_last_blocks"],
    lambda f: f["finetune_whole"] or f["finetune_last_blocks"] > 0,
    "--nofinetune_whole needs --finetune_last_blocks > 0 (no fine-tuning row to run).")
FLAGS = flags.FLAGS


def shrink_model(config) -> None:
  """The benchmark's ViT and data, the same for every method and evaluation."""
  config.model.width, config.model.depth = FLAGS.width, FLAGS.depth
  config.model.num_heads, config.model.mlp_dim = FLAGS.num_heads, 4 * FLAGS.width
  config.model.compute_dtype = "float32" if FLAGS.width <= 256 else "bfloat16"
  if FLAGS.patch_size:
    config.model.patch_size = FLAGS.patch_size
  if FLAGS.image_size:
    config.data.image_size = FLAGS.image_size
  if FLAGS.builder_dir:
    config.data.builder_dir = FLAGS.builder_dir


def parse_overrides(text: str) -> dict:
  """'a.b=1,c=x,d=(2, 3)' -> {'a.b': 1, 'c': 'x', 'd': (2, 3)}: values are Python literals,
  else strings; commas inside brackets belong to the value."""
  items, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += (char in "([{") - (char in ")]}")
    if char == "," and depth == 0:
      items.append(text[start:i])
      start = i + 1
  items.append(text[start:])
  overrides = {}
  for item in filter(None, items):
    field, _, value = item.partition("=")
    try:
      overrides[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[field] = value
  return overrides


def pretraining_config(get_config, num_train_steps: int, overrides: dict, seed: int = 0):
  """`get_config()` with the benchmark's ViT, batch and schedule, then `overrides`."""
  config = get_config()
  shrink_model(config)
  config.seed = seed
  config.batch_size = FLAGS.batch_size
  common.set_steps(config, num_train_steps, FLAGS.warmup_steps)
  config.checkpoint_every_steps = config.image_every_steps = num_train_steps
  config.update_from_flattened_dict(overrides)
  if config.method == "mae":  # MAE restores its own masking only.
    config.eval_tasks = config.viewer.tasks = ("mask",)
  return config


def frozen_top1(pretrained_workdir, eval_workdir: str, seed: int = 0) -> dict:
  """kNN and linear-probe top-1 of a backbone (random init when `pretrained_workdir` is None)."""
  from ebm_vision import frozen_eval
  config = linprobe_tiny_imagenet.get_config()
  shrink_model(config)
  config.seed = seed
  config.pretrained = pretrained_workdir
  config.frozen.num_train_examples = FLAGS.num_train_examples
  config.frozen.num_eval_examples = FLAGS.num_eval_examples
  results = frozen_eval.evaluate(config, eval_workdir)
  return {"knn": results["knn/top1"], "linear_probe": results["linear_probe/top1"]}


def finetune_config(pretrained_workdir, split: str, seed: int, last_blocks: int = 0):
  """The benchmark's one fine-tuning recipe on `split`, from a backbone (None: random init)."""
  config = finetune_tiny_imagenet.get_config()
  shrink_model(config)
  config.seed = seed
  config.pretrained = pretrained_workdir
  config.data.train_split = split
  config.batch_size = FLAGS.finetune_batch_size
  common.set_steps(config, FLAGS.finetune_steps, FLAGS.finetune_steps // 20)
  config.optimizer.learning_rate_per_256 = FLAGS.finetune_learning_rate_per_256
  config.finetune.layer_decay = FLAGS.finetune_layer_decay
  config.finetune.mixup_alpha = FLAGS.finetune_mixup_alpha
  config.finetune.cutmix_alpha = FLAGS.finetune_cutmix_alpha
  config.finetune.head_only_fraction = FLAGS.finetune_head_only_fraction
  config.finetune.train_last_blocks = last_blocks
  config.finetune.eval_every_steps = config.checkpoint_every_steps = FLAGS.finetune_steps
  config.log_every_steps = max(FLAGS.finetune_steps // 10, 1)
  config.data.shuffle_buffer = 10_000
  return config


def finetune_top1(pretrained_workdir, workdir: str, seed: int) -> dict:
  """Fine-tuning top-1 on the validation split for each of --finetune_splits: the whole
  network (unless --nofinetune_whole) and, with --finetune_last_blocks, the last blocks
  only: {'ft <split>': top-1, 'ft_last<n> <split>': top-1}."""
  from ebm_vision import finetune
  runs = [(0, "ft")] if FLAGS.finetune_whole else []
  if FLAGS.finetune_last_blocks:
    runs.append((FLAGS.finetune_last_blocks, f"ft_last{FLAGS.finetune_last_blocks}"))
  rows = {}
  for split in FLAGS.finetune_splits:
    for last_blocks, name in runs:
      config = finetune_config(pretrained_workdir, split, seed, last_blocks)
      folder = f"{name}_{''.join(c for c in split if c.isalnum())}"
      rows[f"{name} {split}"] = finetune.train_and_evaluate(
          config, os.path.join(workdir, folder))["eval/top1"]
  return rows


def read_results(out: str) -> list[dict]:
  """The rows of `out`/results.json, [] before the first (reruns skip what is there)."""
  path = os.path.join(out, "results.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def write_results(out: str, rows: list[dict]) -> None:
  """Writes `rows` to `out`/results.json (after every run, so a crash keeps what finished)."""
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)


def seed_summary(rows: list[dict], key: str) -> str:
  """'mean ± half-spread' of `key` over `rows` (one per seed), in percent."""
  values = [100 * r[key] for r in rows if key in r]
  if not values:
    return "–"
  mean = sum(values) / len(values)
  if len(values) == 1:
    return f"{mean:.2f}"
  return f"{mean:.2f} ± {(max(values) - min(values)) / 2:.2f}"
