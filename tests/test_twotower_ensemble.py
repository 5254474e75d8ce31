"""--ensemble: member towers side by side, a score the mean of the members' scores, each
member trained with its own loss; checkpoint, resume and export as for one pair of towers."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import evaluate as evaluate_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import objective as objective_lib
from tf_embeddings.twotower import train as train_lib
from twotower_interrupt import interrupt_second_epoch

SYNTH = config_lib.DataConfig(dataset="synthetic")


def _config(tmp_path, name="run", ensemble=2, model=None, **train):
  t = dict(batch_size=256, epochs=1, learning_rate=0.01, eval_every_epoch=False,
           checkpoint_every=20, log_every=10)
  t.update(train)
  m = dict(embedding_dim=8, tower_layers=(16,), ensemble=ensemble)
  m.update(model or {})
  return config_lib.Config(str(tmp_path / name), SYNTH, config_lib.ModelConfig(**m),
                           config_lib.TrainConfig(**t))


@pytest.fixture(scope="module")
def prepared():
  return inputs.prepare(SYNTH)


def _member(ensemble, k):
  """A one-member Tower built like `ensemble` with member k's slices of its variables."""
  e = ensemble
  history = None
  if e.history is not None:
    history = (np.concatenate([e.history.numpy()[:e.num_ids], [e.history_items.shape[0]]]),
               e.history_items.numpy(), e.history_table.shape[0])
  features = [(name, table.shape[0], values.numpy()) for name, table, values in
              zip(e.feature_names, e.feature_embeddings, e.feature_values)]
  layers = [w.shape[-1] for w in e.weights[:-1]]
  one = model_lib.Tower(e.num_ids, features, e.embedding_dim, layers, e.use_ids,
                        history=history, bias_column=e.bias_column, normalize=e.normalize,
                        oov=e.oov)

  def cols(v):
    width = v.shape[1] // e.members
    return v.numpy()[:, k * width:(k + 1) * width]
  if e.use_ids:
    one.id_table.assign(cols(e.id_table))
  for mine, theirs in zip(one.feature_embeddings, e.feature_embeddings):
    mine.assign(cols(theirs))
  if e.history is not None:
    one.history_table.assign(cols(e.history_table))
  if e.bias_column == "learned":
    one.bias_table.assign(cols(e.bias_table))
  for mine, theirs in zip(one.weights + one.biases, e.weights + e.biases):
    mine.assign(theirs.numpy()[k])
  return one


@pytest.mark.parametrize("model", [{}, {"item_bias": True}, {"normalize": False},
                                   {"use_history": True}, {"tower_layers": ()}])
