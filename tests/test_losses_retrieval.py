"""Retrieval losses: unsupervised softmax (seed 000), in-batch softmax with
logQ and accidental-hit removal, and SimCLR's InfoNCE (seed 001)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings import losses


def np_softmax_xent_rows(logits, labels):
  """-log_softmax(logits)[i, labels[i]] per row, in float64."""
  m = logits.max(axis=1, keepdims=True)
  lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
  return lse - logits[np.arange(len(labels)), labels]


def seed_unsupervised_softmax(src, pos, neg, temperature=1.0):
  """Seed 000's form, verbatim in TF2: -mean(log(softmax[:, 0] + 1e-12))."""
  pos_sim = tf.reduce_sum(src * pos, axis=-1, keepdims=True)
  neg_sim = tf.matmul(src, tf.transpose(neg))
  logit = tf.nn.softmax(tf.concat([pos_sim, neg_sim], axis=-1) / temperature)
  return -tf.reduce_mean(tf.math.log(logit[:, :1] + 1e-12))


# --------------------------------------------------- unsupervised softmax


def test_unsupervised_softmax_golden():
  # src [1, 0], pos [2, 0] -> s+ = 2; negatives [0, 1], [1, 0] -> 0, 1.
  # loss = log(e^2 + e^0 + e^1) - 2 = log(11.107338) - 2 = 0.407606.
  # With T = 2: logits [1, 0, 0.5]: log(e + 1 + e^0.5) - 1 = 0.6802696.
  src, pos = tf.constant([[1.0, 0.0]]), tf.constant([[2.0, 0.0]])
  neg = tf.constant([[0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_allclose(
      losses.unsupervised_softmax_cross_entropy_loss(src, pos, neg).numpy(),
      0.407606, rtol=1e-5)
  np.testing.assert_allclose(
      losses.unsupervised_softmax_cross_entropy_loss(src, pos, neg, 2.0),
      math.log(math.e + 1 + math.exp(0.5)) - 1, rtol=1e-6)


@pytest.mark.parametrize("batch,neg_num,dim,t", [(1, 1, 3, 1.0),
                                                 (4, 3, 5, 0.1),
                                                 (7, 2, 8, 2.0)])
def test_unsupervised_softmax_numpy(batch, neg_num, dim, t):
  r = np.random.default_rng(batch + 10 * dim)
  src, pos = r.normal(size=[batch, dim]), r.normal(size=[batch, dim])
  neg = r.normal(size=[batch * neg_num, dim])
  logits = np.concatenate([(src * pos).sum(1, keepdims=True), src @ neg.T],
                          axis=1) / t
  expected = np_softmax_xent_rows(logits, np.zeros(batch, int)).mean()
  got = losses.unsupervised_softmax_cross_entropy_loss(src, pos, neg, t)
  np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
  # Seed's form agrees where logits are moderate (T >= 1 here; at T = 0.1
  # the loss is 32 > 27.6 and the seed's form is already off).
  if t >= 1.0:
    np.testing.assert_allclose(
        seed_unsupervised_softmax(src, pos, neg, t).numpy(), expected,
        rtol=1e-6)
  else:
    assert seed_unsupervised_softmax(src, pos, neg, t).numpy() < expected - 1


def test_unsupervised_softmax_gradients():
  r = np.random.default_rng(11)
  src = tf.constant(r.normal(size=[3, 4]))
  pos = tf.constant(r.normal(size=[3, 4]))
  neg = tf.constant(r.normal(size=[6, 4]))
  theoretical, numerical = tf.test.compute_gradient(
      lambda s, p, n: losses.unsupervised_softmax_cross_entropy_loss(
          s, p, n, 0.5), [src, pos, neg])
  for th, nu in zip(theoretical, numerical):
    np.testing.assert_allclose(th, nu, rtol=1e-5, atol=1e-6)


def test_seed_form_is_wrong_at_large_logits_ours_is_exact():
  # s+ = 0, one negative with s- = 100: the true loss is
  # log(e^0 + e^100) - 0 = 100 + log1p(e^-100) = 100 (to float precision),
  # d loss / d src = softmax-weighted neg - pos = [1, 0] - ... nonzero.
  src = tf.constant([[10.0, 0.0]])
  pos = tf.constant([[0.0, 1.0]])
  neg = tf.constant([[10.0, 0.0]])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(src)
    ours = losses.unsupervised_softmax_cross_entropy_loss(src, pos, neg)
    seed = seed_unsupervised_softmax(src, pos, neg)
  np.testing.assert_allclose(ours.numpy(), 100.0, rtol=1e-6)
  # The seed's value saturates at -log(1e-12) = 27.631021.
  np.testing.assert_allclose(seed.numpy(), -math.log(1e-12), rtol=1e-5)
  ours_grad = tape.gradient(ours, src).numpy()
  seed_grad = tape.gradient(seed, src).numpy()
  # Exact gradient: p(neg) * neg - (1 - p(pos)) * pos... = [10, -1] here.
  np.testing.assert_allclose(ours_grad, [[10.0, -1.0]], rtol=1e-5)
  assert np.abs(seed_grad).max() < 1e-6  # vanished


def test_unsupervised_softmax_huge_embeddings_finite():
  r = np.random.default_rng(12)
  src = tf.constant(1e4 * r.normal(size=[4, 3]), tf.float32)
  pos = tf.constant(1e4 * r.normal(size=[4, 3]), tf.float32)
  neg = tf.constant(1e4 * r.normal(size=[8, 3]), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch([src, pos, neg])
    loss = losses.unsupervised_softmax_cross_entropy_loss(src, pos, neg)
  grads = tape.gradient(loss, [src, pos, neg])
  assert np.isfinite(loss.numpy())
  assert all(np.all(np.isfinite(g.numpy())) for g in grads)
  # And the value is right (numpy in float64 on the same float32 inputs).
  s, p, n = (t.numpy().astype(np.float64) for t in (src, pos, neg))
  logits = np.concatenate([(s * p).sum(1, keepdims=True), s @ n.T], axis=1)
  np.testing.assert_allclose(loss.numpy(),
                             np_softmax_xent_rows(logits, np.zeros(4, int))
                             .mean(), rtol=1e-4)


# ------------------------------------------------------- in-batch softmax


def np_in_batch(q, i, t, log_q=None, ids=None):
  logits = q @ i.T / t
  if log_q is not None:
    logits = logits - log_q[None, :]
  b = len(q)
  rows = []
  for r in range(b):
    keep = [j for j in range(b)
            if ids is None or j == r or ids[j] != ids[r]]
    row = logits[r, keep]
    rows.append(np_softmax_xent_rows(row[None], np.array([keep.index(r)]))[0])
  return np.mean(rows)


def test_in_batch_softmax_golden():
  eye = tf.eye(2)
  # logits = I: each row log(e + 1) - 1 = 0.313262.
  np.testing.assert_allclose(
      losses.in_batch_softmax_loss(eye, eye, 1.0).numpy(), 0.313262,
      rtol=1e-5)
  # T = 0.5: logits = 2 I: log(e^2 + 1) - 2 = 0.126928.
  np.testing.assert_allclose(
      losses.in_batch_softmax_loss(eye, eye, 0.5).numpy(), 0.126928,
      rtol=1e-5)
  # logQ = [ln 2, 0]: row 0 [1 - ln2, 0] -> log(e/2 + 1) - 1 + ln2
  #   = 0.858297 - 0.306853 = 0.551444; row 1 [-ln2, 1] ->
  #   log(1/2 + e) - 1 = 0.168847; mean 0.360146.
  np.testing.assert_allclose(
      losses.in_batch_softmax_loss(eye, eye, 1.0,
                                   item_log_q=[math.log(2), 0.0]).numpy(),
      0.360146, rtol=1e-5)
  # Same item twice: ids [4, 4]: every row loses its only negative -> 0.
  np.testing.assert_allclose(
      losses.in_batch_softmax_loss(eye, eye, 1.0, item_ids=[4, 4]).numpy(),
      0.0, atol=1e-7)


@pytest.mark.parametrize("b,d,t", [(1, 2, 1.0), (5, 3, 0.05), (16, 8, 0.7)])
def test_in_batch_softmax_numpy(b, d, t):
  r = np.random.default_rng(b * d)
  q, i = r.normal(size=[b, d]), r.normal(size=[b, d])
  log_q = np.log(r.uniform(0.01, 1.0, size=[b]))
  ids = r.integers(0, max(1, b // 2), size=[b])
  for kw in ({}, {"item_log_q": log_q}, {"item_ids": ids},
             {"item_log_q": log_q, "item_ids": ids}):
    np.testing.assert_allclose(
        losses.in_batch_softmax_loss(q, i, t, **kw).numpy(),
        np_in_batch(q, i, t, kw.get("item_log_q"), kw.get("item_ids")),
        rtol=1e-9)


def test_in_batch_softmax_query_offset_is_a_slice_of_the_whole_batch():
  """Queries [o, o + b) against all C candidates (the gathered batch of every replica):
  the mean of their rows of the whole batch's loss; the slices' means average to it."""
  r = np.random.default_rng(24)
  q, i = r.normal(size=[6, 3]), r.normal(size=[6, 3])
  log_q = np.log(r.uniform(0.01, 1.0, size=[6]))
  ids = np.array([3, 1, 3, 2, 1, 3])
  whole = losses.in_batch_softmax_loss(q, i, 0.4, log_q, ids).numpy()
  parts = [losses.in_batch_softmax_loss(q[o:o + 2], i, 0.4, log_q, ids,
                                        query_offset=o).numpy() for o in (0, 2, 4)]
  np.testing.assert_allclose(np.mean(parts), whole, rtol=1e-10)
  logits = q @ i.T / 0.4 - log_q[None, :]
  rows = []
  for row in (2, 3):
    keep = [c for c in range(6) if c == row or ids[c] != ids[row]]
    rows.append(np_softmax_xent_rows(logits[row:row + 1, keep],
                                     np.array([keep.index(row)]))[0])
  np.testing.assert_allclose(parts[1], np.mean(rows), rtol=1e-10)


def test_in_batch_accidental_hit_equals_deleting_the_column():
  r = np.random.default_rng(21)
  q, i = r.normal(size=[4, 3]), r.normal(size=[4, 3])
  i[2] = i[0]  # item 5 appears twice: rows 0 and 2
  ids = np.array([5, 7, 5, 9])
  masked = losses.in_batch_softmax_loss(q, i, 1.0, item_ids=ids).numpy()
  logits = q @ i.T
  # Row 0 without column 2, row 2 without column 0, rows 1 and 3 untouched.
  row0 = np_softmax_xent_rows(logits[0:1, [0, 1, 3]], np.array([0]))[0]
  row2 = np_softmax_xent_rows(logits[2:3, [1, 2, 3]], np.array([1]))[0]
  rows13 = np_softmax_xent_rows(logits[[1, 3]], np.array([1, 3]))
  np.testing.assert_allclose(masked, (row0 + row2 + rows13.sum()) / 4,
                             rtol=1e-10)
  unmasked = losses.in_batch_softmax_loss(q, i, 1.0).numpy()
  assert unmasked > masked + 1e-3  # the duplicate was a (hard) negative


def test_in_batch_log_q_shifts_logits_by_minus_log_q():
  r = np.random.default_rng(22)
  q, i = r.normal(size=[6, 4]), r.normal(size=[6, 4])
  q_prob = r.uniform(0.001, 0.5, size=[6])
  got = losses.in_batch_softmax_loss(q, i, 0.3,
                                     item_log_q=np.log(q_prob)).numpy()
  logits = q @ i.T / 0.3 - np.log(q_prob)[None, :]
  expected = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=np.arange(6), logits=logits)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # A constant added to every log q changes nothing (softmax shift).
  np.testing.assert_allclose(
      losses.in_batch_softmax_loss(q, i, 0.3,
                                   item_log_q=np.log(q_prob) + 3.0).numpy(),
      got, rtol=1e-10)
  assert abs(losses.in_batch_softmax_loss(q, i, 0.3).numpy() - got) > 1e-3


def test_in_batch_softmax_gradients():
  r = np.random.default_rng(23)
  q = tf.constant(r.normal(size=[5, 3]))
  i = tf.constant(r.normal(size=[5, 3]))
  ids = [1, 2, 1, 3, 2]
  log_q = np.log(r.uniform(0.1, 1, size=[5]))
  theoretical, numerical = tf.test.compute_gradient(
      lambda a, b: losses.in_batch_softmax_loss(a, b, 0.5, item_log_q=log_q,
                                                item_ids=ids), [q, i])
  for th, nu in zip(theoretical, numerical):
    np.testing.assert_allclose(th, nu, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hard", [None, 2])
def test_in_batch_softmax_huge_norms_finite(hard):
  r = np.random.default_rng(24)
  q = tf.constant(1e4 * r.normal(size=[6, 4]), tf.float32)
  i = tf.constant(1e4 * r.normal(size=[6, 4]), tf.float32)
  with tf.GradientTape() as tape:
    tape.watch([q, i])
    loss = losses.in_batch_softmax_loss(q, i, 0.05, item_ids=[1, 1, 2, 3, 4, 5],
                                        num_hard_negatives=hard)
  grads = tape.gradient(loss, [q, i])
  assert np.isfinite(loss.numpy()) and loss.numpy() > 0
  assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def _np_hard_negatives_loss(q, i, t, k, log_q=None, ids=None):
  """Numpy reference of the hard-negative in-batch softmax: per row, the positive and the
  k highest other logits (logQ subtracted, accidental hits removed first)."""
  logits = q @ i.T / t
  if log_q is not None:
    logits = logits - log_q[None, :]
  total = 0.0
  for row in range(logits.shape[0]):
    others = [logits[row, j] for j in range(logits.shape[1])
              if j != row and (ids is None or ids[j] != ids[row])]
    kept = np.array([logits[row, row]] + sorted(others, reverse=True)[:k])
    top = kept.max()
    total += top + np.log(np.exp(kept - top).sum()) - kept[0]
  return total / logits.shape[0]


@pytest.mark.parametrize("k", [1, 3, 6])
def test_hard_negatives_match_numpy(k):
  r = np.random.default_rng(25)
  q, i = r.normal(size=[8, 4]), r.normal(size=[8, 4])
  ids = np.array([1, 2, 1, 3, 4, 2, 5, 6])
  log_q = np.log(r.uniform(0.01, 0.5, size=[8]))
  got = losses.in_batch_softmax_loss(q, i, 0.2, item_log_q=log_q, item_ids=ids,
                                     num_hard_negatives=k).numpy()
  np.testing.assert_allclose(got, _np_hard_negatives_loss(q, i, 0.2, k, log_q, ids),
                             rtol=1e-10)
  # Fewer negatives than all: a smaller loss than the full in-batch softmax.
  full = losses.in_batch_softmax_loss(q, i, 0.2, item_log_q=log_q, item_ids=ids).numpy()
  assert got < full


def test_hard_negatives_beyond_the_batch_are_the_plain_loss_and_k_must_be_positive():
  r = np.random.default_rng(26)
  q, i = r.normal(size=[5, 3]), r.normal(size=[5, 3])
  plain = losses.in_batch_softmax_loss(q, i, 0.5).numpy()
  for k in (4, 100):
    np.testing.assert_allclose(
        losses.in_batch_softmax_loss(q, i, 0.5, num_hard_negatives=k).numpy(), plain,
        rtol=1e-12)
  with pytest.raises(ValueError, match="num_hard_negatives"):
    losses.in_batch_softmax_loss(q, i, 0.5, num_hard_negatives=0)


def test_hard_negatives_gradients_are_those_of_a_softmax_over_the_kept_columns():
  # The selection is piecewise constant (finite differences across a swap of the k-th and
  # (k+1)-th negative are meaningless), so the reference is the plain softmax over the
  # columns numpy keeps, differentiated by TensorFlow.
  r = np.random.default_rng(27)
  q_np, i_np = r.normal(size=[6, 3]), r.normal(size=[6, 3])
  ids = np.array([1, 2, 1, 3, 4, 5])
  k, t = 2, 0.5
  logits = q_np @ i_np.T / t
  keep = np.zeros_like(logits, dtype=bool)
  for row in range(6):
    others = [j for j in range(6) if j != row and ids[j] != ids[row]]
    keep[row, row] = True
    keep[row, sorted(others, key=lambda j: -logits[row, j])[:k]] = True
  q, i = tf.constant(q_np), tf.constant(i_np)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([q, i])
    got = losses.in_batch_softmax_loss(q, i, t, item_ids=ids, num_hard_negatives=k)
    full = tf.matmul(q, i, transpose_b=True) / t
    kept = tf.where(keep, full, tf.constant(-1e30, tf.float64))
    want = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=np.arange(6), logits=kept))
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
  for g, w in zip(tape.gradient(got, [q, i]), tape.gradient(want, [q, i])):
    np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, 0])
def test_temperature_must_be_positive(bad):
  x = tf.ones([2, 2])
  with pytest.raises(ValueError, match="temperature"):
    losses.in_batch_softmax_loss(x, x, bad)
  with pytest.raises(ValueError, match="temperature"):
    losses.info_nce_loss(x, bad)
  with pytest.raises(ValueError, match="temperature"):
    losses.unsupervised_softmax_cross_entropy_loss(x, x, x, bad)


# ----------------------------------------------------------------- InfoNCE


def simclr_reference(hidden, temperature, hidden_norm=True):
  """SimCLR objective.py (seed 001), TF2, returns loss_a_mean + loss_b_mean."""
  large_num = 1e9
  hidden = tf.convert_to_tensor(hidden)
  if hidden_norm:
    hidden = tf.math.l2_normalize(hidden, -1)
  hidden1, hidden2 = tf.split(hidden, 2, 0)
  batch_size = tf.shape(hidden1)[0]
  labels = tf.one_hot(tf.range(batch_size), batch_size * 2,
                      dtype=hidden.dtype)
  masks = tf.one_hot(tf.range(batch_size), batch_size, dtype=hidden.dtype)
  logits_aa = tf.matmul(hidden1, hidden1, transpose_b=True) / temperature
  logits_aa = logits_aa - masks * large_num
  logits_bb = tf.matmul(hidden2, hidden2, transpose_b=True) / temperature
  logits_bb = logits_bb - masks * large_num
  logits_ab = tf.matmul(hidden1, hidden2, transpose_b=True) / temperature
  logits_ba = tf.matmul(hidden2, hidden1, transpose_b=True) / temperature
  loss_a = tf.nn.softmax_cross_entropy_with_logits(
      labels, tf.concat([logits_ab, logits_aa], 1))
  loss_b = tf.nn.softmax_cross_entropy_with_logits(
      labels, tf.concat([logits_ba, logits_bb], 1))
  return tf.reduce_mean(loss_a) + tf.reduce_mean(loss_b)


def np_info_nce(hidden, t, norm=True):
  h = hidden / np.linalg.norm(hidden, axis=1, keepdims=True) if norm else hidden
  two_n = len(h)
  n = two_n // 2
  sims = h @ h.T / t
  out = []
  for a in range(two_n):
    others = [k for k in range(two_n) if k != a]
    row = sims[a, others]
    out.append(np_softmax_xent_rows(row[None],
                                    np.array([others.index((a + n) % two_n)]))
               [0])
  return np.mean(out)


def test_info_nce_golden():
  # Views identical: h = [e1, e2, e1, e2]. Anchor 0: positive row 2 (sim 1),
  # others rows 1, 3 (sim 0), self masked: log(e + 1 + 1) - 1 = 0.551445.
  # Every anchor is alike -> mean 0.551445.
  hidden = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
  np.testing.assert_allclose(losses.info_nce_loss(hidden, 1.0).numpy(),
                             0.551445, rtol=1e-5)
  # hidden_norm: scaling rows changes nothing with it, changes the loss
  # without it (dot products 9 -> log(e^9 + 2) - 9 = 0.000247).
  np.testing.assert_allclose(losses.info_nce_loss(3 * hidden, 1.0).numpy(),
                             0.551445, rtol=1e-5)
  np.testing.assert_allclose(
      losses.info_nce_loss(3 * hidden, 1.0, hidden_norm=False).numpy(),
      math.log(math.exp(9) + 2) - 9, atol=2e-6)


@pytest.mark.parametrize("n,d,t,norm", [(1, 3, 1.0, True), (4, 5, 0.1, True),
                                        (6, 3, 0.5, False)])
def test_info_nce_numpy_and_simclr(n, d, t, norm):
  r = np.random.default_rng(n * d)
  hidden = r.normal(size=[2 * n, d])
  got = losses.info_nce_loss(hidden, t, hidden_norm=norm).numpy()
  np.testing.assert_allclose(got, np_info_nce(hidden, t, norm), rtol=1e-9)
  # SimCLR's objective is the sum of the two directions' means = 2 * ours.
  np.testing.assert_allclose(2 * got,
                             simclr_reference(hidden, t, norm).numpy(),
                             rtol=1e-9)


def test_info_nce_gradients():
  r = np.random.default_rng(31)
  hidden = tf.constant(r.normal(size=[6, 4]))
  for norm in (True, False):
    theoretical, numerical = tf.test.compute_gradient(
        lambda h: losses.info_nce_loss(h, 0.5, hidden_norm=norm), [hidden])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-5,
                               atol=1e-6)


def test_info_nce_huge_norms_finite():
  r = np.random.default_rng(32)
  hidden = tf.constant(1e4 * r.normal(size=[8, 4]), tf.float32)
  for norm in (True, False):
    with tf.GradientTape() as tape:
      tape.watch(hidden)
      loss = losses.info_nce_loss(hidden, 0.1, hidden_norm=norm)
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(tape.gradient(loss, hidden).numpy()))


