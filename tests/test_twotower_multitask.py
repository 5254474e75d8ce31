"""Multi-task two-tower (--tasks): AUC, config and flags, the Pareto weights end to end,
resume, and the one-line errors."""
import dataclasses
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings import losses
from tf_embeddings.data.errors import UserError
from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib
from tf_embeddings.twotower import objective as objective_lib
from tf_embeddings.twotower import train as train_lib
from twotower_interrupt import interrupt_second_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELLED = config_lib.DataConfig(dataset="synthetic", min_rating=4.0)
TASKS = ("inbatch_softmax", "weighted_ce")

# ----------------------------------------------------------------------------- AUC


def _brute_force_auc(scores, labels):
  """Every (positive, negative) pair: 1 if the positive scores higher, 1/2 on a tie."""
  pos, neg = scores[labels > 0], scores[labels == 0]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


def test_auc_golden():
  # Positives 0.9, 0.4; negatives 0.5, 0.1: pairs won (0.9 > 0.5), (0.9 > 0.1), (0.4 > 0.1),
  # lost (0.4 < 0.5): 3/4.
  assert metrics.auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == 0.75
  # All tied: every pair counts 1/2.
  assert metrics.auc([2.0, 2.0, 2.0], [1, 0, 1]) == 0.5
  assert np.isnan(metrics.auc([1.0, 2.0], [1, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_the_pairwise_count_with_ties_and_extreme_scores(seed):
  rng = np.random.RandomState(seed)
  n = 200
  # Few distinct values (many ties), some huge, some tiny, +-inf.
  scores = rng.choice([-np.inf, -1e30, -3.0, -1e-30, 0.0, 1e-30, 0.5, 1e30, np.inf], n)
  scores = np.where(rng.rand(n) < 0.3, rng.randn(n), scores)
  labels = (rng.rand(n) < 0.4).astype(np.float32)
  assert metrics.auc(scores, labels) == pytest.approx(_brute_force_auc(scores, labels),
                                                      abs=1e-12)


# ----------------------------------------------------------------------------- config


def test_resolve_tasks_defaults_and_mistakes():
  c = config_lib.resolve("r", tasks=["bce", "focal"])
  # --loss is the first task; fixed weights equal, summing to 1; the Pareto weights off.
  assert c.train.tasks == ("bce", "focal") and c.train.loss == "bce"
  assert c.train.task_weights == (0.5, 0.5) and c.train.pareto_min_weights == ()
  assert config_lib.labelled(c.train) and not config_lib.labelled(config_lib.TrainConfig())
  p = config_lib.resolve("r", tasks=list(TASKS), pareto_min_weights=["0.2", "0.3"])
  assert p.train.pareto_min_weights == (0.2, 0.3) and p.train.task_weights == ()
  # Without --tasks nothing changes: the single-task config is the default one.
  assert config_lib.resolve("r", tasks=[], task_weights=[]) == config_lib.Config("r")
  for settings, message in (
      ({"tasks": ["inbatch_softmax", "ctr"]}, "unknown task 'ctr' in --tasks"),
      ({"tasks": ["focal"]}, "two or more heads"),
      ({"tasks": ["focal", "focal"]}, "names a head twice"),
      ({"tasks": list(TASKS), "pareto_min_weights": [0.6, 0.5]},
       r"--pareto_min_weights sum to 1.1 > 1"),
      ({"tasks": list(TASKS), "pareto_min_weights": [0.5]}, "1 values for the 2 tasks"),
      ({"tasks": list(TASKS), "task_weights": [1, -1]}, "must be >= 0"),
      ({"tasks": list(TASKS), "task_weights": [0, 0]}, "all 0"),
      ({"tasks": list(TASKS), "task_weights": [1, 1], "pareto_min_weights": [0, 0]},
       "exclude each other"),
      ({"task_weights": [1, 1]}, "need --tasks"),
      ({"tasks": list(TASKS), "pareto_min_weights": [0, 0], "jit_compile": True},
       "--jit_compile")):
    with pytest.raises(UserError, match=message):
      config_lib.resolve("r", **settings)


def test_flags_give_the_resolved_multi_task_config():
  from absl import flags  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  from tf_embeddings.flags import twotower_flags  # pylint: disable=import-outside-toplevel
  if "dataset" not in flags.FLAGS:
    twotower_flags.define_twotower_flags()
  with flagsaver.flagsaver():
    flags.FLAGS([sys.argv[0], "--model_dir=r", "--tasks=inbatch_softmax,focal",
                 "--pareto_min_weights=0.1,0.2", "--pareto_every=5"])
    got = twotower_flags.config_from_flags(flags.FLAGS)
  assert got == config_lib.resolve("r", tasks=["inbatch_softmax", "focal"],
                                   pareto_min_weights=[0.1, 0.2], pareto_every=5)
  with flagsaver.flagsaver():
    with pytest.raises(flags.IllegalFlagValueError, match="sum to 1.2 > 1"):
      flags.FLAGS([sys.argv[0], "--model_dir=r", "--tasks=inbatch_softmax,focal",
                   "--pareto_min_weights=0.6,0.6"])


def test_a_run_recorded_before_tasks_loads_as_a_single_task_run(tmp_path):
  old = dataclasses.asdict(config_lib.Config(str(tmp_path)))
  for key in ("tasks", "task_weights", "pareto_min_weights", "pareto_every"):
    del old["train"][key]
  with open(tmp_path / rundir_lib.CONFIG_FILE, "w", encoding="utf-8") as f:
    json.dump(old, f)
  loaded = config_lib.read_config(str(tmp_path))
  assert loaded == config_lib.resolve(str(tmp_path)) and loaded.train.tasks == ()
  assert not config_lib.run_dir(str(tmp_path)).differences(loaded,
                                                           config_lib.resolve(str(tmp_path)))


# ----------------------------------------------------------------------------- training


def _config(tmp_path, name, **train):
  # The retrieval defaults of 2026-12-02 (second session), one pair of towers, under which
  # these one-epoch checks were set (the pointwise head's AUC threshold among them).
  t = dict(batch_size=256, epochs=1, learning_rate=0.01, eval_every_epoch=False,
           checkpoint_every=20, log_every=1, tasks=TASKS, temperature=0.1, logq_weight=1.1)
  t.update(train)
  if "pareto_min_weights" not in t and "task_weights" not in t:
    t["task_weights"] = (0.5, 0.5)
  return config_lib.Config(str(tmp_path / name), LABELLED,
                           config_lib.ModelConfig(embedding_dim=16, tower_layers=(32,),
                                                  ensemble=1),
                           config_lib.TrainConfig(**t))


@pytest.fixture(scope="module")
def prepared():
  return inputs.prepare(LABELLED, pointwise=True)


def test_multi_task_rankings_exclude_every_training_row(prepared):
  # The retrieval heads train on every row (label 0 too), so eval excludes them all; a
  # single pointwise loss keeps excluding only the positives.
  every = inputs.prepare(LABELLED, pointwise=True, seen_every_row=True)
  for p, want in ((every, prepared.train), (prepared, inputs.positives_only(prepared.train))):
    indptr, indices = p.seen_train
    pairs = {(u, i) for u in range(len(indptr) - 1) for i in indices[indptr[u]:indptr[u + 1]]}
    assert pairs == set(zip(want.users.tolist(), want.items.tolist()))
  assert len(prepared.train) > len(inputs.positives_only(prepared.train))


def _logged(model_dir, tag):
  """{step: value} of a scalar summary of train/."""
  out = {}
  for path in glob.glob(os.path.join(model_dir, "train", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        if v.tag == tag:
          out[event.step] = float(tf.make_ndarray(v.tensor))
  return out


def _first_step_gradients(config, prepared):
  """The heads' gradients at the first step: the initial towers on the first batch."""
  two_tower = model_lib.build_model(config, prepared.data, None)
  objective = objective_lib.Objective(config.train, two_tower, prepared.train.item_counts())
  batch = next(iter(inputs.epoch_dataset(prepared.train, config.train.batch_size, 0,
                                         config.train.seed)))
  variables = list(two_tower.trainable_variables)
  with tf.GradientTape(persistent=True) as tape:
    task_list = objective.task_losses(batch, tf.constant(0, tf.int64))
  return [tape.gradient(l, variables) for l in task_list], variables


def _flat(grads):
  return np.concatenate([np.asarray(tf.convert_to_tensor(g), np.float64).ravel()
                         for g in grads])


def test_logged_pareto_weights_are_the_analytic_two_task_weights(tmp_path, prepared):
  min_weights = (0.2, 0.1)
  config = _config(tmp_path, "pareto", pareto_min_weights=min_weights, pareto_every=1)
  _, last = train_lib.train(config, prepared, resume=False)
  logged = [_logged(config.model_dir, f"train/task_weight/{name}") for name in TASKS]
  steps = len(prepared.train) // config.train.batch_size
  assert sorted(logged[0]) == list(range(1, steps + 1))
  for step in logged[0]:  # the weights sum to 1 and respect the minimums at every step
    assert logged[0][step] + logged[1][step] == pytest.approx(1.0, abs=1e-6)
    assert logged[0][step] >= 0.2 - 1e-6 and logged[1][step] >= 0.1 - 1e-6
  # Step 1's weights from the same gradients: with two tasks the minimiser of
  # ||w g1 + (1 - w) g2||^2 is w* = (g2.g2 - g1.g2) / ||g1 - g2||^2, clipped to
  # [c1, 1 - c2].
  grads, variables = _first_step_gradients(config, prepared)
  g1, g2 = _flat(grads[0]), _flat(grads[1])
  w1 = np.clip((g2 @ g2 - g1 @ g2) / ((g1 - g2) @ (g1 - g2)), 0.2, 0.9)
  library = losses.pareto_loss_weights(grads, variables, min_weights).numpy()
  np.testing.assert_allclose([logged[0][1], logged[1][1]], [w1, 1 - w1], atol=1e-5)
  np.testing.assert_allclose([logged[0][1], logged[1][1]], library, atol=1e-6)
  # The weights move during training (they are recomputed every step) ...
  assert np.ptp(list(logged[0].values())) > 1e-3
  # ... and each head's loss is logged; the pointwise head has its figures in eval.
  assert len(_logged(config.model_dir, "train/task_loss/weighted_ce")) == steps
  rows = prepared.test
  restored = model_lib.restore(config, prepared.data)
  q, c = restored.query_tower.embed_all(), restored.item_tower.embed_all()
  scores = np.einsum("nd,nd->n", q[rows.users], c[rows.items])
  assert last["tasks"]["weighted_ce"]["auc"] == pytest.approx(
      metrics.auc(scores, rows.labels), abs=1e-9)
  assert last["tasks"]["weighted_ce"]["auc"] > 0.6  # random: 0.5


def test_fixed_weights_and_minimums_summing_to_one_hold_the_weights(tmp_path, prepared):
  # Minimums summing to 1 leave exactly one feasible point: the minimums themselves.
  config = _config(tmp_path, "tight", pareto_min_weights=(0.7, 0.3), pareto_every=2,
                   epochs=1, batch_size=512)
  train_lib.train(config, prepared, resume=False)
  for name, want in zip(TASKS, (0.7, 0.3)):
    assert set(np.round(list(_logged(config.model_dir, f"train/task_weight/{name}")
                             .values()), 6)) == {want}


def test_a_step_follows_the_weighted_sum_of_the_heads_gradients(prepared, tmp_path):
  # One SGD step with fixed weights moves the variables by -lr * (w1 g1 + w2 g2).
  config = _config(tmp_path, "sgd", task_weights=(0.3, 1.7), optimizer="sgd",
                   weight_decay=0.0, learning_rate=0.5)
  grads, _ = _first_step_gradients(config, prepared)
  two_tower = model_lib.build_model(config, prepared.data, None)
  variables = list(two_tower.trainable_variables)
  before = [v.numpy() for v in variables]
  optimizer, _ = train_lib.make_optimizer(config.train, 10)
  objective = objective_lib.Objective(config.train, two_tower, prepared.train.item_counts())
  weights = objective_lib.TaskWeights(config.train)
  batch = next(iter(inputs.epoch_dataset(prepared.train, config.train.batch_size, 0,
                                         config.train.seed)))
  step = tf.Variable(0, dtype=tf.int64)
  loss, task_losses = train_lib._multi_task_step(  # pylint: disable=protected-access
      batch, objective, weights, variables, optimizer, None, step, False)
  assert float(loss) == pytest.approx(float(0.3 * task_losses[0] + 1.7 * task_losses[1]),
                                      rel=1e-6)
  for v, b, g1, g2 in zip(variables, before, grads[0], grads[1]):
    want = b - 0.5 * (0.3 * tf.convert_to_tensor(g1).numpy()
                      + 1.7 * tf.convert_to_tensor(g2).numpy())
    np.testing.assert_allclose(v.numpy(), want, atol=1e-6)


def test_killed_multi_task_run_resumes_to_the_same_weights(tmp_path, prepared, monkeypatch):
  # Pareto weights recomputed every 7 steps: after the checkpoint at step 60, steps 61-63
  # use the weights of step 57, which only the checkpoint holds.
  settings = dict(pareto_min_weights=(0.1, 0.1), pareto_every=7, epochs=2, log_every=10)
  full = _config(tmp_path, "full", **settings)
  train_lib.train(full, prepared, resume=False)
  steps = 2 * (len(prepared.train) // 256)
  last = os.path.join(full.model_dir, "checkpoints", f"ckpt-{steps}")
  want = tf.train.load_variable(last, "item_tower/id_table/.ATTRIBUTES/VARIABLE_VALUE")
  want_w = tf.train.load_variable(last, "task_weights/weights/.ATTRIBUTES/VARIABLE_VALUE")
  cut = _config(tmp_path, "cut", **settings)
  # Steps 61, 62, 63 done (the second epoch starts at step steps / 2); last checkpoint at
  # step 60.
  real = interrupt_second_epoch(monkeypatch, inputs, 63 - steps // 2)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train(cut, prepared, resume=True)
  assert tf.train.latest_checkpoint(os.path.join(cut.model_dir, "checkpoints")).endswith("ckpt-60")
  monkeypatch.setattr(inputs, "epoch_dataset", real)
  two_tower, _ = train_lib.train(cut, prepared, resume=True)
  np.testing.assert_allclose(two_tower.item_tower.id_table.numpy(), want, atol=1e-5)
  got_w = tf.train.load_variable(
      os.path.join(cut.model_dir, "checkpoints", f"ckpt-{steps}"),
      "task_weights/weights/.ATTRIBUTES/VARIABLE_VALUE")
  np.testing.assert_allclose(got_w, want_w, atol=1e-6)
  # The logged weights of the resumed steps are the uninterrupted run's.
  for name in TASKS:
    a = _logged(full.model_dir, f"train/task_weight/{name}")
    b = _logged(cut.model_dir, f"train/task_weight/{name}")
    assert set(b) >= set(a)
    np.testing.assert_allclose([b[s] for s in sorted(a)], [a[s] for s in sorted(a)],
                               atol=1e-5)


# ----------------------------------------------------------------------------- CLI errors


def _twotower(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "tf_embeddings.twotower", *args],
                        capture_output=True, text=True, env=env, cwd=ROOT, check=False)


@pytest.mark.parametrize("args, message", [
    (["--tasks=inbatch_softmax,ctr"], "unknown task 'ctr' in --tasks"),
    (["--tasks=inbatch_softmax,focal", "--pareto_min_weights=0.5,0.6"],
     "--pareto_min_weights sum to 1.1 > 1"),
    (["--dataset=csv", "--data_path={csv}", "--tasks=inbatch_softmax,focal"],
     "pointwise losses (weighted_ce, focal, jrc) need a label/rating column and"),
])
def test_multi_task_mistakes_end_in_one_error_line(tmp_path, args, message):
  csv = tmp_path / "x.csv"
  csv.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in range(5)
                                               for i in range(4)))
  res = _twotower("train", f"--model_dir={tmp_path / 'run'}",
                  *[a.format(csv=csv) for a in args])
  assert res.returncode == 2, res.stderr
  errors = [line for line in res.stderr.splitlines() if "error:" in line]
  assert len(errors) == 1 and message in errors[0], res.stderr
  assert "Traceback" not in res.stderr
