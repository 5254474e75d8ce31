"""The fused word2vec step against tf.nn.nce_loss / tf.nn.sampled_softmax_loss and numpy.

`Word2Vec.head` re-implements the two tf.nn losses with hand-derived gradients and grouped
negatives (each group of `group_size` examples shares one draw of `num_sampled` ids). Here
every group is fed to the tf.nn op on its own, under a GradientTape, with the same sampled
ids and expected counts exp(log_q), and the per-example loss and all three gradients must
agree; then one SGD step must move every table by exactly -lr * that gradient.
"""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.data import pipeline
from tf_embeddings.losses import samplers as samplers_lib
from tf_embeddings.training.distribute import RowLayout
from w2v_reference import StepConfig, Word2Vec  # the library's, plus the example layout

V, DIM, BATCH, K = 12, 4, 6, 4

# Six examples; targets 5 and 2 each appear in a group's sampled ids (accidental hits),
# id 2 is a target twice (two examples of one group, so two hits on one column), id 8 is
# drawn twice (duplicates are normal: the samplers draw with replacement). A duplicated
# *hit* is tested on its own below: there tf.nn removes only one of the copies.
TARGETS = np.array([3, 5, 7, 2, 9, 2], np.int32)
SAMPLED = {
    3: np.array([[1, 5, 8, 8], [2, 10, 11, 6]], np.int32),  # 2 groups of 3 examples
    6: np.array([[5, 2, 8, 8]], np.int32),                  # 1 group of 6 examples
}


def make_model(model="skipgram", loss="nce", group_size=3, subtract_log_q=False,
               remove_hits=True, train_biases=False, sampler="uniform", steps=1,
               vocab=V, dim=DIM, batch=BATCH, k=K, window=2, counts=None, seed=0,
               layout="examples", row_update="sum"):
  # row_update "sum" by default: the tf.nn references below move each row by the sum of its
  # per-example updates; the "mean" rule is tested against them in its own tests.
  config = StepConfig(model=model, loss=loss, vocab_size=vocab, dim=dim, window=window,
                      batch_size=batch, steps_per_call=steps, num_sampled=k,
                      group_size=group_size, sampler=sampler, subtract_log_q=subtract_log_q,
                      remove_accidental_hits=remove_hits, train_biases=train_biases,
                      layout=layout, row_update=row_update)
  return Word2Vec(config, unigram_counts=counts, seed=seed)


def randomise(model, seed=0, scale=1.0):
  """Non-zero tables so that every gradient is non-trivial."""
  rng = np.random.default_rng(seed)
  c = model.config
  model.input_embeddings.assign(scale * rng.normal(0, 0.5, [c.vocab_size, c.dim]))
  model.output_embeddings.assign(scale * rng.normal(0, 0.7, [c.vocab_size, c.dim]))
  model.output_biases.assign(rng.normal(0, 0.5, [c.vocab_size]))


def log_q(seed, group_size, on):
  """Fixed log expected counts (zeros = expected count 1 = no logQ correction)."""
  groups = BATCH // group_size
  if not on:
    return np.zeros(BATCH, np.float32), np.zeros([groups, K], np.float32)
  rng = np.random.default_rng(seed)
  return (np.log(rng.uniform(0.05, 3.0, BATCH)).astype(np.float32),
          np.log(rng.uniform(0.05, 3.0, [groups, K])).astype(np.float32))


def tf_nn_group(model, hidden, targets, sampled, true_log_q, sampled_log_q):
  """One group through the tf.nn op under a GradientTape.

  Args: hidden [n, d], targets [n], sampled [k], true_log_q [n], sampled_log_q [k].

  Returns (loss [n], d_hidden [n, d], d_weights [V, d], d_biases [V]) as numpy, the
  gradients being those of the sum of the per-example losses.
  """
  c = model.config
  weights = tf.constant(model.output_embeddings.numpy())
  biases = tf.constant(model.output_biases.numpy() if c.train_biases
                       else np.zeros(c.vocab_size, np.float32))
  fn = tf.nn.nce_loss if c.loss == "nce" else tf.nn.sampled_softmax_loss
  x = tf.constant(hidden, tf.float32)
  sampled_values = (
      tf.constant(sampled, tf.int64),
      tf.constant(np.exp(true_log_q)[:, None], tf.float32),
      tf.constant(np.exp(sampled_log_q), tf.float32))
  with tf.GradientTape() as tape:
    tape.watch([weights, biases, x])
    loss = fn(weights=weights, biases=biases,
              labels=tf.constant(np.asarray(targets)[:, None], tf.int64), inputs=x,
              num_sampled=len(sampled), num_classes=c.vocab_size,
              sampled_values=sampled_values,
              remove_accidental_hits=c.remove_accidental_hits)
    total = tf.reduce_sum(loss)
  gw, gb, gx = tape.gradient(total, [weights, biases, x])
  return (loss.numpy(), gx.numpy(), tf.convert_to_tensor(gw).numpy(),
          tf.convert_to_tensor(gb).numpy())


def reference(model, hidden, targets, sampled, true_log_q, sampled_log_q):
  """tf.nn loss per example and dense gradients, one tf.nn call per group (`tf_nn_group`).

  Returns (loss [B], d_hidden [B, d], d_weights [V, d], d_biases [V]) as numpy.
  """
  c = model.config
  groups, g = sampled.shape[0], c.batch_size // sampled.shape[0]
  losses, d_hidden = [], []
  d_w, d_b = np.zeros([c.vocab_size, c.dim]), np.zeros([c.vocab_size])
  for n in range(groups):
    rows = slice(n * g, (n + 1) * g)
    loss, gx, gw, gb = tf_nn_group(model, hidden[rows], targets[rows], sampled[n],
                                   true_log_q[rows], sampled_log_q[n])
    losses.append(loss)
    d_hidden.append(gx)
    d_w += gw
    d_b += gb
  return np.concatenate(losses), np.concatenate(d_hidden), d_w, d_b


def ours(model, hidden, targets, sampled, true_log_q, sampled_log_q):
  """`head` with its sparse output gradients scatter-summed into dense tables."""
  c = model.config
  loss, d_hidden, out_ids, d_out, d_bias = model.head(
      tf.constant(hidden, tf.float32), tf.constant(targets), tf.constant(sampled),
      tf.constant(true_log_q), tf.constant(sampled_log_q))
  assert out_ids.shape == (c.batch_size + sampled.size,)
  d_w = tf.math.unsorted_segment_sum(d_out, out_ids, c.vocab_size).numpy()
  d_b = tf.math.unsorted_segment_sum(d_bias, out_ids, c.vocab_size).numpy()
  return loss.numpy(), d_hidden.numpy(), d_w, d_b


def assert_close(a, b, rtol=2e-5, atol=2e-6, what=""):
  np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


# ---- a case worked by hand -------------------------------------------------------------

