"""Loads the configured interactions and splits them: train / eval / test.

`prepare(data_config)` is deterministic, so training and `twotower eval` see the same
vocabularies and the same split. Training also saves what the towers are built from (id
vocabularies, side-feature tables, item titles, users' histories) in the run directory
(`save_tables`), so that `twotower export` builds from saved state (`load_tables`) and
never re-reads the raw data.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data import atomic
from tf_embeddings.data import interactions as ilib
from tf_embeddings.data import movielens
from tf_embeddings.data import synthetic
from tf_embeddings.data.errors import UserError


@dataclasses.dataclass
class Prepared:
  """The data of one run.

  Attributes:
    data: all interactions (vocabularies, side features, titles).
    train: interactions the model trains on.
    test: held-out interactions (the test split).
    valid: interactions carved from train for tuning (None without
      --validation_fraction).
    seen_train: CSR of items each user has in `train` (excluded in eval).
    seen_all_train: CSR of items in train + valid (excluded when testing).
    cold: every interaction of the cold users (--cold_users), held out of train,
      valid and test; None without --cold_users.
  """
  data: ilib.Interactions
  train: ilib.Interactions
  test: ilib.Interactions
  valid: ilib.Interactions = None
  seen_train: tuple = None
  seen_all_train: tuple = None
  cold: ilib.Interactions = None

  def eval_split(self, which):
    """(interactions, seen CSR) for 'test' or 'validation', positives only."""
    if which == "validation":
      if self.valid is None:
        raise UserError("there is no validation split: train with --validation_fraction > 0")
      return positives_only(self.valid), self.seen_train
    return positives_only(self.test), self.seen_all_train


def cold_users(num_users, fraction, seed):
  """The users held out of training by --cold_users: sorted int64 [round(fraction * n)]."""
  n_cold = int(round(num_users * fraction))
  return np.sort(np.random.RandomState([seed, 7]).permutation(num_users)[:n_cold])


def without_users(data, users):
  """`data` without the rows of `users` (int array of user indices)."""
  return data.subset(np.flatnonzero(~np.isin(data.users, users)))


def positives_only(data):
  """Drops rows labelled 0 (pointwise data); others pass through."""
  if data.labels is None or not data.binary_labels:
    return data
  return data.subset(np.flatnonzero(data.labels > 0))


def history(prepared):
  """Users' histories: CSR (indptr, indices) of the positive items of the train split."""
  return ilib.seen_items(positives_only(prepared.train))


# The run directory's copy of what the towers are built from (`save_tables`).
TABLES_FILE = "tables.npz"


def save_tables(path, data, history_csr=None):
  """Saves the vocabularies and side-feature tables of `data` to `path` (.npz, atomic).

  Args:
    path: file to write.
    data: `Interactions` (its rows are not saved).
    history_csr: None, or users' histories (indptr, indices) (--use_history).
  """
  arrays = {"name": np.asarray(str(data.name)),
            "user_ids": np.asarray(data.user_ids).astype(str),
            "item_ids": np.asarray(data.item_ids).astype(str)}
  if data.item_titles is not None:
    arrays["item_titles"] = np.asarray([str(t) for t in data.item_titles], dtype=str)
  for side, features in (("user", data.user_features), ("item", data.item_features)):
    arrays[f"{side}_features"] = np.asarray([f.name for f in features], dtype=str)
    for k, f in enumerate(features):
      arrays[f"{side}_feature_{k}_vocab"] = np.asarray(f.vocab, dtype=str)
      arrays[f"{side}_feature_{k}_values"] = f.values
  if history_csr is not None:
    arrays["history_indptr"], arrays["history_indices"] = history_csr
  with atomic.atomic_write(path, "wb") as f:
    np.savez(f, **arrays)


def load_tables(path):
  """What `save_tables` wrote: (Interactions without rows, history CSR or None)."""
  with np.load(path, allow_pickle=False) as z:
    def features(side):
      return tuple(
          ilib.Feature(str(name), tuple(str(v) for v in z[f"{side}_feature_{k}_vocab"]),
                       z[f"{side}_feature_{k}_values"])
          for k, name in enumerate(z[f"{side}_features"]))

    def ids(key):  # object arrays of str, as the readers make them
      return np.array([str(x) for x in z[key]], dtype=object)

    empty = np.zeros([0], np.int64)
    data = ilib.Interactions(
        name=str(z["name"]),
        user_ids=ids("user_ids"), item_ids=ids("item_ids"), users=empty, items=empty,
        user_features=features("user"), item_features=features("item"),
        item_titles=[str(t) for t in z["item_titles"]] if "item_titles" in z else None)
    history_csr = ((z["history_indptr"], z["history_indices"]) if "history_indptr" in z
                   else None)
  return data, history_csr


