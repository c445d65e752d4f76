"""Time to accuracy on tiny_imagenet_a: transfer top-1 after equal training budgets.

  python benchmarks/time_to_accuracy.py --out=/tmp/time_to_accuracy --budgets=600,1800 \
      --seeds=0,1 --finetune_splits='train[:10%],train[:20%],train'

Methods: energy pretraining with masking (configs/tiny_imagenet.py:task=mask) and with the
mix of tasks (task=mix), MAE (mae_tiny_imagenet.py) and no pretraining (a random init).
All share one ViT, batch, optimizer and learning-rate schedule (benchmarks/harness.py).
Each method trains once per seed, resuming after every cumulative budget
(`time_budget_seconds`: the clock runs after compilation), and its backbone is evaluated
after each: kNN and linear-probe top-1 on the validation split from frozen features
(configs/linprobe_tiny_imagenet.py). After the last budget it is also fine-tuned on each
of --finetune_splits with one recipe (same steps and schedule for every backbone).
Writes results.json, results.md (a table per seed, and means ± half the spread over
seeds) and accuracy_vs_time.png (needs matplotlib) to --out. Rerunning with the same
--out skips the (method, seed) pairs results.json already holds. Data comes from
../shared/data/tfds next to the repository.
"""
import os
import sys

from absl import app, flags, logging

# harness defines the model and evaluation flags.
import harness  # pylint: disable=g-bad-import-order
from configs import mae_tiny_imagenet, tiny_imagenet

METHODS = {"energy_mask": lambda: tiny_imagenet.get_config("task=mask"),
           "energy_mix": lambda: tiny_imagenet.get_config("task=mix"),
           "mae": mae_tiny_imagenet.get_config, "none": None}

flags.DEFINE_string("out", None, "Output folder (runs, results, plot).")
flags.DEFINE_list("budgets", ["60", "120", "240"], "Cumulative training seconds.")
flags.DEFINE_list("methods", list(METHODS), f"Any of {list(METHODS)}.")
flags.DEFINE_list("seeds", ["0"], "Seeds: each method pretrains, and fine-tunes, once per seed.")
flags.DEFINE_integer("schedule_steps", 2000, "Steps of the warm-up + cosine schedule.")
flags.DEFINE_string("overrides", "", "field=value pairs set in every pretraining config, e.g. "
                    "loss.norm_pix=False,corruption.mix.weights=(3, 1, 1) (Python literals).")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def run_method(name: str, seed: int) -> list[dict]:
  """Trains `name` through the budgets; returns one row per budget (the last with fine-tuning)."""
  from ebm_vision.run import checkpointing
  from ebm_vision import train
  workdir = os.path.join(FLAGS.out, f"{name}_s{seed}")
  budgets = list(map(float, FLAGS.budgets))
  if METHODS[name] is None:
    accuracy = harness.frozen_top1(None, os.path.join(workdir, "eval"), seed)
    rows = [{"method": name, "seed": seed, "seconds": b, "steps": 0, **accuracy}
            for b in budgets]
    rows[-1].update(harness.finetune_top1(None, workdir, seed))
    return rows
  config = harness.pretraining_config(METHODS[name], FLAGS.schedule_steps,
                                      harness.parse_overrides(FLAGS.overrides), seed)
  config.log_every_steps = 25
  rows, spent = [], 0.
  for budget in budgets:
    config.time_budget_seconds = budget - spent
    train.train_and_evaluate(config, workdir)
    spent = budget
    step = checkpointing.create_manager(workdir, config).latest_step()
    accuracy = harness.frozen_top1(workdir, os.path.join(workdir, f"eval_{int(budget)}s"), seed)
    rows.append({"method": name, "seed": seed, "seconds": budget, "steps": step, **accuracy})
    logging.info("%s (seed %d) after %.0f s (%d steps): %s", name, seed, budget, step, accuracy)
  rows[-1].update(harness.finetune_top1(workdir, workdir, seed))
  return rows


def accuracy_keys(rows: list[dict]) -> list[str]:
  return ["knn", "linear_probe"] + sorted({k for r in rows for k in r if k.startswith("ft")})


def tables(rows: list[dict]) -> str:
  """One row per (method, seed, budget); then means ± half-spread over seeds."""
  keys = accuracy_keys(rows)
  out = ["| method | seed | budget s | steps | " + " | ".join(keys) + " |",
         "|---|---|---|---|" + "---|" * len(keys)]
  out += [f"| {r['method']} | {r['seed']} | {r['seconds']:.0f} | {r['steps']} | " +
          " | ".join(f"{100 * r[k]:.2f}" if k in r else "–" for k in keys) + " |" for r in rows]
  out += ["", "| method | budget s | seeds | " + " | ".join(keys) + " |",
          "|---|---|---|" + "---|" * len(keys)]
  for method in dict.fromkeys(r["method"] for r in rows):
    for budget in dict.fromkeys(r["seconds"] for r in rows if r["method"] == method):
      group = [r for r in rows if r["method"] == method and r["seconds"] == budget]
      out.append(f"| {method} | {budget:.0f} | {len(group)} | " +
                 " | ".join(harness.seed_summary(group, k) for k in keys) + " |")
  return "\n".join(out)


def write_plot(rows: list[dict], path: str) -> None:
  """Frozen-feature top-1 against pretraining seconds, mean over seeds per method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
  for ax, key, title in zip(axes, ("knn", "linear_probe"), ("kNN top-1", "linear probe top-1")):
    for method in dict.fromkeys(r["method"] for r in rows):
      budgets = sorted({r["seconds"] for r in rows if r["method"] == method})
      means = [100 * sum(r[key] for r in rows if r["method"] == method and r["seconds"] == b) /
               sum(1 for r in rows if r["method"] == method and r["seconds"] == b)
               for b in budgets]
      ax.plot(budgets, means, marker="o", label=method)
    ax.set_xlabel("pretraining wall-clock (s, after compilation)")
    ax.set_ylabel(f"{title} (%)")
    ax.set_title(f"tiny_imagenet_a validation, {title}")
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  for name in FLAGS.methods:
    if name not in METHODS:
      sys.exit(f"--methods: {name!r} is not one of {list(METHODS)}")
  os.makedirs(FLAGS.out, exist_ok=True)
  rows = harness.read_results(FLAGS.out)
  for seed in map(int, FLAGS.seeds):
    for name in FLAGS.methods:
      if any(r["method"] == name and r["seed"] == seed for r in rows):
        continue
      rows += run_method(name, seed)
      harness.write_results(FLAGS.out, rows)
  text = tables(rows)
  with open(os.path.join(FLAGS.out, "results.md"), "w") as f:
    f.write(text + "\n")
  print(text)
  write_plot(rows, os.path.join(FLAGS.out, "accuracy_vs_time.png"))


if __name__ == "__main__":
  app.run(main)