def _mixed_reference(q, c, s, t, lq_c, lq_s, ids_c, ids_s):
  """numpy: row i over [in-batch; sampled] with logQ, other copies of the positive deleted."""
  ids = np.concatenate([ids_c, ids_s])
  cand = np.concatenate([c, s])
  log_q = np.concatenate([lq_c, lq_s])
  out = []
  for i in range(len(q)):
    keep = [j for j in range(len(ids)) if j == i or ids[j] != ids_c[i]]
    z = q[i] @ cand[keep].T / t - log_q[keep]
    pos = keep.index(i)
    out.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[pos])
  return np.mean(out)


def test_mixed_negatives_golden():
  # One query, its positive and one sampled negative; no corrections:
  # logits [1, 0] / 0.5 = [2, 0], loss = log(e^2 + 1) - 2 = log(1 + e^-2) = 0.126928.
  loss = losses.mixed_negatives_softmax_loss(
      [[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]], 0.5)
  np.testing.assert_allclose(float(loss), math.log(1 + math.exp(-2)), rtol=1e-6)


def test_mixed_negatives_numpy_with_hits_and_log_q():
  rng = np.random.RandomState(3)
  b, m, d = 5, 4, 3
  q, c, s = rng.normal(size=(b, d)), rng.normal(size=(b, d)), rng.normal(size=(m, d))
  ids_c = np.array([0, 1, 1, 2, 3])
  ids_s = np.array([1, 4, 0, 5])  # copies of positives 0 and 1 among the samples
  lq_c, lq_s = rng.normal(size=b), rng.normal(size=m)
  got = losses.mixed_negatives_softmax_loss(q, c, s, 0.3, lq_c, lq_s, ids_c, ids_s)
  np.testing.assert_allclose(float(got), _mixed_reference(q, c, s, 0.3, lq_c, lq_s, ids_c,
                                                          ids_s), rtol=1e-10)


