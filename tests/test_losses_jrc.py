"""JRC loss (arXiv 2208.06164, TorchEasyRec's definition)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings import losses


def np_logsumexp(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def np_jrc(labels, logits, sessions, alpha):
  """Brute-force reference: loops over samples, one session at a time."""
  labels = np.asarray(labels)
  n = len(labels)
  ce = np.array([np_logsumexp(logits[b]) - logits[b, labels[b]]
                 for b in range(n)])
  ranking = np.zeros(n)
  for b in range(n):
    col = labels[b]  # a positive uses column 1, a negative column 0
    rivals = [j for j in range(n)
              if sessions[j] == sessions[b] and labels[j] != labels[b]]
    own = logits[b, col]
    ranking[b] = np_logsumexp(np.array([own] + [logits[j, col]
                                                for j in rivals])) - own
  return alpha * ce.mean() + (1 - alpha) * ranking.mean()


def test_jrc_golden_by_hand():
  # Session "s": a = label 1, logits [0, ln3]; b = label 0, logits [ln2, ln5].
  # Session "t": c = label 1, logits [0, 0] (no negative in its session).
  # calibration: a: log(1 + 3) - ln3 = ln(4/3) = 0.287682
  #              b: log(2 + 5) - ln2 = ln(7/2) = 1.252763
  #              c: ln2 = 0.693147            -> mean 0.744531
  # ranking: a on column 1 vs b: -log(3 / (3 + 5)) = ln(8/3) = 0.980829
  #          b on column 0 vs a: -log(2 / (2 + 1)) = ln(3/2) = 0.405465
  #          c: no rival -> 0                 -> mean 0.462098
  # alpha 0.25: 0.25 * 0.744531 + 0.75 * 0.462098 = 0.532706
  logits = tf.constant([[0.0, math.log(3)], [math.log(2), math.log(5)],
                        [0.0, 0.0]])
  got = losses.jrc_loss([1, 0, 1], logits, ["s", "s", "t"], alpha=0.25)
  np.testing.assert_allclose(got.numpy(), 0.532706, rtol=1e-5)


def test_jrc_matches_torcheasyrec_golden():
  # TorchEasyRec's jrc_loss_test: two sessions of 4, alpha 0.5 -> 0.7199.
  logits = tf.constant([[0.9, 0.1], [0.5, 0.5], [0.3, 0.7], [0.2, 0.8],
                        [0.8, 0.2], [0.55, 0.45], [0.33, 0.67], [0.55, 0.45]])
  labels = [0, 0, 1, 1, 0, 0, 1, 1]
  got = losses.jrc_loss(labels, logits, [0, 0, 0, 0, 1, 1, 1, 1])
  assert round(float(got.numpy()), 4) == 0.7199


@pytest.mark.parametrize("seed,n,num_sessions,alpha", [
    (0, 12, 3, 0.5), (1, 19, 5, 0.3), (2, 7, 1, 0.8), (3, 30, 30, 0.5)])
def test_jrc_matches_numpy(seed, n, num_sessions, alpha):
  r = np.random.default_rng(seed)
  logits = r.normal(scale=2, size=[n, 2])
  labels = r.integers(0, 2, size=[n])
  # Sessions interleaved in arbitrary order, arbitrary id values.
  sessions = r.integers(0, num_sessions, size=[n]) * 1000 + 7
  got = losses.jrc_loss(labels, logits, sessions, alpha=alpha)
  np.testing.assert_allclose(got.numpy(),
                             np_jrc(labels, logits, sessions, alpha),
                             rtol=1e-10)


def test_jrc_sessions_do_not_interact():
  r = np.random.default_rng(4)
  n = 10
  logits = r.normal(size=[n, 2])
  labels = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
  sessions = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
  in_0 = sessions == 0

  def ranking_total(lg, lb, ss):
    # alpha = 0: the ranking term alone, times the batch size = its sum.
    return losses.jrc_loss(lb, lg, ss, alpha=0.0).numpy() * len(lb)

  per_session = [ranking_total(logits[sessions == s], labels[sessions == s],
                               sessions[sessions == s]) for s in (0, 1)]
  # The batch term is the sum of the per-session computations / B.
  np.testing.assert_allclose(ranking_total(logits, labels, sessions),
                             sum(per_session), rtol=1e-10)
  # Changing session 1's samples leaves session 0's contribution unchanged.
  changed = logits.copy()
  changed[~in_0] += r.normal(scale=5, size=changed[~in_0].shape)
  new_session_1 = ranking_total(changed[~in_0], labels[~in_0],
                                sessions[~in_0])
  assert abs(new_session_1 - per_session[1]) > 1e-3  # the change matters
  np.testing.assert_allclose(
      ranking_total(changed, labels, sessions) - new_session_1,
      per_session[0], rtol=1e-10)
  # Merging the sessions would change the value (the masks matter).
  merged = losses.jrc_loss(labels, logits, np.zeros(n), alpha=0.0)
  assert abs(merged.numpy() * n - sum(per_session)) > 1e-3
  # Session 0's terms give no gradient to session 1's logits: the batch
  # gradient on session 1's rows equals that of session 1 computed alone.
  x = tf.constant(logits)
  with tf.GradientTape() as tape:
    tape.watch(x)
    total = losses.jrc_loss(labels, x, sessions, alpha=0.0) * n
  x1 = tf.constant(logits[~in_0])
  with tf.GradientTape() as tape1:
    tape1.watch(x1)
    alone = losses.jrc_loss(labels[~in_0], x1, sessions[~in_0],
                            alpha=0.0) * int((~in_0).sum())
  np.testing.assert_allclose(tape.gradient(total, x).numpy()[~in_0],
                             tape1.gradient(alone, x1).numpy(), rtol=1e-10)


def test_jrc_gradients():
  r = np.random.default_rng(5)
  x = tf.constant(r.normal(size=[9, 2]))
  labels = [1, 0, 0, 1, 1, 0, 1, 1, 0]
  sessions = [0, 0, 1, 1, 1, 2, 2, 3, 0]  # session 3 has no negative
  theoretical, numerical = tf.test.compute_gradient(
      lambda t: losses.jrc_loss(labels, t, sessions, alpha=0.3), [x])
  np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6,
                             atol=1e-8)


def test_jrc_stable_at_large_logits():
  x = tf.constant([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4], [-1e4, 0.0]])
  labels = [1, 0, 1, 0]
  sessions = [0, 0, 1, 1]
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = losses.jrc_loss(labels, x, sessions)
  expected = np_jrc(np.array(labels), x.numpy().astype(np.float64), sessions,
                    0.5)
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
