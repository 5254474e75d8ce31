"""Export: item embeddings (.npy + metadata.tsv) and a SavedModel of the query tower.

Output directory:
  item_embeddings.npy   float32 [num_items, D], row i = item_ids[i]
  metadata.tsv          header `item_id<TAB>title`, one row per item (projector labels)
  query_model/          SavedModel. Signatures (all brute force over the exported
                        item embeddings, best first):
    serving_default(user_id: string [B]) -> {item_ids: string [B, K],
        scores: float32 [B, K]}; uses the user's side features seen in training.
    serve_with_features(user_id: string [B], <feature>: string [B], ...) -> same;
        multi-valued features are '|'-separated. A user id unseen at training time is
        served through the out-of-vocabulary id row and the given features (runs trained
        with --user_oov, the default; older runs refuse it as below).
    score(user_id: string [B], item_id: string [B]) -> {scores: float32 [B]}.
  Elsewhere a user or item id unseen at training time fails with InvalidArgumentError
  "unknown user id" / "unknown item id" (no features are known for it).

The export builds from the run directory alone: config.json, the last checkpoint and the
vocabularies and feature tables training saved (tables.npz, twotower/inputs.py). It never
re-reads the raw data, except for runs trained before tables.npz existed, whose tables are
rebuilt from the recorded data settings as they were then (with a warning).
"""
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data.atomic import atomic_save_npy, atomic_write, check_output
from tf_embeddings.data.atomic import replace_output
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib


class QueryModel(tf.Module):
  """Raw user id (+ features) -> top-K item ids and scores."""

  def __init__(self, query_tower, user_ids, user_features, item_ids, item_embeddings, k):
    super().__init__(name="query_model")
    self.tower = query_tower
    self.k = int(min(k, len(item_ids)))
    self.user_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant([str(u) for u in user_ids]), tf.range(len(user_ids), dtype=tf.int64)),
        default_value=-1)
    self.feature_names = [f.name for f in user_features] if query_tower.feature_values else []
    self.feature_tables = []
    self.feature_widths = []
    for f in (user_features if self.feature_names else ()):
      self.feature_tables.append(tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(list(f.vocab)), tf.range(len(f.vocab), dtype=tf.int32)),
          default_value=0))
      self.feature_widths.append(int(f.values.shape[1]))
    self.item_ids = tf.constant([str(i) for i in item_ids])
    self.item_embeddings = tf.Variable(np.asarray(item_embeddings, np.float32),
                                       trainable=False, name="item_embeddings")
    self.serving_default = tf.function(
        self._by_id, input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
    specs = [tf.TensorSpec([None], tf.string, name="user_id")] + [
        tf.TensorSpec([None], tf.string, name=n) for n in self.feature_names]
    self.serve_with_features = tf.function(self._with_features, input_signature=specs)
    self.item_table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            self.item_ids, tf.range(len(item_ids), dtype=tf.int64)), default_value=-1)
    self.score = tf.function(self._score, input_signature=[
        tf.TensorSpec([None], tf.string, name="user_id"),
        tf.TensorSpec([None], tf.string, name="item_id")])

  def _index(self, user_id):
    return self._lookup(self.user_table, user_id, "user")

  @staticmethod
  def _lookup(table, ids, what):
    idx = table.lookup(ids)
    check = tf.debugging.Assert(tf.reduce_all(idx >= 0), [
        f"unknown {what} id (not seen at training time):",
        tf.boolean_mask(ids, idx < 0)], summarize=10)
    with tf.control_dependencies([check]):
      return tf.identity(idx)

  def _score(self, user_id, item_id):
    """Dot product of user and item embeddings: float32 [B]."""
    query = self.tower.embed_index(self._index(user_id))
    items = tf.gather(self.item_embeddings, self._lookup(self.item_table, item_id, "item"))
    return {"scores": tf.reduce_sum(query * items, -1)}

  def _top_k(self, query):
    scores, pos = metrics.top_k(query, self.item_embeddings, self.k)
    return {"item_ids": tf.gather(self.item_ids, pos), "scores": scores}

  def _by_id(self, user_id):
    idx = self._index(user_id)
    return self._top_k(self.tower.embed_index(idx))

  def _with_features(self, user_id, *features):
    if self.tower.oov:
      idx = self.user_table.lookup(user_id)  # [B], -1 = unseen at training time
      idx = tf.where(idx < 0, tf.constant(self.tower.oov_index, tf.int64), idx)
    else:  # a run trained before the OOV row existed
      idx = self._index(user_id)
    values = []
    for table, width, raw in zip(self.feature_tables, self.feature_widths, features):
      tokens = tf.strings.split(raw, "|").to_tensor(default_value="", shape=[None, width])
      values.append(table.lookup(tokens))
    return self._top_k(self.tower(idx, values))


OUTPUT_NAMES = ("item_embeddings.npy", "metadata.tsv", "query_model")


def saved_tables(model_dir, config):
  """(data without rows, history CSR or None) the run's towers are built from.

  From the run's tables.npz; a run trained before that file existed gets its tables
  rebuilt from the data its config.json names (the only case that reads raw data).
  """
  path = config_lib.run_dir(model_dir).file(inputs.TABLES_FILE)
  if os.path.exists(path):
    return inputs.load_tables(path)
  logging.warning("%s has no %s (trained before it was saved): rebuilding the vocabularies "
                  "from the %s data", model_dir, inputs.TABLES_FILE, config.data.dataset)
  prepared = inputs.prepare(config.data, config_lib.labelled(config.train))
  return prepared.data, inputs.history(prepared) if config.model.use_history else None


def write_metadata(path, data):
  """Projector metadata: header `item_id<TAB>title`, one row per item."""
  clean = lambda s: str(s).replace("\t", " ").replace("\n", " ")
  titles = data.item_titles or [str(x) for x in data.item_ids]
  with atomic_write(path) as f:
    f.write("item_id\ttitle\n")
    for iid, title in zip(data.item_ids, titles):
      f.write(f"{clean(iid)}\t{clean(title)}\n")


def export(model_dir, output, k=100, overwrite=False):
  """Exports the run in `model_dir` to the directory `output`. Returns the paths.

  An existing `output` is refused unless `overwrite` (then replaced as a whole, only if it
  holds nothing but an earlier export); `output` may not be, contain or be inside
  `model_dir`. The export is built beside `output` and renamed over it.
  """
  check_output(output, overwrite, True, model_dir, OUTPUT_NAMES)  # before the slow restore
  config = config_lib.read_config(model_dir)
  data, history = saved_tables(model_dir, config)
  two_tower = model_lib.restore(config, data, history)
  item_emb = two_tower.item_tower.embed_all()

  def build(tmp):
    atomic_save_npy(os.path.join(tmp, "item_embeddings.npy"), item_emb)
    write_metadata(os.path.join(tmp, "metadata.tsv"), data)
    module = QueryModel(two_tower.query_tower, data.user_ids, data.user_features,
                        data.item_ids, item_emb, k)
    tf.saved_model.save(module, os.path.join(tmp, "query_model"), signatures={
        "serving_default": module.serving_default,
        "serve_with_features": module.serve_with_features, "score": module.score})

  output = replace_output(output, build, True, overwrite, model_dir, OUTPUT_NAMES)
  logging.info("exported %d item embeddings and the query model to %s", len(item_emb), output)
  return {"item_embeddings": os.path.join(output, "item_embeddings.npy"),
          "metadata": os.path.join(output, "metadata.tsv"),
          "query_model": os.path.join(output, "query_model")}
