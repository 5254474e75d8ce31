"""Two-tower cold start: the OOV user id row, id dropout, the cold-user split and eval, and
unknown user ids served through the export's feature path."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.data.errors import UserError
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import evaluate as evaluate_lib
from tf_embeddings.twotower import export as export_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import objective as objective_lib
from tf_embeddings.twotower import train as train_lib

SYNTH = config_lib.DataConfig(dataset="synthetic")
COLD = dataclasses.replace(SYNTH, cold_users=0.2)


def _config(tmp_path, name="run", data=SYNTH, user_oov=True, **train):
  t = dict(batch_size=256, epochs=1, learning_rate=0.01, eval_every_epoch=False,
           checkpoint_every=1000, log_every=50)
  t.update(train)
  return config_lib.Config(
      str(tmp_path / name), data,
      config_lib.ModelConfig(embedding_dim=16, tower_layers=(32,), user_oov=user_oov),
      config_lib.TrainConfig(**t))


@pytest.fixture(scope="module")
def cold_prepared():
  return inputs.prepare(COLD)


def test_id_dropout_mask_rate_is_its_probability():
  n = 200_000
  for rate in (0.1, 0.3):
    mask = objective_lib.id_dropout_mask(n, rate, tf.constant(5, tf.int64), 0).numpy()
    # Binomial: standard deviation sqrt(p (1 - p) / n) <= 0.0011; 5 of them.
    assert abs(mask.mean() - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  step = tf.constant(3, tf.int64)
  a = objective_lib.id_dropout_mask(1000, 0.5, step, 0).numpy()
  np.testing.assert_array_equal(a, objective_lib.id_dropout_mask(1000, 0.5, step, 0).numpy())
  assert (a != objective_lib.id_dropout_mask(1000, 0.5, step + 1, 0).numpy()).any()
  assert not objective_lib.id_dropout_mask(1000, 0.0, step, 0).numpy().any()
  assert objective_lib.id_dropout_mask(1000, 1.0, step, 0).numpy().all()


def _tower(oov):
  group = np.array([[1], [2], [1], [3]], np.int32)
  return model_lib.Tower(4, [("group", 4, group)], 8, (16,), seed=3, oov=oov)


def test_dropped_ids_embed_the_oov_row_with_their_own_features():
  with_oov, without = _tower(True), _tower(False)
  # The OOV row is one more row; the users' rows are those of a tower without it.
  assert with_oov.id_table.shape == [5, 8] and with_oov.oov_index == 4
  np.testing.assert_array_equal(with_oov.id_table.numpy()[:4], without.id_table.numpy())
  with pytest.raises(ValueError):
    _ = without.oov_index
  ids = tf.constant([0, 1, 2, 3], tf.int64)
  drop = tf.constant([True, False, True, False])
  got = with_oov.embed_index(ids, drop_ids=drop).numpy()
  # Reference: the tower's layers by hand, the id part from row 4 where dropped.
  table = with_oov.id_table.numpy()
  rows = np.where(drop.numpy(), 4, ids.numpy())
  feat = with_oov.feature_embeddings[0].numpy()[[1, 2, 1, 3]]
  x = np.concatenate([table[rows], feat], 1)
  h = np.maximum(x @ with_oov.weights[0].numpy() + with_oov.biases[0].numpy(), 0)
  y = h @ with_oov.weights[1].numpy() + with_oov.biases[1].numpy()
  np.testing.assert_allclose(got, y / np.linalg.norm(y, axis=1, keepdims=True), rtol=1e-5,
                             atol=1e-6)
  # Rows not dropped are the plain embeddings.
  np.testing.assert_allclose(got[[1, 3]], with_oov.embed_index(ids).numpy()[[1, 3]],
                             rtol=1e-6)


def test_cold_split_holds_out_exactly_the_chosen_users(cold_prepared):
  warm = inputs.prepare(SYNTH)
  data = cold_prepared.data
  chosen = inputs.cold_users(data.num_users, 0.2, COLD.split_seed)
  assert len(chosen) == round(0.2 * data.num_users) and len(set(chosen)) == len(chosen)
  # Every interaction of the chosen users is cold, and only theirs.
  assert set(cold_prepared.cold.users) == set(chosen)
  assert len(cold_prepared.cold) == np.isin(data.users, chosen).sum()
  for split in (cold_prepared.train, cold_prepared.test):
    assert not np.isin(split.users, chosen).any()
  # The warm users' rows are split as without --cold_users.
  for cold_side, warm_side in ((cold_prepared.train, warm.train),
                               (cold_prepared.test, warm.test)):
    keep = ~np.isin(warm_side.users, chosen)
    np.testing.assert_array_equal(cold_side.users, warm_side.users[keep])
    np.testing.assert_array_equal(cold_side.items, warm_side.items[keep])
  valid = inputs.prepare(dataclasses.replace(COLD, validation_fraction=0.2)).valid
  assert len(valid) and not np.isin(valid.users, chosen).any()
  with pytest.raises(UserError, match="--cold_users needs --user_oov"):
    config_lib.resolve("x", cold_users=0.2, user_oov=False)
  with pytest.raises(UserError, match="--id_dropout needs --user_oov"):
    config_lib.resolve("x", id_dropout=0.2, user_oov=False)


def test_most_popular_scores_break_ties_by_index():
  # Counts [3, 5, 3, 0]: order 1, 0, 2, 3 (0 before 2 on the tie).
  np.testing.assert_array_equal(evaluate_lib.most_popular_scores([3, 5, 3, 0]), [3, 4, 2, 1])


def test_cold_users_are_scored_and_unknown_users_served_through_the_export(tmp_path,
                                                                          cold_prepared):
  config = _config(tmp_path, data=COLD, id_dropout=0.3, eval_every_epoch=True)
  two_tower, last = train_lib.train(config, cold_prepared, resume=False)
  cold = last["cold_users"]
  assert set(cold) == {"twotower", "most_popular"} and cold["twotower"]["hit@100"] > 0
  # Most-popular by hand: every cold interaction's rank among the popularity order.
  counts = inputs.positives_only(cold_prepared.train).item_counts()
  position = np.empty(len(counts), np.int64)
  position[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
  assert "cross_entropy" not in cold["most_popular"]
  assert cold["most_popular"]["hit@10"] == pytest.approx(
      np.mean(position[cold_prepared.cold.items] < 10))
  # The two-tower figures: the OOV row + the users' own features, by index.
  users = np.unique(cold_prepared.cold.users)
  tower = two_tower.query_tower
  oov = tf.fill([len(users)], tf.constant(tower.num_ids, tf.int64))
  query = tower(oov, [tf.gather(v, users) for v in tower.feature_values]).numpy()
  rows = np.searchsorted(users, cold_prepared.cold.users)
  want = metrics.evaluate(query, two_tower.item_tower.embed_all(), rows,
                          cold_prepared.cold.items, None, config.train.temperature)
  assert cold["twotower"] == pytest.approx(want)

  # `twotower eval` prints them and writes them to eval.json.
  res = subprocess.run([sys.executable, "-m", "tf_embeddings.twotower", "eval",
                        f"--model_dir={config.model_dir}"], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False)
  assert res.returncode == 0, res.stderr
  assert f"cold users (most-popular): hit@1 {cold['most_popular']['hit@1']:.4f}" in res.stdout
  with open(os.path.join(config.model_dir, "eval.json")) as f:
    assert json.load(f)["cold_users"]["twotower"] == pytest.approx(cold["twotower"])

  paths = export_lib.export(config.model_dir, str(tmp_path / "export"), k=10)
  m = tf.saved_model.load(paths["query_model"])
  data = cold_prepared.data
  group, region = data.user_features
  u = users[:3]
  feats = {"group": tf.constant([group.vocab[group.values[i, 0]] for i in u]),
           "region": tf.constant([region.vocab[region.values[i, 0]] for i in u])}
  # A user id never seen (not in the vocabulary) with known features: served through the
  # OOV row, as the cold users are scored.
  new_ids = tf.constant(["new-a", "new-b", "new-c"])
  got = m.signatures["serve_with_features"](user_id=new_ids, **feats)
  want_scores, want_pos = metrics.top_k(query[:3], two_tower.item_tower.embed_all(), 10)
  assert got["item_ids"].numpy().astype(str).tolist() == (
      data.item_ids[want_pos.numpy()].tolist())
  np.testing.assert_allclose(got["scores"].numpy(), want_scores.numpy(), rtol=1e-5,
                             atol=1e-6)
  # Known ids still use their own row.
  known = m.signatures["serve_with_features"](user_id=tf.constant(["u0"]), group=feats[
      "group"][:1], region=feats["region"][:1])
  assert known["scores"].numpy()[0, 0] != pytest.approx(got["scores"].numpy()[0, 0])
  # Without features there is nothing to serve an unknown id with.
  with pytest.raises(tf.errors.InvalidArgumentError, match="unknown user id"):
    m.signatures["serving_default"](user_id=new_ids)


def test_an_old_run_without_the_oov_row_still_exports_and_refuses_unknown_ids(tmp_path):
  prepared = inputs.prepare(SYNTH)
  config = _config(tmp_path, user_oov=False)
  train_lib.train(config, prepared, resume=False)
  # A config.json written before the cold-start fields existed.
  path = os.path.join(config.model_dir, "config.json")
  with open(path) as f:
    recorded = json.load(f)
  for section, key in (("model", "user_oov"), ("train", "id_dropout"), ("data", "cold_users")):
    del recorded[section][key]
  with open(path, "w") as f:
    json.dump(recorded, f)
  old = config_lib.read_config(config.model_dir)
  assert not old.model.user_oov and old.train.id_dropout == 0 and old.data.cold_users == 0
  paths = export_lib.export(config.model_dir, str(tmp_path / "export"), k=5)
  m = tf.saved_model.load(paths["query_model"])
  group, region = prepared.data.user_features
  feats = {"group": tf.constant([group.vocab[1]]), "region": tf.constant([region.vocab[1]])}
  assert m.signatures["serve_with_features"](user_id=tf.constant(["u1"]), **feats)[
      "item_ids"].shape == [1, 5]
  with pytest.raises(tf.errors.InvalidArgumentError, match="unknown user id"):
    m.signatures["serve_with_features"](user_id=tf.constant(["new"]), **feats)


def test_the_oov_row_leaves_warm_training_unchanged(tmp_path):
  prepared = inputs.prepare(SYNTH)
  figures = []
  for oov in (False, True):
    config = _config(tmp_path, f"oov{oov}", user_oov=oov, epochs=1)
    two_tower, _ = train_lib.train(config, prepared, resume=False)
    figures.append(evaluate_lib.evaluate(two_tower, prepared))
  assert figures[0] == pytest.approx(figures[1], rel=1e-5)
