"""Retrieval (two-tower) losses over query / item embeddings.

Every loss here returns a scalar, the MEAN over the batch (for info_nce the
mean over the 2N anchors); each docstring states it again.
"""

import tensorflow as tf

from tf_embeddings.losses import primitives
from tf_embeddings.losses import sampled


def sigmoid_cross_entropy_loss(pos_logit, neg_logit):
  """Binary cross-entropy of positives vs sampled negatives (seed 000).

  loss = mean_i softplus(-pos_logit_i) + mean_j softplus(neg_logit_j), i.e.
  the mean sigmoid cross-entropy of the positives with label 1 plus the mean
  over ALL negative logits with label 0 (graph-learn's form: the two means
  are added, so the negatives' weight does not grow with their number).

  Args:
    pos_logit: float [batch_size] or [batch_size, 1], positive pair scores.
    neg_logit: float of any shape, e.g. [batch_size, num_neg], negative pair
      scores.

  Returns:
    Scalar float: mean over positives + mean over negatives.
  """
  pos_logit = tf.convert_to_tensor(pos_logit)
  neg_logit = tf.convert_to_tensor(neg_logit)
  true_xent = primitives.stable_sigmoid_cross_entropy(
      tf.ones_like(pos_logit), pos_logit)
  negative_xent = primitives.stable_sigmoid_cross_entropy(
      tf.zeros_like(neg_logit), neg_logit)
  return tf.reduce_mean(true_xent) + tf.reduce_mean(negative_xent)


def unsupervised_softmax_cross_entropy_loss(src_emb, pos_emb, neg_emb,
                                            temperature=1.0):
  """Softmax of one positive against shared negatives (seed 000).

  For each row i: logits_i = [s_i . p_i, s_i . n_1, ..., s_i . n_M] / T and
  loss_i = -log_softmax(logits_i)[0] = logsumexp(logits_i) - logits_i[0].
  Unlike the seed's -log(softmax + 1e-12), this is exact for any logit size
  (the seed form caps at -log(1e-12) = 27.63 and its gradient vanishes).

  Args:
    src_emb: float [batch_size, dim] query/source embeddings.
    pos_emb: float [batch_size, dim] the positive of each row.
    neg_emb: float [batch_size * neg_num, dim] (any M rows): negatives shared
      by every row.
    temperature: positive float (Python number <= 0 raises ValueError) or
      scalar tensor.

  Returns:
    Scalar float: mean over the batch.
  """
  primitives.check_temperature(temperature)
  src_emb = tf.convert_to_tensor(src_emb)
  pos_emb = primitives.cast_like(pos_emb, src_emb.dtype)
  neg_emb = primitives.cast_like(neg_emb, src_emb.dtype)
  # [batch_size, 1]
  pos_sim = tf.reduce_sum(src_emb * pos_emb, axis=-1, keepdims=True)
  # [batch_size, M]
  neg_sim = tf.matmul(src_emb, neg_emb, transpose_b=True)
  logits = primitives.scale_by_temperature(
      tf.concat([pos_sim, neg_sim], axis=-1), temperature)
  labels = tf.zeros(tf.shape(logits)[:1], tf.int32)
  return tf.reduce_mean(primitives.sparse_softmax_cross_entropy(labels, logits))


