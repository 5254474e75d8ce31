"""User-item interactions: a generic CSV/TSV reader, id vocabularies, splits.

The in-memory form is `Interactions`: parallel int arrays of user and item
indices (one row per interaction, file order kept), optional rating/label,
timestamp and session columns, plus per-user and per-item categorical side
features. Raw ids are kept as strings; index i of `user_ids` is the raw id of
user index i. Side features are `Feature`s: a vocabulary whose index 0 means
"padding / unknown" and an int matrix [num_entities, max_len] of token indices
(single-valued features have max_len 1; multi-valued ones such as genres or
title words are padded with 0).

Files read here: delimited text with a header row. The delimiter is taken from
the extension (.csv: comma; .tsv, .inter, .item, .user: tab) or sniffed.
RecBole atomic headers (`user_id:token`, `class:token_seq`) are understood:
the `:type` suffix is dropped and `token_seq` columns are split on spaces.
"""
import csv
import dataclasses
import os
import re

import numpy as np

from tf_embeddings.data.errors import UserError

_TAB_EXTENSIONS = (".tsv", ".inter", ".item", ".user", ".dat", ".data")


@dataclasses.dataclass(frozen=True)
class Feature:
  """A categorical side feature of users or items.

  Attributes:
    name: feature name, e.g. "genres".
    vocab: tuple of token strings; vocab[0] is "" (padding / unknown).
    values: int32 [num_entities, max_len] token indices, 0 = padding.
  """
  name: str
  vocab: tuple
  values: np.ndarray

  @property
  def multivalued(self):
    return self.values.shape[1] > 1


def build_feature(name, token_lists, max_len=None):
  """Builds a `Feature` from one list of tokens per entity.

  Args:
    name: feature name.
    token_lists: sequence (one per entity) of token sequences; empty = unknown.
    max_len: keep at most this many tokens per entity (default: the longest).

  Returns:
    A `Feature` whose vocabulary is ordered by first appearance.
  """
  index = {"": 0}
  rows = []
  for tokens in token_lists:
    row = []
    for t in tokens:
      if t == "":
        continue
      if t not in index:
        index[t] = len(index)
      row.append(index[t])
    rows.append(row)
  width = max([len(r) for r in rows] + [1])
  if max_len:
    width = min(width, max_len)
  values = np.zeros((len(rows), width), np.int32)
  for i, r in enumerate(rows):
    r = r[:width]
    values[i, :len(r)] = r
  vocab = tuple(sorted(index, key=index.get))
  return Feature(name, vocab, values)


@dataclasses.dataclass
class Interactions:
  """Interactions plus the id vocabularies and side features they refer to.

  Attributes:
    name: dataset name for messages and logs.
    user_ids: object array [num_users] of raw user id strings.
    item_ids: object array [num_items] of raw item id strings.
    users: int64 [n] user index of each interaction.
    items: int64 [n] item index of each interaction.
    labels: float32 [n] rating or label, or None.
    timestamps: float64 [n], or None.
    sessions: int64 [n] session index, or None.
    user_features: tuple of `Feature` over users.
    item_features: tuple of `Feature` over items.
    item_titles: list [num_items] of display names (for the projector).
    binary_labels: labels are 0/1 (pointwise training data with negatives),
      not ratings.
  """
  name: str
  user_ids: np.ndarray
  item_ids: np.ndarray
  users: np.ndarray
  items: np.ndarray
  labels: np.ndarray = None
  timestamps: np.ndarray = None
  sessions: np.ndarray = None
  user_features: tuple = ()
  item_features: tuple = ()
  item_titles: list = None
  binary_labels: bool = False

  @property
  def num_users(self):
    return len(self.user_ids)

  @property
  def num_items(self):
    return len(self.item_ids)

  def __len__(self):
    return len(self.users)

  def subset(self, index):
    """Returns the same dataset restricted to rows `index` (vocabularies kept)."""
    pick = lambda a: None if a is None else a[index]
    return dataclasses.replace(
        self, users=self.users[index], items=self.items[index], labels=pick(self.labels),
        timestamps=pick(self.timestamps), sessions=pick(self.sessions))

  def item_counts(self):
    """int64 [num_items]: how often each item occurs."""
    return np.bincount(self.items, minlength=self.num_items).astype(np.int64)


