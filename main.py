"""ebm-vision entry point.

  python main.py --config=configs/demo.py --workdir=/tmp/ebm_demo
  python main.py --config=configs/vit_b_mask.py --workdir=gs://bucket/run \
      --config.data.data_dir=gs://bucket/tensorflow_datasets

Any config field can be overridden with --config.<field>=<value>.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ebm_vision.run import config_validation

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
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging.logging.Filter):
  """Drops the per-save INFO chatter of Orbax; warnings and errors still show."""

  def filter(self, record):
    return record.levelno > logging.logging.INFO or "orbax" not in record.pathname


def parse_flags(argv):
  """Parses flags; a misspelled or ill-typed --config.<field> exits with one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if "Traceback" in message:  # A config file that raised: its flag and its last line.
      lines = [line for line in message.splitlines() if line.strip()]
      message = f"{lines[0].split(': Error whilst')[0]}: {lines[-1]}"
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
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.local_device_ids)
  except ValueError as e:
    sys.exit(f"ebm-vision: {e}")
  logging.info("Config:\n%s", FLAGS.config)
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
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (config_validation.ConfigError, FileNotFoundError, FloatingPointError) as e:
    logging.error("%s", e)
    sys.exit(f"ebm-vision: {e}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
