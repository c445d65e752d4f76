"""Export a run's backbone for other codebases.

  python -m ebm_vision.export --workdir=W [--step=N|best] --format=timm --out=OUT

--format big_vision writes OUT as one .npz (big_vision's `load_params`, timm's .npz
loader); timm and hf write the folder OUT with model.safetensors and config.json:
  timm.create_model("local-dir:OUT", pretrained=True)          # timm
  transformers.ViTModel.from_pretrained(OUT)                    # Hugging Face
Only the backbone goes out (see transfer/formats.py); what is left behind (the
classification head, the energy read-out, the step sizes) is listed.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from ebm_vision.models import create_vit
from ebm_vision.run import checkpointing, errors, run_config
from ebm_vision.transfer import formats, pretrained

flags.DEFINE_string("workdir", None, "A run's workdir (pretraining, fine-tuning or probe).")
flags.DEFINE_string("step", None, "A checkpoint step, or 'best' (fine-tuning's best "
                    "evaluation); default: the latest checkpoint.")
flags.DEFINE_enum("format", None, ["big_vision", "timm", "hf"], "Layout to write.")
flags.DEFINE_string("out", None, "Output .npz (big_vision) or folder (timm, hf).")
flags.mark_flags_as_required(["workdir", "format", "out"])
FLAGS = flags.FLAGS


def checkpoint_path(workdir: str, step) -> str:
  """The path `load_pretrained` reads for --step (None: latest, 'best', or a number)."""
  if step is None:
    return workdir
  if step == "best":
    return os.path.join(workdir, "best")
  if not str(step).isdigit():
    raise errors.RunError(f"--step={step!r}: a checkpoint step number or 'best'")
  return os.path.join(workdir, "checkpoints", str(step))


def left_behind(path: str) -> list[str]:
  """Parameter groups of the checkpoint that are not the ViT backbone."""
  checkpoint = pretrained.find_checkpoint(path)
  tree = checkpointing.item_tree(checkpoint.item_dir)
  params = tree.get("params", tree)
  names = [k for k in params if k != "model"] if "model" in params else []
  model = params.get("model", params)
  return sorted(names + (["head"] if "head" in model else []))


def export(workdir: str, step, fmt: str, out: str) -> list[str]:
  """Writes the backbone of `workdir`'s checkpoint in `fmt` to `out`; returns the paths."""
  path = checkpoint_path(workdir, step)
  params, model_config, image_size, description = pretrained.read_backbone(path)
  model = create_vit(model_config)
  params, _ = formats.backbone_only(params)
  if fmt == "hf" and not model.has_class_token:
    logging.warning("Hugging Face's ViTModel always prepends a class token: the exported "
                    "model gets a zero one, which its patch tokens attend to, so its outputs "
                    "differ from this backbone's; --format=timm keeps them exact.")
  data = run_config.load(pretrained.find_checkpoint(path).workdir).data
  written = formats.save(out, fmt, params, formats.spec_of(model, image_size),
                         data.pixel_mean, data.pixel_std, model.pool_type)
  logging.info("Exported the backbone of %s; left behind: %s", description,
               ", ".join(left_behind(path)) or "nothing")
  return written


def main(argv):
  del argv
  try:
    for path in export(FLAGS.workdir, FLAGS.step, FLAGS.format, FLAGS.out):
      print(path)
  except (errors.RunError, FileNotFoundError) as e:
    sys.exit(f"ebm-vision export: {e}")


if __name__ == "__main__":
  app.run(main)
