"""Helpers of the tests that run main.py in separate processes."""
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  """A TCP port nobody listens on right now."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_main(workdir, log_path, *flags, num_devices: int = 8) -> subprocess.Popen:
  """Starts `python main.py --config=tests/tiny_config.py --workdir=<workdir> <flags>` on
  `num_devices` simulated CPU devices, with its output (absl logs too) in `log_path`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  command = [sys.executable, "main.py", "--config=tests/tiny_config.py",
             f"--workdir={workdir}", "--alsologtostderr", *flags]
  with open(log_path, "w") as log:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