def positives(data, min_rating=None):
  """Keeps the interactions whose label is >= min_rating (all if None).

  Raises:
    UserError: min_rating is set but the data has no rating/label column.
  """
  if min_rating is None:
    return data
  if data.labels is None:
    raise UserError(f"--min_rating needs ratings, but {data.name} has no rating/label column")
  keep = np.flatnonzero(data.labels >= min_rating)
  if not len(keep):
    raise UserError(f"no interaction of {data.name} has a rating >= {min_rating}: "
                    "lower --min_rating")
  return data.subset(keep)


def random_split(n, test_fraction=0.2, seed=42):
  """Random split of n rows (the TensorFlow Recommenders tutorial protocol).

  Args:
    n: number of interactions.
    test_fraction: share of rows that go to the test side.
    seed: shuffle seed.

  Returns:
    (train_index, test_index), int64 arrays, each sorted (file order kept).
  """
  perm = np.random.RandomState(seed).permutation(n)
  n_test = int(round(n * test_fraction))
  n_train = n - n_test
  return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def leave_last_out(users, timestamps):
  """Leave-last-out: each user's last interaction by time goes to the test side.

  Ties on the timestamp are broken by file order (the later row is the last).
  Users with a single interaction keep it in train.

  Args:
    users: int [n] user index per row.
    timestamps: [n] timestamps.

  Returns:
    (train_index, test_index), int64 arrays sorted by row.
  """
  if timestamps is None:
    raise UserError("leave-last-out needs timestamps, but the data has no timestamp column: "
                    "use --split=random")
  n = len(users)
  rows = np.arange(n)
  # Sort by user, then time, then row: the last row of each user run is its latest.
  order = np.lexsort((rows, timestamps, users))
  su = users[order]
  last = np.ones(n, bool)
  last[:-1] = su[:-1] != su[1:]
  first = np.ones(n, bool)
  first[1:] = su[1:] != su[:-1]
  test_mask = np.zeros(n, bool)
  test_mask[order[last & ~first]] = True  # users with >= 2 rows
  return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def split(data, kind="random", test_fraction=0.2, seed=42):
  """Splits `data` into (train, test) `Interactions`.

  Args:
    data: `Interactions`.
    kind: "random" (seeded 80/20) or "leave_last_out" (last interaction per user by time).
    test_fraction: for "random".
    seed: for "random".

  Raises:
    UserError: a side is empty, or the split needs a missing column.
  """
  if kind == "random":
    tr, te = random_split(len(data), test_fraction, seed)
  elif kind == "leave_last_out":
    tr, te = leave_last_out(data.users, data.timestamps)
  else:
    raise UserError(f"unknown split {kind!r}: use random or leave_last_out")
  if not len(tr) or not len(te):
    side = "train" if not len(tr) else "test"
    raise UserError(f"the {side} split of {data.name} is empty ({len(data)} interactions, "
                    f"split={kind}): use more data or another split")
  return data.subset(tr), data.subset(te)


# ----------------------------------------------------------------------------- files


def _delimiter_for(path, first_line):
  low = path.lower()
  if low.endswith(".csv"):
    return ","
  if low.endswith(_TAB_EXTENSIONS):
    return "\t"
  try:
    return csv.Sniffer().sniff(first_line, delimiters=",\t;|").delimiter
  except csv.Error:
    return "\t" if "\t" in first_line else ","