def in_batch_softmax_loss(query_emb, item_emb, temperature, item_log_q=None,
                          item_ids=None, query_offset=0, num_hard_negatives=None):
  """In-batch softmax: each query against every item of the batch.

  logits = query_emb @ item_emb^T / temperature, [B, B]; row i's label is
  column i. Optional corrections, in this order:
    * logQ (Yi et al., RecSys 2019): logits[:, j] -= item_log_q[j], so items
      that appear often as in-batch negatives are not over-penalised.
    * accidental hits: for j != i with item_ids[j] == item_ids[i] the logit
      is set to a large finite negative (-1e9 for float32), removing the
      duplicate of the positive from the negatives.
    * hard negatives (TFRS `Retrieval(num_hard_negatives=k)`): row i keeps its
      positive and only the k highest of its other logits (after the corrections
      above); the softmax runs over those k + 1.
  loss_i = logsumexp(logits[i]) - logits[i, i].

  Args:
    query_emb: float [B, D].
    item_emb: float [B, D], item_emb[i] is the positive of query i.
    temperature: positive float (Python number <= 0 raises ValueError) or
      scalar tensor.
    item_log_q: optional float [B], log sampling probability of each item.
    item_ids: optional int or string [B], item identities for hit removal.
    query_offset: int or scalar int tensor. With item_emb of C >= B rows (the
      candidates of every replica, gathered), query i's positive is column
      query_offset + i (and item_log_q, item_ids have C entries); 0 and C = B:
      the plain [B, B] loss.
    num_hard_negatives: None (every column) or int k >= 1: the k hardest negatives of
      each row (all of them when the row has fewer).

  Returns:
    Scalar float: mean over the B queries.
  """
  primitives.check_temperature(temperature)
  if num_hard_negatives is not None and int(num_hard_negatives) < 1:
    raise ValueError(f"num_hard_negatives must be None or >= 1, got {num_hard_negatives}")
  query_emb = tf.convert_to_tensor(query_emb)
  item_emb = primitives.cast_like(item_emb, query_emb.dtype)
  dtype = query_emb.dtype
  # Scores of every query against every in-batch item: [B, B].
  logits = primitives.scale_by_temperature(
      tf.matmul(query_emb, item_emb, transpose_b=True), temperature)
  if item_log_q is not None:
    logits -= tf.reshape(primitives.cast_like(item_log_q, dtype), [1, -1])
  batch_size = tf.shape(logits)[0]
  # Column of each query's positive: [B].
  labels = tf.range(batch_size) + tf.cast(query_offset, tf.int32)
  if item_ids is not None:
    item_ids = tf.reshape(item_ids, [-1])
    own_ids = tf.gather(item_ids, labels)  # [B]
    same_item = tf.equal(own_ids[:, None], item_ids[None, :])
    not_diagonal = tf.not_equal(labels[:, None], tf.range(tf.shape(logits)[1])[None, :])
    logits = tf.where(
        tf.logical_and(same_item, not_diagonal),
        tf.constant(primitives.large_negative(dtype), dtype), logits)
  if num_hard_negatives is not None:
    logits, labels = _hard_negatives(logits, labels, int(num_hard_negatives))
  return tf.reduce_mean(primitives.sparse_softmax_cross_entropy(labels, logits))


def _hard_negatives(logits, labels, k):
  """[B, 1 + min(k, C - 1)] logits: each row's positive (column `labels`) first, then its k
  highest other logits; and the new labels (all 0). The gradient reaches the kept entries."""
  columns = tf.shape(logits)[1]
  positive = tf.gather(logits, labels, batch_dims=1)                     # [B]
  is_positive = tf.one_hot(labels, columns, on_value=True, off_value=False)
  others = tf.where(is_positive, tf.constant(float("-inf"), logits.dtype), logits)
  hardest = tf.math.top_k(others, tf.minimum(k, columns - 1)).values     # [B, k]
  kept = tf.concat([positive[:, None], hardest], axis=1)
  return kept, tf.zeros_like(labels)


def info_nce_loss(hidden, temperature, hidden_norm=True):
  """InfoNCE / NT-Xent in SimCLR's two-view form (seed 001).

  hidden = [h1; h2] stacks two views of N examples ([2N, D]). Each of the 2N
  anchors is classified against the 2N - 1 other rows: the other view of the
  same example is the positive, self-similarity is masked out. With
  s = cos-similarity (or the dot product if hidden_norm is False) / T:
    L(a) = -log(exp(s(a, a+)) / sum_{k != a} exp(s(a, k))).

  Reduction: the MEAN over the 2N anchors, i.e. (1/2N) sum_k
  [L(k, k+N) + L(k+N, k)] as the seed's formula. SimCLR's objective.py
  returns loss_a_mean + loss_b_mean, which is exactly twice this value.

  Args:
    hidden: float [2N, D], the first N rows one view, the last N the other.
    temperature: positive float (Python number <= 0 raises ValueError) or
      scalar tensor.
    hidden_norm: bool, L2-normalise rows first (cosine similarity).

  Returns:
    Scalar float: mean over the 2N anchors.
  """
  primitives.check_temperature(temperature)
  hidden = tf.convert_to_tensor(hidden)
  dtype = hidden.dtype
  if hidden_norm:
    hidden = tf.math.l2_normalize(hidden, axis=-1)
  two_n = tf.shape(hidden)[0]
  n = two_n // 2
  # All pairwise similarities: [2N, 2N].
  logits = primitives.scale_by_temperature(
      tf.matmul(hidden, hidden, transpose_b=True), temperature)
  logits = tf.where(tf.eye(two_n, dtype=tf.bool),
                    tf.constant(primitives.large_negative(dtype), dtype),
                    logits)
  # The positive of row k is row (k + N) mod 2N.
  labels = tf.math.floormod(tf.range(two_n) + n, two_n)
  return tf.reduce_mean(primitives.sparse_softmax_cross_entropy(labels, logits))