def test_mixed_negatives_without_samples_is_the_in_batch_loss():
  rng = np.random.RandomState(4)
  q, c = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
  ids, lq = np.array([0, 1, 1, 2, 3, 0]), rng.normal(size=6)
  got = losses.mixed_negatives_softmax_loss(q, c, np.zeros([0, 3]), 0.2, lq, np.zeros([0]),
                                            ids, np.zeros([0], np.int64))
  want = losses.in_batch_softmax_loss(q, c, 0.2, lq, ids)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-12)


# ------------------------------------- in-batch softmax per item / per user


def _per_item_case(seed, b=12, n=7, d=4):
  """Queries [b, d], every item's embedding [n, d], positives with duplicates, Q [n]."""
  r = np.random.default_rng(seed)
  q = r.normal(size=[b, d]).astype(np.float32)
  c = r.normal(size=[n, d]).astype(np.float32)
  ids = r.integers(0, n, size=[b])
  prob = r.uniform(0.01, 0.5, size=[n]).astype(np.float32)
  return q, c, ids, prob


def test_per_item_golden():
  # Two queries, two items, positives [0, 1], T = 1: the logits are I (as in
  # test_in_batch_softmax_golden), each row log(e + 1) - 1 = 0.313262.
  eye = tf.eye(2)
  got = losses.in_batch_softmax_loss_per_item(eye, eye, tf.constant([0, 1], tf.int64), 1.0)
  np.testing.assert_allclose(float(got), 0.313262, rtol=1e-5)
  # Positives [0, 0]: item 1 is in no row's batch and item 0's second copy is an
  # accidental hit: each row has only its positive left, loss 0.
  got = losses.in_batch_softmax_loss_per_item(eye, eye, tf.constant([0, 0], tf.int64), 1.0)
  np.testing.assert_allclose(float(got), 0.0, atol=1e-6)


