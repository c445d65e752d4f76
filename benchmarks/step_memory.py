"""Memory per device of the compiled pretraining step, from XLA's memory analysis.

  python benchmarks/step_memory.py --configs=vit_b_mask,vit_l_mask,vit_h_mask --devices=32

For each config it builds the mesh and the sharded train state as abstract arrays
(nothing is allocated), compiles the train step for `--devices` devices and prints
what one device holds: the train state (parameters and AdamW moments), XLA's
temporaries (activations, gradients, buffers of collectives) and the peak (inputs +
outputs − donated + temporaries). On a CPU host the devices are simulated and the
figures are those of XLA's CPU compiler: an estimate of an accelerator's, whose
fusion and layouts differ. Needs no TensorFlow.
"""
import importlib
import math
import os
import sys

import jax
import optax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import common
from ebm_vision import models
from ebm_vision.objectives import train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run.optimizer import pretraining_optimizer

flags.DEFINE_list("configs", ["vit_b_mask", "vit_l_mask", "vit_h_mask"],
                  "Config files under configs/, without .py.")
flags.DEFINE_integer("devices", 32, "Devices to compile for (simulated on a CPU host).")
flags.DEFINE_integer("batch_size", 0, "Global batch; 0 keeps each config's batch_size.")
flags.DEFINE_list("mesh", [], "data,fsdp,tensor sizes overriding the configs' (e.g. 1,-1,1).")
flags.DEFINE_bool("remat_blocks", None, "Overrides the configs' model.remat_blocks.")
flags.DEFINE_enum("second_order", None, ["autodiff", "reverse_over_forward"],
                  "Overrides the configs' restore.second_order.")
flags.DEFINE_integer("grad_accum_steps", 1, "Micro-batches per optimizer step.")
flags.DEFINE_enum("accumulation", "scan", ["scan", "multisteps"],
                  "How micro-batches accumulate: 'scan' inside one step (grad_accum_steps), or "
                  "optax.MultiSteps (one micro-batch per step call, the sum in the optimizer "
                  "state).")
flags.DEFINE_enum("mu_dtype", None, ["float32", "bfloat16"],
                  "Overrides the configs' optimizer.mu_dtype (AdamW's first moment).")
FLAGS = flags.FLAGS

GIB = 2.**30


def step_memory(config, devices) -> dict:
  """Bytes per device of `config`'s train step compiled for `devices`, and the mesh."""
  mesh = mesh_lib.create_mesh(config.mesh, devices)
  model = models.create_vit(config.model)
  common.set_steps(config, 1000, 100)  # The schedule changes neither memory nor speed.
  tx, schedule = pretraining_optimizer(config)
  batch_size = config.batch_size
  if FLAGS.accumulation == "multisteps" and config.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, config.grad_accum_steps)
    batch_size //= config.grad_accum_steps
    config.grad_accum_steps = 1
  init, shardings, step = train_step.sharded_train_step(model, config, tx, schedule, mesh)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  size = config.data.image_size
  batch = {"image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jax.numpy.uint8)}
  memory = step.lower(abstract, batch).compile().memory_analysis()
  state = sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
              for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))
  return {"mesh": mesh.shape, "state": state, "temporaries": memory.temp_size_in_bytes,
          "peak": (memory.argument_size_in_bytes + memory.output_size_in_bytes
                   - memory.alias_size_in_bytes + memory.temp_size_in_bytes),
          "params": sum(x.size for x in jax.tree.leaves(abstract["params"]["model"]))}


def main(argv):
  del argv
  jax.config.update("jax_num_cpu_devices", FLAGS.devices)  # Only the CPU backend uses it.
  if jax.device_count() < FLAGS.devices:
    sys.exit(f"{FLAGS.devices} devices asked for, {jax.device_count()} present")
  devices = jax.devices()[:FLAGS.devices]
  print(f"{FLAGS.devices} × {devices[0].device_kind} ({jax.default_backend()}), "
        f"jax {jax.__version__}")
  header = ("config", "params", "data×fsdp×tensor", "images/device", "second order",
            "block remat", "accumulation", "AdamW μ", "state GiB", "temporaries GiB",
            "peak GiB")
  rows = [header]
  for name in FLAGS.configs:
    config = importlib.import_module(f"configs.{name}").get_config()
    if FLAGS.batch_size:
      config.batch_size = FLAGS.batch_size
    if FLAGS.remat_blocks is not None:
      config.model.remat_blocks = FLAGS.remat_blocks
    if FLAGS.second_order:
      config.restore.second_order = FLAGS.second_order
    if FLAGS.mesh:
      config.mesh.data, config.mesh.fsdp, config.mesh.tensor = map(int, FLAGS.mesh)
    if FLAGS.mu_dtype:
      config.optimizer.mu_dtype = FLAGS.mu_dtype
    config.grad_accum_steps = FLAGS.grad_accum_steps
    accumulation = (f"{FLAGS.grad_accum_steps}× {FLAGS.accumulation}"
                    if FLAGS.grad_accum_steps > 1 else "none")
    m = step_memory(config, devices)
    shape = m["mesh"]
    rows.append((name, f"{m['params'] / 1e6:.0f}M", "×".join(map(str, shape.values())),
                 str(config.batch_size // (shape["data"] * shape["fsdp"])),
                 config.restore.second_order, "yes" if config.model.remat_blocks else "no",
                 accumulation, config.optimizer.mu_dtype, f"{m['state'] / GIB:.4g}",
                 f"{m['temporaries'] / GIB:.4g}",
                 f"{m['peak'] / GIB:.4g}"))
    print("  ".join(rows[-1]), flush=True)
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  print("\n" + "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows))


if __name__ == "__main__":
  app.run(main)