# V=4, d=2, one example in one group, k=2; output rows w1=[1,1], w2=[2,0]; h=[1, 0.5];
# target 2, sampled [1, 2] (2 is an accidental hit), log Q = 0, no biases.
#   true logit w2.h = 2, sampled logits w1.h = 1.5 and w2.h = 2.
# NCE, hit removed:  softplus(-2) + softplus(1.5) = 0.126928 + 1.701413 = 1.828341
#   d_hidden = (sigmoid(2) - 1) w2 + sigmoid(1.5) w1 = -0.119203 [2,0] + 0.817574 [1,1]
#            = [0.579169, 0.817574]
#   d_w2 = (sigmoid(2) - 1) h = [-0.119203, -0.059601] (the hit column adds nothing),
#   d_w1 = sigmoid(1.5) h = [0.817574, 0.408787]
# NCE, hit kept: 1.828341 + softplus(2) (2.126928) = 3.955269
# Sampled softmax, hit removed: log(e^2 + e^1.5) - 2 = log(1 + e^-0.5) = 0.474077
#   p_true = 0.622459, p_1 = 0.377541; d_hidden = (p_true - 1) w2 + p_1 w1
#            = [-0.377541, 0.377541]
# Sampled softmax, hit kept: log(2 + e^-0.5) = 0.958020
HAND = {
    ("nce", True): (1.828341, [0.579169, 0.817574]),
    ("nce", False): (3.955269, None),
    ("sampled_softmax", True): (0.474077, [-0.377541, 0.377541]),
    ("sampled_softmax", False): (0.958020, None),
}