def load(config):
  """Reads the dataset named by a `DataConfig`."""
  c = config
  if c.dataset in ("movielens-100k", "movielens-1m"):
    return movielens.load(c.dataset, c.data_dir or None)
  if c.dataset == "synthetic":
    return synthetic.generate()
  if c.dataset == "csv":
    if not c.data_path:
      raise UserError("--dataset=csv needs --data_path=<file.csv or .tsv>")
    return ilib.read_interactions(
        c.data_path, c.user_column, c.item_column, c.label_column or None,
        c.timestamp_column or None, c.session_column or None, c.user_feature_columns,
        c.item_feature_columns)
  raise UserError(f"unknown dataset {c.dataset!r}")


def prepare(config, pointwise=False, seen_every_row=False):
  """Loads, filters and splits the data of a `DataConfig`.

  Args:
    config: DataConfig.
    pointwise: the loss trains on labelled rows (positives and negatives):
      ratings >= min_rating become label 1, others 0, and all rows are kept.
      Otherwise rows below min_rating are dropped and every kept row is a positive.
    seen_every_row: the items excluded from a user's ranking are all of the user's training
      rows, labelled 0 too (--tasks: the retrieval heads train on every row).

  Returns:
    `Prepared`.
  """
  data = load(config)
  if not len(data):
    raise UserError(f"{data.name} has no interactions")
  if pointwise:
    if data.labels is None:
      raise UserError(f"pointwise losses (weighted_ce, focal, jrc) need a label/rating column "
                      f"and {data.name} has none: set --label_column, or use retrieval losses "
                      "only (--loss, --tasks)")
    if config.min_rating is not None:
      labels = (data.labels >= config.min_rating).astype(np.float32)
    else:
      labels = data.labels
      if not np.all((labels == 0) | (labels == 1)):
        raise UserError("labels are not 0/1: pass --min_rating to turn ratings into labels")
    data = dataclasses.replace(data, labels=labels, binary_labels=True)
  else:
    data = ilib.positives(data, config.min_rating)
  train, test = ilib.split(data, config.split, config.test_fraction, config.split_seed)
  full_train = train
  valid = None
  if config.validation_fraction > 0:
    train, valid = ilib.split(train, config.split, config.validation_fraction,
                              config.split_seed + 1)
  cold = None
  if config.cold_users > 0:
    # Split first, then drop the cold users' rows: the warm users' rows fall as they do
    # without --cold_users.
    users = cold_users(data.num_users, config.cold_users, config.split_seed)
    cold = positives_only(data.subset(np.flatnonzero(np.isin(data.users, users))))
    train, test, full_train = (without_users(x, users) for x in (train, test, full_train))
    valid = None if valid is None else without_users(valid, users)
    if not len(cold) or not len(train):
      raise UserError(f"--cold_users={config.cold_users} leaves "
                      f"{'no cold' if not len(cold) else 'no training'} interaction: "
                      "choose another share")
    logging.info("cold users: %d users held out of training (%d interactions)", len(users),
                 len(cold))
  if not len(positives_only(test)):
    raise UserError("the test split has no positive interaction: lower --min_rating")
  logging.info("%s: %d users, %d items, %d train / %d valid / %d test interactions",
               data.name, data.num_users, data.num_items, len(train),
               0 if valid is None else len(valid), len(test))
  return Prepared(data=data, train=train, test=test, valid=valid,
                  seen_train=ilib.seen_items(train if seen_every_row else positives_only(train)),
                  seen_all_train=ilib.seen_items(full_train if seen_every_row
                                                 else positives_only(full_train)),
                  cold=cold)


def epoch_dataset(train, batch_size, epoch, seed, skip_batches=0, drop_remainder=True):
  """tf.data batches of one epoch, shuffled by (seed, epoch) so resumes repeat it.

  Yields dicts: "user" int64 [B], "item" int64 [B], "label" float32 [B],
  "session" int64 [B] (the user when the data has no sessions).
  """
  perm = np.random.RandomState([seed, epoch]).permutation(len(train))
  labels = train.labels if train.labels is not None else np.ones(len(train), np.float32)
  sessions = train.sessions if train.sessions is not None else train.users
  ds = tf.data.Dataset.from_tensor_slices({
      "user": train.users[perm], "item": train.items[perm],
      "label": labels[perm].astype(np.float32), "session": sessions[perm]})
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  if skip_batches:
    ds = ds.skip(skip_batches)
  # A fixed prefetch without autotuning: destroying an autotuned iterator waits for its
  # tuning thread (0.1-0.24 s at the end of 3 of 8 epochs of this shape, measured alone;
  # 10-20 s at the end of word2vec training, see word2vec.train.BlockPrefetcher).
  options = tf.data.Options()
  options.autotune.enabled = False
  return ds.prefetch(2).with_options(options)


