"""word2vec example pipeline: subsampling, dynamic windows, skip-gram / CBOW examples, blocks."""
import collections
import math

import numpy as np
import pytest

from tf_embeddings.data import pipeline


def binomial_ok(successes, n, p, sigmas=5.0):
  """|successes - n p| within `sigmas` binomial standard deviations (seeded draws)."""
  return abs(successes - n * p) <= sigmas * math.sqrt(n * p * (1.0 - p)) + 1e-9


# ---- keep_probabilities ----------------------------------------------------------------

# counts (id 0 = UNK, 37 out-of-vocabulary tokens, NOT part of the total as in word2vec.c's
# train_words / gensim's retain_total): in-vocabulary total = 80+45+45+20+5+5+0 = 200,
# t = 0.025, so the threshold count t * total = 5 and P(keep) = (sqrt(c / 5) + 1) * 5 / c:
#   c=80: (4 + 1) * 5 / 80 = 0.3125
#   c=45: (3 + 1) * 5 / 45 = 0.4444...
#   c=20: (2 + 1) * 5 / 20 = 0.75
#   c=5 : (1 + 1) * 5 / 5  = 2     -> capped at 1
#   c=0 : undefined        -> 1;  UNK -> 1 (dropped by subsample anyway)
# (Had UNK's 37 been counted, total = 237 and the threshold 5.925: c=80 would give 0.3373.)
COUNTS = np.array([37, 80, 45, 45, 20, 5, 5, 0])
GOLDEN_KEEP = np.array([1.0, 0.3125, 4.0 / 9.0, 4.0 / 9.0, 0.75, 1.0, 1.0, 1.0])


def test_keep_probabilities_golden():
  keep = pipeline.keep_probabilities(COUNTS, 0.025)
  assert keep.dtype == np.float64 and keep.shape == COUNTS.shape
  np.testing.assert_allclose(keep, GOLDEN_KEEP, rtol=1e-12)
  # The input is not modified (the UNK count is zeroed on a copy).
  assert COUNTS[0] == 37


def test_keep_probabilities_sample_zero_keeps_all():
  np.testing.assert_array_equal(pipeline.keep_probabilities(COUNTS, 0.0), np.ones(8))
  np.testing.assert_array_equal(pipeline.keep_probabilities(COUNTS, -1.0), np.ones(8))


def test_keep_probabilities_zero_counts_and_large_sample():
  keep = pipeline.keep_probabilities([0, 0, 3, 0, 1], 1e-3)
  assert np.all(np.isfinite(keep))
  assert keep[0] == 1.0 and keep[1] == 1.0 and keep[3] == 1.0
  # t = 1: threshold = total, every word has f <= 1 = t, so everything is kept.
  np.testing.assert_array_equal(pipeline.keep_probabilities(COUNTS, 1.0), np.ones(8))


def test_keep_probabilities_monotone_in_count():
  rng = np.random.default_rng(0)
  counts = np.sort(rng.integers(1, 10_000, size=50))[::-1]
  keep = pipeline.keep_probabilities(np.concatenate([[123], counts]), 1e-3)[1:]
  assert np.all(np.diff(keep) >= 0)  # rarer words are kept at least as often
  assert keep.min() < 1.0


@pytest.mark.parametrize("sample", [0.025, 1e-3, 1e-4])
def test_keep_probabilities_match_gensim(sample):
  gensim_w2v = pytest.importorskip("gensim.models.word2vec")
  rng = np.random.default_rng(1)
  # Zipf-like in-vocabulary counts plus an UNK count that gensim never sees.
  counts = np.concatenate([[4321], (20_000 / np.arange(1, 41)).astype(np.int64)
                           + rng.integers(0, 5, size=40)])
  if sample == 0.025:
    counts = COUNTS
  model = gensim_w2v.Word2Vec(vector_size=4, min_count=1, sample=sample, workers=1)
  model.build_vocab_from_freq({f"w{i}": int(c) for i, c in enumerate(counts) if i and c})
  # gensim stores uint32(P * (2**32 - 1)): truncation costs at most 2**-32.
  theirs = np.array([model.wv.get_vecattr(f"w{i}", "sample_int") / (2**32 - 1)
                     for i in range(1, len(counts)) if counts[i]])
  ours = pipeline.keep_probabilities(counts, sample)[1:][counts[1:] > 0]
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)
  assert ours.min() < 0.9  # the comparison covers subsampled words, not only capped ones


