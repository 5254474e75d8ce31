"""Sampled losses over a large output vocabulary and their exact eval twins.

Training: `nce_loss` (word2vec skip-gram) and `sampled_softmax_loss` (CBOW,
two-tower sampled negatives) are thin wrappers over the tf.nn ops that pick
the candidate sampler by name. Evaluation: `full_softmax_loss` and
`full_sigmoid_loss` compute the exact loss over ALL classes with the same
weights, chunk by chunk, so a 1M-class vocabulary never materialises a
[batch_size, num_classes] matrix.

Conventions shared by the four functions:
  weights: float [num_classes, dim] output embeddings (a single tensor or
    variable; the two full losses also take a ShardedVariable).
  biases: float [num_classes].
  inputs: float [batch_size, dim], the hidden representation of the examples.
  Every function returns a scalar: the MEAN over the batch of the
  per-example loss.
"""

import tensorflow as tf

from tf_embeddings.losses import samplers as samplers_lib
from tf_embeddings.training.distribute import gather_rows
from tf_embeddings.training.distribute import table_shards


def _sampled_values(sampler, labels, num_true, num_sampled, num_classes,
                    unigrams, distortion, seed, sampled_values):
  if sampled_values is not None:
    return sampled_values
  return samplers_lib.sample_candidates(
      sampler, labels, num_true=num_true, num_sampled=num_sampled,
      range_max=num_classes, unique=True, unigrams=unigrams,
      distortion=distortion, seed=seed)


def _int64_labels(labels, num_true):
  labels = tf.cast(labels, tf.int64)
  return tf.reshape(labels, [-1, num_true])


def nce_loss(weights, biases, labels, inputs, num_sampled, num_classes,
             num_true=1, sampler="log_uniform", unigrams=None,
             distortion=0.75, remove_accidental_hits=False, seed=None,
             sampled_values=None):
  """Noise-contrastive estimation loss (tf.nn.nce_loss), averaged.

  Per example: sum over the num_true true classes and the num_sampled shared
  sampled classes of sigmoid cross-entropy on the logit
  w_k . x + b_k - log(expected_count_k), with label 1 / num_true for each true
  class and 0 for sampled classes.

  Args:
    weights: float [num_classes, dim].
    biases: float [num_classes].
    labels: int64 (any int accepted) [batch_size, num_true] target classes
      ([batch_size] accepted when num_true == 1).
    inputs: float [batch_size, dim].
    num_sampled: int, negatives drawn per batch (shared by all examples).
    num_classes: int, vocabulary size.
    num_true: int, target classes per example.
    sampler: one of samplers.SAMPLERS; ignored when sampled_values is given.
    unigrams: class counts [num_classes] for sampler='unigram'.
    distortion: exponent for sampler='unigram'.
    remove_accidental_hits: bool, drop sampled classes equal to a target
      (default False, as tf.nn.nce_loss).
    seed: optional int sampler seed.
    sampled_values: optional precomputed (sampled int64 [num_sampled],
      true_expected_count [batch_size, num_true],
      sampled_expected_count [num_sampled]) triple.

  Returns:
    Scalar float: mean over the batch of the per-example NCE loss.
  """
  labels = _int64_labels(labels, num_true)
  sampled_values = _sampled_values(sampler, labels, num_true, num_sampled,
                                   num_classes, unigrams, distortion, seed,
                                   sampled_values)
  per_example = tf.nn.nce_loss(
      weights=weights, biases=biases, labels=labels, inputs=inputs,
      num_sampled=num_sampled, num_classes=num_classes, num_true=num_true,
      sampled_values=sampled_values,
      remove_accidental_hits=remove_accidental_hits)
  return tf.reduce_mean(per_example)


