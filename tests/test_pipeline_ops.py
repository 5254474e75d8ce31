"""data/pipeline_ops.py: the blocks a parameter-server worker makes with TensorFlow ops
(--cluster_input=workers) against the numpy pipeline's definitions: each chunk read once a
pass by one worker, its kept ids cut into runs with their text, the same runs whichever
worker makes them, subsampling at the keep probabilities."""
import math

import numpy as np
import pytest

from tf_embeddings.data import pipeline
from tf_embeddings.data import pipeline_ops

W = 3  # window


def write_ids(tmp_path, n=5000, vocab=40, seed=0, heldout=77):
  """An ids.int32 of n training ids (some 0 = UNK) and `heldout` ids after them."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=n + heldout).astype(np.int32)
  path = str(tmp_path / "ids.int32")
  ids.tofile(path)
  return path, ids


def runs_of(path, n, keep, worker, workers, chunk, blocks=None, start_chunk=0):
  """One worker's runs of 64 centres (blocks of one run), as (windows [runs, 64 + 2w],
  reduced [runs, 64], centres [runs, 64]): its first `blocks`, or one whole pass."""
  ds = pipeline_ops.worker_blocks(path, n, keep, "cbow", W, 64, 1, 5, chunk, 0, start_chunk,
                                  1, worker, workers, repeat=blocks is not None)
  length = 64
  out = []
  for block in ds.take(-1 if blocks is None else blocks):
    windows = block["inputs"].numpy().reshape(-1, length + 2 * W)
    out.append((windows, block["lengths"].numpy().reshape(-1, length),
                block["targets"].numpy().reshape(-1, length)))
  return [np.concatenate(parts) for parts in zip(*out)]


def test_one_pass_reads_every_chunk_once_and_cuts_it_into_runs_with_their_text(tmp_path):
  n, chunk = 5000, 700
  path, ids = write_ids(tmp_path, n)
  keep = np.ones(40)  # no subsampling: a chunk's kept ids are its ids other than 0
  num_chunks = math.ceil(n / chunk)
  # What each chunk gives: its non-zero ids cut into whole runs of 64 (the rest dropped),
  # each run with the W ids on either side (zeros beyond the chunk's edges).
  texts, centres_of = {}, {}
  for c in range(num_chunks):
    kept = ids[c * chunk:min(n, (c + 1) * chunk)]
    kept = kept[kept != 0][:len(kept[kept != 0]) // 64 * 64]
    texts[c] = np.concatenate([np.zeros(W, np.int32), kept, np.zeros(W, np.int32)])
    centres_of[c] = kept
  for workers in (1, 2, 3):
    centres_seen = []
    for worker in range(workers):
      mine = [c for c in range(num_chunks) if c % workers == worker]
      windows, reduced, centres = runs_of(path, n, keep, worker, workers, chunk)
      assert len(windows) == sum(len(centres_of[c]) for c in mine) // 64
      assert ((reduced >= 1) & (reduced <= W)).all()
      assert (windows[:, W:W + 64] == centres).all()
      runs = {tuple(texts[c][s:s + 64 + 2 * W]) for c in mine
              for s in range(0, len(centres_of[c]), 64)}
      assert {tuple(row) for row in windows} == runs
      centres_seen.append(centres.ravel())
    np.testing.assert_array_equal(  # each chunk once a pass, by one worker
        np.sort(np.concatenate(centres_seen)),
        np.sort(np.concatenate(list(centres_of.values()))))


def test_a_chunk_gives_the_same_runs_whichever_worker_makes_it(tmp_path):
  n, chunk = 4000, 1000
  path, ids = write_ids(tmp_path, n, seed=1)
  keep = pipeline.keep_probabilities(np.bincount(ids, minlength=40), 0.002)
  assert keep.min() < 0.9  # really subsampled
  as_set = lambda runs: {(tuple(w), tuple(r)) for w, r in zip(runs[0], runs[1])}
  one = as_set(runs_of(path, n, keep, 0, 1, chunk))
  assert one == as_set(runs_of(path, n, keep, 0, 2, chunk)) | as_set(
      runs_of(path, n, keep, 1, 2, chunk))


def test_subsampling_keeps_each_word_at_its_probability(tmp_path):
  n = 20000
  path, ids = write_ids(tmp_path, n, vocab=6, seed=2, heldout=0)
  counts = np.bincount(ids, minlength=6)
  keep = pipeline.keep_probabilities(counts, 0.05)
  keep[3] = 0.25
  blocks = pipeline_ops.expected_blocks(counts, keep, n, n, 64, 1) * 9 // 10
  _, _, centres = runs_of(path, n, keep, 0, 1, 2048, blocks=blocks)
  seen = np.bincount(centres.ravel(), minlength=6)
  assert seen[0] == 0  # UNK is never a centre
  total = sum(counts[v] * keep[v] for v in range(1, 6))
  for v in range(1, 6):
    p = counts[v] * keep[v] / total  # share of v among the kept ids
    assert abs(seen[v] / seen.sum() - p) < 5 * math.sqrt(p * (1 - p) / seen.sum()), v


def test_skipgram_blocks_have_one_reduced_window_and_the_resumed_pass_starts_later(tmp_path):
  n, chunk = 6000, 500
  path, ids = write_ids(tmp_path, n, seed=3)
  keep = np.ones(40)
  ds = pipeline_ops.worker_blocks(path, n, keep, "skipgram", W, 128, 2, 5, chunk, 0, 0, 1,
                                  0, 1)
  windows = set()
  for block in ds.take(30):
    lengths = block["lengths"].numpy()
    assert (lengths == lengths[0, 0]).all() and 1 <= lengths[0, 0] <= W
    windows.add(int(lengths[0, 0]))
  assert windows == set(range(1, W + 1))
  # Resumed at chunk 10 of 12: the first run is one of chunk 10's.
  resumed = runs_of(path, n, keep, 0, 1, chunk, blocks=1, start_chunk=10)
  kept = ids[10 * chunk:11 * chunk]
  kept = kept[kept != 0]
  assert tuple(resumed[2][0]) in {tuple(kept[s:s + 64]) for s in range(0, len(kept) - 63, 64)}


def test_worker_shares_and_expected_blocks():
  assert pipeline_ops.worker_chunk_tokens(1000, 1 << 20, 3) == 334
  # 2.8M ids, 2 workers: 4 chunks of 700k (not 1M, 1M, 0.8M: 1.8M against 1M).
  assert pipeline_ops.worker_chunk_tokens(2_800_000, 1 << 20, 2) == 700_000
  assert pipeline_ops.worker_tokens(2_800_000, 700_000, 2) == [1_400_000, 1_400_000]
  assert pipeline_ops.worker_chunk_tokens(10_000_000, 1 << 20, 3) == 833_334
  assert pipeline_ops.worker_tokens(1000, 334, 3) == [334, 334, 332]
  assert pipeline_ops.worker_tokens(1000, 300, 2) == [600, 400]  # chunks 0, 2 and 1, 3
  counts = np.array([10, 500, 300, 200])  # UNK's 10 never become centres
  assert pipeline_ops.expected_blocks(counts, np.ones(4), 1010, 1010, 100, 2) == 5
  assert pipeline_ops.expected_blocks(counts, np.full(4, 0.5), 505, 1010, 100, 1) == 2


def test_a_file_of_partial_ids_is_refused(tmp_path):
  path = tmp_path / "ids.int32"
  path.write_bytes(b"\0" * 6)
  with pytest.raises(ValueError, match="not a whole number of int32 ids"):
    pipeline_ops.worker_blocks(str(path), 1, np.ones(2), "cbow", W, 64, 1, 5, 10, 0, 0, 1,
                               0, 1)
