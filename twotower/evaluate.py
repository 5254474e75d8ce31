"""Evaluation of a two-tower run: every query of a split scored against ALL items.

The metric math (chunked ranks, hit@K, recall@K, ndcg@10, mrr, full-softmax cross-entropy,
streaming top-K) is twotower/metrics.py's; this module picks the split and the items to
exclude (each user's training items, or none) and restores a run for `twotower eval`.
With --tasks, each pointwise head also gets its figures on the split's labelled rows (every
row, label 0 or 1): `auc` of its score (the pair's score / temperature) and `logloss`, the
binary cross-entropy of sigmoid(score).
`evaluate_cold` scores the users held out of training (--cold_users) through the OOV user
id and their side features, beside most-popular.
"""
import numpy as np
import tensorflow as tf

from tf_embeddings.twotower import config as config_lib
from tf_embeddings.twotower import inputs
from tf_embeddings.twotower import metrics
from tf_embeddings.twotower import model as model_lib

# The figures of the one-line summary, in order.
SUMMARY_KEYS = ("hit@1", "hit@5", "hit@10", "hit@50", "hit@100", "recall@10", "recall@100",
                "ndcg@10", "mrr", "cross_entropy", "auc", "logloss")


def restore(model_dir):
  """Rebuilds the data and the towers of a finished (or interrupted) run.

  Returns:
    (config, prepared, two_tower): the recorded `Config`, its `inputs.Prepared` data
    (re-read and split as in training) and the towers at the last checkpoint.
  """
  config = config_lib.read_config(model_dir)
  prepared = inputs.prepare(config.data, config_lib.labelled(config.train),
                            seen_every_row=bool(config.train.tasks))
  history = inputs.history(prepared) if config.model.use_history else None
  two_tower = model_lib.restore(config, prepared.data, history)
  return config, prepared, two_tower


def user_sample(users, max_users, seed=0):
  """The users a split is evaluated on: sorted int64 [U], every distinct user of `users`, or
  with 0 < max_users < their number a seeded sample of max_users of them (the same sample at
  every call with the same seed: the figures of a run's evaluations compare)."""
  distinct = np.unique(np.asarray(users, np.int64))
  if max_users and len(distinct) > max_users:
    rng = np.random.default_rng(seed + 9973)
    distinct = np.sort(rng.choice(distinct, max_users, replace=False))
  return distinct


def sub_csr(csr, users):
  """The rows `users` of a CSR (indptr, indices), as a CSR indexed by position in `users`."""
  indptr = csr[0]
  lengths = indptr[users + 1] - indptr[users]
  _, items = metrics.csr_rows(users, csr)
  return np.concatenate([[0], np.cumsum(lengths)]).astype(indptr.dtype), items


def _positions(users, rows_users):
  """(keep bool [n], position in `users` int64 [n] of the kept rows)."""
  rows_users = np.asarray(rows_users, np.int64)
  at = np.minimum(np.searchsorted(users, rows_users), max(len(users) - 1, 0))
  keep = users[at] == rows_users if len(users) else np.zeros(len(rows_users), bool)
  return keep, at[keep]


def evaluate(two_tower, prepared, split="test", include_seen=False, temperature=1.0):
  """Full-corpus metrics of the towers on one split (see twotower/metrics.py)."""
  kind = "seen_included" if include_seen else "seen_excluded"
  return evaluate_both(two_tower, prepared, split, temperature, kinds=(kind,))[kind]