# ---- subsample -------------------------------------------------------------------------


def test_subsample_drops_unk_even_with_keep_prob_one():
  ids = np.array([0, 1, 0, 2, 0, 0, 3, 0])
  keep = np.ones(4)
  out = pipeline.subsample(ids, keep, np.random.default_rng(0))
  np.testing.assert_array_equal(out, [1, 2, 3])
  assert out.dtype == np.int32
  # drop_id=None keeps UNK.
  out = pipeline.subsample(ids, keep, np.random.default_rng(0), drop_id=None)
  np.testing.assert_array_equal(out, ids)


def test_subsample_keeps_prob_one_words_and_preserves_order():
  rng = np.random.default_rng(2)
  ids = rng.integers(0, 6, size=5000)
  keep = np.array([1.0, 1.0, 0.3, 1.0, 0.0, 0.6])
  out = pipeline.subsample(ids, keep, np.random.default_rng(3))
  # Every occurrence of ids 1 and 3 survives, no 0 (UNK) nor 4 (P = 0) does.
  assert np.sum(out == 1) == np.sum(ids == 1) and np.sum(out == 3) == np.sum(ids == 3)
  assert not np.any(out == 0) and not np.any(out == 4)
  # Order: removing the subsampled ids 2 and 5 from both sides leaves identical sequences,
  # and `out` is a subsequence of `ids`.
  sure = lambda a: a[(a == 1) | (a == 3)]
  np.testing.assert_array_equal(sure(out), sure(ids))
  it = iter(ids.tolist())
  assert all(any(x == y for y in it) for x in out.tolist())


@pytest.mark.parametrize("p", [0.3125, 0.75, 0.05])
def test_subsample_empirical_keep_rate(p):
  n = 20_000
  ids = np.full(n, 1)
  keep = np.array([1.0, p])
  out = pipeline.subsample(ids, keep, np.random.default_rng(4))
  # Binomial(n, p): 5 standard deviations (about 327 kept words for p = 0.3125).
  assert binomial_ok(out.shape[0], n, p)


def test_subsample_rates_per_word_in_a_mixed_stream():
  rng = np.random.default_rng(5)
  keep = pipeline.keep_probabilities(COUNTS, 0.025)
  ids = rng.integers(0, len(COUNTS), size=40_000)
  out = pipeline.subsample(ids, keep, np.random.default_rng(6))
  for w in range(1, len(COUNTS)):
    n, k = int(np.sum(ids == w)), int(np.sum(out == w))
    if keep[w] == 1.0:
      assert k == n
    else:
      assert binomial_ok(k, n, keep[w]), (w, k, n, keep[w])


# ---- reduced_windows -------------------------------------------------------------------


def test_reduced_windows_range_and_uniformity():
  n, window = 30_000, 5
  r = pipeline.reduced_windows(n, window, np.random.default_rng(7))
  assert r.shape == (n,) and r.dtype == np.int32
  assert r.min() == 1 and r.max() == window
  for v in range(1, window + 1):
    assert binomial_ok(int(np.sum(r == v)), n, 1.0 / window), v
  np.testing.assert_array_equal(pipeline.reduced_windows(10, 1, np.random.default_rng(0)),
                                np.ones(10))


# ---- skipgram_pairs --------------------------------------------------------------------


def brute_skipgram(ids, reduced):
  pairs = collections.Counter()
  n = len(ids)
  for i in range(n):
    for j in range(n):
      if j != i and abs(j - i) <= reduced[i]:
        pairs[(int(ids[i]), int(ids[j]))] += 1
  return pairs


def as_multiset(centres, contexts):
  return collections.Counter(zip(centres.tolist(), contexts.tolist()))


