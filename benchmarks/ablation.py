"""Ablations of energy pretraining at equal steps: restoration and transfer top-1.

  python benchmarks/ablation.py --out=/tmp/ablation --steps=600 --seeds=0,1 \
      --variant=base: --variant=alpha_lr100:restore.step_size_lr_multiplier=100.

Each `--variant=name:field=value,field=value` pretrains the benchmark ViT
(benchmarks/harness.py: 4 blocks × 128, batch 32) on tiny_imagenet_a from
configs/tiny_imagenet.py (task mask) with those overrides, for `--steps` steps of one
warm-up + cosine schedule, once per seed. Then it measures the held-out masked MSE
before and after each restoration step, the step sizes and energies, kNN /
linear-probe top-1 on the validation split from frozen features and, with
--finetune_splits, fine-tuning top-1 (seeded like the pretraining); the variant named
'random' evaluates a random init instead (no pretraining). Rows are appended
to <out>/results.jsonl (one per run, so an interrupted sweep keeps what finished) and
printed as a table, then a summary over seeds. Runs whose row exists are skipped.
"""
import json
import os
import time

from absl import app, flags

# harness defines the model, frozen-evaluation and fine-tuning flags.
import harness  # pylint: disable=g-bad-import-order
from configs import tiny_imagenet

flags.DEFINE_string("out", None, "Output folder (one workdir per run, results.jsonl).")
flags.DEFINE_multi_string("variant", ["base:"], "name:field=value,... ('random:' = no pretraining).")
flags.DEFINE_list("seeds", ["0"], "Seeds (parameters, corruptions, data order, fine-tuning).")
flags.DEFINE_integer("steps", 600, "Pretraining steps (the schedule ends there).")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def parse_variant(text: str) -> tuple[str, dict]:
  """'name:a.b=1,c=(2, 3)' -> ('name', {'a.b': 1, 'c': (2, 3)})."""
  name, _, rest = text.partition(":")
  return name, harness.parse_overrides(rest)


def run(name: str, overrides: dict, seed: int) -> dict:
  from ebm_vision import train
  workdir = os.path.join(FLAGS.out, f"{name}_s{seed}")
  row = {"variant": name, "overrides": overrides, "seed": seed, "steps": 0}
  pretrained = None
  if name != "random":
    config = harness.pretraining_config(tiny_imagenet.get_config, FLAGS.steps, overrides, seed)
    config.log_every_steps = 50
    config.eval_tasks = ("mask",)
    config.num_grid_images = 64  # The held-out batch the restoration metrics average over.
    start = time.perf_counter()
    scalars = train.train_and_evaluate(config, workdir)
    row["pretrain_seconds"] = time.perf_counter() - start
    row["steps"] = FLAGS.steps
    row.update({k.replace("eval/mask/", "").replace("train/", "train_"): v
                for k, v in scalars.items()
                if k.startswith(("eval/mask/mse", "eval/mask/energy", "train/step_size",
                                 "train/loss", "train/param_norm"))})
    pretrained = workdir
  row.update(harness.frozen_top1(pretrained, os.path.join(workdir, "frozen"), seed))
  row.update(harness.finetune_top1(pretrained, workdir, seed))
  return row


def ft_keys(rows: list[dict]) -> list[str]:
  return sorted({k for r in rows for k in r if k.startswith("ft")})


def table(rows: list[dict]) -> str:
  fts = ft_keys(rows)
  lines = ["| variant | seed | steps | MSE corrupted → restored (per step) | α | kNN | LP | " +
           "".join(f"{k} | " for k in fts),
           "|---|---|---|---|---|---|---|" + "---|" * len(fts)]
  for r in rows:
    restored = " → ".join(f"{r[k]:.3f}" for k in sorted(r) if k.startswith("mse_restored"))
    alphas = ", ".join(f"{r[k]:.2f}" for k in sorted(r) if k.startswith("train_step_size"))
    mse = f"{r['mse_corrupted']:.3f} → {restored}" if "mse_corrupted" in r else "–"
    lines.append(f"| {r['variant']} | {r['seed']} | {r['steps']} | {mse} | {alphas or '–'} | "
                 f"{100 * r['knn']:.2f} | {100 * r['linear_probe']:.2f} | " +
                 "".join(f"{100 * r[k]:.2f} | " if k in r else "– | " for k in fts))
  return "\n".join(lines)


def summary(rows: list[dict]) -> str:
  """Mean ± half-spread over seeds per variant, and the difference to 'random'."""
  keys = ["knn", "linear_probe"] + ft_keys(rows)
  lines = ["| variant | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  for name in variants:
    group = [r for r in rows if r["variant"] == name]
    lines.append(f"| {name} | {len(group)} | " +
                 " | ".join(harness.seed_summary(group, k) for k in keys) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
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
  print(summary(done))


if __name__ == "__main__":
  app.run(main)