def evaluate_both(two_tower, prepared, split="test", temperature=1.0, tasks=(), max_users=0,
                  seed=0, kinds=("seen_excluded", "seen_included")):
  """{'seen_excluded': {...}, 'seen_included': {...}} for one split, and with `tasks`
  (--tasks) {'tasks': {pointwise task: {'auc': ..., 'logloss': ...}}}.

  Only the split's users are embedded (their rows read, in chunks), and with
  0 < max_users < their number only a seeded sample of them (`user_sample`): the result then
  also holds {'users': {'evaluated': U, 'in_split': all}}.
  """
  data, seen = prepared.eval_split(split)
  # The split's users: those of all its rows (labelled 0 or 1 with --tasks; the retrieval
  # figures are on the positive rows).
  labelled = prepared.valid if split == "validation" else prepared.test
  in_split = len(np.unique(labelled.users))
  users = user_sample(labelled.users, max_users, seed)              # [U]
  keep, rows = _positions(users, data.users)                        # rows: [n] in 0..U-1
  query = two_tower.query_tower.embed_rows(users)                   # [U, D]
  items = two_tower.item_tower.embed_all()
  test_items = np.asarray(data.items)[keep]
  out = {}
  for name in kinds:
    exclude = sub_csr(seen, users) if name == "seen_excluded" else None
    out[name] = metrics.evaluate(query, items, rows, test_items, exclude, temperature)
  pointwise = [name for name in tasks if name in config_lib.POINTWISE_LOSSES]
  if pointwise:
    lkeep, lrows = _positions(users, labelled.users)
    figures = pointwise_figures(query, items, lrows, np.asarray(labelled.items)[lkeep],
                                np.asarray(labelled.labels)[lkeep], temperature)
    out["tasks"] = {name: dict(figures) for name in pointwise}
  if len(users) < in_split:
    out["users"] = {"evaluated": len(users), "in_split": in_split}
  return out


def pointwise_figures(query_emb, item_emb, users, items, labels, temperature):
  """{'auc', 'logloss'} of the pair scores of labelled rows.

  Args:
    query_emb: float32 [U, D].
    item_emb: float32 [num_items, D].
    users: int [n], each row's row of query_emb.
    items: int [n], each row's item.
    labels: [n] 0/1 labels.
    temperature: divides the scores.
  """
  q = np.asarray(query_emb, np.float64)[users]  # [n, D]
  c = np.asarray(item_emb, np.float64)[items]  # [n, D]
  logit = np.einsum("nd,nd->n", q, c) / temperature  # [n]
  z = np.asarray(labels) > 0
  # -log sigmoid(x) = softplus(-x), computed stably.
  logloss = np.mean(np.where(z, np.logaddexp(0.0, -logit), np.logaddexp(0.0, logit)))
  return {"auc": metrics.auc(logit, z), "logloss": float(logloss)}


def cold_query_embeddings(query_tower, users):
  """Query embeddings of users unseen in training: the OOV id + their side features.

  Args:
    query_tower: `model.Tower` (with its OOV row when it embeds ids).
    users: int [U] user indices (their features are the tower's tables' rows).

  Returns:
    numpy float32 [U, D].
  """
  users = tf.constant(np.asarray(users, np.int64))
  if not query_tower.use_ids:
    return query_tower.embed_index(users).numpy()
  oov = tf.fill(tf.shape(users), tf.constant(query_tower.oov_index, tf.int64))
  return query_tower(oov, query_tower.entity_features(users)).numpy()


def most_popular_scores(item_counts):
  """Most-popular item scores float32 [num_items]: higher for more training positives,
  ties broken by item index (so no two items tie: the ranks are not optimistic)."""
  order = np.argsort(-np.asarray(item_counts), kind="stable")
  scores = np.empty(len(order), np.float32)
  scores[order] = np.arange(len(order), 0, -1)
  return scores


def evaluate_cold(two_tower, prepared, temperature=1.0):
  """Retrieval figures of the cold users (--cold_users), nothing excluded (they have no
  training items): {'twotower': {...}, 'most_popular': {...}}, most-popular counted on the
  positives of the training split (its scores are no logits: no cross-entropy)."""
  cold = prepared.cold
  users, rows = np.unique(cold.users, return_inverse=True)  # [U], [n]
  query = cold_query_embeddings(two_tower.query_tower, users)
  items = two_tower.item_tower.embed_all()
  counts = inputs.positives_only(prepared.train).item_counts()
  popular = most_popular_scores(counts)[:, None]  # [num_items, 1]
  popular_figures = metrics.evaluate(np.ones([len(users), 1], np.float32), popular, rows,
                                     cold.items, None)
  del popular_figures["cross_entropy"]
  return {"twotower": metrics.evaluate(query, items, rows, cold.items, None, temperature),
          "most_popular": popular_figures}


def summary(figures):
  """One line of the figures of `metrics.evaluate`: "hit@1 0.0123  hit@5 ..."."""
  return "  ".join(f"{k} {figures[k]:.4f}" for k in SUMMARY_KEYS if k in figures)