def test_skipgram_pairs_golden():
  # ids      10 11 12 13 14,  window 2,  reduced 2 1 2 1 1
  #   centre 10 (r=2): 11, 12
  #   centre 11 (r=1): 10, 12
  #   centre 12 (r=2): 10, 11, 13, 14
  #   centre 13 (r=1): 12, 14
  #   centre 14 (r=1): 13
  # 11 pairs = sum over centres of min(i, r) + min(n-1-i, r) = 2 + 2 + 4 + 2 + 1.
  ids = np.array([10, 11, 12, 13, 14], np.int32)
  reduced = np.array([2, 1, 2, 1, 1])
  centres, contexts = pipeline.skipgram_pairs(ids, 2, None, reduced=reduced)
  golden = collections.Counter([
      (10, 11), (10, 12), (11, 10), (11, 12), (12, 10), (12, 11), (12, 13), (12, 14),
      (13, 12), (13, 14), (14, 13)])
  assert as_multiset(centres, contexts) == golden
  assert centres.dtype == np.int32 and contexts.dtype == np.int32


def test_skipgram_pairs_duplicates_counted_as_multiset():
  # ids 5 5 5, reduced 1 1 1: pairs (5,5) from 0->1, 1->0, 1->2, 2->1 = 4 times.
  centres, contexts = pipeline.skipgram_pairs(np.array([5, 5, 5], np.int32), 3, None,
                                              reduced=np.array([1, 1, 1]))
  assert as_multiset(centres, contexts) == collections.Counter({(5, 5): 4})


def test_skipgram_pairs_edges():
  # One word: no pair at all; empty input likewise.
  for n in (0, 1):
    c, x = pipeline.skipgram_pairs(np.arange(1, n + 1, dtype=np.int32), 3, None,
                                   reduced=np.full(n, 3))
    assert c.shape == (0,) and x.shape == (0,)
  # Windows reaching beyond both ends: 3 words, all windows 5 -> all 6 ordered pairs.
  c, x = pipeline.skipgram_pairs(np.array([1, 2, 3], np.int32), 5, None,
                                 reduced=np.full(3, 5))
  assert as_multiset(c, x) == collections.Counter(
      [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)])


@pytest.mark.parametrize("seed", range(5))
def test_skipgram_pairs_match_brute_force(seed):
  rng = np.random.default_rng(seed)
  n, window = int(rng.integers(2, 40)), int(rng.integers(1, 6))
  ids = rng.integers(1, 9, size=n).astype(np.int32)
  reduced = pipeline.reduced_windows(n, window, rng)
  c, x = pipeline.skipgram_pairs(ids, window, None, reduced=reduced)
  assert as_multiset(c, x) == brute_skipgram(ids, reduced)
  i = np.arange(n)
  assert c.shape[0] == np.sum(np.minimum(i, reduced) + np.minimum(n - 1 - i, reduced))


def test_skipgram_pairs_draws_windows_from_rng():
  ids = np.arange(1, 200, dtype=np.int32)
  a = pipeline.skipgram_pairs(ids, 4, np.random.default_rng(9))
  b = pipeline.skipgram_pairs(ids, 4, np.random.default_rng(9))
  reduced = pipeline.reduced_windows(ids.shape[0], 4, np.random.default_rng(9))
  c = pipeline.skipgram_pairs(ids, 4, None, reduced=reduced)
  for u, v, w in zip(a, b, c):
    np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(u, w)


# ---- cbow_examples ---------------------------------------------------------------------


def test_cbow_examples_golden():
  # ids 10 11 12 13, window 2 (rows of 2*2 = 4 slots), reduced 2 1 2 2
  #   centre 10 (r=2): contexts 11, 12          -> length 2, row [11 12 0 0]
  #   centre 11 (r=1): contexts 10, 12          -> length 2, row [10 12 0 0]
  #   centre 12 (r=2): contexts 11, 13, 10      -> length 3, row [.. .. .. 0]
  #   centre 13 (r=2): contexts 12, 11          -> length 2, row [12 11 0 0]
  # Rows in centre order; real ids first, padding (0) at the end of each row. The order
  # of the real ids inside a row does not matter (CBOW averages them).
  ids = np.array([10, 11, 12, 13], np.int32)
  contexts, lengths, centres = pipeline.cbow_examples(ids, 2, None,
                                                      reduced=np.array([2, 1, 2, 2]))
  assert contexts.shape == (4, 4) and contexts.dtype == np.int32
  np.testing.assert_array_equal(centres, [10, 11, 12, 13])
  np.testing.assert_array_equal(lengths, [2, 2, 3, 2])
  golden = [[11, 12], [10, 12], [10, 11, 13], [11, 12]]
  for row, n, want in zip(contexts, lengths, golden):
    assert sorted(row[:n].tolist()) == want
    assert np.all(row[n:] == 0)


