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


@pytest.mark.parametrize("model", [{}, {"item_bias": True}, {"normalize": False}])
def test_ensemble_score_is_the_mean_of_its_members_scores(tmp_path, prepared, model):
  two_tower = model_lib.build_model(_config(tmp_path, ensemble=3, model=model),
                                    prepared.data)
  q, i = two_tower.query_tower, two_tower.item_tower
  assert isinstance(q, model_lib.Ensemble) and len(q.members) == 3
  qe, ie = q.embed_all(), i.embed_all()
  width = q.members[0].output_dim
  assert qe.shape == (prepared.data.num_users, 3 * width) == (len(qe), q.output_dim)
  members = [(m.embed_all(), n.embed_all()) for m, n in zip(q.members, i.members)]
  want = np.mean([a @ b.T for a, b in members], 0)
  np.testing.assert_allclose(qe @ ie.T, want, rtol=1e-5, atol=1e-6)
  if not model:  # unit-norm members: the ensemble's rows have unit norm too
    np.testing.assert_allclose(np.linalg.norm(qe, axis=1), 1.0, rtol=1e-5)
  # Members differ (own seeds); member 0 is the tower a run without --ensemble builds.
  assert not np.allclose(members[0][1], members[1][1])
  single = model_lib.build_model(_config(tmp_path, ensemble=1, model=model), prepared.data)
  assert isinstance(single.item_tower, model_lib.Tower)
  np.testing.assert_array_equal(single.item_tower.embed_all(), members[0][1])
  np.testing.assert_array_equal(single.query_tower.embed_all(), members[0][0])


@pytest.mark.parametrize("loss, extra", [
    ("inbatch_softmax", {}),
    ("bce", {"num_negatives": 3}),
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
  each = [objective_lib.Objective(config.train, model_lib.TwoTower(q, i), counts)(batch, step)
          for q, i in zip(two_tower.query_tower.members, two_tower.item_tower.members)]
  assert not np.isclose(float(each[0]), float(each[1]))
  np.testing.assert_allclose(float(got), np.mean([float(x) for x in each]), rtol=1e-6)


def test_ensemble_trains_resumes_exactly_and_exports(tmp_path, prepared, monkeypatch):
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  full = _config(tmp_path, "full", epochs=2, average_momentum=0.99)
  two_tower, _ = train_lib.train(full, prepared, resume=False)
  want = two_tower.item_tower.members[1].id_table.numpy()
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
  np.testing.assert_allclose(resumed.item_tower.members[1].id_table.numpy(), want, atol=1e-5)
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