def mixed_negatives_softmax_loss(query_emb, item_emb, sampled_emb, temperature,
                                 item_log_q=None, sampled_log_q=None, item_ids=None,
                                 sampled_ids=None):
  """Mixed negative sampling (Yang et al., WWW 2020): in-batch items plus sampled items.

  Each query is scored against the B in-batch items and M items drawn from
  another distribution (e.g. uniform over the corpus), shared by the batch:
  logits = query_emb @ [item_emb; sampled_emb]^T / temperature, [B, B + M];
  row i's label is column i. Corrections, as in `in_batch_softmax_loss`:
    * logQ: column j gets -item_log_q[j] (j < B) or -sampled_log_q[j - B]; for
      a mixture pass the log of each candidate's expected count under the
      whole sampling (e.g. log(B q_v + M / N)) to both, so that the two kinds
      of column are comparable.
    * accidental hits: columns other than i whose id equals item_ids[i]
      (in-batch duplicates and sampled copies of the positive) get a large
      finite negative logit.
  loss_i = logsumexp(logits[i]) - logits[i, i].

  Args:
    query_emb: float [B, D].
    item_emb: float [B, D], item_emb[i] is the positive of query i.
    sampled_emb: float [M, D], the sampled negatives.
    temperature: positive float or scalar tensor.
    item_log_q: optional float [B].
    sampled_log_q: optional float [M] (with item_log_q).
    item_ids: optional int [B], item identities for hit removal.
    sampled_ids: optional int [M] (with item_ids).

  Returns:
    Scalar float: mean over the B queries.
  """
  primitives.check_temperature(temperature)
  query_emb = tf.convert_to_tensor(query_emb)
  dtype = query_emb.dtype
  candidates = tf.concat([primitives.cast_like(item_emb, dtype),
                          primitives.cast_like(sampled_emb, dtype)], 0)  # [B + M, D]
  # Scores of every query against every candidate: [B, B + M].
  logits = primitives.scale_by_temperature(
      tf.matmul(query_emb, candidates, transpose_b=True), temperature)
  if item_log_q is not None:
    log_q = tf.concat([tf.reshape(primitives.cast_like(item_log_q, dtype), [-1]),
                       tf.reshape(primitives.cast_like(sampled_log_q, dtype), [-1])], 0)
    logits -= log_q[None, :]
  batch_size = tf.shape(logits)[0]
  if item_ids is not None:
    item_ids = tf.reshape(item_ids, [-1])
    ids = tf.concat([item_ids, tf.cast(tf.reshape(sampled_ids, [-1]), item_ids.dtype)], 0)
    same_item = tf.equal(item_ids[:, None], ids[None, :])  # [B, B + M]
    diagonal = tf.pad(tf.eye(batch_size, dtype=tf.bool),
                      [[0, 0], [0, tf.shape(ids)[0] - batch_size]])
    logits = tf.where(tf.logical_and(same_item, tf.logical_not(diagonal)),
                      tf.constant(primitives.large_negative(dtype), dtype), logits)
  labels = tf.range(batch_size)
  return tf.reduce_mean(primitives.sparse_softmax_cross_entropy(labels, logits))


def _copies_in_batch(item_ids, num_items):
  """n_v: float32 [num_items], how many times each item is a positive of the batch."""
  return tf.math.unsorted_segment_sum(tf.ones_like(item_ids, tf.float32),
                                      tf.cast(item_ids, tf.int32), num_items)


