"""Query and item towers: id + side-feature embeddings -> concat -> MLP -> L2 norm.

A tower owns its entity's side-feature table, so it can embed an entity from
its index alone (`embed_index`) during training and evaluation; the export
maps raw strings to the same indices and calls `__call__` directly.
`build_model` makes the `TwoTower` of a run's config, `restore` loads its last checkpoint.
"""
import contextlib

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings.data.errors import UserError
from tf_embeddings.training.distribute import gather_rows
from tf_embeddings.training.distribute import row_initial
from tf_embeddings.training.distribute import stateless_rows
from tf_embeddings.twotower import config as config_lib


class Tower(tf.Module):
  """One tower: embedding tables, concatenation, MLP, L2-normalised output.

  Inputs of `__call__`: `ids` int [B] entity indices (0 <= id < num_ids, or
  `oov_index` = num_ids for an entity unseen at training time when `oov`) and
  `features`, a list of int [B, L_f] token indices per side feature (0 =
  padding, pooled by mean over non-padding tokens).
  Output: float32 [B, embedding_dim] with unit L2 norm (plus one bias
  coordinate with `bias_column`).
  """

  def __init__(self, num_ids, feature_tables, embedding_dim, layers=(), use_ids=True,
               feature_dim=None, seed=0, history=None, bias_column=None, normalize=True,
               name=None, table_scope=contextlib.nullcontext, oov=False, members=1):
    """Builds the variables.

    Args:
      num_ids: number of entities (rows of the id table).
      feature_tables: list of (name, vocab_size, values int32 [num_ids, L]) giving
        each side feature's vocabulary size and the per-entity token matrix.
      embedding_dim: output size (and id embedding size).
      layers: hidden layer widths of the MLP (ReLU); a final linear layer maps
        to embedding_dim. With no layers, no features and ids: identity.
      use_ids: whether the entity id has its own embedding.
      feature_dim: embedding size of side features (default embedding_dim).
      seed: initialisation seed.
      history: None, or (indptr, indices, num_items): each entity's training
        items as CSR (query tower). Their embeddings (a table of this tower) are
        mean-pooled into one more input, YouTube-DNN style; in training the
        positive item is left out of its own user's history (`exclude_items`).
      bias_column: None; "one" appends a constant 1 to the normalised output
        (query tower); "learned" appends a learned per-entity scalar (item
        tower). Together they add an item bias to the dot product, so
        popularity need not be squeezed into the unit sphere.
      normalize: L2-normalise the output (cosine scores); False: raw dot products.
      name: module name.
      table_scope: context in which the per-entity / per-token tables are created (under
        ParameterServerStrategy: sharded by rows over the parameter servers; the MLP is not).
      oov: the id table has one more row, `oov_index`, for entities unseen at training
        time (no side features or history of its own: the caller gives the features).
      members: an ensemble of this many towers in one (--ensemble): every table has
        members x its width (member k's columns [k * w, (k + 1) * w)), every MLP layer a
        [members, in, out] kernel, and each member's output is normalised on its own; the
        output is the members' outputs side by side divided by sqrt(members), so a dot
        product of two towers is the mean of their members' (`member_outputs` splits it).
        One set of variables and ops for all members: a step costs far less than members
        separate towers.
    """
    super().__init__(name=name)
    self.num_ids = int(num_ids)
    self.embedding_dim = int(embedding_dim)
    self.use_ids = bool(use_ids)
    self.oov = bool(oov)
    self.members = int(members)
    k_ = self.members
    feature_dim = int(feature_dim or embedding_dim)
    init = lambda shape, s, scale: tf.random.stateless_normal(shape, [seed, s]) * scale

    def table_variable(shape, s, scale, name, extra_row=None):
      """A table of init(shape, s, scale) (plus the row init([1, dim], extra_row, scale)
      at the end), made shard by shard on the parameter servers when sharded: the same
      values (distribute.stateless_rows), no whole table on the chief."""
      def rows(start, count):
        stop = min(start + count, shape[0])
        parts = [] if stop <= start else [
            stateless_rows("normal", shape, [seed, s], start, stop - start) * scale]
        if start + count > shape[0]:  # the extra row
          parts.append(init([1, shape[1]], extra_row, scale))
        return parts[0] if len(parts) == 1 else tf.concat(parts, 0)

      full = [shape[0] + (extra_row is not None), shape[1]]
      return tf.Variable(row_initial(full, rows), shape=full, dtype=tf.float32, name=name)

    def data_variable(values, name):
      """Per-entity data read by row (side-feature tokens, histories) as a non-trainable
      variable made with the tables: on a cluster sharded over the parameter servers like
      them, each shard made there from its rows, and a step gathers its batch's rows only
      (as a graph constant it would be copied into every function a worker runs)."""
      values = np.asarray(values)
      return tf.Variable(row_initial(list(values.shape),
                                     lambda start, count: tf.constant(values[start:start + count])),
                         shape=values.shape, dtype=values.dtype, trainable=False, name=name)

    self.feature_names = [f[0] for f in feature_tables]
    in_dim = 0
    with table_scope():
      # Per-entity side-feature token indices: list of int32 [num_ids, L_f].
      self.feature_values = [data_variable(np.asarray(v, np.int32), f"{fname}_tokens")
                             for fname, _, v in feature_tables]
      if self.use_ids:
        # Id embeddings: [num_ids (+ 1 OOV row), embedding_dim]. The OOV row is drawn
        # apart, so the entities' rows are those of a table without it.
        self.id_table = table_variable([self.num_ids, k_ * self.embedding_dim], 1, 0.1,
                                       "id_embeddings", 3 if self.oov else None)
        in_dim += self.embedding_dim
      self.feature_embeddings = []
      for k, (fname, vocab_size, _) in enumerate(feature_tables):
        self.feature_embeddings.append(table_variable(
            [int(vocab_size), k_ * feature_dim], 10 + k, 0.1, f"{fname}_embeddings"))
        in_dim += feature_dim
      self.history = None
      if history is not None:
        indptr, indices, num_items = history
        # Each entity's history items as CSR: row r's items are history_items[start_r:
        # start_r + len_r] (the OOV row: none). int64 [num_ids (+ 1)] twice, int64 [nnz].
        # `history` holds the starts (None: the tower pools no history).
        indptr = np.asarray(indptr, np.int64)
        self.history = data_variable(
            np.concatenate([indptr[:-1], np.full(int(self.oov), indptr[-1])]), "history_start")
        self.history_len = data_variable(
            np.concatenate([np.diff(indptr), np.zeros(int(self.oov), np.int64)]), "history_len")
        self.history_items = data_variable(np.asarray(indices, np.int64), "history_items")
        self.history_table = table_variable([int(num_items), k_ * feature_dim], 50, 0.1,
                                            "history_embeddings")
        in_dim += feature_dim
      self.bias_column = bias_column
      self.normalize = bool(normalize)
      if bias_column == "learned":
        # Per-entity bias: [num_ids, 1].
        self.bias_table = tf.Variable(row_initial([self.num_ids, k_]), shape=[self.num_ids, k_],
                                      dtype=tf.float32, name="bias")
    self.identity = (not layers and not feature_tables and self.use_ids and history is None)
    self.weights, self.biases = [], []
    if not self.identity:
      widths = list(layers) + [self.embedding_dim]
      for k, width in enumerate(widths):
        # He initialisation for ReLU layers, Glorot-like for the last one.
        scale = np.sqrt((2.0 if k < len(widths) - 1 else 1.0) / in_dim)
        # One member: [in, out]; an ensemble: [members, in, out] (biases [members, out]).
        lead = [k_] if k_ > 1 else []
        self.weights.append(tf.Variable(init(lead + [in_dim, width], 100 + k, scale),
                                        name=f"w{k}"))
        self.biases.append(tf.Variable(tf.zeros(lead + [width]), name=f"b{k}"))
        in_dim = width

  def __call__(self, ids, features, exclude_items=None, drop_ids=None):
    """Embeds a batch.

    Args:
      ids: int [B] entity indices.
      features: list of int [B, L_f] token indices.
      exclude_items: None, or int [B]: leaves each row's item out of its history.
      drop_ids: None, or bool [B]: these rows embed the OOV id instead of their own
        (id dropout; their features and history stay theirs).

    Returns:
      float32 [B, output_dim].
    """
    parts = []
    if self.use_ids:
      id_rows = ids
      if drop_ids is not None:
        id_rows = tf.where(drop_ids, tf.cast(self.oov_index, ids.dtype), ids)  # [B]
      parts.append(gather_rows(self.id_table, id_rows))  # [B, D]
    for table, values in zip(self.feature_embeddings, features):
      emb = gather_rows(table, values)  # [B, L, F]
      mask = tf.cast(values > 0, emb.dtype)[..., None]  # [B, L, 1]
      parts.append(tf.reduce_sum(emb * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1), 1.0))
    if self.history is not None:
      # Sum of the history item embeddings of each row of the batch: [B, F].
      lengths = gather_rows(self.history_len, ids)                              # [B]
      row = tf.repeat(tf.range(tf.size(ids, out_type=tf.int64)), lengths)         # [n]
      at = (tf.repeat(gather_rows(self.history, ids), lengths)
            + tf.range(tf.reduce_sum(lengths)) - tf.repeat(tf.cumsum(lengths, exclusive=True),
                                                            lengths))           # [n]
      # Each distinct item's row once (its gradient too), summed per row of the batch.
      distinct, position = tf.unique(gather_rows(self.history_items, at))        # [u], [n]
      member = tf.SparseTensor(tf.stack([row, tf.cast(position, tf.int64)], 1),
                               tf.ones_like(row, tf.float32),
                               tf.stack([tf.size(ids, out_type=tf.int64),
                                         tf.size(distinct, out_type=tf.int64)]))  # [B, u]
      sums = tf.sparse.sparse_dense_matmul(member, gather_rows(self.history_table, distinct))
      count = tf.cast(lengths, sums.dtype)                                        # [B]
      if exclude_items is not None:
        # -1 = nothing to leave out (e.g. a negative-labelled row).
        keep = tf.cast(exclude_items >= 0, sums.dtype)  # [B]
        sums -= gather_rows(self.history_table, tf.maximum(exclude_items, 0)) * keep[:, None]
        count -= keep
      parts.append(sums / tf.maximum(count, 1.0)[:, None])
    k_ = self.members
    if k_ > 1:  # each part [B, members * w] -> [B, members, w]
      parts = [tf.reshape(p, [-1, k_, p.shape[-1] // k_]) for p in parts]
    x = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)  # [B, (members,) in]
    n = len(self.weights)
    for k, (w, b) in enumerate(zip(self.weights, self.biases)):
      x = (tf.matmul(x, w) if k_ == 1 else tf.einsum("bki,kio->bko", x, w)) + b
      if k < n - 1:
        x = tf.nn.relu(x)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    if self.bias_column == "one":
      x = tf.concat([x, tf.ones_like(x[..., :1])], -1)
    elif self.bias_column == "learned":
      bias = gather_rows(self.bias_table, ids)  # [B, members]
      x = tf.concat([x, bias if k_ == 1 else bias[..., None]], -1)
    if k_ > 1:
      x = tf.reshape(x, [-1, k_ * x.shape[-1]]) * (1.0 / np.sqrt(k_))
    return x

  def entity_features(self, ids):
    """Side-feature token indices of entities `ids`: list of int32 [B, L_f]."""
    return [gather_rows(v, ids) for v in self.feature_values]

  def embed_index(self, ids, exclude_items=None, drop_ids=None):
    """Embeds entities by index: float32 [B, embedding_dim] (`__call__`'s arguments)."""
    return self(ids, self.entity_features(ids), exclude_items, drop_ids)

  @property
  def oov_index(self):
    """The id-table row of entities unseen at training time (with `oov`)."""
    if not self.oov:
      raise ValueError(f"{self.name} has no out-of-vocabulary row")
    return self.num_ids

  def embed_all(self, batch_size=65536):
    """Embeds every entity, in chunks: numpy float32 [num_ids, embedding_dim]."""
    return self.embed_rows(np.arange(self.num_ids), batch_size)

  def embed_rows(self, indices, batch_size=65536):
    """Embeds the given entities, in chunks: numpy float32 [len(indices), embedding_dim]
    (on a cluster only their rows are read from the parameter servers)."""
    indices = np.asarray(indices, np.int64)
    out = [self.embed_index(tf.constant(indices[start:start + batch_size])).numpy()
           for start in range(0, len(indices), batch_size)]
    return np.concatenate(out, 0) if out else np.zeros([0, self.output_dim], np.float32)

  @property
  def output_dim(self):
    return self.members * (self.embedding_dim + (1 if self.bias_column else 0))


def member_outputs(x, members):
  """The members' own outputs in a tower output `x` [..., members * w]: a list of `members`
  tensors [..., w] (each of unit norm when the tower normalises); [x] for one member."""
  if members == 1:
    return [x]
  return [part * np.sqrt(members) for part in tf.split(x, members, axis=-1)]


def feature_tables(features, selected=None):
  """Turns `data.interactions.Feature`s into Tower feature_tables.

  Args:
    features: tuple of Feature.
    selected: None (all) or a collection of feature names to keep.
  """
  return [(f.name, len(f.vocab), f.values) for f in features
          if selected is None or f.name in selected]


class TwoTower(tf.Module):
  """The pair of towers plus the temperature used by the losses and the eval."""

  def __init__(self, query_tower, item_tower, name="two_tower"):
    super().__init__(name=name)
    self.query_tower = query_tower
    self.item_tower = item_tower


def build_model(config, data, history=None, table_scope=contextlib.nullcontext):
  """Builds the `TwoTower` of a `Config` over the vocabularies of `data`.

  Args:
    config: `Config`.
    data: `Interactions` whose vocabularies and side features the towers embed (its
      rows are not read).
    history: users' histories, CSR (indptr, indices) of the training positives
      (`inputs.history`; needed with model.use_history).
    table_scope: context of the embedding tables' creation (`Distribution.tables`).
  """
  m = config.model
  uf = feature_tables(data.user_features) if m.use_features else []
  itf = feature_tables(data.item_features) if m.use_features else []
  if not m.use_ids and not uf:
    raise UserError("the query tower has no input: --use_ids=false needs user side features")
  if not m.use_ids and not itf:
    raise UserError("the item tower has no input: --use_ids=false needs item side features")
  if m.use_history:
    if history is None:
      raise ValueError("build_model needs the users' histories for --use_history")
    history = (*history, data.num_items)
  else:
    history = None
  query = Tower(data.num_users, uf, m.embedding_dim, m.tower_layers, m.use_ids,
                seed=m.seed * 2 + 1, history=history,
                bias_column="one" if m.item_bias else None, normalize=m.normalize,
                name="query_tower", table_scope=table_scope, oov=m.user_oov,
                members=m.ensemble)
  item = Tower(data.num_items, itf, m.embedding_dim, m.tower_layers, m.use_ids,
               seed=m.seed * 2 + 2, bias_column="learned" if m.item_bias else None,
               normalize=m.normalize, name="item_tower", table_scope=table_scope,
               members=m.ensemble)
  return TwoTower(query, item)


def make_checkpoint(two_tower, optimizer=None, average=None, task_weights=None, step=None):
  """(tf.train.Checkpoint of the towers [+ optimizer, weight average, multi-task weights],
  step variable: `step`, or a new one)."""
  if step is None:
    step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
  kw = {"query_tower": two_tower.query_tower, "item_tower": two_tower.item_tower, "step": step}
  if optimizer is not None:
    kw["optimizer"] = optimizer
  if average is not None:
    kw["weight_average"] = average
  if task_weights is not None:
    kw["task_weights"] = task_weights
  return tf.train.Checkpoint(**kw), step


def restore(config, data, history=None):
  """The `TwoTower` of a run at its last checkpoint (UserError if it has none)."""
  two_tower = build_model(config, data, history)
  ckpt, step = make_checkpoint(two_tower)
  latest = config_lib.run_dir(config.model_dir).latest_checkpoint()
  if latest is None:
    raise UserError(f"{config.model_dir!r} has no checkpoint yet: train first")
  ckpt.restore(latest).expect_partial()
  logging.info("restored %s (step %d)", latest, int(step.numpy()))
  return two_tower
