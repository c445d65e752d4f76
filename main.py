"""ebm-vision: energy-inspired self-supervised pretraining of Vision Transformers.

  python main.py --config=CONFIG[:ARG] --workdir=DIR [--config.FIELD=VALUE ...]
  python main.py --config=configs/demo.py --workdir=/tmp/ebm_demo

What runs is the config's `mode`: 'pretrain' (energy or MAE pretraining; with
--mode=restore, restoration grids and PSNR/SSIM of the workdir's latest checkpoint),
'finetune', 'linear_probe' or 'knn' (transfer of config.pretrained). Override any field
with --config.FIELD=VALUE (e.g. --config.batch_size=1024 --config.restore.num_steps=1);
configs that take an argument get it after a colon (--config=configs/vit_b.py:task=sort).
Backbones go to big_vision, timm or Hugging Face with `python -m ebm_vision.export`.
"""
import ast
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO lines (oneDNN).

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags

from ebm_vision.run import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (a .py with get_config()).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, TensorBoard logs and images go.")
flags.DEFINE_enum("mode", "train", ["train", "restore"],
                  "'train' pretrains (resuming from --workdir); 'restore' writes restoration "
                  "grids and PSNR/SSIM per task for the latest checkpoint in --workdir.")
flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                  "Multi-process JAX: 'auto' joins the other processes when launched by SLURM "
                  "(srun), Open MPI or on a multi-worker TPU slice, or when "
                  "--coordinator_address is set; 'on' always calls jax.distributed.initialize "
                  "(TPU VMs find their peers themselves); 'off' runs one process.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for launchers JAX does not detect.")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_list("local_device_ids", None,
                  "GPUs this process drives, e.g. 0,1,2,3,4,5,6,7 for one process per node "
                  "under SLURM (JAX otherwise gives each SLURM task one GPU).")
flags.DEFINE_bool("debug", os.environ.get("EBM_DEBUG", "") not in ("", "0"),
                  "Show the traceback of errors that are otherwise reported in one line "
                  "(also EBM_DEBUG=1).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
  """Drops the INFO chatter of Orbax (every save) and of JAX's backend search (no TPU
  found on a CPU or GPU machine); warnings and errors still show."""

  def filter(self, record):
    return record.levelno > logging.logging.INFO or not any(
        name in record.pathname for name in ("orbax", "xla_bridge"))


def config_list() -> str:
  """One line per config in configs/: its file name and the first line of its docstring."""
  folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
  lines = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".py") and name not in ("__init__.py", "common.py"):
      with open(os.path.join(folder, name)) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
      lines.append(f"  configs/{name:<28} {doc.splitlines()[0] if doc else ''}")
  return "Configs:\n" + "\n".join(lines) + "\n"


def config_file_arg(argv) -> str | None:
  """The file of --config=<file>[:arg] (or --config <file>) in `argv`, if given."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":")[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":")[0]
  return None


def parse_flags(argv):
  """Parses flags; a missing config file or a misspelled or ill-typed --config.<field>
  exits with one line."""
  config_file = config_file_arg(argv)
  if config_file is not None and not os.path.isfile(config_file):
    sys.exit(f"ebm-vision: --config={config_file}: no such file (configs are in "
             f"{os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')})")
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # A config file that raised: its flag and its last line.
      lines = [line for line in message.splitlines() if line.strip()]
      message = f"{lines[0].split(': Error whilst')[0]}: {lines[-1]}"
    if "get_config() takes 0 positional arguments" in message:
      message = (f"--config={config_file}: this config takes no ':argument' (configs/vit_b.py "
                 "and configs/tiny_imagenet.py take task=...)")
    sys.exit(f"ebm-vision: {message}")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # From ml_collections.
    message = str(e)
    if len(message) > 1 and message[0] == message[-1] == "'":  # A KeyError's repr.
      message = message[1:-1].replace("\\'", "'").replace("\\n", " ")
    sys.exit(f"ebm-vision: bad --config override: {' '.join(message.split())}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help and flag errors do not wait for JAX and TF.
  from ebm_vision.parallel import distributed  # pylint: disable=g-import-not-at-top
  from ebm_vision import finetune, frozen_eval, train, viewer
  import jax  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.local_device_ids)
  except ValueError as e:
    sys.exit(f"ebm-vision: {e}")
  logging.debug("Config:\n%s", FLAGS.config)
  try:
    if FLAGS.mode == "restore":
      viewer.restore_and_report(FLAGS.config, FLAGS.workdir)
    elif FLAGS.config.mode == "finetune" or (
        FLAGS.config.mode == "linear_probe" and not FLAGS.config.frozen.fast):
      finetune.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.config.mode in ("knn", "linear_probe"):
      results = frozen_eval.evaluate(FLAGS.config, FLAGS.workdir)
      print("\n".join(f"{k}: {v:.4f}" for k, v in results.items()))
    else:
      start = time.perf_counter()
      scalars = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
      if jax.process_index() == 0:
        print(train.summary_line(FLAGS.config, FLAGS.workdir, scalars,
                                 time.perf_counter() - start))
  except errors.Preempted as e:
    # The checkpoint is durable: exit now, skipping the seconds of library teardown that
    # a preemption notice's grace period cannot spare.
    logging.warning("%s", e)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # pylint: disable=protected-access
  except (errors.RunError, FileNotFoundError, FloatingPointError) as e:
    if FLAGS.debug:
      raise
    sys.exit(f"ebm-vision: {e}")


if __name__ == "__main__":
  __doc__ += "\n" + config_list()  # absl's --help prints the module docstring.
  app.run(main, flags_parser=parse_flags)