def _num_rows(x):
  """The number of rows of x: a Python int when static (XLA needs it so), else a tensor."""
  return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def in_batch_softmax_loss_per_item(query_emb, all_item_emb, item_ids, temperature,
                                   item_q=None):
  """`in_batch_softmax_loss` with hits removed, computed per item of the corpus.

  The same loss as `in_batch_softmax_loss(query_emb, all_item_emb[item_ids],
  temperature, log(item_q[item_ids]), item_ids)`, over [B, N] logits instead of
  [B, B]: cheaper when the corpus is smaller than the batch (MovieLens-100K at
  batch 8192: 1,682 columns instead of 8,192).

  Row i's denominator over the batch is exp(s_ip - lq_p) for its positive p plus
  sum over the other items v of n_v * exp(s_iv - lq_v), n_v = copies of v in the
  batch (the positive's copies are accidental hits, removed). That is a sampled
  softmax (`tf.nn.sampled_softmax_loss`) whose candidates are all items, with
  expected counts Q(v) / n_v (items absent from the batch: n_v = 1e-30, i.e.
  logit - 69), true expected count Q(p), and accidental hits removed.

  Args:
    query_emb: float32 [B, D].
    all_item_emb: float32 [N, D], the embedding of every item of the corpus.
    item_ids: int64 [B], the positive of each query: a row of all_item_emb.
    temperature: positive float or scalar tensor; scores are divided by it.
    item_q: optional float32 [N], each item's sampling probability Q(v) (the
      logQ correction); None: no correction.

  Returns:
    Scalar float32: mean over the B queries.
  """
  primitives.check_temperature(temperature)
  num_items = _num_rows(all_item_emb)
  if item_q is None:
    item_q = tf.ones([num_items])
  counts = _copies_in_batch(item_ids, num_items)  # [N]
  sampled_values = (tf.range(num_items, dtype=tf.int64), tf.gather(item_q, item_ids)[:, None],
                    item_q / tf.maximum(counts, 1e-30))
  return sampled.sampled_softmax_loss(
      all_item_emb, tf.zeros([num_items]), item_ids[:, None], query_emb / temperature,
      num_sampled=num_items, num_classes=num_items, sampled_values=sampled_values,
      remove_accidental_hits=True)


def in_batch_softmax_loss_per_user(user_emb, user_rows, all_item_emb, item_ids, temperature,
                                   item_log_q=None):
  """`in_batch_softmax_loss_per_item` on [distinct users, items] logits.

  For batches whose query depends only on the user: each distinct user's row of
  the softmax is computed once (MovieLens-100K at batch 8192: 943 x 1,682
  logits instead of 8,192 x 1,682). With x_uv = q_u . c_v / T - log Q(v) and
  A_u = sum_v n_v exp(x_uv) (n_v = copies of v in the batch), row i (user u,
  positive p) has denominator exp(x_up) + sum_{v != p} n_v exp(x_uv)
  = A_u - (n_p - 1) exp(x_up), so
    loss_i = log A_u + log1p(-(n_p - 1) exp(x_up - log A_u)) - x_up,
  where (n_p - 1) exp(x_up - log A_u) <= (n_p - 1) / n_p < 1.

  Args:
    user_emb: float32 [U, D], the query of each distinct user (under XLA, every
      user: shapes must be static).
    user_rows: int32 [B], the row of user_emb of each example.
    all_item_emb: float32 [N, D], the embedding of every item of the corpus.
    item_ids: int64 [B], the positive of each example: a row of all_item_emb.
    temperature: positive float or scalar tensor; scores are divided by it.
    item_log_q: optional float32 [N], log Q(v) of every item (logQ correction).

  Returns:
    Scalar float32: mean over the B examples.
  """
  primitives.check_temperature(temperature)
  counts = _copies_in_batch(item_ids, _num_rows(all_item_emb))  # [N]
  x = tf.matmul(user_emb, all_item_emb, transpose_b=True) / temperature  # [U, N]
  if item_log_q is not None:
    x -= item_log_q
  # Items absent from the batch are no candidates (a constant -1e30, not log 0, so that
  # no gradient is NaN).
  log_counts = tf.where(counts > 0, tf.math.log(tf.maximum(counts, 1.0)), -1e30)
  log_a = tf.reduce_logsumexp(x + log_counts, axis=1)                # [U]
  items32 = tf.cast(item_ids, tf.int32)
  x_pos = tf.gather_nd(x, tf.stack([user_rows, items32], 1))         # [B]
  log_a_row = tf.gather(log_a, user_rows)
  ratio = (tf.gather(counts, items32) - 1.0) * tf.exp(x_pos - log_a_row)
  return tf.reduce_mean(log_a_row + tf.math.log1p(-ratio) - x_pos)
