"""Per-example cross-entropy primitives shared by every loss of the library.

All three functions return one loss value per example (NO reduction); the
losses built on top of them state their own reduction.
"""

import tensorflow as tf

# Dtype-aware "minus infinity" used to mask logits out of a softmax. A finite
# value keeps `x - max(x)` and its gradient finite (a real -inf gives NaN when
# a whole row is masked); exp() of it underflows to exactly 0.
_LARGE_NEGATIVE_F32 = -1e9


def large_negative(dtype):
  """A finite logit that drops out of any softmax of `dtype`.

  Args:
    dtype: a floating `tf.DType`.

  Returns:
    A Python float: -1e9 for float32/float64, half the dtype minimum for
    narrower dtypes (float16, bfloat16) where -1e9 would overflow to -inf.
  """
  dtype = tf.as_dtype(dtype)
  if dtype.max > 1e10:
    return _LARGE_NEGATIVE_F32
  return 0.5 * float(dtype.min)


def cast_like(x, dtype):
  """`x` as a tensor of `dtype`; Python numbers convert directly to `dtype`.

  (tf.cast of a Python float list would round through float32 first.)
  """
  return tf.cast(tf.convert_to_tensor(x, dtype_hint=dtype), dtype)


def stable_sigmoid_cross_entropy(labels, logits):
  """Sigmoid cross-entropy per element, in the overflow-free form.

  loss = relu(x) - x * z + log1p(exp(-|x|)), with x = logits, z = labels,
  which equals z * -log(sigmoid(x)) + (1 - z) * -log(1 - sigmoid(x)) without
  ever evaluating exp of a large positive number (tf.nn op).

  Args:
    labels: float tensor of any shape, values in [0, 1], same dtype as logits.
    logits: float tensor of the same shape as `labels`.

  Returns:
    Float tensor of the shape of `logits`: the element-wise loss (no
    reduction).
  """
  logits = tf.convert_to_tensor(logits)
  labels = cast_like(labels, logits.dtype)
  return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def softmax_cross_entropy(labels, logits):
  """Softmax cross-entropy against a distribution over classes, per example.

  loss[b] = -sum_c labels[b, c] * log_softmax(logits[b])[c] (tf.nn op; labels
  do not receive a gradient-relevant normalisation, pass a distribution).

  Args:
    labels: float tensor [..., C] (rows are probability distributions, e.g.
      one-hot), same dtype as `logits`.
    logits: float tensor [..., C] of unnormalised scores.

  Returns:
    Float tensor [...]: one loss per example (no reduction).
  """
  logits = tf.convert_to_tensor(logits)
  labels = cast_like(labels, logits.dtype)
  return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def sparse_softmax_cross_entropy(labels, logits):
  """Softmax cross-entropy against an integer class id, per example.

  loss[b] = logsumexp(logits[b]) - logits[b, labels[b]] (tf.nn op).

  Args:
    labels: int32/int64 tensor [...] of class ids in [0, C).
    logits: float tensor [..., C] of unnormalised scores.

  Returns:
    Float tensor [...]: one loss per example (no reduction).
  """
  return tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits)


def scale_by_temperature(logits, temperature):
  """logits / temperature, the temperature converted exactly to logits' dtype.

  (tf.cast of a Python float would round it through float32 first.)
  """
  if tf.is_tensor(temperature):
    temperature = tf.cast(temperature, logits.dtype)
  else:
    temperature = tf.constant(temperature, logits.dtype)
  return logits / temperature


def check_temperature(temperature):
  """Raises ValueError for a Python/numpy temperature <= 0; returns it."""
  if isinstance(temperature, (int, float)) or (
      hasattr(temperature, "ndim") and not tf.is_tensor(temperature)
      and getattr(temperature, "ndim", 1) == 0):
    if not float(temperature) > 0.0:
      raise ValueError(f"temperature must be > 0, got {temperature!r}")
  return temperature
