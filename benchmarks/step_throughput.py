"""Speed and memory of one pretraining step: energy (K = 1, 2) against MAE.

  python benchmarks/step_throughput.py --variant=B/16 --image_size=224 --batch_size=128

Times the jitted train step (after compilation; `--repeats` timed runs of `--steps`
steps each, median and spread) of each method on all present devices (batch split over
a data-parallel mesh) and prints images/s, step time, peak memory per device (XLA's
memory analysis of the compiled step: inputs + outputs − donated + temporaries) and
FLOPs utilization: XLA's cost-analysis FLOPs of the step (rematerialized work
included) over the step time and the devices' dense bf16 peak, each method's FLOPs in
forward passes of the ViT over all patches, and over MAE's. `--notimed` only compiles:
FLOPs and memory of a step for an accelerator this machine lacks. Needs no TensorFlow.
"""
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import common
from ebm_vision import models
from ebm_vision.objectives import energy, train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.run.optimizer import pretraining_optimizer

flags.DEFINE_string("variant", "B/16", "ViT size '<Ti|S|M|B|L|H>/<patch>'.")
flags.DEFINE_integer("width", None, "Overrides the variant's width (tiny CPU runs).")
flags.DEFINE_integer("depth", None, "Overrides the variant's number of blocks.")
flags.DEFINE_integer("image_size", 224, "Square image side.")
flags.DEFINE_integer("batch_size", 128, "Global batch (ViT-B/16 energy at 128 fits 80 GB).")
flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "Compute dtype.")
flags.DEFINE_list("methods", ["energy_k1", "energy_k2", "mae"],
                  "Any of energy_k1, energy_k2, energy_k4, mae.")
flags.DEFINE_enum("remat", "nothing_saveable", ["none", "nothing_saveable", "dots_saveable"],
                  "restore.remat of the energy steps.")
flags.DEFINE_enum("second_order", "autodiff", ["autodiff", "reverse_over_forward"],
                  "restore.second_order of the energy steps.")
flags.DEFINE_bool("remat_blocks", False, "model.remat_blocks.")
flags.DEFINE_integer("mae_decoder_width", 512, "MAE decoder width (MAE's ViT-B: 512).")
flags.DEFINE_integer("mae_decoder_depth", 8, "MAE decoder blocks (MAE's ViT-B: 8).")
flags.DEFINE_integer("steps", 5, "Steps per timed run.")
flags.DEFINE_integer("repeats", 5, "Timed runs.")
flags.DEFINE_bool("timed", True, "Run and time the steps; --notimed only compiles them and "
                  "reports FLOPs and XLA's memory (sizing a run without its accelerator).")
FLAGS = flags.FLAGS

# Dense bf16 peak FLOP/s per device, by jax's device_kind.
PEAK_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
              "TPU v4": 275e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v6 lite": 918e12}


def method_config(method: str):
  """The pretraining config of one benchmarked method."""
  c = common.get_pretraining_config()
  c.model.variant = FLAGS.variant
  c.model.width, c.model.depth = FLAGS.width, FLAGS.depth
  if FLAGS.width:
    c.model.mlp_dim, c.model.num_heads = 4 * FLAGS.width, max(FLAGS.width // 64, 1)
  c.model.compute_dtype, c.model.remat_blocks = FLAGS.dtype, FLAGS.remat_blocks
  c.data.image_size, c.batch_size = FLAGS.image_size, FLAGS.batch_size
  c.restore.remat, c.restore.second_order = FLAGS.remat, FLAGS.second_order
  if method == "mae":
    c.method = "mae"
    c.mae.decoder_width, c.mae.decoder_depth = FLAGS.mae_decoder_width, FLAGS.mae_decoder_depth
    c.mae.decoder_num_heads = max(FLAGS.mae_decoder_width // 32, 1)
  else:
    c.restore.num_steps = int(method.split("_k")[1])
  return c


def forward_flops(mesh) -> float:
  """FLOPs per device of one forward pass of the ViT (all patches) on the batch."""
  config = method_config("energy_k1")
  model = models.create_vit(config.model)
  size = config.data.image_size
  images = jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32,
                                sharding=mesh_lib.batch_sharding(mesh))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape),
                                             train=False))["params"]
  forward = jax.jit(lambda p, x: energy.energy(model, {"model": p}, x))
  return forward.lower(params, images).compile().cost_analysis()["flops"]