# The training split as each parameter-server worker reads its share of it
# (--cluster_input=workers): fixed-size little-endian records, 32 bytes an example.
WORKER_SPLIT_FILE = "train_split.bin"
_SPLIT_RECORD = np.dtype([("user", "<i8"), ("item", "<i8"), ("session", "<i8"),
                          ("label", "<f8")])


def _worker_columns(train):
  """The columns a worker trains on: {user, item, label (float32; 1 without labels),
  session (the user without sessions)}."""
  labels = train.labels if train.labels is not None else np.ones(len(train), np.float32)
  return {"user": train.users, "item": train.items, "label": labels.astype(np.float32),
          "session": train.sessions if train.sessions is not None else train.users}


def _worker_index(num_workers, worker_index):
  """The worker's index: given (tests), else 0 alone, else known at run time
  (`tf.distribute.coordinator.experimental_get_current_worker_index`); an int64 tensor."""
  if worker_index is None:
    worker_index = (tf.distribute.coordinator.experimental_get_current_worker_index()
                    if num_workers > 1 else 0)
  return tf.cast(worker_index, tf.int64)


def save_worker_split(path, train):
  """Writes `train` (Interactions) to `path` as WORKER_SPLIT_FILE records (user, item,
  session as int64, label as float64), whole or not at all."""
  records = np.empty(len(train), _SPLIT_RECORD)
  for name, column in _worker_columns(train).items():
    records[name] = column
  with atomic.atomic_write(path, "wb") as f:
    records.tofile(f)


def worker_dataset_from_file(path, num_examples, batch_size, drop_remainder=True,
                             num_workers=1, worker_index=None):
  """`worker_dataset` read from a WORKER_SPLIT_FILE of `num_examples` examples: worker i
  reads only its contiguous share, examples [i n / W, (i + 1) n / W) of the file (its
  header and footer bytes skipped: FixedLengthRecordDataset), so the split never travels
  inside the dataset's graph (a graph is at most 2 GB) and no worker reads all of it."""
  size = _SPLIT_RECORD.itemsize
  index = _worker_index(num_workers, worker_index)
  start = index * num_examples // num_workers
  stop = (index + 1) * num_examples // num_workers
  ds = tf.data.FixedLengthRecordDataset(path, size, header_bytes=start * size,
                                        footer_bytes=(num_examples - stop) * size)

  def decode(records):  # a batch of records: one decode_raw, not one function an example
    fields = tf.io.decode_raw(records, tf.int64)  # [B, 4], little-endian as written
    return {"user": fields[:, 0], "item": fields[:, 1],
            "label": tf.cast(tf.bitcast(fields[:, 3], tf.float64), tf.float32),
            "session": fields[:, 2]}

  share = -(-num_examples // max(1, num_workers))
  # seed=None and no global seed: the worker draws the seed when the dataset is built.
  ds = ds.shuffle(share, reshuffle_each_iteration=True).repeat()
  return ds.batch(batch_size, drop_remainder=drop_remainder).map(decode).prefetch(2)


def worker_dataset(train, batch_size, drop_remainder=True, num_workers=1, worker_index=None):
  """The endless stream of batches a parameter-server worker trains on: its shard of the
  training split (every num_workers-th example from its index on) as TF ops
  (from_tensor_slices; it runs on the worker, no Python), reshuffled every pass with a seed
  the worker draws at run time.

  A per-worker dataset is one function traced once for all workers
  (`ClusterCoordinator.create_per_worker_dataset`); the worker's index comes at run time
  from `tf.distribute.coordinator.experimental_get_current_worker_index` (worker_index
  None), or is given (tests). The chief schedules epochs x steps_per_epoch steps over all
  workers, so with workers of equal speed an epoch passes each example about once.
  """
  ds = tf.data.Dataset.from_tensor_slices(_worker_columns(train))
  if num_workers > 1:
    ds = ds.shard(num_workers, _worker_index(num_workers, worker_index))
  # seed=None and no global seed: the worker draws the seed when the dataset is built.
  shard_size = -(-len(train) // max(1, num_workers))
  ds = ds.shuffle(shard_size, reshuffle_each_iteration=True).repeat()
  return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
