"""Candidate samplers for NCE and sampled softmax, and their distributions.

`sample_candidates` dispatches to the tf.random candidate samplers and returns
their (sampled_candidates, true_expected_count, sampled_expected_count) triple,
which `tf.nn.nce_loss` / `tf.nn.sampled_softmax_loss` accept as
`sampled_values`. `sampler_probabilities` gives the distribution each sampler
draws from, as a numpy array, for tests, diagnostics and logQ corrections.

Class ids are expected sorted by descending frequency (id 0 = UNK in the
word2vec vocabulary): the log-uniform (Zipfian) sampler relies on it.
"""

import numpy as np
import tensorflow as tf

SAMPLERS = ("log_uniform", "unigram", "uniform", "learned_unigram")


def _check_sampler(sampler, unigrams, range_max):
  if sampler not in SAMPLERS:
    raise ValueError(
        f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
  if sampler == "unigram":
    if unigrams is None:
      raise ValueError(
          "sampler 'unigram' needs `unigrams`: a list of range_max class "
          "counts (e.g. vocabulary frequencies)")
    if len(unigrams) != range_max:
      raise ValueError(
          f"sampler 'unigram': len(unigrams)={len(unigrams)} must equal "
          f"range_max={range_max}")


def sample_candidates(sampler, true_classes, num_true, num_sampled, range_max,
                      unique=True, unigrams=None, distortion=0.75, seed=None):
  """Draws negative classes with one of the tf candidate samplers.

  Samplers:
    log_uniform: tf.random.log_uniform_candidate_sampler,
      P(k) = (log(k + 2) - log(k + 1)) / log(range_max + 1).
    unigram: tf.random.fixed_unigram_candidate_sampler,
      P(k) proportional to unigrams[k] ** distortion.
    uniform: tf.random.uniform_candidate_sampler, P(k) = 1 / range_max.
    learned_unigram: tf.random.learned_unigram_candidate_sampler, the
      unigram distribution of the true classes this op has seen so far. It
      starts uniform, learns after each call, and its state lives in the op
      kernel (shared by calls with the same attributes and seed, eagerly or
      in a tf.function); it is not checkpointed and restarts uniform with the
      process.

  Args:
    sampler: one of SAMPLERS.
    true_classes: int64 tensor [batch_size, num_true], the target classes.
    num_true: int, number of target classes per example.
    num_sampled: int, number of candidates drawn for the whole batch.
    range_max: int, number of classes; candidates are in [0, range_max).
    unique: bool, draw without replacement within the batch (then the
      expected counts are 1 - (1 - P)^num_tries, not num_sampled * P).
    unigrams: sequence of range_max non-negative counts; required for
      'unigram', ignored otherwise.
    distortion: float, exponent applied to `unigrams` ('unigram' only).
    seed: optional int op-level seed.

  Returns:
    (sampled_candidates int64 [num_sampled],
     true_expected_count float32 [batch_size, num_true],
     sampled_expected_count float32 [num_sampled]).

  Raises:
    ValueError: unknown sampler, or 'unigram' without a valid `unigrams`.
  """
  _check_sampler(sampler, unigrams, range_max)
  true_classes = tf.cast(true_classes, tf.int64)
  common = dict(true_classes=true_classes, num_true=num_true,
                num_sampled=num_sampled, unique=unique, range_max=range_max,
                seed=seed)
  if sampler == "log_uniform":
    return tf.random.log_uniform_candidate_sampler(**common)
  if sampler == "uniform":
    return tf.random.uniform_candidate_sampler(**common)
  if sampler == "learned_unigram":
    return tf.random.learned_unigram_candidate_sampler(**common)
  return tf.random.fixed_unigram_candidate_sampler(
      distortion=float(distortion),
      unigrams=[float(u) for u in np.asarray(unigrams).reshape(-1)],
      **common)


def sampler_probabilities(sampler, range_max, unigrams=None, distortion=0.75):
  """The probability with which one draw of `sampler` returns each class.

  Args:
    sampler: 'log_uniform', 'unigram' or 'uniform' ('learned_unigram' has no
      fixed distribution and raises ValueError).
    range_max: int, number of classes.
    unigrams: counts [range_max], required for 'unigram'.
    distortion: float exponent for 'unigram'.

  Returns:
    float64 numpy array [range_max] summing to 1.

  Raises:
    ValueError: unknown sampler, 'learned_unigram', or missing unigrams.
  """
  _check_sampler(sampler, unigrams, range_max)
  if sampler == "log_uniform":
    k = np.arange(range_max, dtype=np.float64)
    return (np.log(k + 2.0) - np.log(k + 1.0)) / np.log(range_max + 1.0)
  if sampler == "uniform":
    return np.full([range_max], 1.0 / range_max)
  if sampler == "unigram":
    weights = np.asarray(unigrams, dtype=np.float64) ** distortion
    total = weights.sum()
    if not total > 0:
      raise ValueError("sampler 'unigram': unigrams must have a positive sum")
    return weights / total
  raise ValueError(
      "sampler 'learned_unigram' learns its distribution from the data seen "
      "by the op; it has no fixed probabilities")