def test_cbow_examples_edges():
  # A chunk of one word has no context: dropped. Empty chunk: empty arrays.
  for n in (0, 1):
    contexts, lengths, centres = pipeline.cbow_examples(
        np.arange(7, 7 + n, dtype=np.int32), 3, None, reduced=np.full(n, 3))
    assert contexts.shape == (0, 6) and lengths.shape == (0,) and centres.shape == (0,)
  # Windows beyond the ends: 3 words, window 4 -> each centre sees the other two.
  contexts, lengths, centres = pipeline.cbow_examples(
      np.array([1, 2, 3], np.int32), 4, None, reduced=np.full(3, 4))
  np.testing.assert_array_equal(lengths, [2, 2, 2])
  assert [sorted(r[:2].tolist()) for r in contexts] == [[2, 3], [1, 3], [1, 2]]
  assert np.all(contexts[:, 2:] == 0)


@pytest.mark.parametrize("seed", range(4))
def test_cbow_examples_match_brute_force(seed):
  rng = np.random.default_rng(10 + seed)
  n, window = int(rng.integers(2, 30)), int(rng.integers(1, 5))
  ids = rng.integers(1, 9, size=n).astype(np.int32)
  reduced = pipeline.reduced_windows(n, window, rng)
  contexts, lengths, centres = pipeline.cbow_examples(ids, window, None, reduced=reduced)
  np.testing.assert_array_equal(centres, ids)
  for i in range(n):
    want = sorted(int(ids[j]) for j in range(n) if j != i and abs(j - i) <= reduced[i])
    assert lengths[i] == len(want)
    assert sorted(contexts[i, :lengths[i]].tolist()) == want
    assert np.all(contexts[i, lengths[i]:] == 0)
  # The same pairs as skip-gram with the same windows (centre <-> context).
  c, x = pipeline.skipgram_pairs(ids, window, None, reduced=reduced)
  assert lengths.sum() == c.shape[0]


# ---- BlockStream -----------------------------------------------------------------------

VOCAB = 20


def corpus(n, seed=11):
  rng = np.random.default_rng(seed)
  counts = np.concatenate([[0], (400 / np.arange(1, VOCAB)).astype(int) + 1])
  ids = rng.choice(VOCAB, size=n, p=counts / counts.sum()).astype(np.int32)
  ids[rng.random(n) < 0.05] = 0  # some UNK
  return ids, pipeline.keep_probabilities(np.bincount(ids, minlength=VOCAB), 0.05)


def make_stream(model, n=1050, chunk_tokens=200, batch=8, steps=2, seed=3, window=3):
  ids, keep = corpus(n)
  return pipeline.BlockStream(ids, keep, model, window, batch, steps, seed,
                              chunk_tokens=chunk_tokens)