def benchmark(method: str, mesh) -> dict:
  """Timings, memory and FLOPs of `method`'s train step."""
  config = method_config(method)
  model = models.create_vit(config.model)
  common.set_steps(config, 1000, 100)  # The schedule changes neither memory nor speed.
  tx, schedule = pretraining_optimizer(config)
  init, shardings, step = train_step.sharded_train_step(model, config, tx, schedule, mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  size = config.data.image_size
  images = np.random.default_rng(0).integers(0, 256, (config.batch_size, size, size, 3), np.uint8)
  batch = {"image": jax.device_put(images, mesh_lib.batch_sharding(mesh))}
  unrolled = config.copy_and_resolve_references()
  unrolled.restore.unroll_steps = True  # XLA counts a loop body once: count every step.
  _, _, unrolled_step = train_step.sharded_train_step(model, unrolled, tx, schedule, mesh)
  compiled = step.lower(state, batch).compile()
  flops = unrolled_step.lower(state, batch).compile().cost_analysis().get("flops")
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
          - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  if not FLAGS.timed:
    return {"step_s": None, "spread_s": None, "flops": flops, "peak_bytes": peak}
  state, metrics = compiled(state, batch)  # Warm-up.
  jax.block_until_ready(metrics)
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append((time.perf_counter() - start) / FLAGS.steps)
  return {"step_s": statistics.median(times), "spread_s": max(times) - min(times),
          "flops": flops, "peak_bytes": peak}


def main(argv):
  del argv
  devices = jax.devices()
  mesh = mesh_lib.create_mesh(common.get_pretraining_config().mesh, devices)
  kind = devices[0].device_kind
  peak_flops = PEAK_FLOPS.get(kind)
  print(f"{len(devices)} × {kind}, jax {jax.__version__}; ViT-{FLAGS.variant} at "
        f"{FLAGS.image_size}, batch {FLAGS.batch_size}, {FLAGS.dtype}, remat={FLAGS.remat}, "
        f"second_order={FLAGS.second_order}, remat_blocks={FLAGS.remat_blocks}")
  header = ("method", "step ms (median)", "spread ms", "images/s", "TFLOP/step",
            "forward passes", "FLOPs / MAE's", "XLA peak GiB/device", "MFU")
  forward, results = forward_flops(mesh), {}

  def row(method, mae_flops=None):
    r = results[method]
    step_s = r["step_s"]
    timing = ((f"{1e3 * step_s:.1f}", f"{1e3 * r['spread_s']:.1f}",
               f"{FLAGS.batch_size / step_s:.1f}") if step_s else ("n/a",) * 3)
    # The FLOP ratio bounds the step-time ratio at equal utilization.
    vs_mae = f"{r['flops'] / mae_flops:.2f}" if mae_flops else "n/a"
    # cost_analysis counts the FLOPs of one device's partitioned program.
    mfu = f"{r['flops'] / step_s / peak_flops:.1%}" if peak_flops and step_s else "n/a"
    return (method, *timing, f"{r['flops'] * len(devices) / 1e12:.4g}",
            f"{r['flops'] / forward:.1f}", vs_mae, f"{r['peak_bytes'] / 2**30:.3g}", mfu)

  for method in FLAGS.methods:
    results[method] = benchmark(method, mesh)
    print("  ".join(row(method)), flush=True)
  mae_flops = results["mae"]["flops"] if "mae" in results else None
  rows = [header] + [row(method, mae_flops) for method in results]
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  print("\n" + "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows))


if __name__ == "__main__":
  app.run(main)
