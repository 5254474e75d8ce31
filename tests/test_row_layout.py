"""distribute.RowLayout: where each id's row is in a table (row = id x a mod size), checked
against plain numpy and Python integers, at sizes up to 2^31 - 1, and for the spread it
gives count-sorted ids over contiguous shards."""
import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.training.distribute import RowLayout

SIZES = [1, 2, 3, 4, 7, 10, 64, 1000, 65537, 315000]


@pytest.mark.parametrize("size", SIZES)
def test_spread_is_a_bijection_keeping_row_0(size):
  layout = RowLayout.spread(size)
  rows = layout.rows_np(np.arange(size))
  assert rows[0] == 0
  np.testing.assert_array_equal(np.sort(rows), np.arange(size))
  # The op, int32 and int64, equals the numpy rows and i * a mod size in Python integers.
  for dtype in (tf.int32, tf.int64):
    got = layout.rows(tf.constant(np.arange(size), dtype)).numpy()
    np.testing.assert_array_equal(got, rows)
  some = np.random.default_rng(size).integers(0, size, 50)
  assert rows[some].tolist() == [int(i) * layout.multiplier % size for i in some]


def test_large_tables_do_not_overflow():
  size = 2 ** 31 - 1
  layout = RowLayout.spread(size)
  ids = np.array([0, 1, 2, size // 2, size - 2, size - 1], np.int32)
  want = [int(i) * layout.multiplier % size for i in ids]
  assert layout.rows_np(ids).tolist() == want
  assert layout.rows(tf.constant(ids)).numpy().tolist() == want


def test_to_ids_puts_rows_back_in_id_order():
  size = 1000
  layout = RowLayout.spread(size)
  by_id = np.random.default_rng(0).normal(size=[size, 3]).astype(np.float32)
  by_row = np.empty_like(by_id)
  by_row[layout.rows_np(np.arange(size))] = by_id
  np.testing.assert_array_equal(layout.to_ids(tf.constant(by_row)).numpy(), by_id)
  np.testing.assert_array_equal(layout.to_ids(by_row), by_id)  # numpy in, numpy out
  identity = RowLayout(size)
  assert identity.identity and identity.to_ids(by_row) is by_row


@pytest.mark.parametrize("size", [1000, 65537, 315000, 10 ** 8])
@pytest.mark.parametrize("shards", [2, 8, 64])
def test_frequent_ids_spread_evenly_over_contiguous_shards(size, shards):
  """The top 1,000 ids (count-sorted: the frequent words) over `shards` row ranges split
  as ParameterServerStrategy does ("div", the first shards a row longer): at most a quarter
  above the fair share (row = id puts them all on shard 0)."""
  ends = np.cumsum([size // shards + (s < size % shards) for s in range(shards)])
  top = RowLayout.spread(size).rows_np(np.arange(1, 1001))
  per_shard = np.bincount(np.searchsorted(ends, top, side="right"), minlength=shards)
  assert per_shard.max() <= 1.25 * 1000 / shards + 1, per_shard


def test_a_multiplier_that_is_no_bijection_is_refused():
  for size, multiplier in [(10, 2), (10, 5), (10, 10), (10, 0), (0, 1)]:
    with pytest.raises(ValueError):
      RowLayout(size, multiplier)