def sampled_softmax_loss(weights, biases, labels, inputs, num_sampled,
                         num_classes, num_true=1, sampler="log_uniform",
                         unigrams=None, distortion=0.75,
                         remove_accidental_hits=True, seed=None,
                         sampled_values=None):
  """Sampled softmax loss (tf.nn.sampled_softmax_loss), averaged.

  Per example: softmax cross-entropy over [true classes, sampled classes]
  with logits w_k . x + b_k - log(expected_count_k); each true class has
  target probability 1 / num_true. Sampled classes that equal a target are
  removed (logit set to -FLOAT_MAX) when remove_accidental_hits is True.

  Args:
    weights: float [num_classes, dim].
    biases: float [num_classes].
    labels: int64 (any int accepted) [batch_size, num_true] target classes
      ([batch_size] accepted when num_true == 1).
    inputs: float [batch_size, dim].
    num_sampled: int, negatives drawn per batch (shared by all examples).
    num_classes: int, vocabulary size.
    num_true: int, target classes per example.
    sampler: one of samplers.SAMPLERS; ignored when sampled_values is given.
    unigrams: class counts [num_classes] for sampler='unigram'.
    distortion: exponent for sampler='unigram'.
    remove_accidental_hits: bool, drop sampled classes equal to a target
      (default True, as tf.nn.sampled_softmax_loss).
    seed: optional int sampler seed.
    sampled_values: optional precomputed (sampled int64 [num_sampled],
      true_expected_count [batch_size, num_true],
      sampled_expected_count [num_sampled]) triple.

  Note (tf.nn quirk, both losses): accidental-hit removal maps a class to ONE
  sampled position, so if `sampled_values` holds a class twice (unique=False
  sampling) only one copy is removed. The built-in samplers use unique=True.

  Returns:
    Scalar float: mean over the batch of the per-example loss.
  """
  labels = _int64_labels(labels, num_true)
  sampled_values = _sampled_values(sampler, labels, num_true, num_sampled,
                                   num_classes, unigrams, distortion, seed,
                                   sampled_values)
  per_example = tf.nn.sampled_softmax_loss(
      weights=weights, biases=biases, labels=labels, inputs=inputs,
      num_sampled=num_sampled, num_classes=num_classes, num_true=num_true,
      sampled_values=sampled_values,
      remove_accidental_hits=remove_accidental_hits)
  return tf.reduce_mean(per_example)


def _num_classes_and_chunks(weights, chunk_size):
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  # The static size when known: tf.shape of a variable adds a read of the whole variable
  # to the graph (unused once the shape is folded, but a dense read all the same).
  static = weights.shape[0]
  num_classes = (tf.constant(static, tf.int64) if static is not None else
                 tf.shape(weights, out_type=tf.int64)[0])
  num_chunks = (num_classes + chunk_size - 1) // chunk_size
  return num_classes, num_chunks


def _chunk_logits(weights, biases, inputs, chunk_index, chunk_size,
                  num_classes):
  """Logits of the classes of one chunk: [batch_size, <= chunk_size]."""
  start = chunk_index * chunk_size
  size = tf.minimum(chunk_size, num_classes - start)
  # Output weights of this chunk: [size, dim]. A gather of the chunk's rows, not a slice: on
  # a variable that lives elsewhere (a parameter server's shard) the gather runs where the
  # variable is and only the chunk's rows come here; a slice would first read the whole
  # variable here, once per chunk.
  rows = tf.range(start, start + size)
  w = tf.gather(weights, rows)
  b = tf.gather(biases, rows)
  w = tf.cast(w, inputs.dtype)
  b = tf.cast(b, inputs.dtype)
  return tf.matmul(inputs, w, transpose_b=True) + b


def _true_logits(weights, biases, labels, inputs):
  """w_label . x + b_label for labels [batch_size, num_true]."""
  # Target weights: [batch_size, num_true, dim] (gather_rows: also of a sharded table).
  true_w = tf.cast(gather_rows(weights, labels), inputs.dtype)
  true_b = tf.cast(gather_rows(biases, labels), inputs.dtype)
  return tf.einsum("bd,btd->bt", inputs, true_w) + true_b