def test_each_member_of_an_ensemble_is_a_tower_of_its_own(tmp_path, prepared, model):
  # The ensemble's vectorised forward pass equals, member by member, a one-member Tower
  # holding that member's slices of the variables; its output is theirs side by side
  # divided by sqrt(3), so a score is the mean of the members' scores.
  history = inputs.history(prepared) if model.get("use_history") else None
  two_tower = model_lib.build_model(_config(tmp_path, ensemble=3, model=model),
                                    prepared.data, history)
  q, i = two_tower.query_tower, two_tower.item_tower
  assert q.members == 3
  qe, ie = q.embed_all(), i.embed_all()
  assert qe.shape == (prepared.data.num_users, q.output_dim)
  mq = [_member(q, k).embed_all() for k in range(3)]
  mi = [_member(i, k).embed_all() for k in range(3)]
  np.testing.assert_allclose(qe, np.concatenate(mq, 1) / np.sqrt(3), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ie, np.concatenate(mi, 1) / np.sqrt(3), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(qe @ ie.T, np.mean([a @ b.T for a, b in zip(mq, mi)], 0),
                             rtol=1e-4, atol=1e-6)
  for k, part in enumerate(model_lib.member_outputs(tf.constant(ie), 3)):
    np.testing.assert_allclose(part.numpy(), mi[k], rtol=1e-5, atol=1e-6)
  if model.get("normalize", True) and not model.get("item_bias"):
    np.testing.assert_allclose(np.linalg.norm(qe, axis=1), 1.0, rtol=1e-5)
  # The members start apart (their own initial values).
  assert not np.allclose(mi[0], mi[1])


@pytest.mark.parametrize("loss, extra", [
    ("inbatch_softmax", {}),
    ("inbatch_softmax", {"mixed_negatives": 16}),
    ("bce", {"num_negatives": 3}),
    ("sampled_softmax", {"num_negatives": 5}),
    ("info_nce", {}),
    ("weighted_ce", {}),
])
def test_ensemble_loss_is_the_mean_of_its_members_losses(tmp_path, prepared, loss, extra):
  config = _config(tmp_path, ensemble=2, loss=loss, **extra)
  two_tower = model_lib.build_model(config, prepared.data)
  counts = prepared.train.item_counts()
  rng = np.random.default_rng(0)
  batch = {"user": tf.constant(rng.integers(0, prepared.data.num_users, 64)),
           "item": tf.constant(rng.integers(0, prepared.data.num_items, 64)),
           "label": tf.constant(rng.integers(0, 2, 64).astype(np.float32)),
           "session": tf.constant(rng.integers(0, 8, 64))}
  step = tf.constant(3, tf.int64)
  got = objective_lib.Objective(config.train, two_tower, counts)(batch, step)
  each = [float(objective_lib.Objective(config.train, model_lib.TwoTower(
      _member(two_tower.query_tower, k), _member(two_tower.item_tower, k)), counts)(
          batch, step)) for k in range(2)]
  assert not np.isclose(each[0], each[1])
  if loss == "sampled_softmax":
    # Each member draws its own negatives (an unseeded sampler): the same loss, other draws.
    assert np.isfinite(float(got)) and min(each) / 2 < float(got) < 2 * max(each)
    return
  np.testing.assert_allclose(float(got), np.mean(each), rtol=1e-5)


def test_ensemble_trains_resumes_exactly_and_exports(tmp_path, prepared, monkeypatch):
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  full = _config(tmp_path, "full", epochs=2, average_momentum=0.99)
  two_tower, _ = train_lib.train(full, prepared, resume=False)
  want = two_tower.item_tower.id_table.numpy()
  got = evaluate_lib.evaluate(two_tower, prepared, "test")
  assert got["hit@10"] > 0.034  # random: 10/300
  # Killed in the second epoch, resumed: the same weights as the uninterrupted run.
  cut = _config(tmp_path, "cut", epochs=2, average_momentum=0.99)
  real = interrupt_second_epoch(monkeypatch, inputs, 15)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train(cut, prepared, resume=True)
  assert tf.train.latest_checkpoint(os.path.join(cut.model_dir, "checkpoints")).endswith(
      "ckpt-60")
  monkeypatch.setattr(inputs, "epoch_dataset", real)
  resumed, _ = train_lib.train(cut, prepared, resume=True)
  np.testing.assert_allclose(resumed.item_tower.id_table.numpy(), want, atol=1e-5)
  # `twotower eval` restores the ensemble from the run directory alone.
  config, again, restored = evaluate_lib.restore(full.model_dir)
  assert config.model.ensemble == 2
  np.testing.assert_array_equal(restored.item_tower.embed_all(),
                                two_tower.item_tower.embed_all())
  # The export's embeddings and query model are the ensemble's (members side by side).
  paths = export_lib.export(full.model_dir, str(tmp_path / "export"), k=5)
  items = np.load(paths["item_embeddings"])
  assert items.shape == (prepared.data.num_items, 16)
  np.testing.assert_allclose(items, two_tower.item_tower.embed_all(), atol=1e-6)
  loaded = tf.saved_model.load(paths["query_model"])
  out = loaded.signatures["serving_default"](user_id=tf.constant(["u1"]))
  _, top = metrics.top_k(two_tower.query_tower.embed_index(tf.constant([1])),
                         two_tower.item_tower.embed_all(), 5)
  assert out["item_ids"].numpy().astype(str).tolist()[0] == [f"i{k}" for k in top.numpy()[0]]
  assert again.data.num_items == prepared.data.num_items


def test_a_run_recorded_before_ensembles_reads_back_as_one_pair_of_towers(tmp_path):
  old = dataclasses.asdict(_config(tmp_path, ensemble=1))
  del old["model"]["ensemble"]
  old["model"]["tower_layers"] = [16]
  with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
    json.dump(old, f)
  assert config_lib.read_config(str(tmp_path)).model.ensemble == 1