@pytest.mark.parametrize("loss,remove_hits", list(HAND))
def test_head_hand_golden(loss, remove_hits):
  m = make_model(loss=loss, remove_hits=remove_hits, group_size=1, vocab=4, dim=2,
                 batch=1, k=2)
  m.output_embeddings.assign([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
  out = m.head(tf.constant([[1.0, 0.5]]), tf.constant([2]), tf.constant([[1, 2]]),
               tf.zeros([1]), tf.zeros([1, 2]))
  loss_value, d_hidden, out_ids, d_out, _ = [t.numpy() for t in out]
  want_loss, want_dh = HAND[(loss, remove_hits)]
  assert_close(loss_value, [want_loss], atol=1e-6)
  if want_dh is not None:
    assert_close(d_hidden[0], want_dh, atol=1e-6)
  np.testing.assert_array_equal(out_ids, [2, 1, 2])
  if loss == "nce" and remove_hits:
    assert_close(d_out, [[-0.119203, -0.059601], [0.817574, 0.408787], [0.0, 0.0]],
                 atol=1e-6)


# ---- head == tf.nn, every combination ---------------------------------------------------

COMBOS = list(itertools.product(["nce", "sampled_softmax"], [3, 6], [True, False],
                                [True, False], [False, True]))


@pytest.mark.parametrize("loss,group_size,subtract_log_q,remove_hits,train_biases", COMBOS)
def test_head_matches_tf_nn(loss, group_size, subtract_log_q, remove_hits, train_biases):
  m = make_model(loss=loss, group_size=group_size, subtract_log_q=subtract_log_q,
                 remove_hits=remove_hits, train_biases=train_biases)
  randomise(m, seed=1)
  rng = np.random.default_rng(2)
  hidden = rng.normal(0, 0.8, [BATCH, DIM]).astype(np.float32)
  sampled = SAMPLED[group_size]
  tlq, slq = log_q(3, group_size, subtract_log_q)
  want = reference(m, hidden, TARGETS, sampled, tlq, slq)
  got = ours(m, hidden, TARGETS, sampled, tlq, slq)
  for name, a, b in zip(["loss", "d_hidden", "d_weights", "d_biases"], got, want):
    assert_close(a, b, what=name)
  # Non-trivial: every gradient is non-zero, and the hits matter for this data.
  assert np.all(np.abs(want[1]).sum(1) > 1e-3)
  assert np.abs(want[2][sampled.ravel()]).sum() > 1e-3
  if not train_biases:
    # The biases are non-zero but do not enter the logits: tf.nn fed zeros must agree.
    assert np.any(m.output_biases.numpy() != 0)
  other = make_model(loss=loss, group_size=group_size, remove_hits=not remove_hits,
                     train_biases=train_biases)
  randomise(other, seed=1)
  flipped = ours(other, hidden, TARGETS, sampled, tlq, slq)
  assert not np.allclose(flipped[0], got[0], rtol=1e-4)


def test_removed_hit_contributes_nothing():
  # tf.nn adds -FLT_MAX to a hit's logit: softplus -> 0 and sigmoid -> 0, which is the
  # mask of `head`. Moving the hit's output row (id 5 = target of example 1) changes
  # the loss of example 1 only through its true column.
  m = make_model(loss="nce")
  randomise(m, seed=4)
  hidden = np.random.default_rng(5).normal(0, 1, [BATCH, DIM]).astype(np.float32)
  sampled = SAMPLED[3]
  zeros = log_q(0, 3, False)
  loss, _, out_ids, d_out, _ = [t.numpy() for t in m.head(
      tf.constant(hidden), tf.constant(TARGETS), tf.constant(sampled),
      tf.constant(zeros[0]), tf.constant(zeros[1]))]
  # The output gradient row of the sampled 5 (position BATCH + 1) comes only from the two
  # other examples of group 0 (examples 0 and 2).
  sig = lambda x: 1 / (1 + np.exp(-x))
  w = m.output_embeddings.numpy().astype(np.float64)
  want = sig(hidden[0] @ w[5]) * hidden[0] + sig(hidden[2] @ w[5]) * hidden[2]
  assert_close(d_out[BATCH + 1], want)
  # Example 1's loss: its true column plus the non-hit columns 1, 8 and 8.
  sp = lambda x: np.logaddexp(0, x)
  want_loss = sp(-hidden[1] @ w[5]) + sp(hidden[1] @ w[1]) + 2 * sp(hidden[1] @ w[8])
  assert_close(loss[1], want_loss)


@pytest.mark.parametrize("loss", ["nce", "sampled_softmax"])
def test_duplicated_hit_removed_every_time(loss):
  # Group 0 draws the target of example 1 (id 5) twice. `head` removes both copies, as
  # "a sampled class equal to the target" says. tf.nn's compute_accidental_hits maps each
  # sampled id to ONE position (the last), so tf.nn.nce_loss / sampled_softmax_loss keep
  # the first copy in the logits: pinned here so that the difference stays known.
  m = make_model(loss=loss)
  randomise(m, seed=1)
  hidden = np.random.default_rng(2).normal(0, 0.8, [BATCH, DIM]).astype(np.float32)
  sampled = np.array([[1, 5, 8, 5], [2, 10, 11, 6]], np.int32)
  zeros = log_q(0, 3, False)
  got = ours(m, hidden, TARGETS, sampled, *zeros)[0]
  want = reference(m, hidden, TARGETS, sampled, *zeros)[0]
  w, h = m.output_embeddings.numpy().astype(np.float64), hidden[1].astype(np.float64)
  true, col1, col8 = h @ w[5], h @ w[1], h @ w[8]
  if loss == "nce":
    sp = lambda x: np.logaddexp(0, x)
    ours_1 = sp(-true) + sp(col1) + sp(col8)   # both copies of 5 removed
    tf_1 = ours_1 + sp(true)                   # tf.nn: the first copy stays
  else:
    ours_1 = np.logaddexp.reduce([true, col1, col8]) - true
    tf_1 = np.logaddexp.reduce([true, col1, true, col8]) - true
  assert_close(got[1], ours_1)
  assert_close(want[1], tf_1)
  # Every other example has no duplicated hit: identical to tf.nn.
  assert_close(np.delete(got, 1), np.delete(want, 1))


@pytest.mark.parametrize("loss", ["nce", "sampled_softmax"])
@pytest.mark.parametrize("remove_hits", [True, False])
def test_head_extreme_logits(loss, remove_hits):
  # Tables scaled by 100: logits of the order of +-1e4 (sigmoid and softmax saturate).
  m = make_model(loss=loss, remove_hits=remove_hits, train_biases=True,
                 subtract_log_q=True)
  randomise(m, seed=6, scale=100.0)
  hidden = (100 * np.random.default_rng(7).normal(0, 1, [BATCH, DIM])).astype(np.float32)
  sampled = SAMPLED[3]
  tlq, slq = log_q(8, 3, True)
  got = ours(m, hidden, TARGETS, sampled, tlq, slq)
  want = reference(m, hidden, TARGETS, sampled, tlq, slq)
  assert np.abs(got[0]).max() > 1e3  # really extreme
  # float32 spacing at 1e4 is ~1e-3, so logits (hence softmax probabilities) carry errors
  # of that order in both implementations; `head` adds log-sum-exp back to the 1e4 scale
  # before exp(), tf.nn does not, so a gradient may differ by ~1e-3 * |row| (rows ~100).
  for name, a, b in zip(["loss", "d_hidden", "d_weights", "d_biases"], got, want):
    assert np.all(np.isfinite(a)), name
    finite = np.isfinite(b)
    scale = max(1.0, np.abs(b[finite]).max())
    assert_close(a[finite], b[finite], rtol=1e-4, atol=5e-4 * scale, what=name)


# ---- hidden ----------------------------------------------------------------------------


def test_hidden_skipgram_and_cbow_mean():
  m = make_model(model="cbow", window=2)
  randomise(m, seed=9)
  table = m.input_embeddings.numpy()
  # Padded slots hold garbage ids (11) on purpose: only the first `length` count.
  inputs = np.array([[1, 11, 11, 11], [2, 3, 11, 11], [4, 4, 5, 11], [6, 7, 8, 9],
                     [10, 11, 11, 11], [3, 1, 11, 11]], np.int32)
  lengths = np.array([1, 2, 3, 4, 1, 2], np.int32)
  got = m.hidden(tf.constant(inputs), tf.constant(lengths)).numpy()
  want = np.stack([table[r[:n]].mean(0) for r, n in zip(inputs, lengths)])
  assert_close(got, want)
  s = make_model(model="skipgram")
  randomise(s, seed=9)
  assert_close(s.hidden(tf.constant([4, 4, 0])).numpy(), table[[4, 4, 0]])


# ---- one SGD step == -lr * tf.nn gradient -----------------------------------------------

SG_INPUTS = np.array([3, 3, 1, 4, 1, 6], np.int32)          # duplicate centres 3 and 1
CBOW_INPUTS = np.array([[1, 11, 11, 11], [2, 3, 11, 11], [4, 4, 8, 11], [6, 7, 8, 9],
                        [10, 11, 11, 11], [3, 1, 11, 11]], np.int32)
CBOW_LENGTHS = np.array([1, 2, 3, 4, 1, 2], np.int32)


def expected_step(m, inputs, lengths, targets, sampled, tlq, slq, lr):
  """numpy tables after one SGD step built from the tf.nn reference gradients."""
  c = m.config
  table_in = m.input_embeddings.numpy().astype(np.float64)
  if c.model == "skipgram":
    hidden = table_in[inputs]
  else:
    hidden = np.stack([table_in[r[:n]].mean(0) for r, n in zip(inputs, lengths)])
  loss, d_h, d_w, d_b = reference(m, hidden.astype(np.float32), targets, sampled, tlq, slq)
  new_in = table_in.copy()
  if c.model == "skipgram":
    np.add.at(new_in, inputs, -lr * d_h)               # duplicates sum
  else:
    for b, (row, n) in enumerate(zip(inputs, lengths)):
      for j in row[:n]:
        new_in[j] -= lr * d_h[b]                       # undivided, as word2vec.c
  new_out = m.output_embeddings.numpy() - lr * d_w
  new_b = m.output_biases.numpy() - (lr * d_b if c.train_biases else 0.0)
  return loss.mean(), new_in, new_out, new_b


def set_tables(m, tables):
  m.input_embeddings.assign(tables[0])
  m.output_embeddings.assign(tables[1])
  m.output_biases.assign(tables[2])


@pytest.mark.parametrize("model,loss,train_biases,compiled", [
    ("skipgram", "nce", False, False),
    ("skipgram", "sampled_softmax", True, False),
    ("cbow", "sampled_softmax", False, False),
    ("cbow", "nce", True, False),
    ("skipgram", "nce", True, True),
    ("cbow", "sampled_softmax", True, True),
])
def test_sgd_steps_move_tables_by_minus_lr_gradient(model, loss, train_biases, compiled):
  # Two minibatches in one block (the second sees the first's update), lr 0.3 then 0.1.
  m = make_model(model=model, loss=loss, train_biases=train_biases, subtract_log_q=True,
                 steps=2)
  randomise(m, seed=10)
  lrs = [0.3, 0.1]
  if model == "skipgram":
    inputs = np.stack([SG_INPUTS, SG_INPUTS[::-1]])
    lengths = np.zeros([2, BATCH], np.int32)
  else:
    inputs = np.stack([CBOW_INPUTS, CBOW_INPUTS[::-1]])
    lengths = np.stack([CBOW_LENGTHS, CBOW_LENGTHS[::-1]])
  targets = np.stack([TARGETS, np.roll(TARGETS, 1)])
  sampled = np.stack([SAMPLED[3], SAMPLED[3][::-1]])
  qs = [log_q(11, 3, True), log_q(12, 3, True)]
  tlq = np.stack([q[0] for q in qs])
  slq = np.stack([q[1] for q in qs])

  before = [v.numpy().copy() for v in (m.input_embeddings, m.output_embeddings,
                                       m.output_biases)]
  losses = []
  for i in range(2):
    loss_i, *tables = expected_step(m, inputs[i], lengths[i], targets[i], sampled[i],
                                    tlq[i], slq[i], lrs[i])
    losses.append(loss_i)
    set_tables(m, tables)
  want = [v.numpy() for v in (m.input_embeddings, m.output_embeddings, m.output_biases)]
  set_tables(m, before)

  fn = m._compiled_block if compiled else m._block
  mean_loss = fn(tf.constant(inputs), tf.constant(lengths), tf.constant(targets),
                 tf.constant(sampled), tf.constant(tlq), tf.constant(slq),
                 tf.constant(lrs, tf.float32))
  assert_close(float(mean_loss), np.mean(losses), rtol=1e-5)
  got = [v.numpy() for v in (m.input_embeddings, m.output_embeddings, m.output_biases)]
  for name, a, b in zip(["input", "output", "bias"], got, want):
    assert_close(a, b, rtol=1e-5, atol=1e-6, what=name)
  # Untouched rows stay bit-identical: UNK (id 0) and, for CBOW, the padding id 11.
  np.testing.assert_array_equal(got[0][0], before[0][0])
  if model == "cbow":
    np.testing.assert_array_equal(got[0][11], before[0][11])
  if not train_biases:
    np.testing.assert_array_equal(got[2], before[2])
  assert np.abs(got[0] - before[0]).max() > 1e-3 and np.abs(got[1] - before[1]).max() > 1e-3


# ---- sample ----------------------------------------------------------------------------

COUNTS = np.array([5000, 400, 300, 200, 150, 100, 80, 60, 40, 20, 10, 5])  # UNK first


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform", "unigram"])
@pytest.mark.parametrize("subtract_log_q", [True, False])
def test_sample_shapes_and_log_q(sampler, subtract_log_q):
  m = make_model(sampler=sampler, subtract_log_q=subtract_log_q, steps=3,
                 counts=COUNTS if sampler == "unigram" else None, seed=13)
  targets = np.random.default_rng(14).integers(1, V, size=[3, BATCH]).astype(np.int32)
  sampled, true_log_q, sampled_log_q = [t.numpy() for t in m.sample(tf.constant(targets))]
  assert sampled.shape == (3, 2, K) and sampled.dtype == np.int32
  assert true_log_q.shape == (3, BATCH) and sampled_log_q.shape == (3, 2, K)
  assert np.all((sampled >= 0) & (sampled < V))
  if not subtract_log_q:
    assert np.all(true_log_q == 0) and np.all(sampled_log_q == 0)
    return
  # Each group draws K ids (with replacement): expected count K * P(id). For the unigram
  # sampler UNK's count is zeroed (it is never a target nor a negative).
  counts = COUNTS.astype(np.float64).copy()
  counts[0] = 0
  p = samplers_lib.sampler_probabilities(sampler, V, unigrams=counts)
  assert_close(true_log_q, np.log(K * p[targets]), rtol=1e-5, atol=1e-5)
  assert_close(sampled_log_q, np.log(K * p[sampled]), rtol=1e-5, atol=1e-5)


def test_unigram_sampler_never_draws_unk():
  # UNK has half of the raw counts: were its count kept, ~40% of draws would be 0.
  m = make_model(sampler="unigram", counts=COUNTS, steps=25, seed=15)
  targets = tf.ones([25, BATCH], tf.int32)
  sampled = m.sample(targets)[0].numpy()
  assert sampled.size == 200 and not np.any(sampled == 0)
  assert len(np.unique(sampled)) > 5


@pytest.mark.parametrize("sampler", ["log_uniform", "uniform", "unigram"])
def test_in_graph_draws_follow_the_sampler_distribution(sampler):
  # 13 ids (not a power of two) and, for unigram, a zero-weight UNK: 100 blocks of
  # 40 x 2 x 6 draws, each id's frequency within 5 sigma of P(id).
  vocab, steps, k = 13, 40, 6
  counts = np.concatenate([COUNTS, [3]])
  m = make_model(sampler=sampler, steps=steps, vocab=vocab, k=k, seed=21,
                 counts=counts if sampler == "unigram" else None)
  targets = tf.ones([steps, BATCH], tf.int32)
  draws = np.concatenate([m.sample(targets, step)[0].numpy().ravel() for step in range(100)])
  weights = counts.astype(np.float64).copy()
  weights[0] = 0
  p = samplers_lib.sampler_probabilities(sampler, vocab, unigrams=weights)
  n = draws.size
  freq = np.bincount(draws, minlength=vocab)
  assert freq.shape == (vocab,)
  sigma = np.sqrt(n * p * (1 - p))
  assert np.all(np.abs(freq - n * p) <= 5 * sigma + 1e-9), (freq, n * p)
  if sampler == "unigram":
    assert freq[0] == 0


def test_in_graph_draws_depend_on_seed_and_step_only():
  targets = tf.ones([4, BATCH], tf.int32)
  a = make_model(sampler="uniform", steps=4, seed=5)
  b = make_model(sampler="uniform", steps=4, seed=5)
  c = make_model(sampler="uniform", steps=4, seed=6)
  np.testing.assert_array_equal(a.sample(targets, 7)[0], b.sample(targets, 7)[0])
  assert np.any(a.sample(targets, 7)[0].numpy() != a.sample(targets, 8)[0].numpy())
  assert np.any(a.sample(targets, 7)[0].numpy() != c.sample(targets, 7)[0].numpy())


@pytest.mark.parametrize("model,loss", [("skipgram", "nce"), ("cbow", "sampled_softmax")])
def test_train_block_uses_the_draws_of_sample(model, loss):
  # train_block (sampling inside the compiled block) == _compiled_block fed sample()'s draws.
  steps = 3
  kw = dict(model=model, loss=loss, sampler="unigram", counts=COUNTS, steps=steps,
            subtract_log_q=True, train_biases=True, seed=9)
  a, b = make_model(**kw), make_model(**kw)
  randomise(a, 1)
  randomise(b, 1)
  rng = np.random.default_rng(3)
  if model == "skipgram":
    inputs = rng.integers(1, V, [steps, BATCH]).astype(np.int32)
  else:
    inputs = rng.integers(1, V, [steps, BATCH, 4]).astype(np.int32)
  lengths = rng.integers(1, 5, [steps, BATCH]).astype(np.int32)
  targets = tf.constant(rng.integers(1, V, [steps, BATCH]).astype(np.int32))
  lrs = tf.constant([0.1, 0.05, 0.02])
  loss_a = a.train_block(tf.constant(inputs), tf.constant(lengths), targets, lrs, 42)
  loss_b = b._compiled_block(tf.constant(inputs), tf.constant(lengths), targets,
                             *b.sample(targets, 42), lrs)
  assert_close(float(loss_a), float(loss_b), rtol=1e-5)
  for x, y in zip((a.input_embeddings, a.output_embeddings, a.output_biases),
                  (b.input_embeddings, b.output_embeddings, b.output_biases)):
    assert_close(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


def test_learned_unigram_sampler_runs():
  m = make_model(sampler="learned_unigram", subtract_log_q=True, steps=2, seed=16)
  targets = tf.constant(np.full([2, BATCH], 4, np.int32))
  for _ in range(3):
    sampled, true_log_q, sampled_log_q = [t.numpy() for t in m.sample(targets)]
  assert sampled.shape == (2, 2, K) and np.all((sampled >= 0) & (sampled < V))
  assert np.all(np.isfinite(true_log_q)) and np.all(np.isfinite(sampled_log_q))


def test_learned_unigram_state_is_not_checkpointed(tmp_path):
  """Documented difference (README, samplers): the op's learned counts live in its kernel, so
  a run resumed from a checkpoint starts them again from scratch; its draws and log Q differ
  from those of the uninterrupted run. The fixed samplers have no such state."""
  from tf_embeddings.word2vec import model as model_lib  # pylint: disable=import-outside-toplevel
  kwargs = dict(sampler="learned_unigram", subtract_log_q=True, steps=2, seed=16)
  targets = tf.constant(np.full([2, BATCH], 4, np.int32))
  fresh_log_q = make_model(**kwargs).sample(targets)[1].numpy()
  trained = make_model(**kwargs)
  for _ in range(20):
    trained.sample(targets)
  learned_log_q = trained.sample(targets)[1].numpy()
  # Having seen id 4 only, the sampler expects it far more often than at the start.
  assert learned_log_q.mean() > fresh_log_q.mean() + 1.0
  ckpt, _ = model_lib.make_checkpoint(trained)
  path = ckpt.save(str(tmp_path / "ckpt"))
  resumed = make_model(**kwargs)
  ckpt_b, _ = model_lib.make_checkpoint(resumed)
  ckpt_b.restore(path).assert_existing_objects_matched()
  np.testing.assert_allclose(resumed.sample(targets)[1].numpy(), fresh_log_q)
  names = [name for name, _ in tf.train.list_variables(path)]
  assert not [n for n in names if "sampler" in n.lower() or "unigram" in n.lower()], names


def test_config_errors_and_initialisation():
  with pytest.raises(ValueError, match="group_size"):
    make_model(group_size=4)
  with pytest.raises(ValueError, match="unigram"):
    make_model(sampler="unigram")
  m = make_model(seed=3)
  table = m.input_embeddings.numpy()
  assert np.all(np.abs(table) <= 0.5 / DIM) and np.std(table) > 0.02
  assert not np.any(m.output_embeddings.numpy()) and not np.any(m.output_biases.numpy())
  np.testing.assert_array_equal(make_model(seed=3).input_embeddings.numpy(), table)


# ---- training sanity -------------------------------------------------------------------

TOPIC_A, TOPIC_B = np.arange(1, 7), np.arange(7, 13)


def planted_examples(model, window, seed):
  """Segments of 10 words drawn from one topic; windows never cross a segment."""
  rng = np.random.default_rng(seed)
  parts = []
  for s in range(300):
    ids = rng.choice(TOPIC_A if s % 2 else TOPIC_B, size=10).astype(np.int32)
    if model == "skipgram":
      parts.append(pipeline.skipgram_pairs(ids, window, rng) + (None,))
    else:
      contexts, lengths, centres = pipeline.cbow_examples(ids, window, rng)
      parts.append((contexts, centres, lengths))
  inputs = np.concatenate([p[0] for p in parts])
  targets = np.concatenate([p[1] for p in parts])
  lengths = (np.zeros(targets.shape[0], np.int32) if model == "skipgram"
             else np.concatenate([p[2] for p in parts]))
  perm = rng.permutation(targets.shape[0])
  return inputs[perm], lengths[perm], targets[perm]


@pytest.mark.parametrize("model,loss,sampler", [("skipgram", "nce", "unigram"),
                                                ("cbow", "sampled_softmax", "log_uniform")])
def test_training_separates_planted_topics(model, loss, sampler):
  batch, steps, window = 32, 50, 2
  config = StepConfig(model=model, loss=loss, vocab_size=13, dim=8, window=window,
                      batch_size=batch, steps_per_call=steps, num_sampled=4, group_size=8,
                      sampler=sampler, subtract_log_q=(loss == "sampled_softmax"))
  counts = np.concatenate([[0], np.full(12, 100)])
  m = Word2Vec(config, unigram_counts=counts, seed=17)
  inputs, lengths, targets = planted_examples(model, window, seed=18)
  per_block = batch * steps
  losses = []
  for b in range(6):  # 300 minibatches
    s = slice((b * per_block) % (targets.shape[0] - per_block), None)
    take = lambda a: a[s][:per_block].reshape((steps, batch) + a.shape[1:])
    losses.append(float(m.train_block(tf.constant(take(inputs)), tf.constant(take(lengths)),
                                      tf.constant(take(targets)),
                                      tf.fill([steps], 0.05))))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  e = m.input_embeddings.numpy()[1:]
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  cos = e @ e.T
  topic = np.arange(12) < 6
  same = topic[:, None] == topic[None, :]
  off_diag = ~np.eye(12, dtype=bool)
  within, across = cos[same & off_diag].mean(), cos[~same].mean()
  assert within > across + 0.5, (within, across)


def window_examples(ids, reduced, window):
  """The padded CBOW examples of a text window: (contexts [B, 2w], lengths [B])."""
  batch = reduced.shape[0]
  contexts = np.zeros([batch, 2 * window], np.int32)
  lengths = np.zeros(batch, np.int32)
  for k in range(batch):
    for o in [o for o in range(-window, window + 1) if o]:
      word = ids[window + k + o]
      if abs(o) <= reduced[k] and word != 0:
        contexts[k, lengths[k]] = word
        lengths[k] += 1
  return contexts, lengths


@pytest.mark.parametrize("runs", [1, 2])
@pytest.mark.parametrize("loss", ["nce", "sampled_softmax"])
def test_cbow_window_step_equals_the_example_step_in_strided_groups(loss, runs):
  # A block given as runs of text trains exactly like the same examples given as padded
  # contexts, with example k * G + j in group j. Zeros (no word) in some halos.
  steps, window, groups = 2, 2, BATCH // 3
  length = BATCH // runs
  kw = dict(model="cbow", loss=loss, window=window, steps=steps, subtract_log_q=True,
            train_biases=True, remove_hits=True, seed=4)
  a, b = make_model(**kw), make_model(layout="runs", **kw)
  randomise(a, 2)
  randomise(b, 2)
  rng = np.random.default_rng(8)
  text = rng.integers(1, V, [steps, runs, length + 2 * window]).astype(np.int32)
  text[0, 0, :2] = 0
  text[1, -1, -1] = 0
  reduced = rng.integers(1, window + 1, [steps, BATCH]).astype(np.int32)
  targets = text[:, :, window:window + length].reshape(steps, BATCH)
  sampled = np.stack([SAMPLED[3], SAMPLED[3][::-1]])
  tlq = np.stack([log_q(11, 3, True)[0], log_q(12, 3, True)[0]])
  slq = np.stack([log_q(11, 3, True)[1], log_q(12, 3, True)[1]])
  lrs = tf.constant([0.3, 0.1])
  loss_b = b._compiled_block(tf.constant(text.reshape(steps, -1)), tf.constant(reduced),
                             tf.constant(targets), tf.constant(sampled), tf.constant(tlq),
                             tf.constant(slq), lrs)
  # Example order of the groups: position j * g + k holds example k * G + j.
  g = BATCH // groups
  order = np.array([k * groups + j for j in range(groups) for k in range(g)])
  contexts, lengths = [], []
  for i in range(steps):
    parts = [window_examples(text[i, r], reduced[i].reshape(runs, length)[r], window)
             for r in range(runs)]
    contexts.append(np.concatenate([p[0] for p in parts])[order])
    lengths.append(np.concatenate([p[1] for p in parts])[order])
  contexts, lengths = np.stack(contexts), np.stack(lengths)
  assert np.all(lengths > 0)
  loss_a = a._compiled_block(tf.constant(contexts), tf.constant(lengths),
                             tf.constant(targets[:, order]), tf.constant(sampled),
                             tf.constant(tlq[:, order]), tf.constant(slq), lrs)
  assert_close(float(loss_b), float(loss_a), rtol=1e-5)
  for x, y in zip((a.input_embeddings, a.output_embeddings, a.output_biases),
                  (b.input_embeddings, b.output_embeddings, b.output_biases)):
    assert_close(y.numpy(), x.numpy(), rtol=1e-5, atol=1e-6)


def test_cbow_window_step_ignores_empty_positions():
  # Centres that are 0 (no word), or whose every context is 0, change nothing.
  m = make_model(model="cbow", loss="nce", window=2, steps=1, seed=4, layout="runs")
  randomise(m, 3)
  before = [v.numpy().copy() for v in (m.input_embeddings, m.output_embeddings)]
  ids = np.zeros([1, BATCH + 4], np.int32)
  ids[0, 4] = 5  # a lone word: centre 2, no context within the window
  reduced = np.full([1, BATCH], 2, np.int32)
  loss = m._compiled_block(tf.constant(ids), tf.constant(reduced),
                           tf.constant(ids[:, 2:2 + BATCH]), tf.constant(SAMPLED[3][None]),
                           tf.zeros([1, BATCH]), tf.zeros([1, 2, K]), tf.constant([0.5]))
  assert float(loss) == 0.0
  for x, y in zip(before, (m.input_embeddings, m.output_embeddings)):
    np.testing.assert_array_equal(x, y.numpy())


def skipgram_runs_reference(m, text, reduced, sampled, tlq, slq, lr):
  """One skip-gram minibatch of runs, pair by pair through tf.nn (`tf_nn_group`).

  Centre i (run by run) is in group i mod G; its pair at offset o (the o-th of -w..-1,
  1..w) uses row j * 2w + o of `sampled`. A pair exists when |offset| <= reduced[i] and
  neither word is 0. Returns (mean loss over pairs, new tables); sets nothing.
  """
  c = m.config
  w, groups = c.window, c.num_groups
  runs = text.shape[0]
  length = c.batch_size // runs
  offsets = [o for o in range(-w, w + 1) if o]
  table_in = m.input_embeddings.numpy().astype(np.float64)
  new_in = table_in.copy()
  new_out = m.output_embeddings.numpy().astype(np.float64)
  new_b = m.output_biases.numpy().astype(np.float64)
  losses = []
  for j in range(groups):
    for n, o in enumerate(offsets):
      centres, contexts, rows = [], [], []
      for i in range(j, c.batch_size, groups):
        r, l = divmod(i, length)
        centre, context = text[r, w + l], text[r, w + l + o]
        if abs(o) <= reduced[i] and centre and context:
          centres.append(centre)
          contexts.append(context)
          rows.append(i)
      if not rows:
        continue
      loss, d_h, d_w, d_b = tf_nn_group(
          m, table_in[centres].astype(np.float32), contexts, sampled[j * 2 * w + n],
          tlq[rows, n], slq[j * 2 * w + n])
      losses.append(loss)
      np.add.at(new_in, centres, -lr * d_h)
      new_out -= lr * d_w
      if c.train_biases:
        new_b -= lr * d_b
  return np.concatenate(losses).mean(), (new_in, new_out, new_b)


@pytest.mark.parametrize("runs,max_window", [(1, 2), (2, 2), (2, 1)])
@pytest.mark.parametrize("loss,biases,hits", [("nce", False, True),
                                              ("sampled_softmax", True, True),
                                              ("nce", True, False)])
def test_skipgram_window_step_equals_tf_nn_pair_by_pair(loss, biases, hits, runs,
                                                         max_window):
  # Two minibatches of runs (the second sees the first's update) against tf.nn.nce_loss /
  # sampled_softmax_loss applied to each group of pairs; zeros (no word) in the text,
  # accidental hits and repeated ids included. max_window 1 < window: the step computes
  # only the slots at distance 1 (and must use their columns of the draws).
  steps, window = 2, 2
  m = make_model(model="skipgram", loss=loss, window=window, steps=steps, subtract_log_q=True,
                 train_biases=biases, remove_hits=hits, seed=4, layout="runs")
  randomise(m, 2)
  c = m.config
  length = BATCH // runs
  rng = np.random.default_rng(8)
  text = rng.integers(1, 7, [steps, runs, length + 2 * window]).astype(np.int32)
  text[0, 0, :3] = 0       # a missing centre and missing contexts
  text[1, -1, -1] = 0
  reduced = rng.integers(1, max_window + 1, [steps, BATCH]).astype(np.int32)
  centres = text[:, :, window:window + length].reshape(steps, BATCH)
  contexts = m.slot_contexts(tf.constant(text.reshape(steps, -1))).numpy()
  # Distinct ids within a draw (tf.nn removes only one copy of a repeated hit, we remove
  # all: test_duplicated_hit_removed_every_time), hits are frequent with 6 words.
  sampled = np.stack([[rng.permutation(np.arange(1, 7))[:K]
                       for _ in range(c.negative_groups)] for _ in range(steps)])
  sampled = sampled.astype(np.int32)
  tlq = np.log(rng.uniform(0.05, 3.0, [steps, BATCH, 2 * window])).astype(np.float32)
  slq = np.log(rng.uniform(0.05, 3.0, [steps, c.negative_groups, K])).astype(np.float32)
  lrs = [0.3, 0.1]
  before = [v.numpy().copy() for v in (m.input_embeddings, m.output_embeddings,
                                       m.output_biases)]
  losses = []
  for i in range(steps):
    loss_i, tables = skipgram_runs_reference(m, text[i], reduced[i], sampled[i], tlq[i],
                                             slq[i], lrs[i])
    losses.append(loss_i)
    set_tables(m, tables)
  want = [v.numpy() for v in (m.input_embeddings, m.output_embeddings, m.output_biases)]
  set_tables(m, before)
  got_loss = m._compiled_block(tf.constant(text.reshape(steps, -1)), tf.constant(reduced),
                               tf.constant(centres), tf.constant(sampled), tf.constant(tlq),
                               tf.constant(slq), tf.constant(lrs), window=max_window)
  assert_close(float(got_loss), np.mean(losses), rtol=1e-5)
  got = [v.numpy() for v in (m.input_embeddings, m.output_embeddings, m.output_biases)]
  for name, a, b in zip(["input", "output", "bias"], got, want):
    assert_close(a, b, rtol=1e-5, atol=1e-6, what=name)
  assert np.abs(got[1] - before[1]).max() > 1e-3
  np.testing.assert_array_equal(got[0][0], before[0][0])   # no word: untouched
  if not biases:
    np.testing.assert_array_equal(got[2], before[2])


def test_skipgram_slot_contexts():
  m = make_model(model="skipgram", window=2, steps=1, batch=4, group_size=2, layout="runs")
  text = np.array([[9, 8, 1, 2, 3, 4, 5, 6, 7, 7, 7, 7]], np.int32)  # 2 runs of 2
  got = m.slot_contexts(tf.constant(text)).numpy()
  # Run 0 = [9 8 | 1 2 | 3 4], run 1 = [5 6 | 7 7 | 7 7]; offsets -2, -1, 1, 2.
  np.testing.assert_array_equal(got[0], [[9, 8, 2, 3], [8, 1, 3, 4], [5, 6, 7, 7],
                                         [6, 7, 7, 7]])
  assert m.config.negative_groups == 2 * 4


def test_block_prefetcher_order_errors_and_close():
  from tf_embeddings.word2vec import inputs  # pylint: disable=import-outside-toplevel
  assert list(inputs.BlockPrefetcher(iter(range(50)), 3)) == list(range(50))

  def failing():
    yield 1
    raise ValueError("generator broke")

  got = []
  with pytest.raises(ValueError, match="generator broke"):
    for x in inputs.BlockPrefetcher(failing(), 2):
      got.append(x)
  assert got == [1]
  # A consumer that stops early: close() ends the thread blocked on the full queue.
  p = inputs.BlockPrefetcher(itertools.count(), 2)
  assert next(iter(p)) == 0
  p.close()
  assert not p._thread.is_alive()  # pylint: disable=protected-access


# ---- the bounded row update (row_update="bounded", the default) -------------------------
# A row whose id receives n per-example updates in one step moves by their sum times
# min(1, 1 / (lr n)). n counts one per skip-gram pair the id is centre or context of, one
# per CBOW example it is a context word or the target of, and sqrt(m) per draw of negatives
# that m examples use. The "sum" rule is checked against tf.nn above; here "bounded" must be exactly that
# step with every id's total update scaled by its own factor.

def table_values(m):
  return [v.numpy().astype(np.float64) for v in
          (m.input_embeddings, m.output_embeddings, m.output_biases)]


def bounded_factors(n, lr):
  return np.minimum(1.0, 1.0 / np.maximum(lr * n, 1e-30))


def assert_bounded_step(before, after_sum, after_bounded, n_in, n_out, lr):
  for name, b, s, got, n in zip(["input", "output", "bias"], before, after_sum,
                                after_bounded, [n_in, n_out, n_out]):
    f = bounded_factors(n, lr)
    want = b + (s - b) * (f if s.ndim == 1 else f[:, None])
    assert_close(got, want, rtol=1e-5, atol=1e-6, what=name)


@pytest.mark.parametrize("model,loss", [("skipgram", "nce"), ("cbow", "sampled_softmax"),
                                        ("cbow", "nce")])
def test_bounded_step_scales_each_rows_summed_update(model, loss):
  # Example layout, one step at lr 0.9: ids 2 (target twice), 8 (drawn twice), repeated
  # centres / contexts have lr n > 1 and are scaled; single ids keep the summed update.
  lr = 0.9
  kw = dict(model=model, loss=loss, train_biases=True, subtract_log_q=True)
  plain, bounded = make_model(**kw), make_model(row_update="bounded", **kw)
  for m in (plain, bounded):
    randomise(m, seed=3)
  before = table_values(plain)
  if model == "skipgram":
    inputs, lengths = SG_INPUTS[None], np.zeros([1, BATCH], np.int32)
    n_in = np.bincount(SG_INPUTS, minlength=V)
  else:
    inputs, lengths = CBOW_INPUTS[None], CBOW_LENGTHS[None]
    n_in = np.bincount(np.concatenate([r[:n] for r, n in zip(CBOW_INPUTS, CBOW_LENGTHS)]),
                       minlength=V)
  sampled = SAMPLED[3]
  # A drawn id counts sqrt(m), m = the examples of its group (3 consecutive examples) that
  # keep it (accidental hits removed).
  n_out = np.bincount(TARGETS, minlength=V).astype(np.float64)
  for j, draw in enumerate(sampled):
    for x in draw:
      n_out[x] += np.sqrt(np.sum(TARGETS[3 * j:3 * j + 3] != x))
  assert (lr * n_out).max() > 1 and (lr * n_in).max() > 1   # the test has scaled rows
  tlq, slq = log_q(11, 3, True)
  args = [tf.constant(x) for x in (inputs, lengths, TARGETS[None], sampled[None], tlq[None],
                                   slq[None])] + [tf.constant([lr], tf.float32)]
  loss_sum = plain._compiled_block(*args)
  loss_bounded = bounded._compiled_block(*args)
  assert_close(float(loss_bounded), float(loss_sum))       # same logits, same loss
  assert_bounded_step(before, table_values(plain), table_values(bounded), n_in, n_out, lr)
  # The scratch counts are back to zero after the step.
  np.testing.assert_array_equal(bounded._row_counts.numpy(), np.zeros(V))


@pytest.mark.parametrize("runs,max_window", [(2, 2), (1, 1)])
def test_bounded_skipgram_window_step_against_the_pair_reference(runs, max_window):
  # One minibatch of runs: the pair-by-pair tf.nn step, every id's total update scaled by
  # min(1, 1 / (lr n)), n = pairs as centre + as context + sqrt(pairs) per draw.
  window, lr = 2, 0.7
  kw = dict(model="skipgram", loss="nce", window=window, steps=1, subtract_log_q=True,
            train_biases=True, seed=4, layout="runs")
  m = make_model(row_update="bounded", **kw)
  randomise(m, 2)
  c = m.config
  length = BATCH // runs
  rng = np.random.default_rng(8)
  text = rng.integers(1, 7, [runs, length + 2 * window]).astype(np.int32)
  text[0, :3] = 0
  reduced = rng.integers(1, max_window + 1, [BATCH]).astype(np.int32)
  centres = text[:, window:window + length].reshape(BATCH)
  sampled = np.stack([rng.permutation(np.arange(1, 7))[:K]
                      for _ in range(c.negative_groups)]).astype(np.int32)
  tlq = np.log(rng.uniform(0.05, 3.0, [BATCH, 2 * window])).astype(np.float32)
  slq = np.log(rng.uniform(0.05, 3.0, [c.negative_groups, K])).astype(np.float32)
  before = table_values(m)
  _, after_sum = skipgram_runs_reference(m, text, reduced, sampled, tlq, slq, lr)
  n_in, n_out = np.zeros(V), np.zeros(V)
  offsets = [o for o in range(-window, window + 1) if o]
  for i in range(BATCH):
    r, l = divmod(i, length)
    for o in offsets:
      centre, context = text[r, window + l], text[r, window + l + o]
      if abs(o) <= reduced[i] and centre and context:
        n_in[centre] += 1
        n_out[context] += 1
  # A draw (group j, offset o) counts sqrt(m), m = the real pairs of the group's centres at
  # that offset whose context it is not (accidental hits removed).
  for j in range(c.num_groups):
    for n, o in enumerate(offsets):
      if abs(o) > max_window:
        continue
      contexts = []
      for i in range(j, BATCH, c.num_groups):
        r, l = divmod(i, length)
        centre, context = text[r, window + l], text[r, window + l + o]
        if abs(o) <= reduced[i] and centre and context:
          contexts.append(context)
      for x in sampled[j * 2 * window + n]:
        n_out[x] += np.sqrt(sum(x != y for y in contexts))
  assert (lr * n_out).max() > 1 and (lr * n_in).max() > 1
  m._compiled_block(tf.constant(text.reshape(1, -1)), tf.constant(reduced[None]),
                    tf.constant(centres[None]), tf.constant(sampled[None]),
                    tf.constant(tlq[None]), tf.constant(slq[None]),
                    tf.constant([lr], tf.float32), window=max_window)
  assert_bounded_step(before, after_sum, table_values(m), n_in, n_out, lr)


def test_bounded_cbow_window_step_equals_the_example_step():
  # The runs layout counts a text position once per example it is a context of: the same
  # counts as the padded examples, so both layouts make the same bounded step.
  steps, window, runs = 1, 2, 2
  groups, length = BATCH // 3, BATCH // 2
  kw = dict(model="cbow", loss="sampled_softmax", window=window, steps=steps,
            subtract_log_q=True, train_biases=True, seed=4, row_update="bounded")
  a, b = make_model(**kw), make_model(layout="runs", **kw)
  randomise(a, 2)
  randomise(b, 2)
  rng = np.random.default_rng(9)
  text = rng.integers(1, 5, [steps, runs, length + 2 * window]).astype(np.int32)
  reduced = rng.integers(1, window + 1, [steps, BATCH]).astype(np.int32)
  targets = text[:, :, window:window + length].reshape(steps, BATCH)
  sampled = SAMPLED[3][None]
  tlq, slq = log_q(11, 3, True)
  lrs = tf.constant([0.8])
  b._compiled_block(tf.constant(text.reshape(steps, -1)), tf.constant(reduced),
                    tf.constant(targets), tf.constant(sampled), tf.constant(tlq[None]),
                    tf.constant(slq[None]), lrs)
  g = BATCH // groups
  order = np.array([k * groups + j for j in range(groups) for k in range(g)])
  parts = [window_examples(text[0, r], reduced[0].reshape(runs, length)[r], window)
           for r in range(runs)]
  contexts = np.concatenate([p[0] for p in parts])[order][None]
  lengths = np.concatenate([p[1] for p in parts])[order][None]
  a._compiled_block(tf.constant(contexts), tf.constant(lengths),
                    tf.constant(targets[:, order]), tf.constant(sampled),
                    tf.constant(tlq[None][:, order]), tf.constant(slq[None]), lrs)
  counts = np.bincount(contexts[0][np.arange(contexts.shape[2]) < lengths[0][:, None]],
                       minlength=V)
  assert (0.8 * counts).max() > 1          # some context rows are scaled
  for x, y in zip(table_values(a), table_values(b)):
    assert_close(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["nce", "sampled_softmax"])
def test_a_row_repeated_thousands_of_times_moves_by_at_most_its_mean_update(loss):
  # 4096 CBOW examples with the same target: its output row gets 4096 per-example
  # updates. The sum at lr 0.05 moves it 204.8 times its mean update; bounded moves it by
  # 1/lr times the mean, i.e. no further than its largest single gradient.
  batch, lr, vocab = 4096, 0.05, 50
  kw = dict(model="cbow", loss=loss, vocab=vocab, batch=batch, group_size=64, k=4,
            window=2, dim=8, subtract_log_q=False)
  plain, bounded = make_model(**kw), make_model(row_update="bounded", **kw)
  rng = np.random.default_rng(5)
  for m in (plain, bounded):
    randomise(m, seed=6)
  inputs = rng.integers(2, vocab, [1, batch, 4]).astype(np.int32)
  lengths = np.full([1, batch], 4, np.int32)
  targets = np.ones([1, batch], np.int32)
  sampled = rng.integers(2, vocab, [1, batch // 64, 4]).astype(np.int32)
  zeros_t, zeros_s = np.zeros([1, batch], np.float32), np.zeros([1, batch // 64, 4],
                                                                 np.float32)
  hidden = plain.hidden(tf.constant(inputs[0]), tf.constant(lengths[0]))
  _, _, out_ids, d_out, _ = plain.head(hidden, tf.constant(targets[0]),
                                       tf.constant(sampled[0]), tf.constant(zeros_t[0]),
                                       tf.constant(zeros_s[0]))
  per_example = d_out.numpy()[:batch]                      # row 1's updates / lr
  before = plain.output_embeddings.numpy()[1].copy()
  args = [tf.constant(x) for x in (inputs, lengths, targets, sampled, zeros_t, zeros_s)]
  for m in (plain, bounded):
    m._compiled_block(*args, tf.constant([lr], tf.float32))
  moved_sum = before - plain.output_embeddings.numpy()[1]
  moved = before - bounded.output_embeddings.numpy()[1]
  assert_close(moved_sum, lr * per_example.sum(0), rtol=1e-4, atol=1e-5)
  assert_close(moved, per_example.mean(0), rtol=1e-4, atol=1e-5)
  largest = np.linalg.norm(per_example, axis=1).max()
  assert np.linalg.norm(moved) <= largest + 1e-6
  assert np.linalg.norm(moved_sum) > 20 * np.linalg.norm(moved)


def test_config_choice_lists_match_the_library():
  # word2vec.config holds the enum choices without TensorFlow (for the flags and --help).
  from tf_embeddings.word2vec import config as config_lib
  from tf_embeddings.word2vec import model as model_lib
  assert config_lib.SAMPLERS == samplers_lib.SAMPLERS
  assert set(model_lib.IN_GRAPH_SAMPLERS) < set(config_lib.SAMPLERS)


@pytest.mark.parametrize("model,loss,row_update,vocab", [
    ("skipgram", "nce", "bounded", 2000),          # fewer rows gathered than the vocabulary
    ("cbow", "sampled_softmax", "sum", 300),       # every row gathered, biases trained
])
def test_block_on_gathered_rows_equals_the_block_on_the_tables(model, loss, row_update, vocab):
  """What a parameter-server worker runs (`train_block_on_rows`: the rows a block touches
  gathered, the compiled block on them, their change added back) moves the tables as
  `train_block` does on the whole tables, and leaves every other row as it was."""
  from tf_embeddings.word2vec import model as model_lib  # pylint: disable=import-outside-toplevel
  sampled_softmax = loss == "sampled_softmax"
  config = model_lib.StepConfig(
      model=model, loss=loss, vocab_size=vocab, dim=8, window=3, batch_size=32,
      steps_per_call=4, num_sampled=5, group_size=8, subtract_log_q=sampled_softmax,
      train_biases=sampled_softmax, row_update=row_update)
  counts = np.random.default_rng(0).integers(1, 100, vocab)
  ids = np.random.default_rng(1).integers(1, vocab, 5000).astype(np.int32)
  stream = pipeline.BlockStream(ids, np.ones(vocab), model, 3, 32, 4, 1, chunk_tokens=5000)
  block = next(stream.blocks(0))
  args = [tf.constant(block[k]) for k in ("inputs", "lengths", "targets")]
  lrs = tf.constant([0.5, 0.4, 0.3, 0.2])
  whole, rows = (model_lib.Word2Vec(config, unigram_counts=counts, seed=3) for _ in range(2))
  # The tables of a parameter-server run: the frequent words spread over the shards.
  layout = RowLayout.spread(vocab)
  spread = model_lib.Word2Vec(config, unigram_counts=counts, seed=3, layout=layout)
  for m in (whole, rows):
    randomise(m, 4, scale=0.2)
  before = table_values(whole)
  at = layout.rows_np(np.arange(vocab))  # id i's row
  for table, value in zip((spread.input_embeddings, spread.output_embeddings,
                           spread.output_biases), before):
    placed = np.empty_like(value)
    placed[at] = value
    table.assign(placed)
  ids = tf.constant(np.arange(1, 31, dtype=np.int32) * 37 % vocab)
  hidden = ((lambda m: m.hidden(ids)) if model == "skipgram" else
            (lambda m: m.hidden(tf.reshape(ids, [5, 6]), tf.constant([6, 5, 4, 3, 2]))))
  np.testing.assert_allclose(hidden(spread).numpy(), hidden(whole).numpy(), rtol=1e-6)
  # 1 + steps * (text 32 + 2 * 3, centres 32, negatives 4 groups * (6 offsets) * 5).
  touched = 1 + 4 * (38 + 32 + (120 if model == "skipgram" else 20))
  assert model_lib.kernels.rows_per_block(config, block["inputs"].shape[1]) == min(vocab,
                                                                                  touched)
  loss_whole = whole.train_block(*args, lrs, 42)
  loss_rows = rows.train_block_on_rows(*args, lrs, tf.constant(42, tf.int64),
                                       window=whole.block_window(block["lengths"]))
  assert_close(float(loss_rows), float(loss_whole), rtol=1e-6)
  after = table_values(whole)
  assert np.abs(after[0] - before[0]).max() > 1e-3  # the block did train
  for name, b, want, got in zip(["input", "output", "bias"], before, after, table_values(rows)):
    assert_close(got, want, rtol=1e-5, atol=1e-6, what=name)
    untouched = np.all(want == b, axis=tuple(range(1, b.ndim)))
    np.testing.assert_array_equal(got[untouched], b[untouched])
  # The same block on the spread tables moves each id's row as the block on the others.
  loss_spread = spread.train_block_on_rows(*args, lrs, tf.constant(42, tf.int64),
                                           window=whole.block_window(block["lengths"]))
  assert_close(float(loss_spread), float(loss_whole), rtol=1e-6)
  for name, want, got in zip(["input", "output", "bias"], after, table_values(spread)):
    assert_close(got[at], want, rtol=1e-5, atol=1e-6, what=f"spread {name}")
