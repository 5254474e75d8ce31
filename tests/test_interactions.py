"""Interactions reader, splits, seen-item CSR and the synthetic generator."""
import numpy as np
import pytest

from tf_embeddings.data import interactions as ilib
from tf_embeddings.data import synthetic
from tf_embeddings.data.errors import UserError


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_read_csv_columns_labels_features(tmp_path):
  path = _write(tmp_path / "x.csv",
                "uid,iid,stars,ts,genre,city\n"
                "a,m1,5,10,drama|comedy,paris\n"
                "b,m2,3,11,drama,rome\n"
                "a,m2,4,12,drama,paris\n")
  d = ilib.read_interactions(path, "uid", "iid", label_col="stars", time_col="ts",
                             user_feature_cols=("city",), item_feature_cols=("genre",))
  assert list(d.user_ids) == ["a", "b"]
  assert list(d.item_ids) == ["m1", "m2"]
  np.testing.assert_array_equal(d.users, [0, 1, 0])
  np.testing.assert_array_equal(d.items, [0, 1, 1])
  np.testing.assert_array_equal(d.labels, [5, 3, 4])
  np.testing.assert_array_equal(d.timestamps, [10, 11, 12])
  genre = d.item_features[0]
  assert genre.vocab == ("", "drama", "comedy")
  # m1 -> drama, comedy; m2 -> drama, padded with 0.
  np.testing.assert_array_equal(genre.values, [[1, 2], [1, 0]])
  city = d.user_features[0]
  np.testing.assert_array_equal(city.values[:, 0], [1, 2])


def test_read_recbole_atomic_header_and_token_seq(tmp_path):
  path = _write(tmp_path / "t.inter",
                "user_id:token\titem_id:token\ttags:token_seq\n1\t7\tx y\n2\t7\tx y\n")
  d = ilib.read_interactions(path, item_feature_cols=("tags",))
  assert d.item_features[0].vocab == ("", "x", "y")
  assert len(d) == 2 and d.num_items == 1


def test_missing_column_is_a_user_error(tmp_path):
  path = _write(tmp_path / "x.tsv", "user\titem\n1\t2\n")
  with pytest.raises(UserError, match="no column 'user_id'.*--user_column"):
    ilib.read_interactions(path)


def test_header_only_and_missing_file(tmp_path):
  path = _write(tmp_path / "x.csv", "user_id,item_id\n")
  with pytest.raises(UserError, match="no interactions"):
    ilib.read_interactions(path)
  with pytest.raises(UserError, match="does not exist"):
    ilib.read_interactions(str(tmp_path / "nope.csv"))


def test_random_split_is_seeded_disjoint_and_80_20():
  tr, te = ilib.random_split(1000, 0.2, seed=42)
  assert len(tr) == 800 and len(te) == 200
  assert not set(tr) & set(te)
  assert sorted(set(tr) | set(te)) == list(range(1000))
  tr2, te2 = ilib.random_split(1000, 0.2, seed=42)
  np.testing.assert_array_equal(te, te2)
  _, te3 = ilib.random_split(1000, 0.2, seed=43)
  assert set(te3) != set(te)


def test_leave_last_out_breaks_ties_by_file_order():
  # rows:    0  1  2  3  4  5
  users = np.array([0, 0, 1, 0, 2, 1])
  times = np.array([5, 9, 3, 9, 1, 2])
  # user 0: rows 1 and 3 tie at t=9, the later row (3) is last.
  # user 1: row 2 (t=3) is last although row 5 comes later in the file.
  # user 2: a single row stays in train.
  tr, te = ilib.leave_last_out(users, times)
  np.testing.assert_array_equal(te, [2, 3])
  np.testing.assert_array_equal(tr, [0, 1, 4, 5])


def test_empty_split_and_missing_timestamps_are_user_errors():
  d = synthetic.generate(synthetic.SyntheticConfig(num_users=5, num_items=20,
                                                   interactions_per_user=4))
  one = d.subset(np.array([0]))
  with pytest.raises(UserError, match="test split .* is empty"):
    ilib.split(one, "random", 0.2, 0)
  no_time = d.subset(np.arange(len(d)))
  no_time.timestamps = None
  with pytest.raises(UserError, match="timestamps"):
    ilib.split(no_time, "leave_last_out")


def test_min_rating_keeps_positives():
  d = synthetic.generate()
  pos = ilib.positives(d, 4)
  assert len(pos) == int((d.labels >= 4).sum())
  assert pos.labels.min() >= 4
  assert ilib.positives(d, None) is d
  with pytest.raises(UserError, match="lower --min_rating"):
    ilib.positives(d, 6)


def test_seen_items_csr():
  d = synthetic.generate(synthetic.SyntheticConfig(num_users=3, num_items=30,
                                                   interactions_per_user=5))
  indptr, indices = ilib.seen_items(d)
  for u in range(d.num_users):
    assert list(indices[indptr[u]:indptr[u + 1]]) == sorted(set(d.items[d.users == u]))


def test_synthetic_is_seeded_zipf_and_structured():
  a = synthetic.generate()
  b = synthetic.generate()
  np.testing.assert_array_equal(a.items, b.items)
  counts = np.sort(a.item_counts())[::-1]
  # Zipf-like popularity: the top 10% of items take far more than 10% of interactions.
  assert counts[:30].sum() > 0.25 * counts.sum()  # uniform would give 0.10
  # Planted tastes: a user's interactions concentrate on few genres (topics).
  genres = a.item_features[0].values[:, 0]
  top_share = []
  for u in range(50):
    g = np.bincount(genres[a.items[a.users == u]])
    top_share.append(g.max() / g.sum())
  assert np.mean(top_share) > 0.4
