"""Ablations of energy pretraining at equal steps: restoration and frozen-feature top-1.

  python benchmarks/ablation.py --out=/tmp/ablation --steps=600 --seeds=0,1 \
      --variant=base: --variant=alpha_lr100:restore.step_size_lr_multiplier=100.

Each `--variant=name:field=value,field=value` pretrains the benchmark's ViT (as
benchmarks/time_to_accuracy.py: 4 blocks × 128, batch 32) on tiny_imagenet_a from
configs/tiny_imagenet.py (task mask) with those overrides, for `--steps` steps of one
warm-up + cosine schedule, once per seed. Then it measures the held-out masked MSE
before and after each restoration step, the step sizes and energies, and kNN /
linear-probe top-1 on the validation split from frozen features; the variant named
'random' evaluates a random init instead (no pretraining). Rows are appended
to <out>/results.jsonl (one per run, so an interrupted sweep keeps what finished) and
printed as a table. Runs whose row exists are skipped.
"""
import ast
import json
import os
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import linprobe_tiny_imagenet, tiny_imagenet

flags.DEFINE_string("out", None, "Output folder (one workdir per run, results.jsonl).")
flags.DEFINE_multi_string("variant", ["base:"], "name:field=value,... ('random:' = no pretraining).")
flags.DEFINE_list("seeds", ["0"], "Seeds (parameters, corruptions, data order).")
flags.DEFINE_integer("steps", 600, "Pretraining steps (the schedule ends there).")
flags.DEFINE_integer("warmup_steps", 50, "Warm-up steps.")
flags.DEFINE_integer("batch_size", 32, "Pretraining batch.")
flags.DEFINE_integer("width", 128, "ViT width.")
flags.DEFINE_integer("depth", 4, "ViT blocks.")
flags.DEFINE_integer("num_heads", 4, "ViT heads.")
flags.DEFINE_integer("num_train_examples", 10000, "Train images whose features are used.")
flags.DEFINE_integer("num_eval_examples", 2000, "Validation images classified.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def parse_variant(text: str) -> tuple[str, dict]:
  """'name:a.b=1,c=x' -> ('name', {'a.b': 1, 'c': 'x'}); values are Python literals or strings."""
  name, _, rest = text.partition(":")
  overrides = {}
  for item in filter(None, rest.split(",")):
    field, _, value = item.partition("=")
    try:
      overrides[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[field] = value
  return name, overrides


def shrink_model(config) -> None:
  config.model.width, config.model.depth = FLAGS.width, FLAGS.depth
  config.model.num_heads, config.model.mlp_dim = FLAGS.num_heads, 4 * FLAGS.width
  config.model.compute_dtype = "float32"


def pretraining_config(overrides: dict, seed: int):
  config = tiny_imagenet.get_config()
  shrink_model(config)
  config.seed = seed
  config.batch_size = FLAGS.batch_size
  config.num_train_steps = FLAGS.steps
  config.optimizer.warmup_steps = FLAGS.warmup_steps
  config.checkpoint_every_steps = config.image_every_steps = FLAGS.steps
  config.log_every_steps = 50
  config.eval_tasks = ("mask",)
  config.num_grid_images = 64  # The held-out batch the restoration metrics average over.
  config.update_from_flattened_dict(overrides)
  if config.method == "mae":  # MAE restores its own masking only.
    config.viewer.tasks = ("mask",)
  return config


def frozen_top1(pretrained_workdir, eval_workdir, seed: int) -> dict:
  from ebm_vision import frozen_eval
  config = linprobe_tiny_imagenet.get_config()
  shrink_model(config)
  config.seed = seed
  config.pretrained = pretrained_workdir
  config.frozen.num_train_examples = FLAGS.num_train_examples
  config.frozen.num_eval_examples = FLAGS.num_eval_examples
  results = frozen_eval.evaluate(config, eval_workdir)
  return {"knn": results["knn/top1"], "linear_probe": results["linear_probe/top1"]}


def run(name: str, overrides: dict, seed: int) -> dict:
  from ebm_vision import train
  workdir = os.path.join(FLAGS.out, f"{name}_s{seed}")
  row = {"variant": name, "overrides": overrides, "seed": seed, "steps": 0}
  if name != "random":
    start = time.perf_counter()
    scalars = train.train_and_evaluate(pretraining_config(overrides, seed), workdir)
    row["pretrain_seconds"] = time.perf_counter() - start
    row["steps"] = FLAGS.steps
    row.update({k.replace("eval/mask/", "").replace("train/", "train_"): v
                for k, v in scalars.items()
                if k.startswith(("eval/mask/mse", "eval/mask/energy", "train/step_size",
                                 "train/loss", "train/param_norm"))})
  row.update(frozen_top1(None if name == "random" else workdir,
                         os.path.join(workdir, "frozen"), seed))
  return row


def table(rows: list[dict]) -> str:
  lines = ["| variant | seed | steps | MSE corrupted → restored (per step) | α | kNN | LP |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    restored = " → ".join(f"{r[k]:.3f}" for k in sorted(r) if k.startswith("mse_restored"))
    alphas = ", ".join(f"{r[k]:.2f}" for k in sorted(r) if k.startswith("train_step_size"))
    mse = f"{r['mse_corrupted']:.3f} → {restored}" if "mse_corrupted" in r else "–"
    lines.append(f"| {r['variant']} | {r['seed']} | {r['steps']} | {mse} | {alphas or '–'} | "
                 f"{100 * r['knn']:.2f} | {100 * r['linear_probe']:.2f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  os.chdir(REPO)  # The configs name ../shared/data/tfds relative to the repository.
  os.makedirs(FLAGS.out, exist_ok=True)
  path = os.path.join(FLAGS.out, "results.jsonl")
  done = []
  if os.path.exists(path):
    with open(path) as f:
      done = [json.loads(line) for line in f]
  for text in FLAGS.variant:
    name, overrides = parse_variant(text)
    for seed in map(int, FLAGS.seeds):
      if any(r["variant"] == name and r["seed"] == seed for r in done):
        continue
      row = run(name, overrides, seed)
      done.append(row)
      with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
      print(table([row]), flush=True)
  print(table(done))


if __name__ == "__main__":
  app.run(main)
