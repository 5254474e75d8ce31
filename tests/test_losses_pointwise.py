"""Primitives and pointwise losses: golden values, numpy references, gradients.

Covers stable_sigmoid_cross_entropy, softmax_cross_entropy,
sparse_softmax_cross_entropy, sigmoid_cross_entropy_loss,
weighted_cross_entropy_loss, l2_loss and binary_focal_loss.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings import losses

LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)


def np_softplus(x):
  return np.logaddexp(0.0, x)


def np_sigmoid_xent(z, x):
  # z * -log(sigmoid(x)) + (1 - z) * -log(1 - sigmoid(x)), via logaddexp.
  return z * np_softplus(-x) + (1.0 - z) * np_softplus(x)


def np_log_softmax(x):
  m = x.max(axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def np_focal(z, x, gamma, alpha):
  p = 1.0 / (1.0 + np.exp(-x))
  w = alpha * z * (1 - p) ** gamma + (1 - alpha) * (1 - z) * p ** gamma
  return np.mean(w * np_sigmoid_xent(z, x))


def rng(seed=0):
  return np.random.default_rng(seed)


# ----------------------------------------------------------------- primitives


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4)])
def test_stable_sigmoid_cross_entropy_matches_formula(shape):
  r = rng(1)
  x = r.normal(scale=5.0, size=shape)
  z = r.uniform(size=shape)
  got = losses.stable_sigmoid_cross_entropy(z, x).numpy()
  # The seed's stable form relu(x) - x z + log1p(exp(-|x|)).
  formula = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
  assert got.shape == shape  # no reduction
  np.testing.assert_allclose(got, formula, rtol=1e-12)
  np.testing.assert_allclose(got, np_sigmoid_xent(z, x), rtol=1e-10)


def test_stable_sigmoid_cross_entropy_golden_and_extremes():
  # x=0, z=1: log 2. x=ln3, z=0: -log(1 - 3/4) = ln 4.
  got = losses.stable_sigmoid_cross_entropy(
      [1.0, 0.0], tf.constant([0.0, LN3])).numpy()
  np.testing.assert_allclose(got, [LN2, LN4], rtol=1e-6)
  # |x| = 1e4: the naive -log(sigmoid) overflows; the stable one is exact.
  got = losses.stable_sigmoid_cross_entropy(
      [1.0, 0.0, 0.0, 1.0], tf.constant([-1e4, 1e4, -1e4, 1e4])).numpy()
  np.testing.assert_allclose(got, [1e4, 1e4, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 6)])
def test_softmax_cross_entropy_matches_formula(shape):
  r = rng(2)
  x = r.normal(scale=3.0, size=shape)
  z = r.dirichlet(np.ones(shape[-1]), size=shape[:-1])
  got = losses.softmax_cross_entropy(z, x).numpy()
  assert got.shape == shape[:-1]
  np.testing.assert_allclose(got, -(z * np_log_softmax(x)).sum(-1), rtol=1e-10)


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 6)])
def test_sparse_softmax_cross_entropy_matches_formula(shape):
  r = rng(3)
  x = r.normal(scale=3.0, size=shape)
  y = r.integers(0, shape[-1], size=shape[:-1])
  got = losses.sparse_softmax_cross_entropy(y, x).numpy()
  expected = -np.take_along_axis(np_log_softmax(x), y[..., None], -1)[..., 0]
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # Golden: logits [0, ln 3], label 1 -> log(1 + 3) - ln 3 = ln(4/3).
  np.testing.assert_allclose(
      losses.sparse_softmax_cross_entropy([1], [[0.0, LN3]]).numpy(),
      [math.log(4.0 / 3.0)], rtol=1e-6)


# ------------------------------------------- sigmoid_cross_entropy_loss (000)


def test_sigmoid_cross_entropy_loss_golden():
  # positives [0, ln3]: softplus(0) = ln2, softplus(-ln3) = ln(4/3);
  #   mean = (0.693147 + 0.287682) / 2 = 0.490415
  # negatives [[0, ln3]]: softplus(0) = ln2, softplus(ln3) = ln4;
  #   mean = (0.693147 + 1.386294) / 2 = 1.039721
  # total = 1.530136
  got = losses.sigmoid_cross_entropy_loss(
      tf.constant([0.0, LN3]), tf.constant([[0.0, LN3]]))
  assert got.shape == ()
  np.testing.assert_allclose(got.numpy(), 1.530136, rtol=1e-5)


@pytest.mark.parametrize("batch,num_neg", [(1, 1), (5, 3), (8, 17)])
def test_sigmoid_cross_entropy_loss_numpy(batch, num_neg):
  r = rng(batch * 100 + num_neg)
  pos = r.normal(scale=3, size=[batch])
  neg = r.normal(scale=3, size=[batch, num_neg])
  expected = np_softplus(-pos).mean() + np_softplus(neg).mean()
  np.testing.assert_allclose(
      losses.sigmoid_cross_entropy_loss(pos, neg).numpy(), expected,
      rtol=1e-10)
  # [B, 1] positives give the same value.
  np.testing.assert_allclose(
      losses.sigmoid_cross_entropy_loss(pos[:, None], neg).numpy(), expected,
      rtol=1e-10)


def test_sigmoid_cross_entropy_loss_large_logits_finite():
  pos = tf.constant([1e4, -1e4])
  neg = tf.constant([[1e4, -1e4]])
  with tf.GradientTape() as tape:
    tape.watch([pos, neg])
    loss = losses.sigmoid_cross_entropy_loss(pos, neg)
  grads = tape.gradient(loss, [pos, neg])
  # (0 + 1e4) / 2 + (1e4 + 0) / 2
  np.testing.assert_allclose(loss.numpy(), 1e4, rtol=1e-6)
  assert all(np.all(np.isfinite(g.numpy())) for g in grads)


# --------------------------------------------------------- weighted CE (002)


def test_weighted_cross_entropy_loss_golden():
  # labels [1, 0], logits [0, 0], pos_weight 3: (3 ln2 + ln2) / 2 = 2 ln2.
  got = losses.weighted_cross_entropy_loss([1.0, 0.0], [0.0, 0.0], 3.0)
  np.testing.assert_allclose(got.numpy(), 2 * LN2, rtol=1e-6)


@pytest.mark.parametrize("shape,pos_weight", [((6,), 0.5), ((4, 3), 4.0)])
def test_weighted_cross_entropy_loss_numpy(shape, pos_weight):
  r = rng(5)
  x = r.normal(scale=4, size=shape)
  z = r.integers(0, 2, size=shape).astype(np.float64)
  expected = np.mean(pos_weight * z * np_softplus(-x)
                     + (1 - z) * np_softplus(x))
  np.testing.assert_allclose(
      losses.weighted_cross_entropy_loss(z, x, pos_weight).numpy(), expected,
      rtol=1e-10)
  # pos_weight = 1 is the plain sigmoid cross-entropy.
  np.testing.assert_allclose(
      losses.weighted_cross_entropy_loss(z, x, 1.0).numpy(),
      np_sigmoid_xent(z, x).mean(), rtol=1e-10)


# ------------------------------------------------------------------- l2 loss


def test_l2_loss_golden_and_numpy():
  # ((2 - 1)^2 + (4 - 2)^2) / 2 = 2.5 (tf.nn.l2_loss would give 2.5 too by
  # accident of n=2, so also check a 3-element case: (1 + 4 + 9) / 3).
  np.testing.assert_allclose(losses.l2_loss([1.0, 2.0], [2.0, 4.0]), 2.5)
  np.testing.assert_allclose(
      losses.l2_loss([0.0, 0.0, 0.0], [1.0, 2.0, 3.0]), 14.0 / 3.0, rtol=1e-6)
  r = rng(6)
  y, p = r.normal(size=[5, 4]), r.normal(size=[5, 4])
  np.testing.assert_allclose(losses.l2_loss(y, p).numpy(),
                             np.mean((y - p) ** 2), rtol=1e-12)


# --------------------------------------------------------------- focal (004)


def test_binary_focal_loss_golden():
  # gamma=2, alpha=0.25.
  # example 1: z=1, x=0: p=1/2, w = 0.25 * (1/2)^2 = 0.0625,
  #   xent = ln2 -> 0.0433217
  # example 2: z=0, x=ln3: p=3/4, w = 0.75 * (3/4)^2 = 0.421875,
  #   xent = -log(1/4) = ln4 -> 0.5848430
  # mean = 0.3140824
  got = losses.binary_focal_loss([1.0, 0.0], tf.constant([0.0, LN3]),
                                 gamma=2.0, alpha=0.25)
  np.testing.assert_allclose(got.numpy(), 0.3140824, rtol=1e-5)
  # gamma = 0, alpha = 0.5: half the plain BCE.
  np.testing.assert_allclose(
      losses.binary_focal_loss([1.0, 0.0], tf.constant([0.0, LN3]),
                               gamma=0.0, alpha=0.5).numpy(),
      0.5 * (LN2 + LN4) / 2, rtol=1e-6)


@pytest.mark.parametrize("gamma,alpha,n", [(2.0, 0.5, 9), (0.5, 0.2, 16),
                                           (3.0, 0.9, 5)])
def test_binary_focal_loss_numpy(gamma, alpha, n):
  r = rng(int(gamma * 10) + n)
  x = r.normal(scale=3, size=[n])
  z = r.integers(0, 2, size=[n]).astype(np.float64)
  np.testing.assert_allclose(
      losses.binary_focal_loss(z, x, gamma=gamma, alpha=alpha).numpy(),
      np_focal(z, x, gamma, alpha), rtol=1e-9)


def test_binary_focal_loss_gradients():
  r = rng(7)
  x = tf.constant(r.normal(scale=2, size=[6]))
  z = tf.constant([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], tf.float64)
  # Classic focal loss (weight differentiated): finite differences agree.
  theoretical, numerical = tf.test.compute_gradient(
      lambda t: losses.binary_focal_loss(z, t, 2.0, 0.3,
                                         stop_weight_gradient=False), [x])
  np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5,
                             atol=1e-7)
  # TorchEasyRec (weight detached): gradient is w * (p - z) / n.
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = losses.binary_focal_loss(z, x, 2.0, 0.3)
  grad = tape.gradient(loss, x).numpy()
  p = 1 / (1 + np.exp(-x.numpy()))
  zn = z.numpy()
  w = 0.3 * zn * (1 - p) ** 2 + 0.7 * (1 - zn) * p ** 2
  np.testing.assert_allclose(grad, w * (p - zn) / 6, rtol=1e-10)
  assert not np.allclose(grad, theoretical[0].reshape(-1))


def test_binary_focal_loss_stable_at_large_logits():
  x = tf.constant([1e4, -1e4, 1e4, -1e4])
  z = tf.constant([0.0, 1.0, 1.0, 0.0])
  for stop in (True, False):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = losses.binary_focal_loss(z, x, stop_weight_gradient=stop)
    grad = tape.gradient(loss, x)
    # Wrong with certainty: w = 0.5 * 1, xent = 1e4 -> (5e3 + 5e3) / 4.
    np.testing.assert_allclose(loss.numpy(), 2500.0, rtol=1e-6)
    assert np.all(np.isfinite(grad.numpy()))


def test_binary_focal_loss_rejects_bad_parameters():
  with pytest.raises(ValueError):
    losses.binary_focal_loss([1.0], [0.0], gamma=-1.0)
  with pytest.raises(ValueError):
    losses.binary_focal_loss([1.0], [0.0], alpha=1.0)


def test_weighted_cross_entropy_loss_large_logits_finite():
  x = tf.constant([1e4, -1e4, 1e4, -1e4])
  z = tf.constant([1.0, 1.0, 0.0, 0.0])
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = losses.weighted_cross_entropy_loss(z, x, 2.0)
  # (0 + 2 * 1e4 + 1e4 + 0) / 4 = 7500.
  np.testing.assert_allclose(loss.numpy(), 7500.0, rtol=1e-6)
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
