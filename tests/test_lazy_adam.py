"""training/lazy_adam.py: row-wise Adam(W) for sparse gradients, against a numpy reference."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_embeddings.training.lazy_adam import LazyAdam


def _numpy_lazy_adam(table, steps, lr, wd, beta_1=0.9, beta_2=0.999, eps=1e-7):
  """The update rule of LazyAdam on a [rows, dim] table for gradients given as
  (indices, values) per step, duplicates summed."""
  w = table.astype(np.float64).copy()
  m, v = np.zeros_like(w), np.zeros_like(w)
  for t, (indices, values) in enumerate(steps, start=1):
    rows = sorted(set(indices))
    g = {r: sum(values[i] for i in range(len(indices)) if indices[i] == r) for r in rows}
    alpha = lr * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    for r in rows:
      m[r] = beta_1 * m[r] + (1 - beta_1) * g[r]
      v[r] = beta_2 * v[r] + (1 - beta_2) * g[r] ** 2
      w[r] -= lr * wd * w[r] + alpha * m[r] / (np.sqrt(v[r]) + eps)
  return w, m, v


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_sparse_rows_follow_the_lazy_rule_and_dense_variables_keras_adam(wd):
  rng = np.random.default_rng(0)
  table0 = rng.normal(size=[8, 3]).astype(np.float32)
  dense0 = rng.normal(size=[4]).astype(np.float32)
  steps = [([1, 1, 5], rng.normal(size=[3, 3])), ([5, 2], rng.normal(size=[2, 3])),
           ([7, 1, 7, 7], 1e3 * rng.normal(size=[4, 3]))]  # large gradients too
  dense_grads = [rng.normal(size=[4]) for _ in steps]
  table, dense = tf.Variable(table0), tf.Variable(dense0)
  opt = LazyAdam(0.05, weight_decay=wd or None)
  opt.build([table, dense])
  reference_dense = tf.Variable(dense0)
  reference = keras.optimizers.Adam(0.05, weight_decay=wd or None)
  reference.build([reference_dense])
  for (indices, values), dense_grad in zip(steps, dense_grads):
    sparse = tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(indices),
                              tf.constant([8, 3]))
    opt.apply_gradients([(sparse, table), (tf.constant(dense_grad, tf.float32), dense)])
    reference.apply_gradients([(tf.constant(dense_grad, tf.float32), reference_dense)])
  want, want_m, want_v = _numpy_lazy_adam(table0, steps, 0.05, wd)
  np.testing.assert_allclose(table.numpy(), want, rtol=2e-5, atol=1e-6)
  index = opt._get_variable_index(table)  # pylint: disable=protected-access
  np.testing.assert_allclose(opt._momentums[index].numpy(), want_m, rtol=2e-5, atol=1e-6)  # pylint: disable=protected-access
  np.testing.assert_allclose(opt._velocities[index].numpy(), want_v, rtol=2e-5, atol=1e-3)  # pylint: disable=protected-access
  untouched = [0, 3, 4, 6]
  np.testing.assert_array_equal(table.numpy()[untouched], table0[untouched])
  np.testing.assert_allclose(dense.numpy(), reference_dense.numpy(), rtol=1e-6)


def test_lazy_adam_inside_a_function_with_a_gather_gradient():
  table = tf.Variable(np.ones([6, 2], np.float32))
  opt = LazyAdam(0.1, weight_decay=0.5)
  opt.build([table])

  @tf.function
  def step(ids):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.gather(table, ids) ** 2)
    opt.apply_gradients([(tape.gradient(loss, table), table)])

  step(tf.constant([2, 2, 4]))
  got = table.numpy()
  np.testing.assert_array_equal(got[[0, 1, 3, 5]], np.ones([4, 2]))
  # First Adam step moves a row by lr (m / sqrt(v) = 1), plus lr * wd * w of decay.
  np.testing.assert_allclose(got[[2, 4]], np.full([2, 2], 1 - 0.1 - 0.1 * 0.5), rtol=1e-5)
