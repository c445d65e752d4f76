"""kNN top-1 of the backbone while it pretrains, on a fixed labeled subset."""
from __future__ import annotations

from ebm_vision.data import input_pipeline
from ebm_vision.transfer import features


class KnnMonitor:
  """`monitor(model_params)` -> kNN top-1 of the pooled features on `config.knn_monitor`'s
  subsets of the train (memory bank) and eval (queries) splits, read once."""

  def __init__(self, config, model):
    knn = config.knn_monitor
    size = min(config.batch_size, 256)
    self._train = list(input_pipeline.labeled_batches(
        config.data, config.data.train_split, size, knn.num_train_examples))
    self._eval = list(input_pipeline.labeled_batches(
        config.data, config.data.eval_split, size, knn.num_eval_examples))
    self._num_classes = input_pipeline.num_classes(config.data)
    self._feature_fn = features.make_feature_fn(model, config.data.pixel_mean,
                                                config.data.pixel_std)
    self._k, self._temperature = knn.k, knn.temperature

  def __call__(self, model_params) -> float:
    train_f, train_y = features.extract_features(self._feature_fn, model_params, self._train)
    eval_f, eval_y = features.extract_features(self._feature_fn, model_params, self._eval)
    return features.knn_accuracy(train_f, train_y, eval_f, eval_y, self._num_classes,
                                 k=self._k, temperature=self._temperature)
