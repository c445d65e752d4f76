"""The recorded config.json: atomic writes, and what a resumed run may change."""
import json

import pytest

from ebm_vision import train
from ebm_vision.run import run_config
from ebm_vision.run.errors import ConfigMismatch, RunError


def test_changes_are_split_into_safe_and_unsafe(tiny_config):
  recorded = json.loads(tiny_config.to_json_best_effort())
  tiny_config.num_train_steps, tiny_config.model.width = 10, 96
  changes = run_config.differences(recorded, tiny_config)
  assert [c[0] for c in changes] == ["model.width", "num_train_steps"]
  assert run_config.is_safe("num_train_steps") and run_config.is_safe("knn_monitor.every_steps")
  assert not run_config.is_safe("model.width") and not run_config.is_safe("corruption.name")


def test_fields_the_record_lacks_are_no_change(tiny_config):
  recorded = json.loads(tiny_config.to_json_best_effort())
  del recorded["corruption"]["mask"]["block_size"]  # A field added to the code later.
  assert run_config.differences(recorded, tiny_config) == []


def test_a_corrupted_record_fails_in_one_line(tmp_path):
  (tmp_path / run_config.CONFIG_FILE).write_text('{"model": {"width": 6')
  with pytest.raises(RunError, match=f"{tmp_path / run_config.CONFIG_FILE} is corrupted"):
    run_config.load(str(tmp_path))


@pytest.mark.slow
def test_resuming_with_another_model_fails_and_keeps_the_record(tiny_config, tmp_path):
  tiny_config.num_train_steps = 2
  train.train_and_evaluate(tiny_config, str(tmp_path))
  before = (tmp_path / run_config.CONFIG_FILE).read_text()
  changed = tiny_config.copy_and_resolve_references()
  changed.model.width, changed.num_train_steps = 96, 4
  with pytest.raises(ConfigMismatch, match=r"model\.width: 64 → 96") as error:
    train.train_and_evaluate(changed, str(tmp_path))
  assert "num_train_steps" not in str(error.value)  # A safe change is not listed.
  assert (tmp_path / run_config.CONFIG_FILE).read_text() == before
  # A safe change alone resumes, and is recorded.
  tiny_config.num_train_steps = 4
  train.train_and_evaluate(tiny_config, str(tmp_path))
  assert run_config.load(str(tmp_path)).num_train_steps == 4
  # With resume_override the changed width gets as far as the checkpoint, whose
  # parameter shapes it names.
  changed.resume_override, changed.num_train_steps = True, 6
  with pytest.raises(RunError, match=r"parameter model/embedding/bias has shape \(64,\) in the "
                                     r"checkpoint .*, \(96,\) in the model"):
    train.train_and_evaluate(changed, str(tmp_path))
