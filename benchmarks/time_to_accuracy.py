"""Time to accuracy on tiny_imagenet_a: frozen-feature top-1 after equal training budgets.

  python benchmarks/time_to_accuracy.py --out=/tmp/time_to_accuracy --budgets=60,120,240

Methods: energy pretraining with masking (configs/tiny_imagenet.py:task=mask) and with the
mix of tasks (task=mix), MAE (mae_tiny_imagenet.py) and no pretraining
(a random init). All share one ViT, batch, optimizer and learning-rate schedule. Each
method trains once, resuming after every cumulative budget (`time_budget_seconds`: the
clock runs after compilation), and its backbone is evaluated after each: kNN and
linear-probe top-1 on the validation split from frozen features
(configs/linprobe_tiny_imagenet.py). Writes results.json, results.md (a table) and
accuracy_vs_time.png (needs matplotlib) to --out. Run from anywhere; data comes from
../shared/data/tfds next to the repository.
"""
import ast
import json
import os
import sys

from absl import app, flags, logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import linprobe_tiny_imagenet, mae_tiny_imagenet, tiny_imagenet

METHODS = {"energy_mask": lambda: tiny_imagenet.get_config("task=mask"),
           "energy_mix": lambda: tiny_imagenet.get_config("task=mix"),
           "mae": mae_tiny_imagenet.get_config, "none": None}

flags.DEFINE_string("out", None, "Output folder (runs, results, plot).")
flags.DEFINE_list("budgets", ["60", "120", "240"], "Cumulative training seconds.")
flags.DEFINE_list("methods", list(METHODS), f"Any of {list(METHODS)}.")
flags.DEFINE_integer("width", 128, "ViT width (the configs' Ti/8 is 192).")
flags.DEFINE_integer("depth", 4, "ViT blocks.")
flags.DEFINE_integer("num_heads", 4, "ViT heads.")
flags.DEFINE_integer("batch_size", 32, "Pretraining batch.")
flags.DEFINE_integer("schedule_steps", 2000, "Steps of the warm-up + cosine schedule.")
flags.DEFINE_integer("warmup_steps", 50, "Warm-up steps.")
flags.DEFINE_integer("num_train_examples", 10000, "Train images whose features are used.")
flags.DEFINE_integer("num_eval_examples", 2000, "Validation images classified.")
flags.DEFINE_list("overrides", [], "field=value pairs set in every pretraining config, e.g. "
                  "loss.norm_pix=False (values as Python literals).")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def shrink_model(config) -> None:
  """The benchmark's ViT, the same for every method."""
  config.model.width, config.model.depth = FLAGS.width, FLAGS.depth
  config.model.num_heads, config.model.mlp_dim = FLAGS.num_heads, 4 * FLAGS.width
  config.model.compute_dtype = "float32" if FLAGS.width <= 256 else "bfloat16"


def pretraining_config(get_config):
  config = get_config()
  shrink_model(config)
  config.batch_size = FLAGS.batch_size
  config.num_train_steps = FLAGS.schedule_steps
  config.optimizer.warmup_steps = FLAGS.warmup_steps
  config.checkpoint_every_steps = config.image_every_steps = FLAGS.schedule_steps
  config.log_every_steps = 25
  for override in FLAGS.overrides:
    field, _, value = override.partition("=")
    config.update_from_flattened_dict({field: ast.literal_eval(value)})
  return config


def frozen_top1(pretrained_workdir, eval_workdir) -> dict:
  """kNN and linear-probe top-1 of a backbone (random init when `pretrained_workdir` is None)."""
  from ebm_vision import frozen_eval
  config = linprobe_tiny_imagenet.get_config()
  shrink_model(config)
  config.pretrained = pretrained_workdir
  config.frozen.num_train_examples = FLAGS.num_train_examples
  config.frozen.num_eval_examples = FLAGS.num_eval_examples
  results = frozen_eval.evaluate(config, eval_workdir)
  return {"knn_top1": results["knn/top1"], "linear_probe_top1": results["linear_probe/top1"]}


def run_method(name: str) -> list[dict]:
  """Trains `name` through the budgets; returns one row per budget."""
  from ebm_vision.run import checkpointing
  from ebm_vision import train
  workdir = os.path.join(FLAGS.out, name)
  if METHODS[name] is None:
    accuracy = frozen_top1(None, os.path.join(workdir, "eval"))
    return [{"method": name, "seconds": float(b), "steps": 0, **accuracy}
            for b in FLAGS.budgets]
  config = pretraining_config(METHODS[name])
  rows, spent = [], 0.
  for budget in map(float, FLAGS.budgets):
    config.time_budget_seconds = budget - spent
    train.train_and_evaluate(config, workdir)
    spent = budget
    step = checkpointing.create_manager(workdir, config).latest_step()
    accuracy = frozen_top1(workdir, os.path.join(workdir, f"eval_{int(budget)}s"))
    rows.append({"method": name, "seconds": budget, "steps": step, **accuracy})
    logging.info("%s after %.0f s (%d steps): %s", name, budget, step, accuracy)
  return rows


def write_plot(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
  for ax, key, title in zip(axes, ("knn_top1", "linear_probe_top1"),
                            ("kNN top-1", "linear probe top-1")):
    for method in dict.fromkeys(r["method"] for r in rows):
      points = [(r["seconds"], 100 * r[key]) for r in rows if r["method"] == method]
      ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xlabel("pretraining wall-clock (s, after compilation)")
    ax.set_ylabel(f"{title} (%)")
    ax.set_title(f"tiny_imagenet_a validation, {title}")
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  os.chdir(REPO)  # The configs name ../shared/data/tfds relative to the repository.
  for name in FLAGS.methods:
    if name not in METHODS:
      sys.exit(f"--methods: {name!r} is not one of {list(METHODS)}")
  os.makedirs(FLAGS.out, exist_ok=True)
  rows = [row for name in FLAGS.methods for row in run_method(name)]
  with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)
  table = ["| method | budget s | steps | kNN top-1 | linear probe top-1 |", "|---|---|---|---|---|"]
  table += [f"| {r['method']} | {r['seconds']:.0f} | {r['steps']} | {100 * r['knn_top1']:.1f}% | "
            f"{100 * r['linear_probe_top1']:.1f}% |" for r in rows]
  with open(os.path.join(FLAGS.out, "results.md"), "w") as f:
    f.write("\n".join(table) + "\n")
  print("\n".join(table))
  write_plot(rows, os.path.join(FLAGS.out, "accuracy_vs_time.png"))


if __name__ == "__main__":
  app.run(main)
