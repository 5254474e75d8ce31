"""Candidate samplers: empirical frequencies and expected counts vs formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tf_embeddings import losses

RANGE_MAX = 40
NUM_SAMPLED = 20000
NUM_BATCHES = 3


def unigram_counts():
  # Zipf-like counts, sorted descending as the vocabulary is; id 0 (UNK) 0.
  counts = np.floor(5000.0 / np.arange(1, RANGE_MAX + 1)).astype(np.int64)
  counts[0] = 0
  return counts


def test_probabilities_formulas():
  p = losses.sampler_probabilities("log_uniform", 4)
  # (log(k + 2) - log(k + 1)) / log(5): k = 0 -> log 2 / log 5 = 0.430677.
  np.testing.assert_allclose(p[0], math.log(2) / math.log(5), rtol=1e-12)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
  np.testing.assert_allclose(losses.sampler_probabilities("uniform", 4),
                             [0.25] * 4)
  # counts [0, 1, 16]^0.75 = [0, 1, 8] -> [0, 1/9, 8/9].
  np.testing.assert_allclose(
      losses.sampler_probabilities("unigram", 3, unigrams=[0, 1, 16]),
      [0.0, 1 / 9, 8 / 9], rtol=1e-12)
  np.testing.assert_allclose(
      losses.sampler_probabilities("unigram", 3, unigrams=[0, 1, 16],
                                   distortion=1.0), [0, 1 / 17, 16 / 17],
      rtol=1e-12)


def test_errors_are_clear():
  with pytest.raises(ValueError, match="unknown sampler"):
    losses.sampler_probabilities("zipf", 4)
  with pytest.raises(ValueError, match="unknown sampler"):
    losses.sample_candidates("zipf", [[0]], 1, 2, 4)
  with pytest.raises(ValueError, match="needs `unigrams`"):
    losses.sample_candidates("unigram", [[0]], 1, 2, 4)
  with pytest.raises(ValueError, match="range_max"):
    losses.sample_candidates("unigram", [[0]], 1, 2, 4, unigrams=[1, 2])
  with pytest.raises(ValueError, match="learned_unigram"):
    losses.sampler_probabilities("learned_unigram", 4)


@pytest.mark.parametrize("sampler", ["log_uniform", "unigram", "uniform"])
def test_empirical_frequencies_match_probabilities(sampler):
  tf.random.set_seed(1234)
  counts = unigram_counts()
  probs = losses.sampler_probabilities(sampler, RANGE_MAX, unigrams=counts)
  true_classes = tf.constant([[1], [5]], tf.int64)
  hist = np.zeros(RANGE_MAX)
  for step in range(NUM_BATCHES):
    sampled, true_ec, sampled_ec = losses.sample_candidates(
        sampler, true_classes, num_true=1, num_sampled=NUM_SAMPLED,
        range_max=RANGE_MAX, unique=False, unigrams=counts, seed=step + 1)
    sampled = sampled.numpy()
    assert sampled.shape == (NUM_SAMPLED,) and sampled.dtype == np.int64
    hist += np.bincount(sampled, minlength=RANGE_MAX)
    # With replacement the expected count is num_sampled * P.
    np.testing.assert_allclose(sampled_ec.numpy(),
                               NUM_SAMPLED * probs[sampled], rtol=1e-4)
    np.testing.assert_allclose(true_ec.numpy()[:, 0],
                               NUM_SAMPLED * probs[[1, 5]], rtol=1e-4)
  n = NUM_SAMPLED * NUM_BATCHES
  freq = hist / n
  # Never-drawn classes are exactly the zero-probability ones (UNK here).
  assert np.all((hist == 0) == (probs == 0))
  # Per class, within 5 binomial standard deviations (+ a hair).
  sd = np.sqrt(probs * (1 - probs) / n)
  assert np.all(np.abs(freq - probs) <= 5 * sd + 1e-9), (
      np.max(np.abs(freq - probs) / np.maximum(sd, 1e-12)))
  # And jointly: a chi-square goodness-of-fit test (seeded, so the p-value is
  # deterministic; a wrong distribution gives p ~ 0).
  support = probs > 0
  _, p_value = stats.chisquare(hist[support], n * probs[support])
  assert p_value > 1e-3
  # The test has power: the other samplers' distributions are rejected.
  for other in {"log_uniform", "unigram", "uniform"} - {sampler}:
    q = losses.sampler_probabilities(other, RANGE_MAX, unigrams=counts)
    assert np.max(np.abs(freq - q)) > 0.01


def test_unique_sampling_gives_distinct_candidates():
  tf.random.set_seed(7)
  for sampler in losses.SAMPLERS:
    sampled, true_ec, sampled_ec = losses.sample_candidates(
        sampler, tf.constant([[0, 3]], tf.int64), num_true=2, num_sampled=15,
        range_max=RANGE_MAX, unique=True, unigrams=unigram_counts() + 1,
        seed=3)
    s = sampled.numpy()
    assert len(np.unique(s)) == 15 and s.min() >= 0 and s.max() < RANGE_MAX
    assert true_ec.shape == (1, 2) and sampled_ec.shape == (15,)
    assert np.all(sampled_ec.numpy() > 0)


def test_unique_expected_counts_for_uniform():
  # Without replacement the expected count is 1 - (1 - P)^num_tries (num_tries
  # = draws needed to get num_sampled distinct classes), not num_sampled * P:
  # solving for num_tries must give an integer >= num_sampled.
  tf.random.set_seed(8)
  _, true_ec, sampled_ec = losses.sample_candidates(
      "uniform", tf.constant([[2]], tf.int64), 1, 10, RANGE_MAX, unique=True,
      seed=4)
  ec = sampled_ec.numpy()
  num_tries = np.log1p(-ec.astype(np.float64)) / math.log1p(-1 / RANGE_MAX)
  np.testing.assert_allclose(num_tries, np.round(num_tries), atol=1e-3)
  assert np.all(np.round(num_tries) >= 10)
  np.testing.assert_allclose(true_ec.numpy()[0, 0], ec[0], rtol=1e-6)


def test_learned_unigram_learns_from_the_true_classes():
  # It starts uniform and, call after call of the same op, moves towards
  # the distribution of the true classes it has seen (here only class 3).
  tf.random.set_seed(9)
  true_classes = tf.constant([[3]] * 50, tf.int64)
  fractions = []
  for _ in range(3):
    sampled, _, _ = losses.sample_candidates(
        "learned_unigram", true_classes, 1, 2000, 10, unique=False, seed=11)
    fractions.append(np.mean(sampled.numpy() == 3))
  assert fractions[0] < 0.2  # ~ uniform: 1/10
  assert fractions[2] > 0.8