def flat(blocks, key):
  return np.concatenate([b[key].reshape((-1,) + b[key].shape[2:]) for b in blocks])


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_block_shapes_and_contents(model):
  s = make_stream(model)
  assert s.num_chunks == 6  # 1050 tokens in chunks of 200
  blocks = list(s.blocks(0))
  assert len(blocks) > 5
  for b in blocks:
    assert b["targets"].shape == (2, 8) and b["targets"].dtype == np.int32
    assert b["lengths"].shape == (2, 8)
    assert b["epoch"] == 0
    assert np.all(b["targets"] > 0) and np.all(b["targets"] < VOCAB)
    # One run of 8 centres per minibatch, with 3 words of text on each side.
    assert b["inputs"].shape == (2, 8 + 6)
    assert np.all((b["lengths"] >= 1) & (b["lengths"] <= 3))
    np.testing.assert_array_equal(b["inputs"][:, 3:11], b["targets"])
    if model == "skipgram":  # one window per block
      assert np.all(b["lengths"] == b["lengths"][0, 0])


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_blocks_deterministic_per_seed_and_epoch(model):
  a = list(make_stream(model).blocks(0))
  b = list(make_stream(model).blocks(0))
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in ("inputs", "lengths", "targets"):
      np.testing.assert_array_equal(x[key], y[key])
    assert (x["chunk"], x["chunk_done"], x["tokens"]) == (y["chunk"], y["chunk_done"],
                                                          y["tokens"])
  other_epoch = list(make_stream(model).blocks(1))
  other_seed = list(make_stream(model, seed=4).blocks(0))
  for other in (other_epoch, other_seed):
    n = min(len(a), len(other))
    assert not np.array_equal(flat(a[:n], "targets"), flat(other[:n], "targets"))


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
@pytest.mark.parametrize("chunk_tokens,batch,steps", [(200, 8, 2), (10, 16, 4)])
def test_tokens_and_chunk_done(model, chunk_tokens, batch, steps):
  s = make_stream(model, chunk_tokens=chunk_tokens, batch=batch, steps=steps)
  blocks = list(s.blocks(0))
  tokens = np.array([b["tokens"] for b in blocks], np.float64)
  assert np.all(np.diff(tokens) > 0)
  assert tokens[0] > 0 and tokens[-1] <= s.num_tokens
  chunks = [b["chunk"] for b in blocks]
  for i, b in enumerate(blocks):
    last_of_chunk = i == len(blocks) - 1 or chunks[i + 1] != chunks[i]
    assert b["chunk_done"] == last_of_chunk, i
    # Tokens stay inside the block's chunk; its last block reaches the chunk's end.
    start = b["chunk"] * chunk_tokens
    end = min(start + chunk_tokens, s.num_tokens)
    assert start < b["tokens"] <= end
    if b["chunk_done"]:
      assert b["tokens"] == pytest.approx(end)


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_all_blocks_chains_epochs_from_a_resume_point(model):
  s = make_stream(model)
  chained = list(s.all_blocks(1, 3, 4))
  want = list(s.blocks(1, start_chunk=3)) + list(s.blocks(2)) + list(s.blocks(3))
  assert [(b["epoch"], b["chunk"]) for b in chained] == [(b["epoch"], b["chunk"]) for b in want]
  for key in ("inputs", "lengths", "targets"):
    np.testing.assert_array_equal(flat(chained, key), flat(want, key))
  assert list(s.all_blocks(4, 0, 4)) == []


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_expected_blocks_per_chunk_is_close_to_the_real_count(model):
  s = make_stream(model, n=20000, chunk_tokens=5000, batch=16, steps=2)
  real = np.mean([len(list(s.blocks(e))) for e in range(4)]) / s.num_chunks
  assert abs(s.expected_blocks_per_chunk() - real) <= 0.1 * real + 1


# ---- runs of text --------------------------------------------------------------------------

def test_run_layout():
  assert pipeline.run_layout(4096) == (64, 64)
  assert pipeline.run_layout(8) == (8, 1)
  assert pipeline.run_layout(96) == (32, 3)


