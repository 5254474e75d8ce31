"""Pointwise heads: weighted BCE, focal, L2 and session-aware JRC losses.

Each returns a scalar, the MEAN over all examples (elements for l2_loss).
"""

import tensorflow as tf

from tf_embeddings.losses import primitives


def weighted_cross_entropy_loss(labels, logits, pos_weight):
  """Sigmoid cross-entropy with the positive term scaled (seed 002).

  loss = mean(pos_weight * z * -log(sigmoid(x)) + (1 - z) * -log(1 -
  sigmoid(x))) via tf.nn.weighted_cross_entropy_with_logits. pos_weight > 1
  trades precision for recall.

  Args:
    labels: float (or int/bool) tensor of any shape, values in [0, 1].
    logits: float tensor of the same shape.
    pos_weight: float scalar (or broadcastable tensor) weight of positives.

  Returns:
    Scalar float: mean over all elements.
  """
  logits = tf.convert_to_tensor(logits)
  labels = primitives.cast_like(labels, logits.dtype)
  return tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(
      labels=labels, logits=logits, pos_weight=pos_weight))


def binary_focal_loss(labels, logits, gamma=2.0, alpha=0.5,
                      stop_weight_gradient=True):
  """Binary focal loss, TorchEasyRec's definition (seed 004).

  With p = sigmoid(x) and the per-example weight
    w = alpha * z * (1 - p)^gamma + (1 - alpha) * (1 - z) * p^gamma,
  loss = mean(w * sigmoid_xent(z, x)). alpha weights the positives and
  (1 - alpha) the negatives; TorchEasyRec suggests alpha / (1 - alpha) =
  #neg / #pos. With alpha = 0.5 the loss is half the usual unweighted focal
  loss. Everything comes from logits: p^gamma = exp(gamma * log_sigmoid(x)),
  (1 - p)^gamma = exp(gamma * log_sigmoid(-x)), the cross-entropy is the
  stable relu form, so no log(p) is ever taken.

  TorchEasyRec detaches w (its gradient is w * (p - z) / batch), which is the
  default here (stop_weight_gradient=True); pass False for the gradient of
  the classic focal loss of Lin et al. The loss VALUE is the same.

  Args:
    labels: float/int tensor [batch_size] (any shape) of 0/1 labels.
    logits: float tensor of the same shape.
    gamma: float >= 0 focusing exponent.
    alpha: float in (0, 1), weight of the positive class.
    stop_weight_gradient: bool, treat w as a constant (TorchEasyRec).

  Returns:
    Scalar float: mean over all examples.

  Raises:
    ValueError: gamma < 0 or alpha outside (0, 1) (Python numbers).
  """
  if gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must be in (0, 1), got {alpha}")
  logits = tf.convert_to_tensor(logits)
  labels = primitives.cast_like(labels, logits.dtype)
  p_gamma = tf.exp(gamma * tf.math.log_sigmoid(logits))
  one_minus_p_gamma = tf.exp(gamma * tf.math.log_sigmoid(-logits))
  weight = (alpha * labels * one_minus_p_gamma
            + (1.0 - alpha) * (1.0 - labels) * p_gamma)
  if stop_weight_gradient:
    weight = tf.stop_gradient(weight)
  xent = primitives.stable_sigmoid_cross_entropy(labels, logits)
  return tf.reduce_mean(weight * xent)


def l2_loss(labels, predictions):
  """Mean squared error: mean((predictions - labels)^2).

  Note: NOT tf.nn.l2_loss (which is sum(t^2) / 2); this is TorchEasyRec's
  l2_loss (MSELoss, mean reduction).

  Args:
    labels: float tensor of any shape.
    predictions: float tensor of the same shape.

  Returns:
    Scalar float: mean over all elements.
  """
  predictions = tf.convert_to_tensor(predictions)
  labels = primitives.cast_like(labels, predictions.dtype)
  return tf.reduce_mean(tf.math.squared_difference(predictions, labels))


def _segment_logsumexp(values, segment_ids, num_segments):
  """Stable log-sum-exp of `values` [B] per segment -> [num_segments]."""
  seg_max = tf.stop_gradient(
      tf.math.unsorted_segment_max(values, segment_ids, num_segments))
  shifted = tf.exp(values - tf.gather(seg_max, segment_ids))
  # Every non-empty segment holds its max, so the sum is >= 1: log is safe.
  seg_sum = tf.math.unsorted_segment_sum(shifted, segment_ids, num_segments)
  seg_sum = tf.maximum(seg_sum, tf.ones_like(seg_sum))
  return seg_max + tf.math.log(seg_sum)


def jrc_loss(labels, logits, session_ids, alpha=0.5):
  """JRC: joint ranking and calibration (arXiv 2208.06164), TorchEasyRec form.

  logits [B, 2] hold (negative-class logit l0, positive-class logit l1).
    calibration = mean_b sparse_softmax_xent(label_b, logits_b).
    ranking (generative) term, per sample b of session s(b):
      positive b: -log(exp(l1_b) / (exp(l1_b) + sum_{j in s(b), y_j=0}
                  exp(l1_j))): on the positive-logit column, the positive
                  competes with the NEGATIVES of its own session;
      negative b: -log(exp(l0_b) / (exp(l0_b) + sum_{j in s(b), y_j=1}
                  exp(l0_j))): on the negative-logit column, the negative
                  competes with the POSITIVES of its own session.
    Samples of other sessions never enter (they are masked with a large
    negative); a sample whose session has no sample of the other class
    contributes 0. ranking = mean over the B samples.
  loss = alpha * calibration + (1 - alpha) * ranking.
  This equals TorchEasyRec's JRCLoss (both its original [B, B]-mask version,
  (loss_pos * #pos + loss_neg * #neg) / B, and its segment version).

  Args:
    labels: int/float [B] with values in {0, 1}.
    logits: float [B, 2] two-logit formulation.
    session_ids: int or string [B], session of each sample (any order, need
      not be contiguous).
    alpha: float weight of the calibration term.

  Returns:
    Scalar float: alpha * mean CE + (1 - alpha) * mean ranking term.
  """
  logits = tf.convert_to_tensor(logits)
  dtype = logits.dtype
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  calibration = tf.reduce_mean(
      primitives.sparse_softmax_cross_entropy(labels, logits))

  _, segment_ids = tf.unique(tf.reshape(session_ids, [-1]))
  num_segments = tf.reduce_max(segment_ids) + 1
  is_pos = tf.equal(labels, 1)
  logit_neg, logit_pos = logits[:, 0], logits[:, 1]
  masked = tf.fill(tf.shape(logit_pos),
                   tf.constant(primitives.large_negative(dtype), dtype))
  # Competitors of positives: the session's negatives on the positive logit.
  neg_on_pos = tf.where(is_pos, masked, logit_pos)
  # Competitors of negatives: the session's positives on the negative logit.
  pos_on_neg = tf.where(is_pos, logit_neg, masked)
  lse_neg_on_pos = _segment_logsumexp(neg_on_pos, segment_ids, num_segments)
  lse_pos_on_neg = _segment_logsumexp(pos_on_neg, segment_ids, num_segments)
  # -log(e^own / (e^own + sum e^competitors)) = softplus(lse_comp - own).
  ranking = tf.where(
      is_pos,
      tf.math.softplus(tf.gather(lse_neg_on_pos, segment_ids) - logit_pos),
      tf.math.softplus(tf.gather(lse_pos_on_neg, segment_ids) - logit_neg))
  return alpha * calibration + (1.0 - alpha) * tf.reduce_mean(ranking)
