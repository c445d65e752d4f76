"""Two processes on this machine (4 simulated devices each) train like one process on 8;
restoration grids and the viewer split their batch across the processes."""
import jax
import numpy as np
import pytest

from ebm_vision import models, train
from ebm_vision.objectives import train_step
from ebm_vision.parallel import mesh as mesh_lib
from ebm_vision.parallel import partitioning
from ebm_vision.run import checkpointing
from ebm_vision.run.optimizer import pretraining_optimizer
from subprocesses import free_port, start_main

pytestmark = pytest.mark.slow  # End-to-end runs.

STEPS = 3
LAYOUT = dict(data=2, fsdp=4)  # Process boundaries run along the data axis; FSDP within each.
GRID_IMAGES = 8  # Divisible by the 8 batch shards: the restoration batch is split across processes.


def restore_params(config, workdir):
  """Latest checkpointed params of `workdir`, restored onto this process's 8 devices."""
  mesh = mesh_lib.create_mesh(config.mesh)
  tx, _ = pretraining_optimizer(config)
  abstract = jax.eval_shape(lambda k: train_step.init_state(
      models.create_vit(config.model), tx, config, k), jax.random.PRNGKey(0))
  manager = checkpointing.create_manager(workdir, config)
  state = checkpointing.restore_latest(manager, checkpointing.abstract_like(
      abstract, partitioning.state_shardings(abstract, mesh)))
  assert int(state["step"]) == STEPS
  return jax.device_get(state["params"])


def start_two_processes(workdir, log_prefix, *flags) -> list:
  """Starts main.py as 2 processes of 4 simulated devices each (localhost coordinator)."""
  port = free_port()
  return [start_main(workdir, f"{log_prefix}_{i}.log", *flags,
                     f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={i}", num_devices=4) for i in range(2)]


def wait_for(processes, log_prefix) -> list[str]:
  """Waits for the processes of `start_two_processes`; checks they succeeded; their logs."""
  logs = []
  for i, process in enumerate(processes):
    returncode = process.wait(timeout=600)
    logs.append(open(f"{log_prefix}_{i}.log").read())
    assert returncode == 0, logs[-1][-3000:]
    assert f"Process {i} of 2" in logs[-1] and "4 local devices, 8 in all" in logs[-1]
  return logs


def test_two_processes_equal_one_process(tiny_config, tmp_path):
  tiny_config.num_train_steps = tiny_config.checkpoint_every_steps = STEPS
  tiny_config.num_grid_images = GRID_IMAGES
  tiny_config.mesh.update(**LAYOUT)
  mesh_flags = [f"--config.mesh.data={LAYOUT['data']}", f"--config.mesh.fsdp={LAYOUT['fsdp']}"]
  workdir = tmp_path / "two_processes"
  processes = start_two_processes(
      workdir, tmp_path / "train", *mesh_flags, f"--config.num_train_steps={STEPS}",
      f"--config.checkpoint_every_steps={STEPS}", f"--config.num_grid_images={GRID_IMAGES}")
  train.train_and_evaluate(tiny_config, str(tmp_path / "one_process"))  # Meanwhile, here.
  wait_for(processes, tmp_path / "train")
  # Only process 0 writes images and the run's config.
  assert (workdir / "config.json").exists()
  assert len(list((workdir / "restorations").glob("mask_step_*.png"))) == 2

  one, two = restore_params(tiny_config, str(tmp_path / "one_process")), restore_params(
      tiny_config, str(workdir))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one), jax.tree.leaves(two)):
    if "['key']['bias']" in jax.tree_util.keystr(path):  # Zero gradient: see test_sharding.
      continue
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))

  # The viewer of that run, in 2 processes too; process 0 writes its report.
  processes = start_two_processes(
      workdir, tmp_path / "viewer", *mesh_flags, "--mode=restore",
      "--config.viewer.source=dead_leaves", "--config.viewer.tasks=('mask',)",
      f"--config.viewer.num_images={GRID_IMAGES}")
  logs = wait_for(processes, tmp_path / "viewer")
  assert all("PSNR in" in log for log in logs)  # Both print the table.
  assert sorted(p.name for p in (workdir / "viewer").iterdir()) == [
      f"mask_step_{STEPS:08d}.png", f"metrics_step_{STEPS:08d}.json"]
