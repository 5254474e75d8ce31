"""NCE / sampled softmax (thin over tf.nn) and their exact full twins."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings import losses


def np_softplus(x):
  return np.logaddexp(0.0, x)


def np_lse(x, axis=-1):
  m = x.max(axis=axis, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(
      axis)


def np_sampled_logits(w, b, labels, x, sampled, true_ec, sampled_ec,
                      remove_hits):
  """Per-row lists of (logit, target) for the true and kept sampled classes.

  true logit = w_t . x + b_t - log(true_expected_count), sampled likewise
  with sampled_expected_count; a sampled class equal to one of the row's
  labels is dropped when remove_hits.
  """
  num_true = labels.shape[1]
  rows = []
  for r in range(len(x)):
    logits, targets = [], []
    for t in range(num_true):
      c = labels[r, t]
      logits.append(w[c] @ x[r] + b[c] - math.log(true_ec[r, t]))
      targets.append(1.0 / num_true)
    for s, c in enumerate(sampled):
      if remove_hits and c in labels[r]:
        continue
      logits.append(w[c] @ x[r] + b[c] - math.log(sampled_ec[s]))
      targets.append(0.0)
    rows.append((np.array(logits), np.array(targets)))
  return rows


def np_nce(*args):
  rows = np_sampled_logits(*args)
  return np.mean([np.sum(np_softplus(l) - z * l) for l, z in rows])


def np_sampled_softmax(*args):
  rows = np_sampled_logits(*args)
  return np.mean([np_lse(l) - np.sum(z * l) for l, z in rows])


def make_problem(seed, batch, dim, num_classes, num_true, num_sampled):
  r = np.random.default_rng(seed)
  w = r.normal(size=[num_classes, dim])
  b = r.normal(size=[num_classes])
  x = r.normal(size=[batch, dim])
  labels = np.stack([r.choice(num_classes, num_true, replace=False)
                     for _ in range(batch)]).astype(np.int64)
  # Distinct sampled classes (as unique=True samplers give), one of which is
  # forced to be an accidental hit: the first label of row 0.
  others = np.setdiff1d(np.arange(num_classes), labels[0, :1])
  sampled = np.concatenate([
      labels[0, :1], r.choice(others, num_sampled - 1, replace=False)
  ]).astype(np.int64)
  true_ec = r.uniform(0.05, 2.0, size=[batch, num_true])
  sampled_ec = r.uniform(0.05, 2.0, size=[num_sampled])
  return w, b, labels, x, sampled, true_ec, sampled_ec


# -------------------------------------------------------------- golden values


def golden_problem():
  # Classes 0, 1, 2 with w = [1,0], [0,1], [1,1], biases 0; x = [1, 2]:
  # logits [1, 2, 3]. Label 2; sampled = [0, 1], expected counts 1 (log 0).
  w = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  b = tf.zeros([3])
  x = tf.constant([[1.0, 2.0]])
  sv = (tf.constant([0, 1], tf.int64), tf.constant([[1.0]]),
        tf.constant([1.0, 1.0]))
  return w, b, tf.constant([[2]], tf.int64), x, sv


def test_golden_nce_equals_full_sigmoid_when_all_classes_sampled():
  # NCE: softplus(-3) + softplus(1) + softplus(2)
  #    = 0.048587 + 1.313262 + 2.126928 = 3.488777
  # full sigmoid over [1, 2, 3] with label 2:
  #    softplus(1) + softplus(2) + softplus(3) - 3 = 3.488777 too.
  w, b, labels, x, sv = golden_problem()
  nce = losses.nce_loss(w, b, labels, x, num_sampled=2, num_classes=3,
                        sampled_values=sv)
  np.testing.assert_allclose(nce.numpy(), 3.488777, rtol=1e-5)
  full = losses.full_sigmoid_loss(w, b, labels, x, chunk_size=2)
  np.testing.assert_allclose(full.numpy(), 3.488777, rtol=1e-5)


def test_golden_sampled_softmax_equals_full_softmax_when_all_sampled():
  # log(e^1 + e^2 + e^3) - 3 = log(30.192875) - 3 = 0.407606.
  w, b, labels, x, sv = golden_problem()
  ssm = losses.sampled_softmax_loss(w, b, labels, x, num_sampled=2,
                                    num_classes=3, sampled_values=sv)
  np.testing.assert_allclose(ssm.numpy(), 0.407606, rtol=1e-5)
  full = losses.full_softmax_loss(w, b, labels, x, chunk_size=2)
  np.testing.assert_allclose(full.numpy(), 0.407606, rtol=1e-5)
  # Expected count 1/2 for sampled class 1 adds log 2 to its logit:
  # log(e + 2 e^2 + e^3) - 3 = 0.585556.
  sv2 = (sv[0], sv[1], tf.constant([1.0, 0.5]))
  np.testing.assert_allclose(
      losses.sampled_softmax_loss(w, b, labels, x, 2, 3,
                                  sampled_values=sv2).numpy(),
      math.log(math.e + 2 * math.e ** 2 + math.e ** 3) - 3, rtol=1e-5)


# ------------------------------------------------ numpy, fixed sampled_values


@pytest.mark.parametrize("seed,batch,num_true,num_sampled", [
    (0, 1, 1, 3), (1, 6, 1, 8), (2, 5, 3, 6), (3, 9, 2, 12)])
@pytest.mark.parametrize("remove_hits", [False, True])
def test_nce_and_sampled_softmax_match_numpy(seed, batch, num_true,
                                             num_sampled, remove_hits):
  dim, num_classes = 4, 20
  w, b, labels, x, sampled, true_ec, sampled_ec = make_problem(
      seed, batch, dim, num_classes, num_true, num_sampled)
  sv = (tf.constant(sampled), tf.constant(true_ec, tf.float32),
        tf.constant(sampled_ec, tf.float32))
  args = (w, b, labels, x, sampled, true_ec, sampled_ec, remove_hits)
  w32, b32, x32 = (tf.constant(a, tf.float32) for a in (w, b, x))
  got_nce = losses.nce_loss(w32, b32, labels, x32, num_sampled, num_classes,
                            num_true=num_true,
                            remove_accidental_hits=remove_hits,
                            sampled_values=sv)
  np.testing.assert_allclose(got_nce.numpy(), np_nce(*args), rtol=2e-5)
  got_ssm = losses.sampled_softmax_loss(
      w32, b32, labels, x32, num_sampled, num_classes, num_true=num_true,
      remove_accidental_hits=remove_hits, sampled_values=sv)
  np.testing.assert_allclose(got_ssm.numpy(), np_sampled_softmax(*args),
                             rtol=2e-5)


def test_accidental_hit_changes_the_loss():
  w, b, labels, x, sampled, true_ec, sampled_ec = make_problem(4, 3, 4, 20, 1,
                                                               5)
  sv = (tf.constant(sampled), tf.constant(true_ec), tf.constant(sampled_ec))
  kept = losses.sampled_softmax_loss(w, b, labels, x, 5, 20, sampled_values=sv,
                                     remove_accidental_hits=False)
  removed = losses.sampled_softmax_loss(w, b, labels, x, 5, 20,
                                        sampled_values=sv)  # default True
  assert abs(kept.numpy() - removed.numpy()) > 1e-4


@pytest.mark.parametrize("sampler", losses.SAMPLERS)
def test_nce_and_sampled_softmax_with_each_sampler(sampler):
  tf.random.set_seed(5)
  r = np.random.default_rng(5)
  num_classes = 30
  w = tf.constant(r.normal(size=[num_classes, 4]), tf.float32)
  b = tf.zeros([num_classes])
  x = tf.constant(r.normal(size=[8, 4]), tf.float32)
  labels = r.integers(0, num_classes, size=[8, 2])
  unigrams = r.integers(1, 100, size=[num_classes])
  for fn in (losses.nce_loss, losses.sampled_softmax_loss):
    loss = fn(w, b, labels, x, num_sampled=10, num_classes=num_classes,
              num_true=2, sampler=sampler, unigrams=unigrams, seed=3)
    assert loss.shape == () and np.isfinite(loss.numpy()) and loss > 0


def test_unknown_sampler_is_a_clear_error():
  w, b = tf.zeros([5, 2]), tf.zeros([5])
  with pytest.raises(ValueError, match="unknown sampler"):
    losses.nce_loss(w, b, [[1]], tf.zeros([1, 2]), 2, 5, sampler="zipf")
  with pytest.raises(ValueError, match="unigrams"):
    losses.sampled_softmax_loss(w, b, [[1]], tf.zeros([1, 2]), 2, 5,
                                sampler="unigram")


# ---------------------------------------------------------------- full twins


def dense(w, b, x):
  return x @ w.T + b


@pytest.mark.parametrize("num_classes,chunk_size", [(1, 1), (10, 3), (37, 8),
                                                    (37, 37), (37, 100)])
def test_full_softmax_matches_dense_and_numpy(num_classes, chunk_size):
  r = np.random.default_rng(num_classes * chunk_size)
  w = r.normal(size=[num_classes, 5])
  b = r.normal(size=[num_classes])
  x = r.normal(scale=2, size=[7, 5])
  labels = r.integers(0, num_classes, size=[7])
  logits = dense(w, b, x)
  expected = np.mean(np_lse(logits) - logits[np.arange(7), labels])
  tf_dense = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)).numpy()
  for lab in (labels, labels[:, None]):
    got = losses.full_softmax_loss(w, b, lab, x, chunk_size=chunk_size)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), tf_dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_classes,chunk_size,num_true", [
    (10, 3, 1), (37, 8, 1), (37, 8, 3), (23, 5, 2), (23, 50, 2)])
def test_full_sigmoid_matches_dense_and_numpy(num_classes, chunk_size,
                                              num_true):
  r = np.random.default_rng(num_classes + chunk_size + num_true)
  w = r.normal(size=[num_classes, 5])
  b = r.normal(size=[num_classes])
  x = r.normal(scale=2, size=[6, 5])
  labels = r.integers(0, num_classes, size=[6, num_true])
  labels[0, -1] = labels[0, 0]  # a repeated true class counts twice
  logits = dense(w, b, x)
  # tf.nn.nce_loss's labels: 1/num_true per true column -> multi-hot / n.
  multi_hot = tf.reduce_sum(tf.one_hot(labels, num_classes, dtype=tf.float64),
                            axis=1).numpy() / num_true
  tf_dense = tf.reduce_mean(tf.reduce_sum(
      tf.nn.sigmoid_cross_entropy_with_logits(labels=multi_hot,
                                              logits=logits), axis=1)).numpy()
  expected = np.mean(np.sum(np_softplus(logits) - multi_hot * logits, axis=1))
  got = losses.full_sigmoid_loss(w, b, labels, x, num_true=num_true,
                                 chunk_size=chunk_size)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
  np.testing.assert_allclose(got.numpy(), tf_dense, rtol=1e-12)


@pytest.mark.parametrize("true", [[3], [3, 1], [5, 0, 2]])
def test_full_sigmoid_equals_nce_with_every_class_sampled_once(true):
  # tf.nn.nce_loss with sampled = every non-target class, expected counts 1,
  # no hit removal = full sigmoid over all classes: checks that the full twin
  # uses tf's target 1/num_true for each true class when num_true > 1.
  r = np.random.default_rng(8)
  w, b = r.normal(size=[6, 3]), r.normal(size=[6])
  x = r.normal(size=[1, 3])
  num_true = len(true)
  others = np.setdiff1d(np.arange(6), true).astype(np.int64)
  sv = (tf.constant(others), tf.ones([1, num_true], tf.float64),
        tf.ones([len(others)], tf.float64))
  nce = losses.nce_loss(w, b, [true], x, len(others), 6, num_true=num_true,
                        sampled_values=sv)
  full = losses.full_sigmoid_loss(w, b, [true], x, num_true=num_true,
                                  chunk_size=4)
  np.testing.assert_allclose(nce.numpy(), full.numpy(), rtol=1e-12)


def test_full_twins_gradients():
  r = np.random.default_rng(9)
  w = tf.constant(r.normal(size=[11, 3]))
  b = tf.constant(r.normal(size=[11]))
  x = tf.constant(r.normal(size=[4, 3]))
  labels1 = [3, 0, 10, 3]
  labels2 = [[3, 1], [0, 0], [10, 9], [3, 4]]
  for fn in (lambda w_, b_, x_: losses.full_softmax_loss(w_, b_, labels1, x_,
                                                         chunk_size=4),
             lambda w_, b_, x_: losses.full_sigmoid_loss(
                 w_, b_, labels2, x_, num_true=2, chunk_size=4)):
    theoretical, numerical = tf.test.compute_gradient(fn, [w, b, x])
    for th, nu in zip(theoretical, numerical):
      np.testing.assert_allclose(th, nu, rtol=1e-5, atol=1e-6)


def test_full_twins_stable_with_huge_norms():
  r = np.random.default_rng(10)
  w = tf.constant(1e2 * r.normal(size=[50, 4]), tf.float32)
  b = tf.zeros([50])
  x = tf.constant(1e2 * r.normal(size=[3, 4]), tf.float32)  # logits ~ 1e4
  labels = [1, 2, 3]
  for fn in (lambda: losses.full_softmax_loss(w, b, labels, x, chunk_size=7),
             lambda: losses.full_sigmoid_loss(w, b, labels, x, chunk_size=7)):
    with tf.GradientTape() as tape:
      tape.watch([w, x])
      loss = fn()
    grads = tape.gradient(loss, [w, x])
    assert np.isfinite(loss.numpy())
    # (The weights' gradient comes as IndexedSlices: the chunks are gathered rows.)
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
  logits = dense(w.numpy().astype(np.float64), 0.0,
                 x.numpy().astype(np.float64))
  expected = np.mean(np_lse(logits) - logits[np.arange(3), labels])
  np.testing.assert_allclose(
      losses.full_softmax_loss(w, b, labels, x, chunk_size=7).numpy(),
      expected, rtol=1e-4, atol=1e-2)


def test_full_softmax_in_tf_function_with_dynamic_shapes():
  r = np.random.default_rng(11)
  w = r.normal(size=[29, 3]).astype(np.float32)
  b = r.normal(size=[29]).astype(np.float32)
  x = r.normal(size=[5, 3]).astype(np.float32)
  labels = r.integers(0, 29, size=[5])
  spec = [tf.TensorSpec([None, 3]), tf.TensorSpec([None]),
          tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 3])]
  fn = tf.function(lambda w_, b_, l_, x_: losses.full_softmax_loss(
      w_, b_, l_, x_, chunk_size=6), input_signature=spec)
  np.testing.assert_allclose(
      fn(w, b, labels, x).numpy(),
      losses.full_softmax_loss(w, b, labels, x, chunk_size=29).numpy(),
      rtol=1e-5)
  with pytest.raises(ValueError):
    losses.full_softmax_loss(w, b, labels, x, chunk_size=0)


@pytest.mark.parametrize("num_classes,shards,chunk_size", [(11, 3, 2), (37, 2, 8), (5, 5, 1)])
def test_full_twins_over_a_sharded_table_match_numpy(num_classes, shards, chunk_size):
  # A ShardedVariable (row blocks in "div" order, the first shards one row longer, as the
  # parameter-server strategy splits tables) is scored shard by shard: the same losses as
  # the dense table, with extreme logits too.
  from tensorflow.python.distribute import sharded_variable  # pylint: disable=import-outside-toplevel
  r = np.random.default_rng(num_classes)
  w = r.normal(size=[num_classes, 5])
  b = r.normal(size=[num_classes])
  w[1] *= 300.0  # logits in the thousands: exp overflows without the running logsumexp
  x = r.normal(scale=2, size=[6, 5])
  labels = r.integers(0, num_classes, size=[6, 2])
  labels[:, 0] = [0, 1, num_classes - 1, 1, 2 % num_classes, 3 % num_classes]
  sizes = [num_classes // shards + (i < num_classes % shards) for i in range(shards)]
  bounds = np.cumsum([0] + sizes)
  table = sharded_variable.ShardedVariable(
      [tf.Variable(w[a:z]) for a, z in zip(bounds[:-1], bounds[1:])])
  bias = sharded_variable.ShardedVariable(
      [tf.Variable(b[a:z]) for a, z in zip(bounds[:-1], bounds[1:])])
  logits = dense(w, b, x)
  want_softmax = np.mean(np_lse(logits) - logits[np.arange(6), labels[:, 0]])
  got = losses.full_softmax_loss(table, bias, labels[:, 0], x, chunk_size=chunk_size)
  np.testing.assert_allclose(got.numpy(), want_softmax, rtol=1e-12)
  multi_hot = np.zeros_like(logits)
  for i, row in enumerate(labels):
    for c in row:
      multi_hot[i, c] += 0.5
  want_sigmoid = np.mean(np.sum(np_softplus(logits) - multi_hot * logits, axis=1))
  got = tf.function(lambda: losses.full_sigmoid_loss(table, bias, labels, x, num_true=2,
                                                     chunk_size=chunk_size))()
  np.testing.assert_allclose(got.numpy(), want_sigmoid, rtol=1e-12)
  with pytest.raises(ValueError, match="biases sharded the same way"):
    losses.full_softmax_loss(table, tf.constant(b), labels[:, 0], x)


def test_full_twins_never_read_a_table_whole():
  # The full losses read a variable table by gathering its rows a chunk at a time, never
  # with a dense read (a dense read of a sparsely updated variable copies it whole; one of a
  # parameter server's shard brings all of it to the caller; a ShardedVariable made one
  # tensor reads every shard so).
  from tensorflow.python.distribute import sharded_variable  # pylint: disable=import-outside-toplevel
  r = np.random.default_rng(4)
  w = r.normal(size=[11, 3]).astype(np.float32)
  b = r.normal(size=[11]).astype(np.float32)
  x = tf.constant(r.normal(size=[4, 3]).astype(np.float32))
  labels = tf.constant([3, 0, 10, 3], tf.int64)
  tables = {"variable": (tf.Variable(w), tf.Variable(b)),
            "sharded": (sharded_variable.ShardedVariable([tf.Variable(w[:6]),
                                                          tf.Variable(w[6:])]),
                        sharded_variable.ShardedVariable([tf.Variable(b[:6]),
                                                          tf.Variable(b[6:])]))}
  for name, (table, bias) in tables.items():
    for loss in (losses.full_softmax_loss, losses.full_sigmoid_loss):
      fn = tf.function(lambda: loss(table, bias, labels, x, chunk_size=4))  # pylint: disable=cell-var-from-loop
      graph = fn.get_concrete_function().graph.as_graph_def()
      ops = [n.op for n in graph.node]
      for f in graph.library.function:
        ops += [n.op for n in f.node_def]
      assert "ReadVariableOp" not in ops, (name, loss.__name__, sorted(set(ops)))
      assert "ResourceGather" in ops, (name, sorted(set(ops)))
