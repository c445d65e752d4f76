"""Fine-tunes finished pretraining workdirs, and a random init, with the benchmarks' recipe.

  python benchmarks/finetune_backbones.py --out=/tmp/ft20 --finetune_splits='train[:20%]' \
      --backbone=none:0: --backbone=energy_mask:0:/tmp/tta/energy_mask_s0

Each --backbone is NAME:SEED:WORKDIR (an empty WORKDIR is a random init). The backbone is
the latest checkpoint of WORKDIR, e.g. a run of time_to_accuracy.py or ablation.py, which
must have the benchmark's model (--width, --depth, ...); SEED seeds the head and the data
order. Every backbone gets the same fine-tuning (time_to_accuracy.py's recipe: the same
steps, schedule and splits), so more labeled splits can be measured without pretraining
again (`--finetune_last_blocks=1 --nofinetune_whole`: the last-block + head row only).
Writes results.json and results.md (per backbone, and means ± half the spread over
the seeds of each NAME) to --out; rerunning skips the backbones results.json holds.
"""
import os

from absl import app, flags

# harness defines the model and fine-tuning flags.
import harness  # pylint: disable=g-bad-import-order

flags.DEFINE_string("out", None, "Output folder (fine-tuning runs, results).")
flags.DEFINE_multi_string("backbone", [], "NAME:SEED:WORKDIR; an empty WORKDIR is a random init.")
flags.mark_flag_as_required("out")
FLAGS = flags.FLAGS


def parse_backbone(text: str) -> tuple[str, int, str]:
  """'NAME:SEED:WORKDIR' -> (name, seed, workdir or '')."""
  name, seed, workdir = text.split(":", 2)
  if not name or not seed.isdigit():
    raise ValueError(f"--backbone={text!r}: expected NAME:SEED:WORKDIR, e.g. none:0:")
  return name, int(seed), workdir


def tables(rows: list[dict]) -> str:
  """One row per backbone, then means ± half-spread over the seeds of each name."""
  keys = sorted({k for r in rows for k in r if k.startswith("ft")})
  out = ["| backbone | seed | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  out += [f"| {r['backbone']} | {r['seed']} | "
          + " | ".join(f"{100 * r[k]:.2f}" if k in r else "–" for k in keys) + " |"
          for r in rows]
  names = list(dict.fromkeys(r["backbone"] for r in rows))
  out += ["", "| backbone | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  for name in names:
    group = [r for r in rows if r["backbone"] == name]
    out.append(f"| {name} | {len(group)} | "
               + " | ".join(harness.seed_summary(group, k) for k in keys) + " |")
  return "\n".join(out)


def main(argv):
  del argv
  backbones = [parse_backbone(b) for b in FLAGS.backbone]
  os.makedirs(FLAGS.out, exist_ok=True)
  rows = harness.read_results(FLAGS.out)
  for name, seed, workdir in backbones:
    if any(r["backbone"] == name and r["seed"] == seed for r in rows):
      continue
    top1 = harness.finetune_top1(workdir or None, os.path.join(FLAGS.out, f"{name}_s{seed}"),
                                 seed)
    rows.append({"backbone": name, "seed": seed, "workdir": workdir, **top1})
    harness.write_results(FLAGS.out, rows)
  text = tables(rows)
  with open(os.path.join(FLAGS.out, "results.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  app.run(main)
