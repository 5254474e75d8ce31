"""Full-corpus retrieval metrics: every test query is scored against ALL items.

Rank of a test interaction (u, i) = number of non-excluded items j with
score(u, j) > score(u, i) (0 = top). Scores are computed in chunks of test
rows x item columns, so memory is bounded by `row_chunk * item_chunk` floats
whatever the corpus size. From the ranks:

  hit@K      share of test interactions whose item ranks in the top K (the
             figure TensorFlow Recommenders' FactorizedTopK reports as
             top-K accuracy when seen items are included);
  recall@K   per user: share of the user's test items in its top K, averaged
             over users;
  ndcg@10    per user, binary relevance, averaged over users;
  mrr        mean of 1 / (rank + 1) over test interactions;
  cross_entropy  full-softmax loss -log softmax(score / temperature) of the test
             item over all items (never excludes anything).

Excluded items: by default each user's training items (they are not
recommendations); `exclude=None` keeps them, as FactorizedTopK does.
`top_k` is the streaming top-K used for retrieval. `auc` scores a pointwise head.
"""
import numpy as np
import tensorflow as tf

KS = (1, 5, 10, 50, 100)


def csr_rows(users_chunk, seen):
  """(row, item) pairs of the items of each user of a chunk in the CSR `seen`, the rows
  numbered by position in the chunk."""
  indptr, indices = seen
  starts = indptr[users_chunk]
  lengths = indptr[users_chunk + 1] - starts
  rows = np.repeat(np.arange(len(users_chunk)), lengths)
  offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  return rows, indices[np.repeat(starts, lengths) + offsets]


def ranks(query_emb, item_emb, test_users, test_items, exclude=None, temperature=1.0,
          row_chunk=2048, item_chunk=16384):
  """Ranks of test items among all items, and their full-softmax loss.

  Args:
    query_emb: float32 [num_users, D] query embeddings, indexed by user.
    item_emb: float32 [num_items, D] item embeddings.
    test_users: int [n] user of each test interaction.
    test_items: int [n] item of each test interaction.
    exclude: None, or (indptr, indices) CSR of items to skip per user
      (see `data.interactions.seen_items`).
    temperature: divides scores in the cross-entropy.
    row_chunk, item_chunk: chunk sizes (memory is row_chunk * item_chunk floats).

  Returns:
    (rank int64 [n], cross_entropy float64 [n]).
  """
  query_emb = np.asarray(query_emb, np.float32)
  item_emb = np.asarray(item_emb, np.float32)
  test_users = np.asarray(test_users, np.int64)
  test_items = np.asarray(test_items, np.int64)
  n = len(test_users)
  num_items = len(item_emb)
  rank = np.zeros(n, np.int64)
  xent = np.zeros(n, np.float64)
  for r0 in range(0, n, row_chunk):
    u = test_users[r0:r0 + row_chunk]
    q = query_emb[u]  # [b, D]
    # Score of each row's own test item: [b].
    ti = test_items[r0:r0 + row_chunk]
    target = np.einsum("bd,bd->b", q, item_emb[ti])
    if exclude is not None:
      ex_rows, ex_items = csr_rows(u, exclude)
    lse_max = np.full(len(u), -np.inf)
    lse_sum = np.zeros(len(u))
    for c0 in range(0, num_items, item_chunk):
      c1 = min(c0 + item_chunk, num_items)
      s = q @ item_emb[c0:c1].T  # [b, c]
      logits = s.astype(np.float64) / temperature
      m = np.maximum(lse_max, logits.max(1))
      lse_sum = lse_sum * np.exp(lse_max - m) + np.exp(logits - m[:, None]).sum(1)
      lse_max = m
      if exclude is not None:
        sel = (ex_items >= c0) & (ex_items < c1)
        s[ex_rows[sel], ex_items[sel] - c0] = -np.inf
      # The test item never counts against itself (its chunk score may differ
      # from `target` in the last bit).
      own = np.flatnonzero((ti >= c0) & (ti < c1))
      s[own, ti[own] - c0] = -np.inf
      rank[r0:r0 + len(u)] += (s > target[:, None]).sum(1)
    xent[r0:r0 + len(u)] = lse_max + np.log(lse_sum) - target.astype(np.float64) / temperature
  return rank, xent


def summarize(rank, xent, test_users, ks=KS):
  """Turns per-interaction ranks into the metric dict (floats)."""
  rank = np.asarray(rank)
  test_users = np.asarray(test_users)
  out = {}
  if not len(rank):
    return out
  users, inv, counts = np.unique(test_users, return_inverse=True, return_counts=True)
  for k in ks:
    hit = (rank < k).astype(np.float64)
    out[f"hit@{k}"] = float(hit.mean())
    out[f"recall@{k}"] = float((np.bincount(inv, hit, len(users)) / counts).mean())
  gain = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0)
  dcg = np.bincount(inv, gain, len(users))
  ideal_cum = np.cumsum(1.0 / np.log2(np.arange(10) + 2.0))
  idcg = ideal_cum[np.minimum(counts, 10) - 1]
  out["ndcg@10"] = float((dcg / idcg).mean())
  out["mrr"] = float((1.0 / (rank + 1.0)).mean())
  out["cross_entropy"] = float(np.mean(xent))
  return out


def evaluate(query_emb, item_emb, test_users, test_items, exclude=None, temperature=1.0,
             ks=KS, **chunks):
  """`ranks` + `summarize`: the metric dict of one test set."""
  rank, xent = ranks(query_emb, item_emb, test_users, test_items, exclude, temperature,
                     **chunks)
  return summarize(rank, xent, test_users, ks)


def top_k(query_emb, item_emb, k, chunk=65536):
  """Streaming brute-force top-K: memory bounded by B * (chunk + k) scores.

  Args:
    query_emb: float32 tensor [B, D].
    item_emb: float32 tensor [N, D] (N fixed when traced).
    k: number of results (clipped to N).
    chunk: items scored per step.

  Returns:
    (scores float32 [B, k], ids int32 [B, k]), best first.
  """
  item_emb = tf.convert_to_tensor(item_emb, tf.float32)
  num_items = int(item_emb.shape[0])
  k = min(int(k), num_items)
  best_s = best_i = None
  for c0 in range(0, num_items, chunk):
    c1 = min(c0 + chunk, num_items)
    s = tf.matmul(query_emb, item_emb[c0:c1], transpose_b=True)  # [B, c]
    cs, ci = tf.math.top_k(s, k=min(k, c1 - c0))
    ci = ci + c0
    if best_s is None:
      best_s, best_i = cs, ci
    else:
      s2 = tf.concat([best_s, cs], 1)
      i2 = tf.concat([best_i, ci], 1)
      best_s, pos = tf.math.top_k(s2, k=k)
      best_i = tf.gather(i2, pos, batch_dims=1)
  return best_s, best_i


def auc(scores, labels):
  """Area under the ROC curve of `scores` for 0/1 `labels` (Mann-Whitney U, ties half).

  AUC = P(score of a random positive > score of a random negative) + 0.5 P(equal),
  from the ranks of the scores (midranks for ties): O(n log n).

  Args:
    scores: float [n].
    labels: [n] 0/1.

  Returns:
    float, or nan when a class is missing.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1) > 0
  n_pos = int(labels.sum())
  n_neg = len(labels) - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  # Midranks (1-based) of runs of equal scores.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  midrank = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  ranks = np.empty(len(scores))
  ranks[order] = midrank
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))
