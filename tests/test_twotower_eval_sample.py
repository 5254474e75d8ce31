"""Two-tower evaluation over the split's users only, and over a seeded sample of them
(--eval_users): checked against the metrics of every user's embedding restricted by hand."""
import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import evaluate as evaluate_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import train as train_lib

SYNTH = config_lib.DataConfig(dataset="synthetic")


def _config(tmp_path, data=SYNTH, **train):
  t = dict(batch_size=256, epochs=2, eval_every_epoch=False, checkpoint_every=20,
           log_every=10)
  t.update(train)
  # One member: the ensemble has its own tests (test_twotower_ensemble.py).
  return config_lib.Config(str(tmp_path / "run"), data,
                           config_lib.ModelConfig(embedding_dim=16, tower_layers=(32,),
                                                  ensemble=1),
                           config_lib.TrainConfig(**t))


def test_user_sample_is_seeded_and_sub_csr_keeps_the_rows():
  users = np.array([5, 3, 3, 9, 1, 5, 7, 2, 2, 8])
  np.testing.assert_array_equal(evaluate_lib.user_sample(users, 0), [1, 2, 3, 5, 7, 8, 9])
  np.testing.assert_array_equal(evaluate_lib.user_sample(users, 7), [1, 2, 3, 5, 7, 8, 9])
  a = evaluate_lib.user_sample(users, 4, seed=1)
  assert len(a) == 4 and set(a) <= set(users) and np.all(np.diff(a) > 0)
  np.testing.assert_array_equal(a, evaluate_lib.user_sample(users, 4, seed=1))
  assert any(not np.array_equal(a, evaluate_lib.user_sample(users, 4, seed=s))
             for s in range(2, 6))
  # CSR of 4 users: 0 -> [4, 1], 1 -> [], 2 -> [0], 3 -> [2, 3, 5].
  csr = (np.array([0, 2, 2, 3, 6]), np.array([4, 1, 0, 2, 3, 5]))
  indptr, indices = evaluate_lib.sub_csr(csr, np.array([3, 1, 0]))
  rows = [indices[indptr[k]:indptr[k + 1]].tolist() for k in range(3)]
  assert rows == [[2, 3, 5], [], [4, 1]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  config = _config(tmp_path_factory.mktemp("sample"), epochs=1)
  prepared = inputs.prepare(SYNTH)
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  return config, prepared, two_tower


def _by_hand(two_tower, prepared, keep_users, temperature):
  """The metrics of the test rows of `keep_users`, from every user's embedding."""
  data, seen = prepared.eval_split("test")
  query = two_tower.query_tower.embed_all()
  items = two_tower.item_tower.embed_all()
  rows = np.isin(data.users, keep_users)
  return {kind: metrics.evaluate(query, items, data.users[rows], data.items[rows], exclude,
                                 temperature)
          for kind, exclude in (("seen_excluded", seen), ("seen_included", None))}


@pytest.mark.parametrize("max_users", [0, 10_000, 37])
def test_sampled_evaluation_equals_the_rows_of_the_sample(trained, max_users):
  config, prepared, two_tower = trained
  t = config.train.temperature
  got = evaluate_lib.evaluate_both(two_tower, prepared, "test", t, max_users=max_users,
                                   seed=5)
  in_split = len(np.unique(prepared.test.users))
  keep = evaluate_lib.user_sample(prepared.test.users, max_users, seed=5)
  want = _by_hand(two_tower, prepared, keep, t)
  for kind in want:
    assert got[kind].keys() == want[kind].keys()
    for k, v in want[kind].items():
      assert got[kind][k] == pytest.approx(v, rel=1e-5, abs=1e-7), (kind, k)
  if max_users and max_users < in_split:
    assert got["users"] == {"evaluated": max_users, "in_split": in_split}
    assert got["seen_excluded"]["hit@100"] != pytest.approx(
        evaluate_lib.evaluate(two_tower, prepared)["hit@100"], abs=1e-9)
  else:
    assert "users" not in got and len(keep) == in_split


def test_sampled_pointwise_figures_are_those_of_the_sampled_users(tmp_path):
  data = dataclasses.replace(SYNTH, min_rating=4.0)
  config = _config(tmp_path, data=data, loss="inbatch_softmax",
                   tasks=("inbatch_softmax", "weighted_ce"))
  prepared = inputs.prepare(data, pointwise=True, seen_every_row=True)
  two_tower = model_lib.build_model(config, prepared.data, None)
  got = evaluate_lib.evaluate_both(two_tower, prepared, "test", 0.1,
                                   tasks=config.train.tasks, max_users=30, seed=2)
  keep = evaluate_lib.user_sample(prepared.test.users, 30, seed=2)
  rows = np.isin(prepared.test.users, keep)
  want = evaluate_lib.pointwise_figures(
      two_tower.query_tower.embed_all(), two_tower.item_tower.embed_all(),
      prepared.test.users[rows], prepared.test.items[rows], prepared.test.labels[rows], 0.1)
  assert got["tasks"]["weighted_ce"] == pytest.approx(want, rel=1e-6)


def _eval_tags(model_dir):
  """{tag: sorted steps} of the eval/ event files."""
  out = {}
  for path in glob.glob(os.path.join(model_dir, "eval", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out.setdefault(v.tag, []).append(event.step)
  return {k: sorted(v) for k, v in out.items()}


def test_training_evaluates_a_sample_and_the_whole_split_at_the_end(tmp_path):
  config = _config(tmp_path, epochs=3, eval_every_epoch=True, eval_users=40)
  prepared = inputs.prepare(SYNTH)
  two_tower, last = train_lib.train(config, prepared, resume=False)
  tags = _eval_tags(config.model_dir)
  sampled_steps = tags["eval_sampled/hit@10"]
  assert len(sampled_steps) == 3 and "eval_sampled_seen_included/hit@100" in tags
  # The whole split once, after the last epoch, at the last sampled step.
  assert tags["eval/hit@10"] == sampled_steps[-1:]
  assert "users" not in last
  whole = evaluate_lib.evaluate_both(two_tower, prepared, "test", config.train.temperature)
  assert last["seen_excluded"] == pytest.approx(whole["seen_excluded"], rel=1e-6)
  # A split no larger than --eval_users: one evaluation per epoch, under eval/ only.
  config = dataclasses.replace(config, model_dir=str(tmp_path / "all"))
  config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                 eval_users=10_000))
  train_lib.train(config, prepared, resume=False)
  tags = _eval_tags(config.model_dir)
  assert len(tags["eval/hit@10"]) == 3 and not any(k.startswith("eval_sampled") for k in tags)
  # Without --eval_every_epoch: one whole evaluation at the end, no sample.
  config = dataclasses.replace(config, model_dir=str(tmp_path / "end"))
  config = dataclasses.replace(config, train=dataclasses.replace(
      config.train, eval_users=40, eval_every_epoch=False))
  train_lib.train(config, prepared, resume=False)
  tags = _eval_tags(config.model_dir)
  assert len(tags["eval/hit@10"]) == 1 and not any(k.startswith("eval_sampled") for k in tags)
