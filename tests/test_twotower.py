"""Two-tower library: metrics, streaming top-K, towers, config, train loop, resume, export."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.data import interactions as ilib
from tf_embeddings.data.errors import UserError
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import evaluate as evaluate_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import objective as objective_lib
from tf_embeddings.twotower import train as train_lib
from twotower_interrupt import interrupt_second_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- metrics


def test_ranks_golden():
  # One user, 4 items on a line: scores = q . e = [0.9, 0.5, 0.7, 0.1].
  q = np.array([[1.0]], np.float32)
  e = np.array([[0.9], [0.5], [0.7], [0.1]], np.float32)
  # Test items 1 and 2; item 0 was seen in training.
  seen = (np.array([0, 1]), np.array([0]))
  rank, xent = metrics.ranks(q, e, [0, 0], [1, 2], None, temperature=1.0)
  # Item 1 (0.5) is beaten by 0.9 and 0.7 -> rank 2; item 2 by 0.9 -> rank 1.
  np.testing.assert_array_equal(rank, [2, 1])
  lse = np.log(np.exp([0.9, 0.5, 0.7, 0.1]).sum())
  np.testing.assert_allclose(xent, [lse - 0.5, lse - 0.7], rtol=1e-6)
  rank, _ = metrics.ranks(q, e, [0, 0], [1, 2], seen)
  np.testing.assert_array_equal(rank, [1, 0])  # item 0 no longer counts
  m = metrics.summarize(rank, xent, [0, 0], ks=(1, 2))
  assert m["hit@1"] == 0.5 and m["hit@2"] == 1.0
  assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0
  # Ranked list: item 2, item 1 -> both relevant at positions 1, 2: NDCG = 1.
  assert m["ndcg@10"] == pytest.approx(1.0)
  assert m["mrr"] == pytest.approx((1 / 2 + 1 / 1) / 2)


def test_ranks_match_brute_force_in_chunks():
  rng = np.random.RandomState(0)
  q = rng.randn(7, 5).astype(np.float32)
  e = rng.randn(53, 5).astype(np.float32)
  users = rng.randint(7, size=40)
  items = rng.randint(53, size=40)
  seen_data = ilib.Interactions("x", np.arange(7).astype(object), np.arange(53).astype(object),
                                rng.randint(7, size=60), rng.randint(53, size=60))
  seen = ilib.seen_items(seen_data)
  rank, xent = metrics.ranks(q, e, users, items, seen, 0.5, row_chunk=3, item_chunk=10)
  s = q @ e.T
  for r, (u, i) in enumerate(zip(users, items)):
    row = s[u].copy()
    excluded = seen[1][seen[0][u]:seen[0][u + 1]]
    row[excluded] = -np.inf
    assert rank[r] == (row > s[u, i]).sum()
    logits = s[u] / 0.5
    expected = np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[i]
    assert xent[r] == pytest.approx(expected, rel=1e-5)


def test_streaming_top_k_matches_argsort():
  rng = np.random.RandomState(1)
  q = rng.randn(4, 6).astype(np.float32)
  e = rng.randn(101, 6).astype(np.float32)
  scores, ids = metrics.top_k(q, e, 10, chunk=17)
  want = np.argsort(-(q @ e.T), axis=1)[:, :10]
  np.testing.assert_array_equal(ids.numpy(), want)
  np.testing.assert_allclose(scores.numpy(), np.take_along_axis(q @ e.T, want, 1), rtol=1e-5)


# ----------------------------------------------------------------------------- towers


def test_tower_is_normalised_and_pools_features_without_padding():
  values = np.array([[1, 2], [1, 0], [2, 0]], np.int32)
  tower = model_lib.Tower(3, [("f", 3, values)], 4, layers=(8,), seed=3)
  out = tower.embed_index(tf.constant([0, 1, 2])).numpy()
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
  # Padding (0) does not enter the mean: [1, 0] pools to the embedding of token 1.
  feats = [tf.constant([[1, 0], [1, 1]])]
  a, b = tower(tf.constant([1, 1]), feats).numpy()
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_id_only_tower_without_layers_is_the_normalised_table():
  tower = model_lib.Tower(5, [], 3, layers=(), seed=0)
  assert tower.identity and not tower.weights
  out = tower.embed_index(tf.constant([2])).numpy()
  table = tower.id_table.numpy()[2]
  np.testing.assert_allclose(out[0], table / np.linalg.norm(table), rtol=1e-5)


def test_config_json_round_trip_and_compatibility(tmp_path):
  rundir = config_lib.run_dir(str(tmp_path))
  c = config_lib.Config(str(tmp_path), model=config_lib.ModelConfig(tower_layers=(16, 8)))
  rundir.save_config(c)
  assert rundir.load_config() == c
  other = dataclasses.replace(c, model=dataclasses.replace(c.model, embedding_dim=8))
  assert [k for k, _, _ in rundir.differences(c, other)] == ["model.embedding_dim"]
  hotter = dataclasses.replace(c, train=dataclasses.replace(c.train, temperature=0.5))
  assert [k for k, _, _ in rundir.differences(c, hotter)] == ["train.temperature"]
  longer = dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=99))
  assert not rundir.differences(c, longer)
  shorter = dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=1))
  assert [k for k, _, _ in rundir.differences(c, shorter)] == ["train.epochs"]


def _parse_flags(*args):
  """The `Config` of `twotower train` with these flags (absl's global flags, restored)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from tf_embeddings.flags import twotower_flags  # pylint: disable=import-outside-toplevel
  if "dataset" not in flags.FLAGS:
    twotower_flags.define_twotower_flags()
  with flagsaver.flagsaver():
    flags.FLAGS([sys.argv[0], *args])
    return twotower_flags.config_from_flags(flags.FLAGS)


def test_flag_defaults_are_the_config_defaults():
  # Every setting has its flag, and the flags' defaults are the dataclasses' (one place).
  assert _parse_flags("--model_dir=r") == config_lib.Config("r") == config_lib.resolve("r")
  got = _parse_flags("--model_dir=r", "--tower_layers=8,4", "--model_seed=3", "--loss=bce",
                     "--user_feature_columns=a,b", "--min_rating=4")
  assert got == config_lib.Config(
      "r", config_lib.DataConfig(user_feature_columns=("a", "b"), min_rating=4.0),
      config_lib.ModelConfig(tower_layers=(8, 4), seed=3), config_lib.TrainConfig(loss="bce"))


def test_resolve_routes_settings_by_flag_name_and_refuses_what_cannot_go_together():
  c = config_lib.resolve("r", tower_layers=["16"], item_feature_columns=["genre"],
                         model_seed=5, seed=7, dataset="synthetic", epochs=3)
  assert c.model.tower_layers == (16,) and c.model.seed == 5 and c.train.seed == 7
  assert c.data.item_feature_columns == ("genre",) and c.data.dataset == "synthetic"
  assert c.train.epochs == 3 and c.train.loss == config_lib.TrainConfig.loss
  with pytest.raises(TypeError, match="no_such_setting"):
    config_lib.resolve("r", no_such_setting=1)
  for settings, message in (({"mixed_negatives": 4, "loss": "bce"}, "--mixed_negatives"),
                            ({"num_hard_negatives": 8, "loss": "bce"},
                             "--num_hard_negatives needs --loss=inbatch_softmax"),
                            ({"num_hard_negatives": 8, "mixed_negatives": 4},
                             "--num_hard_negatives does not combine with --mixed_negatives"),
                            ({"num_hard_negatives": -1}, "--num_hard_negatives must be >= 0"),
                            ({"logq_weight": -0.5}, "--logq_weight must be >= 0"),
                            ({"ensemble": 0}, "--ensemble must be >= 1"),
                            ({"optimizer": "sgd"}, "--weight_decay needs --optimizer=adam"),
                            ({"use_ids": False, "use_features": False}, "need an input"),
                            ({"dataset": "csv"}, "--data_path"),
                            ({"temperature": 0.0}, "--temperature")):
    with pytest.raises(UserError, match=message):
      config_lib.resolve("r", **settings)


def test_an_old_config_json_loads_to_the_values_it_trained_with(tmp_path):
  # config.json as runs recorded it before --weight_decay, --average_momentum and
  # --logq_weight existed (lists for tuples, no such keys): they trained without decay and
  # averaging and with the textbook logQ correction, and read back so.
  old = dataclasses.asdict(config_lib.Config("elsewhere", SYNTH,
                                             config_lib.ModelConfig(tower_layers=(16,))))
  del old["train"]["weight_decay"], old["train"]["average_momentum"]
  del old["train"]["logq_weight"]
  old["model"]["tower_layers"] = [16]
  with open(tmp_path / "config.json", "w", encoding="utf-8") as f:
    json.dump(old, f)
  want = config_lib.resolve(str(tmp_path), dataset="synthetic", tower_layers=[16],
                            weight_decay=0.0, average_momentum=0.0, logq_weight=1.0)
  assert config_lib.read_config(str(tmp_path)) == want
  # Resuming it with the same flags (the new defaults) is a change the run dir refuses.
  now = config_lib.resolve(str(tmp_path), dataset="synthetic", tower_layers=[16])
  assert sorted(k for k, _, _ in config_lib.run_dir(str(tmp_path)).differences(want, now)) == [
      "train.average_momentum", "train.logq_weight", "train.weight_decay"]


# ----------------------------------------------------------------------------- training

SYNTH = config_lib.DataConfig(dataset="synthetic")


def _config(tmp_path, name="run", **train):
  t = dict(batch_size=256, epochs=2, learning_rate=0.01, eval_every_epoch=False,
           checkpoint_every=20, log_every=10)
  t.update(train)
  # One member: the ensemble (default 3) has its own tests (test_twotower_ensemble.py)
  # and would cost 1.75x in every training here.
  return config_lib.Config(str(tmp_path / name), SYNTH,
                           config_lib.ModelConfig(embedding_dim=16, tower_layers=(32,),
                                                  ensemble=1),
                           config_lib.TrainConfig(**t))


@pytest.fixture(scope="module")
def prepared():
  return inputs.prepare(SYNTH)


def _popularity_hit10(prepared):
  data, seen = prepared.eval_split("test")
  pop = prepared.train.item_counts().astype(np.float32)[:, None]
  return metrics.evaluate(np.ones((prepared.data.num_users, 1), np.float32), pop, data.users,
                          data.items, seen)["hit@10"]


def test_inbatch_softmax_learns_planted_structure(tmp_path, prepared):
  config = _config(tmp_path, epochs=4)
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  got = evaluate_lib.evaluate(two_tower, prepared, "test")
  # The synthetic users have planted tastes: a model that learns them must beat
  # most-popular clearly (here by 30%).
  assert got["hit@10"] > 1.3 * _popularity_hit10(prepared), got
  # Summaries, checkpoint, projector files and the resolved config are written.
  # The projector files sit beside train/'s event files, where TensorBoard looks for them
  # with --logdir at the run or at its parent (asset paths must stay inside that run).
  for name in ("config.json", "checkpoints", "train", "train/vectors.tsv",
               "train/metadata.tsv", "train/projector_config.pbtxt"):
    assert os.path.exists(os.path.join(config.model_dir, name)), name
  with open(os.path.join(config.model_dir, "train", "projector_config.pbtxt")) as f:
    assert 'tensor_path: "vectors.tsv"' in f.read()
  with open(os.path.join(config.model_dir, "train", "metadata.tsv")) as f:
    lines = f.read().splitlines()
  assert lines[0] == "item_id\ttitle" and len(lines) == prepared.data.num_items + 1


@pytest.mark.parametrize("loss, extra", [
    ("bce", {"num_negatives": 3}),
    ("bce", {"num_negatives": 3, "negative_sampler": "uniform"}),
    ("sampled_softmax", {"num_negatives": 20}),
    ("info_nce", {}),
    ("inbatch_softmax", {"logq_correction": False, "remove_accidental_hits": False}),
])
def test_every_retrieval_loss_trains(tmp_path, prepared, loss, extra):
  config = _config(tmp_path, loss=loss, epochs=1, **extra)
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  got = evaluate_lib.evaluate(two_tower, prepared, "test")
  assert np.isfinite(got["cross_entropy"])
  assert got["hit@100"] > 0.3  # random ranking gives 100/300 = 0.33 only at hit@100
  assert got["hit@10"] > 0.034  # random: 10/300


@pytest.mark.parametrize("loss", ["weighted_ce", "focal", "jrc"])
def test_pointwise_losses_train_on_labels(tmp_path, loss):
  data = dataclasses.replace(SYNTH, min_rating=4.0)
  config = dataclasses.replace(_config(tmp_path, loss=loss, epochs=1), data=data)
  prepared = inputs.prepare(data, pointwise=True)
  assert set(np.unique(prepared.train.labels)) == {0.0, 1.0}
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  got = evaluate_lib.evaluate(two_tower, prepared, "test")
  assert np.isfinite(got["cross_entropy"]) and got["hit@100"] > 0.3


def test_pointwise_loss_needs_labels(tmp_path):
  with pytest.raises(UserError, match="labels are not 0/1.*--min_rating"):
    inputs.prepare(SYNTH, pointwise=True)


@pytest.mark.parametrize("average", [0.0, 0.99])
def test_killed_run_resumes_to_the_same_weights(tmp_path, prepared, monkeypatch, average):
  # With --average_momentum the averaged weights are checkpointed too and kept at the end.
  full = _config(tmp_path, "full", epochs=2, average_momentum=average)
  train_lib.train(full, prepared, resume=False)
  want = tf.train.load_variable(os.path.join(full.model_dir, "checkpoints", "ckpt-92"),
                                "item_tower/id_table/.ATTRIBUTES/VARIABLE_VALUE")
  cut = _config(tmp_path, "cut", epochs=2, average_momentum=average)
  # Interrupted after step 46 + 15 = 61; last checkpoint at step 60.
  real = interrupt_second_epoch(monkeypatch, inputs, 15)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train(cut, prepared, resume=True)
  assert tf.train.latest_checkpoint(os.path.join(cut.model_dir, "checkpoints")).endswith("ckpt-60")
  monkeypatch.setattr(inputs, "epoch_dataset", real)
  two_tower, _ = train_lib.train(cut, prepared, resume=True)
  # Same shuffles, same LR schedule position, same optimiser state: same weights.
  np.testing.assert_allclose(two_tower.item_tower.id_table.numpy(), want, atol=1e-5)
  # --resume=false starts over from step 0.
  again = dataclasses.replace(cut, train=dataclasses.replace(cut.train, epochs=1))
  train_lib.train(again, prepared, resume=False)
  assert tf.train.latest_checkpoint(os.path.join(cut.model_dir, "checkpoints")).endswith("ckpt-46")


def test_incompatible_model_dir_is_a_user_error(tmp_path, prepared):
  config = _config(tmp_path, epochs=1)
  train_lib.train(config, prepared, resume=False)
  other = dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_dim=8))
  with pytest.raises(UserError, match="incompatible run.*embedding_dim.*--resume=false"):
    train_lib.train(other, prepared, resume=True)