def read_table(path, delimiter=None, encoding="utf-8"):
  """Reads a delimited text file with a header row.

  Args:
    path: file path.
    delimiter: column separator; None = from the extension or sniffed.
    encoding: text encoding.

  Returns:
    (columns, types, rows): column names with any RecBole `:type` suffix removed,
    the types ("" if none), and the rows as lists of strings.

  Raises:
    UserError: the file is missing or empty.
  """
  if not os.path.isfile(path):
    raise UserError(f"data file {path!r} does not exist")
  with open(path, encoding=encoding, errors="replace", newline="") as f:
    first = f.readline()
    if not first.strip():
      raise UserError(f"data file {path!r} is empty: it needs a header row and data rows")
    delim = delimiter or _delimiter_for(path, first)
    f.seek(0)
    reader = csv.reader(f, delimiter=delim, quoting=csv.QUOTE_MINIMAL if delim == "," else
                        csv.QUOTE_NONE)
    header = next(reader)
    rows = [r for r in reader if r and any(c.strip() for c in r)]
  names, types = [], []
  for h in header:
    h = h.strip()
    name, _, typ = h.partition(":")
    names.append(name)
    types.append(typ)
  return names, types, rows


def _column(names, wanted, path, flag):
  if wanted not in names:
    raise UserError(f"{path!r} has no column {wanted!r} (columns: {', '.join(names)}): "
                    f"set {flag}")
  return names.index(wanted)


def _tokens(value, typ, seq_sep):
  value = value.strip()
  if typ == "token_seq":
    return value.split()
  if seq_sep and seq_sep in value:
    return [t.strip() for t in value.split(seq_sep)]
  return [value]


def read_interactions(path, user_col="user_id", item_col="item_id", label_col=None,
                      time_col=None, session_col=None, user_feature_cols=(),
                      item_feature_cols=(), delimiter=None, seq_sep="|", name=None):
  """Reads interactions from one CSV/TSV file (or a RecBole `.inter` file).

  Side-feature columns in the interactions file are per user or per item; the
  value on the first row of a user (item) is taken. Multi-valued cells are split
  on `seq_sep` (RecBole `token_seq` columns on spaces).

  Args:
    path: the file.
    user_col, item_col: id columns (required).
    label_col: optional rating/label column (float).
    time_col: optional timestamp column (float).
    session_col: optional session id column.
    user_feature_cols, item_feature_cols: side-feature column names.
    delimiter: None = by extension / sniffed.
    seq_sep: separator of multi-valued cells.
    name: dataset name (default: file name).

  Returns:
    `Interactions`.

  Raises:
    UserError: missing file, missing column, bad number, no rows.
  """
  names, types, rows = read_table(path, delimiter)
  if not rows:
    raise UserError(f"data file {path!r} has a header but no interactions")
  ui = _column(names, user_col, path, "--user_column")
  ii = _column(names, item_col, path, "--item_column")
  li = _column(names, label_col, path, "--label_column") if label_col else None
  ti = _column(names, time_col, path, "--timestamp_column") if time_col else None
  si = _column(names, session_col, path, "--session_column") if session_col else None
  ufi = [_column(names, c, path, "--user_feature_columns") for c in user_feature_cols]
  ifi = [_column(names, c, path, "--item_feature_columns") for c in item_feature_cols]
  need = max([ui, ii] + [c for c in (li, ti, si) if c is not None] + ufi + ifi)
  user_index, item_index, session_index = {}, {}, {}
  users, items, labels, times, sessions = [], [], [], [], []
  ufeat, ifeat = {}, {}
  for line_no, r in enumerate(rows, start=2):
    if len(r) <= need:
      raise UserError(f"{path}:{line_no}: expected at least {need + 1} columns, got {len(r)}")
    u = user_index.setdefault(r[ui].strip(), len(user_index))
    i = item_index.setdefault(r[ii].strip(), len(item_index))
    users.append(u)
    items.append(i)
    try:
      if li is not None:
        labels.append(float(r[li]))
      if ti is not None:
        times.append(float(r[ti]))
    except ValueError:
      raise UserError(f"{path}:{line_no}: label/timestamp is not a number: {r!r}") from None
    if si is not None:
      sessions.append(session_index.setdefault(r[si].strip(), len(session_index)))
    if ufi and u not in ufeat:
      ufeat[u] = [_tokens(r[c], types[c], seq_sep) for c in ufi]
    if ifi and i not in ifeat:
      ifeat[i] = [_tokens(r[c], types[c], seq_sep) for c in ifi]
  user_features = tuple(
      build_feature(c, [ufeat[u][k] for u in range(len(user_index))])
      for k, c in enumerate(user_feature_cols))
  item_features = tuple(
      build_feature(c, [ifeat[i][k] for i in range(len(item_index))])
      for k, c in enumerate(item_feature_cols))
  item_ids = np.array(list(item_index), dtype=object)
  return Interactions(
      name=name or os.path.basename(path),
      user_ids=np.array(list(user_index), dtype=object),
      item_ids=item_ids,
      users=np.asarray(users, np.int64),
      items=np.asarray(items, np.int64),
      labels=np.asarray(labels, np.float32) if li is not None else None,
      timestamps=np.asarray(times, np.float64) if ti is not None else None,
      sessions=np.asarray(sessions, np.int64) if si is not None else None,
      user_features=user_features,
      item_features=item_features,
      item_titles=[str(x) for x in item_ids])