@pytest.mark.parametrize("seed,b,n", [(0, 12, 7), (1, 5, 9), (2, 1, 3)])
@pytest.mark.parametrize("log_q", [False, True])
def test_per_item_is_the_in_batch_softmax_with_hits_removed(seed, b, n, log_q):
  q, c, ids, prob = _per_item_case(seed, b, n)
  got = losses.in_batch_softmax_loss_per_item(q, c, tf.constant(ids, tf.int64), 0.3,
                                              prob if log_q else None)
  want = np_in_batch(q.astype(np.float64), c[ids].astype(np.float64), 0.3,
                     np.log(prob[ids]).astype(np.float64) if log_q else None, ids)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("seed,b,n", [(3, 12, 7), (4, 6, 10)])
@pytest.mark.parametrize("log_q", [False, True])
def test_per_user_is_the_in_batch_softmax_with_hits_removed(seed, b, n, log_q):
  q, c, ids, prob = _per_item_case(seed, b, n)
  # 4 distinct users; example i is user rows[i]: its query is user_emb[rows[i]].
  r = np.random.default_rng(seed + 100)
  user_emb = r.normal(size=[4, q.shape[1]]).astype(np.float32)
  rows = r.integers(0, 4, size=[b]).astype(np.int32)
  got = losses.in_batch_softmax_loss_per_user(
      user_emb, rows, c, tf.constant(ids, tf.int64), 0.3,
      np.log(prob) if log_q else None)
  want = np_in_batch(user_emb[rows].astype(np.float64), c[ids].astype(np.float64), 0.3,
                     np.log(prob[ids]).astype(np.float64) if log_q else None, ids)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_per_item_and_per_user_gradients_are_the_in_batch_softmax_gradients():
  q, c, ids, prob = _per_item_case(5, b=10, n=6)
  rows = np.array([0, 1, 2, 0, 1, 2, 3, 3, 0, 1], np.int32)
  user_emb = tf.constant(q[:4])
  all_items = tf.constant(c)
  ids_t = tf.constant(ids, tf.int64)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([user_emb, all_items])
    query = tf.gather(user_emb, rows)
    want = losses.in_batch_softmax_loss(query, tf.gather(all_items, ids_t), 0.3,
                                        np.log(prob[ids]), ids)
    per_item = losses.in_batch_softmax_loss_per_item(query, all_items, ids_t, 0.3, prob)
    per_user = losses.in_batch_softmax_loss_per_user(user_emb, rows, all_items, ids_t, 0.3,
                                                     np.log(prob))
  want_grads = tape.gradient(want, [user_emb, all_items])
  for got in (per_item, per_user):
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    for g, w in zip(tape.gradient(got, [user_emb, all_items]), want_grads):
      g, w = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy()
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