def test_more_negatives_than_items_is_a_user_error(tmp_path, prepared):
  config = _config(tmp_path, loss="bce", num_negatives=300)
  with pytest.raises(UserError, match="--num_negatives=300 is not below the number of items"):
    train_lib.train(config, prepared, resume=False)


def test_eval_and_export_need_a_run(tmp_path):
  with pytest.raises(UserError, match="holds no two-tower run"):
    evaluate_lib.restore(str(tmp_path))


def test_exported_query_model_gives_the_training_top_k_in_a_fresh_process(tmp_path, prepared):
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  config = _config(tmp_path, epochs=1)
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  out = str(tmp_path / "export")
  paths = export_lib.export(config.model_dir, out, k=10)
  emb = np.load(paths["item_embeddings"])
  np.testing.assert_allclose(emb, two_tower.item_tower.embed_all(), rtol=1e-5, atol=1e-6)
  users = ["u3", "u17", "u400"]
  idx = tf.constant([3, 17, 400])
  _, want = metrics.top_k(two_tower.query_tower.embed_index(idx), emb, 10)
  want_ids = prepared.data.item_ids[want.numpy()].tolist()
  group = prepared.data.user_features[0]
  region = prepared.data.user_features[1]
  feats = {"group": [group.vocab[group.values[i, 0]] for i in (3, 17, 400)],
           "region": [region.vocab[region.values[i, 0]] for i in (3, 17, 400)]}
  script = f"""
import json, sys
import tensorflow as tf
m = tf.saved_model.load({paths['query_model']!r})
a = m.signatures["serving_default"](user_id=tf.constant({users!r}))
b = m.signatures["serve_with_features"](user_id=tf.constant({users!r}),
    **{{k: tf.constant(v) for k, v in {feats!r}.items()}})
s = m.signatures["score"](user_id=tf.constant({users!r}),
                          item_id=a["item_ids"][:, 0])["scores"].numpy().tolist()
errors = []
for call in (lambda: m.signatures["serving_default"](user_id=tf.constant(["nobody"])),
             lambda: m.signatures["score"](user_id=tf.constant(["u1"]),
                                          item_id=tf.constant(["no_such_item"]))):
  try:
    call()
    errors.append("")
  except tf.errors.InvalidArgumentError as e:
    errors.append(e.message)
print(json.dumps({{"a": a["item_ids"].numpy().astype(str).tolist(), "s": s,
                  "top": a["scores"].numpy()[:, 0].tolist(),
                  "b": b["item_ids"].numpy().astype(str).tolist(), "err": errors}}))
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       cwd=ROOT, check=True)
  got = json.loads(res.stdout.strip().splitlines()[-1])
  assert got["a"] == want_ids
  assert got["b"] == want_ids
  np.testing.assert_allclose(got["s"], got["top"], rtol=1e-5)
  assert "unknown user id" in got["err"][0] and "nobody" in got["err"][0]
  assert "unknown item id" in got["err"][1] and "no_such_item" in got["err"][1]


def test_export_of_a_run_without_saved_tables_rebuilds_them_from_the_data(tmp_path,
                                                                          prepared):
  # Runs trained before tables.npz existed: the export reads the recorded data again and
  # writes the same files as from the saved tables.
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  config = _config(tmp_path, epochs=1)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                 use_history=True))
  train_lib.train(config, prepared, resume=False)
  tables = os.path.join(config.model_dir, inputs.TABLES_FILE)
  saved, history = inputs.load_tables(tables)
  np.testing.assert_array_equal(saved.item_ids, prepared.data.item_ids)
  np.testing.assert_array_equal(saved.user_ids, prepared.data.user_ids)
  assert saved.item_titles == prepared.data.item_titles
  for got, want in zip(saved.user_features + saved.item_features,
                       prepared.data.user_features + prepared.data.item_features):
    assert (got.name, got.vocab) == (want.name, want.vocab)
    np.testing.assert_array_equal(got.values, want.values)
  for got, want in zip(history, ilib.seen_items(inputs.positives_only(prepared.train))):
    np.testing.assert_array_equal(got, want)
  new = export_lib.export(config.model_dir, str(tmp_path / "new"), k=5)
  os.remove(tables)
  old = export_lib.export(config.model_dir, str(tmp_path / "old"), k=5)
  np.testing.assert_array_equal(np.load(old["item_embeddings"]),
                                np.load(new["item_embeddings"]))
  with open(old["metadata"], encoding="utf-8") as a, open(new["metadata"],
                                                          encoding="utf-8") as b:
    assert a.read() == b.read()
  users = tf.constant(["u1", "u42"])
  a, b = (tf.saved_model.load(p["query_model"]).signatures["serving_default"](user_id=users)
          for p in (old, new))
  np.testing.assert_array_equal(a["item_ids"].numpy(), b["item_ids"].numpy())


def test_export_does_not_import_the_trainer():
  # The modules of the package export.py imports, transitively, by reading their imports.
  import ast  # pylint: disable=import-outside-toplevel
  package = "tf_embeddings.twotower."
  seen, todo = set(), ["export"]
  while todo:
    name = todo.pop()
    if name in seen:
      continue
    seen.add(name)
    with open(os.path.join(ROOT, "twotower", name + ".py"), encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module == package.rstrip("."):
        todo += [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package):
        todo.append(node.module[len(package):])
  assert {"export", "model", "inputs", "config", "metrics"} <= seen
  assert "train" not in seen


def test_history_pooling_leaves_the_positive_out():
  # User 0 has items {0, 1, 2}; the query tower sees only its history (no id, no features).
  indptr, indices = np.array([0, 3]), np.array([0, 1, 2])
  tower = model_lib.Tower(1, [], 2, layers=(), use_ids=False, history=(indptr, indices, 3),
                          seed=0)
  table = tower.history_table.numpy()
  # One linear layer after pooling: compare the pre-normalisation inputs through it.
  w, b = tower.weights[0].numpy(), tower.biases[0].numpy()
  unit = lambda v: v / np.linalg.norm(v)
  full = tower.embed_index(tf.constant([0])).numpy()[0]
  np.testing.assert_allclose(full, unit(table.mean(0) @ w + b), rtol=1e-5)
  # Training row (user 0, positive item 1): history = items {0, 2}.
  loo = tower.embed_index(tf.constant([0]), tf.constant([1])).numpy()[0]
  np.testing.assert_allclose(loo, unit(table[[0, 2]].mean(0) @ w + b), rtol=1e-5)
  # -1: nothing left out.
  same = tower.embed_index(tf.constant([0]), tf.constant([-1])).numpy()[0]
  np.testing.assert_allclose(same, full, rtol=1e-5)


def test_item_bias_adds_to_the_dot_product():
  q = model_lib.Tower(2, [], 3, bias_column="one", seed=1)
  i = model_lib.Tower(4, [], 3, bias_column="learned", seed=2)
  i.bias_table.assign([[0.0], [0.5], [-1.0], [2.0]])
  qe, ie = q.embed_all(), i.embed_all()
  assert qe.shape == (2, 4) and ie.shape == (4, 4)
  cos = qe[:, :3] @ ie[:, :3].T
  np.testing.assert_allclose(qe @ ie.T, cos + np.array([0.0, 0.5, -1.0, 2.0]), rtol=1e-5)


@pytest.mark.parametrize("model", [{"use_history": True}, {"item_bias": True}])
def test_history_and_bias_variants_train_and_export(tmp_path, prepared, model, monkeypatch):
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  config = _config(tmp_path, epochs=1)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
  two_tower, _ = train_lib.train(config, prepared, resume=False)
  got = evaluate_lib.evaluate(two_tower, prepared, "test")
  assert got["hit@10"] > 0.034
  # The export builds from the run directory's saved tables (and histories), not the data.
  monkeypatch.setattr(inputs, "load", lambda config: pytest.fail("export read the data"))
  paths = export_lib.export(config.model_dir, str(tmp_path / "export"), k=5)
  loaded = tf.saved_model.load(paths["query_model"])
  out = loaded.signatures["serving_default"](user_id=tf.constant(["u1"]))
  _, want = metrics.top_k(two_tower.query_tower.embed_index(tf.constant([1])),
                          two_tower.item_tower.embed_all(), 5)
  assert out["item_ids"].numpy().astype(str).tolist()[0] == [
      f"i{k}" for k in want.numpy()[0]]


@pytest.mark.parametrize("history", [False, True])
@pytest.mark.parametrize("logq, weight", [(True, 1.0), (True, 1.7), (False, 1.25)])
def test_per_item_inbatch_softmax_equals_the_library_loss(logq, weight, history):
  from tf_embeddings import losses  # pylint: disable=import-outside-toplevel
  # 7 items, batch of 12: the per-item path is used (corpus smaller than the batch); without
  # a history the query rows are also computed once per distinct user. Loss and gradients
  # of every variable must equal the library loss on the batch's [12, 12] logits.
  rng = np.random.RandomState(0)
  users = rng.randint(5, size=12)
  items = rng.randint(7, size=12)
  csr = None
  if history:
    indptr = np.searchsorted(np.sort(users), np.arange(6))
    csr = (indptr, items[np.argsort(users, kind="stable")], 7)
  two_tower = model_lib.TwoTower(model_lib.Tower(5, [], 4, layers=(3,), seed=1, history=csr),
                                 model_lib.Tower(7, [], 4, layers=(3,), seed=2))
  counts = np.array([5, 1, 0, 3, 2, 7, 1])
  batch = {"user": tf.constant(users, tf.int64), "item": tf.constant(items, tf.int64)}
  config = config_lib.Config("x", train=config_lib.TrainConfig(
      batch_size=12, temperature=0.3, logq_correction=logq, logq_weight=weight))
  # --logq_weight w: the correction is w log Q.
  log_q = weight * np.log(np.maximum(counts, 1) / counts.sum()).astype(np.float32)
  variables = two_tower.trainable_variables
  with tf.GradientTape(persistent=True) as tape:
    got = objective_lib.Objective(config.train, two_tower, counts)(batch, 0)
    want = losses.in_batch_softmax_loss(
        two_tower.query_tower.embed_index(batch["user"], batch["item"] if history else None),
        two_tower.item_tower.embed_index(batch["item"]), 0.3,
        tf.gather(log_q, batch["item"]) if logq else None, batch["item"])
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for v, g, w in zip(variables, tape.gradient(got, variables), tape.gradient(want, variables)):
    g = tf.convert_to_tensor(g).numpy() if g is not None else 0.0
    w = tf.convert_to_tensor(w).numpy() if w is not None else 0.0
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=v.name)


@pytest.mark.parametrize("batch_size", [12, 4])
def test_inbatch_softmax_under_xla_equals_the_library_loss(batch_size):
  # --jit_compile: every user's row (5 users <= batch 12), or the plain loss (batch 4).
  from tf_embeddings import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(1)
  users = rng.randint(5, size=batch_size)
  items = rng.randint(7, size=batch_size)
  two_tower = model_lib.TwoTower(model_lib.Tower(5, [], 4, layers=(3,), seed=1),
                                 model_lib.Tower(7, [], 4, layers=(3,), seed=2))
  counts = np.array([5, 1, 0, 3, 2, 7, 1])
  batch = {"user": tf.constant(users, tf.int64), "item": tf.constant(items, tf.int64)}
  config = config_lib.Config("x", train=config_lib.TrainConfig(
      batch_size=batch_size, temperature=0.3, jit_compile=True))
  loss_fn = objective_lib.Objective(config.train, two_tower, counts)
  variables = two_tower.trainable_variables

  @tf.function(jit_compile=True)
  def compiled():
    with tf.GradientTape() as tape:
      loss = loss_fn(batch, 0)
    return loss, tape.gradient(loss, variables)

  got, got_grads = compiled()
  log_q = config.train.logq_weight * np.log(np.maximum(counts, 1) / counts.sum()).astype(
      np.float32)
  with tf.GradientTape() as tape:
    want = losses.in_batch_softmax_loss(
        two_tower.query_tower.embed_index(batch["user"]),
        two_tower.item_tower.embed_index(batch["item"]), 0.3,
        tf.gather(log_q, batch["item"]), batch["item"])
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  for v, g, w in zip(variables, got_grads, tape.gradient(want, variables)):
    np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(),
                               rtol=1e-4, atol=1e-5, err_msg=v.name)


@pytest.mark.parametrize("logq", [True, False])
def test_mixed_negatives_loss_is_the_library_loss_on_the_steps_sample(logq):
  from tf_embeddings import losses  # pylint: disable=import-outside-toplevel
  # Batch of 6 over 7 items plus 5 uniform items: logQ of every column is the log of its
  # expected count under the mixture, B Q(v) + M / N.
  rng = np.random.RandomState(2)
  users, items = rng.randint(5, size=6), rng.randint(7, size=6)
  two_tower = model_lib.TwoTower(model_lib.Tower(5, [], 4, layers=(3,), seed=1),
                                 model_lib.Tower(7, [], 4, layers=(3,), seed=2))
  counts = np.array([5, 1, 0, 3, 2, 7, 1])
  batch = {"user": tf.constant(users, tf.int64), "item": tf.constant(items, tf.int64)}
  config = config_lib.Config("x", train=config_lib.TrainConfig(
      batch_size=6, temperature=0.3, logq_correction=logq, mixed_negatives=5, seed=3))
  got = objective_lib.Objective(config.train, two_tower, counts)(batch, 4)
  sampled = objective_lib.mixed_negative_sample(5, 7, 4, 3)
  q = np.maximum(counts, 1) / counts.sum()
  log_e = config.train.logq_weight * np.log(6 * q + 5 / 7).astype(np.float32)
  want = losses.mixed_negatives_softmax_loss(
      two_tower.query_tower.embed_index(batch["user"]),
      two_tower.item_tower.embed_index(batch["item"]),
      two_tower.item_tower.embed_index(sampled), 0.3,
      log_e[items] if logq else None, tf.gather(log_e, sampled) if logq else None,
      batch["item"], sampled)
  assert float(got) == pytest.approx(float(want), rel=1e-5)
  # The sample depends on the step, and stays in range.
  other = objective_lib.mixed_negative_sample(5, 7, 5, 3).numpy()
  assert not np.array_equal(sampled.numpy(), other) and other.min() >= 0 and other.max() < 7


def test_unnormalised_tower_returns_the_raw_mlp_output():
  cosine = model_lib.Tower(5, [], 4, layers=(3,), seed=1)
  dot = model_lib.Tower(5, [], 4, layers=(3,), seed=1, normalize=False)
  ids = tf.range(5)
  raw = dot.embed_index(ids).numpy()
  norms = np.linalg.norm(raw, axis=1)
  assert not np.allclose(norms, 1.0)
  np.testing.assert_allclose(cosine.embed_index(ids).numpy(), raw / norms[:, None], rtol=1e-5)


def test_weight_decay_shrinks_variables_by_lr_times_decay():
  # A zero gradient leaves Adam's update at 0: only the decoupled decay moves the variable,
  # v <- v - lr * wd * v = 2 * (1 - 0.1 * 0.5) = 1.9.
  t = config_lib.TrainConfig(learning_rate=0.1, final_learning_rate_fraction=1.0,
                             weight_decay=0.5)
  optimizer, _ = train_lib.make_optimizer(t, 10)
  v = tf.Variable([2.0])
  optimizer.apply_gradients([(tf.zeros([1]), v)])
  np.testing.assert_allclose(v.numpy(), [1.9], rtol=1e-6)
  plain, _ = train_lib.make_optimizer(dataclasses.replace(t, weight_decay=0.0), 10)
  w = tf.Variable([2.0])
  plain.apply_gradients([(tf.zeros([1]), w)])
  np.testing.assert_allclose(w.numpy(), [2.0])


def test_weight_average_is_the_debiased_exponential_moving_average():
  v = tf.Variable([0.0, 4.0])  # the initial value never counts
  average = train_lib.WeightAverage([v], 0.5)
  v.assign([2.0, 0.0])
  average.update()  # shadow 0.5 * [2, 0] = [1, 0]; / (1 - 0.5) = [2, 0]
  with average.swapped():
    np.testing.assert_allclose(v.numpy(), [2.0, 0.0])
  v.assign([4.0, 6.0])
  average.update()  # shadow 0.5 * [1, 0] + 0.5 * [4, 6] = [2.5, 3]; / 0.75 = [10/3, 4]
  with average.swapped():
    np.testing.assert_allclose(v.numpy(), [10 / 3, 4.0], rtol=1e-6)
  np.testing.assert_allclose(v.numpy(), [4.0, 6.0])  # the raw weights are back
  average.commit()
  np.testing.assert_allclose(v.numpy(), [10 / 3, 4.0], rtol=1e-6)


def test_training_keeps_the_averaged_weights(tmp_path, prepared):
  config = _config(tmp_path, epochs=1, average_momentum=0.9)
  two_tower, last = train_lib.train(config, prepared, resume=False)
  ckpt = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
  shadow = [n for n, _ in tf.train.list_variables(ckpt) if n.startswith("weight_average/")]
  assert shadow  # the averages are checkpointed (resume continues them)
  # The towers hold the averages at the end (what eval and export restore), and the last
  # eval scored them.
  final = evaluate_lib.evaluate_both(two_tower, prepared, "test", config.train.temperature)
  assert final["seen_excluded"]["hit@10"] == pytest.approx(last["seen_excluded"]["hit@10"])
  _, _, restored = evaluate_lib.restore(config.model_dir)
  np.testing.assert_allclose(restored.item_tower.id_table.numpy(),
                             two_tower.item_tower.id_table.numpy())


def test_runs_recorded_before_averaging_and_decay_resume_without_them():
  from tf_embeddings.training import rundir as rundir_lib  # pylint: disable=import-outside-toplevel
  new = dataclasses.asdict(config_lib.Config("x"))
  assert new["train"]["average_momentum"] > 0 and new["train"]["weight_decay"] > 0
  for key in ("average_momentum", "weight_decay"):
    del new["train"][key]
  old = rundir_lib.config_from_dict(config_lib.Config, new)
  assert old.train.average_momentum == 0.0 and old.train.weight_decay == 0.0


class _Split:
  """The fields of a training split that inputs.worker_dataset reads."""

  def __init__(self, n):
    self.users = np.arange(n, dtype=np.int64)
    self.items = np.arange(n, dtype=np.int64) % 7
    self.labels = None
    self.sessions = None

  def __len__(self):
    return len(self.users)


def test_parameter_server_workers_each_read_their_own_shard():
  from tf_embeddings.twotower import inputs  # pylint: disable=import-outside-toplevel
  split = _Split(23)
  seen = []
  for index in range(3):
    ds = inputs.worker_dataset(split, 4, drop_remainder=False, num_workers=3,
                               worker_index=tf.constant(index))
    shard = list(range(index, 23, 3))
    stream = np.concatenate([b["user"].numpy() for b in ds.take(8)])
    for rest in range(3):  # the stream is whole passes over the worker's shard, reshuffled
      one_pass = stream[rest * len(shard):(rest + 1) * len(shard)]
      assert sorted(one_pass.tolist()) == shard, (index, one_pass)
    seen += shard
  assert sorted(seen) == list(range(23))  # the shards partition the split
  one = inputs.worker_dataset(split, 23, drop_remainder=True)
  assert sorted(next(iter(one))["user"].numpy().tolist()) == list(range(23))


def test_parameter_server_workers_read_their_share_of_the_split_file(tmp_path):
  """--cluster_input=workers: the split written as fixed-size records; worker i reads only
  its contiguous share, whole passes reshuffled, every field and dtype as worker_dataset."""
  from tf_embeddings.twotower import inputs  # pylint: disable=import-outside-toplevel
  split = _Split(23)
  split.labels = (np.arange(23) % 5).astype(np.float32) + 0.5
  split.sessions = np.arange(23, dtype=np.int64) * 10
  path = str(tmp_path / inputs.WORKER_SPLIT_FILE)
  inputs.save_worker_split(path, split)
  assert os.path.getsize(path) == 23 * 32
  reference = next(iter(inputs.worker_dataset(split, 4)))
  seen = []
  for index in range(3):
    ds = inputs.worker_dataset_from_file(path, 23, 4, drop_remainder=False, num_workers=3,
                                         worker_index=tf.constant(index))
    share = list(range(index * 23 // 3, (index + 1) * 23 // 3))
    batches = list(ds.take(12))
    for key in ("user", "item", "label", "session"):
      assert batches[0][key].dtype == reference[key].dtype, key
    users = np.concatenate([b["user"].numpy() for b in batches])
    for rest in range(3):
      assert sorted(users[rest * len(share):(rest + 1) * len(share)].tolist()) == share
    for b in batches:
      u = b["user"].numpy()
      np.testing.assert_array_equal(b["item"].numpy(), split.items[u])
      np.testing.assert_array_equal(b["label"].numpy(), split.labels[u])
      np.testing.assert_array_equal(b["session"].numpy(), split.sessions[u])
    seen += share
  assert sorted(seen) == list(range(23))  # the shares partition the split
  one = inputs.worker_dataset_from_file(path, 23, 23)
  assert sorted(next(iter(one))["user"].numpy().tolist()) == list(range(23))


def test_optimizer_slots_are_resplit_for_another_table_layout():
  """train.resplit_slots: slots saved for 2 shards of a 5-row table, a dense [3, 2] matrix,
  a 3-shard 7-row table and a scalar, joined and split for 1, 1, 2 and 1 new variables."""
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  whole = [rng.normal(size=(5, 4)), rng.normal(size=(3, 2)), rng.normal(size=(7, 4)),
           np.array(1.5)]
  second = [x * 10 for x in whole]
  saved_rows = [[3, 2], [3], [3, 2, 2], []]
  slots = []
  for m, v, rows in zip(whole, second, saved_rows):
    if not rows:
      slots.append((m, v))
      continue
    cuts = np.cumsum(rows)[:-1]
    slots += list(zip(np.split(m, cuts), np.split(v, cuts)))
  groups = [[(5, 4)], [(3, 2)], [(4, 4), (3, 4)], [()]]
  parts = train_lib.resplit_slots(slots, groups)
  np.testing.assert_array_equal(parts[0][0][0], whole[0])
  np.testing.assert_array_equal(parts[0][0][1], second[0])
  np.testing.assert_array_equal(parts[1][0][0], whole[1])
  np.testing.assert_array_equal(parts[2][0][0], whole[2][:4])
  np.testing.assert_array_equal(parts[2][1][1], second[2][4:])
  assert parts[3][0][0] == 1.5
  with pytest.raises(UserError, match="optimizer state does not match"):
    train_lib.resplit_slots(slots, [[(6, 4)], [(3, 2)], [(7, 4)], [()]])  # rows differ
  with pytest.raises(UserError, match="optimizer state does not match"):
    train_lib.resplit_slots(slots, groups[:3])  # a saved variable left over


def test_history_pooling_equals_numpy():
  # Histories (CSR over 4 users of 6 items): 0 -> [1, 4], 1 -> [], 2 -> [0, 2, 5],
  # 3 -> [3]; and the OOV row (index 4): empty.
  indptr = np.array([0, 2, 2, 5, 6])
  indices = np.array([1, 4, 0, 2, 5, 3])
  tower = model_lib.Tower(4, [], 3, (), use_ids=True, history=(indptr, indices, 6),
                          normalize=False, oov=True, seed=3)
  ids = tf.constant([2, 0, 1, 3, 4, 2], tf.int64)
  exclude = tf.constant([5, -1, -1, 3, -1, -1], tf.int64)
  got = tower(ids, [], exclude).numpy()
  table = tower.history_table.numpy()
  want_pool = []
  for u, ex in zip(ids.numpy(), exclude.numpy()):
    items = list(indices[indptr[u]:indptr[u + 1]]) if u < 4 else []
    if ex >= 0:
      items.remove(ex)
    want_pool.append(table[items].mean(0) if items else np.zeros(table.shape[1]))
  x = np.concatenate([tower.id_table.numpy()[ids.numpy()], np.array(want_pool)], 1)
  want = x @ tower.weights[0].numpy() + tower.biases[0].numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # The per-entity data are variables made with the tables (sharded with them on a
  # cluster), not trainable.
  assert {v.name.split("/")[-1].split(":")[0] for v in tower.variables if not v.trainable} \
      == {"history_start", "history_len", "history_items"}