def attach_side_tables(data, user_table=None, item_table=None, title=None):
  """Adds side features read from separate per-user / per-item tables.

  Args:
    data: `Interactions` (its id vocabularies are extended with ids that
      appear only in the item table, so that the corpus holds every item).
    user_table: None or (id_column_values, {feature: token lists}) aligned rows.
    item_table: same for items.
    title: None or list of titles aligned with item_table rows.

  Returns:
    A new `Interactions` with user_features / item_features / item_titles.
  """
  user_ids = list(data.user_ids)
  item_ids = list(data.item_ids)
  titles = list(data.item_titles or item_ids)

  def features(ids, table, extend, titles_out=None, table_titles=None):
    if table is None:
      return ()
    tids, feats = table
    pos = {x: k for k, x in enumerate(ids)}
    row_of = {}
    for row, t in enumerate(tids):
      if t not in pos and extend:
        pos[t] = len(ids)
        ids.append(t)
        if titles_out is not None:
          titles_out.append(t)
      if t in pos:
        row_of[pos[t]] = row
        if titles_out is not None and table_titles is not None:
          titles_out[pos[t]] = table_titles[row]
    out = []
    for fname, token_lists in feats.items():
      out.append(build_feature(
          fname, [token_lists[row_of[k]] if k in row_of else [] for k in range(len(ids))]))
    return tuple(out)

  ufeats = features(user_ids, user_table, extend=False)
  ifeats = features(item_ids, item_table, extend=True, titles_out=titles, table_titles=title)
  return dataclasses.replace(
      data, user_ids=np.array(user_ids, dtype=object), item_ids=np.array(item_ids, dtype=object),
      user_features=ufeats or data.user_features, item_features=ifeats or data.item_features,
      item_titles=titles)


_WORD = re.compile(r"[a-z0-9]+")


def title_tokens(title):
  """Lowercase word tokens of a title, without a trailing '(1995)' year."""
  title = re.sub(r"\(\d{4}\)\s*$", "", title.strip())
  return _WORD.findall(title.lower())


def seen_items(data):
  """Per-user item sets as a CSR structure.

  Returns:
    (indptr int64 [num_users + 1], indices int64 [nnz]): items of user u are
    indices[indptr[u]:indptr[u + 1]], sorted and unique.
  """
  key = np.unique(data.users.astype(np.int64) * data.num_items + data.items)
  u = key // data.num_items
  it = key % data.num_items
  indptr = np.zeros(data.num_users + 1, np.int64)
  np.add.at(indptr, u + 1, 1)
  return np.cumsum(indptr), it.astype(np.int64)