def test_text_runs_golden():
  kept = np.arange(1, 12, dtype=np.int32)  # 11 words
  reduced = np.arange(11, dtype=np.int32) % 2 + 1
  halo = np.array([50, 51], np.int32)
  windows, red, centres, (rest, rest_red, new_halo) = pipeline.text_runs(
      kept, reduced, 3, 2, halo, final=False)
  # Not final: a run is cut only when the 2 words after it are known: (11 - 2) // 3 runs.
  np.testing.assert_array_equal(windows, [[50, 51, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7, 8],
                                          [5, 6, 7, 8, 9, 10, 11]])
  np.testing.assert_array_equal(centres, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
  np.testing.assert_array_equal(red, reduced[:9].reshape(3, 3))
  np.testing.assert_array_equal(rest, [10, 11])
  np.testing.assert_array_equal(rest_red, reduced[9:])
  np.testing.assert_array_equal(new_halo, [8, 9])
  # Final: the text ends after the kept words (zeros), the last partial run is dropped.
  windows, _, centres, (rest, _, _) = pipeline.text_runs(
      np.array([10, 11, 12, 13], np.int32), np.ones(4, np.int32), 3, 2, new_halo,
      final=True)
  np.testing.assert_array_equal(windows, [[8, 9, 10, 11, 12, 13, 0]])
  np.testing.assert_array_equal(rest, [13])


def epoch_runs(s, epoch, start_chunk=0):
  """Every run of the subsampled text of chunks start_chunk.. (regenerated with the chunks'
  generators), as a set of (window, reduced) tuples."""
  kept, reduced = [], []
  for k in range(start_chunk, s.num_chunks):
    rng = np.random.default_rng([s.seed, epoch, k])
    new = pipeline.subsample(s.ids[k * s.chunk_tokens:(k + 1) * s.chunk_tokens],
                             s.keep_prob, rng)
    kept.append(new)
    reduced.append(pipeline.reduced_windows(new.shape[0], s.window, rng))
  length, _ = pipeline.run_layout(s.batch_size)
  windows, red, _, _ = pipeline.text_runs(
      np.concatenate(kept), np.concatenate(reduced), length, s.window,
      np.zeros(s.window, np.int32), final=True)
  if s.model == "skipgram":  # its windows are drawn per minibatch (test below)
    return [tuple(w) for w in windows]
  return [(tuple(w), tuple(r)) for w, r in zip(windows, red)]


def block_runs(s, blocks):
  length, runs = pipeline.run_layout(s.batch_size)
  out = []
  for b in blocks:
    windows = b["inputs"].reshape(-1, length + 2 * s.window)
    reduced = b["lengths"].reshape(-1, length)
    np.testing.assert_array_equal(windows[:, s.window:s.window + length],
                                  b["targets"].reshape(-1, length))
    if s.model == "skipgram":
      out += [tuple(w) for w in windows]
    else:
      out += [(tuple(w), tuple(r)) for w, r in zip(windows, reduced)]
  return out


def test_skipgram_windows_are_drawn_per_block():
  # Skip-gram: one reduced window per block, uniform in 1..window over blocks, the same
  # for the same (seed, epoch, chunk).
  s = make_stream("skipgram", n=20000, chunk_tokens=5000, batch=8, steps=2)
  blocks = list(s.blocks(0))
  lengths = np.stack([b["lengths"] for b in blocks])         # [blocks, steps, batch]
  assert np.all(lengths == lengths[:, :1, :1])
  counts = np.bincount(lengths[:, 0, 0].ravel(), minlength=s.window + 1)
  assert counts[0] == 0 and len(counts) == s.window + 1
  n = counts.sum()
  assert np.all(np.abs(counts[1:] - n / s.window) < 5 * np.sqrt(n / s.window)), counts
  again = np.stack([b["lengths"] for b in s.blocks(0)])
  np.testing.assert_array_equal(again, lengths)
  other = np.stack([b["lengths"] for b in s.blocks(1)])
  assert not np.array_equal(other[:len(lengths)], lengths[:len(other)])


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
@pytest.mark.parametrize("chunk_tokens,batch,steps", [(200, 8, 2), (10, 16, 4), (300, 96, 2)])
def test_epoch_is_the_runs_of_the_text_minus_tail(model, chunk_tokens, batch, steps):
  # The runs of an epoch are those of the whole subsampled text, cut at multiples of the
  # run length from its start (chunk boundaries do not cut runs: leftovers are carried),
  # shuffled within chunks; only the tail (fewer than one block of runs) is dropped.
  s = make_stream(model, n=3000, chunk_tokens=chunk_tokens, batch=batch, steps=steps)
  length, runs = pipeline.run_layout(batch)
  blocks = list(s.blocks(0))
  got, want = block_runs(s, blocks), epoch_runs(s, 0)
  assert len(got) == len(set(got)) or len(set(want)) < len(want)
  assert collections.Counter(got) <= collections.Counter(want)
  assert len(want) - len(got) < steps * runs
  assert got != want[:len(got)] or chunk_tokens == 10  # shuffled within chunks


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_resume_at_chunk(model):
  # Resuming at chunk k streams the runs of the text of chunks k.. (its first run starts
  # the text: nothing before it is known).
  s = make_stream(model, n=3000, chunk_tokens=300, batch=16, steps=2)
  resumed = list(s.blocks(0, start_chunk=4))
  assert resumed and all(b["chunk"] >= 4 for b in resumed)
  got, want = block_runs(s, resumed), epoch_runs(s, 0, start_chunk=4)
  assert collections.Counter(got) <= collections.Counter(want)
  assert len(want) - len(got) < s.steps_per_call * pipeline.run_layout(16)[1]