def _over_classes(weights, biases, inputs, chunk_size, per_chunk, combine):
  """Reduces per_chunk(logits of a chunk) -> [batch_size] over all classes, chunk by chunk,
  with combine(a, b). A sharded table is reduced shard by shard, the partial results then
  combined; each chunk's rows are gathered where the shard lives (_chunk_logits), so only
  one chunk of the table is here at a time."""
  shards = table_shards(weights)
  if shards is None:
    num_classes, num_chunks = _num_classes_and_chunks(weights, chunk_size)
    size = tf.constant(chunk_size, tf.int64)

    def body(i, acc):
      return i + 1, combine(acc, per_chunk(
          _chunk_logits(weights, biases, inputs, i, size, num_classes)))

    _, total = tf.while_loop(
        lambda i, _: i < num_chunks, body,
        (tf.constant(1, tf.int64),
         per_chunk(_chunk_logits(weights, biases, inputs, tf.constant(0, tf.int64), size,
                                 num_classes))))
    return total
  bias_shards = table_shards(biases)
  if bias_shards is None or len(bias_shards) != len(shards):
    raise ValueError("a sharded weights table needs biases sharded the same way")
  partial = [_over_classes(w, b, inputs, chunk_size, per_chunk, combine)
             for w, b in zip(shards, bias_shards)]
  total = partial[0]
  for part in partial[1:]:
    total = combine(total, part)
  return total


def _log_add_exp(a, b):
  return tf.math.reduce_logsumexp(tf.stack([a, b], axis=0), axis=0)


def full_softmax_loss(weights, biases, labels, inputs, chunk_size=65536):
  """Exact softmax cross-entropy over ALL classes (sampled softmax's twin).

  loss[b] = logsumexp_c(w_c . x_b + b_c) - (w_y . x_b + b_y), the logsumexp
  accumulated chunk by chunk of `chunk_size` classes with a running
  log-add-exp, so memory is O(batch_size * chunk_size). Equals
  tf.nn.sparse_softmax_cross_entropy_with_logits on the dense logits. No
  logQ correction and no sampling: this is the true model loss. It is
  differentiable, but under a GradientTape the loop keeps every chunk's
  logits for the backward pass; use it without a tape (eval) for the memory
  bound.

  Args:
    weights: float [num_classes, dim]; or a ShardedVariable (row blocks, e.g. on
      parameter servers; biases then sharded alike): scored shard by shard, a chunk of
      rows gathered from its server at a time; no whole table or shard is copied here.
    biases: float [num_classes].
    labels: int [batch_size] or [batch_size, 1] target classes.
    inputs: float [batch_size, dim].
    chunk_size: int >= 1, classes per chunk (need not divide num_classes).

  Returns:
    Scalar float (dtype of inputs): mean over the batch.
  """
  inputs = tf.convert_to_tensor(inputs)
  labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
  # Running logsumexp over classes: [batch_size].
  lse = _over_classes(weights, biases, inputs, chunk_size,
                      lambda logits: tf.reduce_logsumexp(logits, axis=1), _log_add_exp)
  true_logit = _true_logits(weights, biases, labels[:, None], inputs)[:, 0]
  return tf.reduce_mean(lse - true_logit)


def full_sigmoid_loss(weights, biases, labels, inputs, num_true=1,
                      chunk_size=65536):
  """Exact sigmoid cross-entropy over ALL classes (eval twin of NCE).

  loss[b] = sum_c sigmoid_xent(z_bc, w_c . x_b + b_c) with
  z_bc = (number of times c occurs in labels[b]) / num_true: one-hot for
  num_true == 1, and for num_true > 1 each true class has target 1/num_true,
  exactly the labels tf.nn.nce_loss gives its true columns. Since
  sigmoid_xent(z, x) = softplus(x) - z * x, the sum is computed as
  sum_c softplus(logit_c) (chunked) - sum_t logit_{label_t} / num_true.
  No logQ correction: the true model loss of the NCE-trained weights.

  Args:
    weights: float [num_classes, dim]; or a ShardedVariable, as in
      full_softmax_loss.
    biases: float [num_classes].
    labels: int [batch_size, num_true] ([batch_size] if num_true == 1).
    inputs: float [batch_size, dim].
    num_true: int, target classes per example.
    chunk_size: int >= 1, classes per chunk (need not divide num_classes).

  Returns:
    Scalar float (dtype of inputs): mean over the batch of the per-example
    sum over classes.
  """
  inputs = tf.convert_to_tensor(inputs)
  labels = _int64_labels(labels, num_true)
  softplus_sum = _over_classes(weights, biases, inputs, chunk_size,
                               lambda logits: tf.reduce_sum(tf.math.softplus(logits), axis=1),
                               tf.add)
  true_logits = _true_logits(weights, biases, labels, inputs)
  per_example = softplus_sum - tf.reduce_sum(true_logits, axis=1) / num_true
  return tf.reduce_mean(per_example)
