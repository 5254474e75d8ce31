"""The example layout of word2vec's SGD step: the reference the run steps are tested against.

Training gives the fused step runs of consecutive centres with their text
(word2vec/kernels.py skipgram_window_sgd, cbow_window_sgd). The example layout is one row per
example: skip-gram (centre, context) pairs, CBOW padded contexts, as evaluation reads them;
its step (`examples_sgd`) is word2vec's per-example SGD written directly over kernels.head, so
tests/test_word2vec_model.py checks it against tf.nn under GradientTape and the run steps
against it. `StepConfig` and `Word2Vec` here are the library's with a `layout` setting:
"runs" is the library's own step, "examples" (the default) runs `examples_sgd` in the same
compiled block (kernels.sgd_loop) with the same in-graph negatives.
"""
import dataclasses
import functools

import tensorflow as tf

from tf_embeddings.word2vec import kernels
from tf_embeddings.word2vec import model as model_lib


@dataclasses.dataclass(frozen=True)
class StepConfig(model_lib.StepConfig):
  """model.StepConfig with layout "examples" (a minibatch is batch_size examples) or "runs"
  (the library's: batch_size centres as runs of text)."""
  layout: str = "examples"

  @property
  def negative_groups(self):
    if self.layout == "runs":
      return super().negative_groups
    return self.num_groups


class Word2Vec(model_lib.Word2Vec):
  """model.Word2Vec whose blocks run `examples_sgd` when config.layout is "examples"."""

  def _examples(self):
    return getattr(self.config, "layout", "runs") == "examples"

  def _block(self, inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs,
             window=None):
    if not self._examples():
      return super()._block(inputs, lengths, targets, sampled, true_log_q, sampled_log_q,
                            lrs, window)
    return kernels.sgd_loop(self.config.steps_per_call,
                            functools.partial(examples_sgd, self.config, self.tables),
                            inputs, lengths, targets, sampled, true_log_q, sampled_log_q, lrs)

  def _sample_targets(self, inputs, targets):
    return targets if self._examples() else super()._sample_targets(inputs, targets)

  def block_window(self, lengths):
    return None if self._examples() else super().block_window(lengths)


def examples_sgd(config, tables, inputs, lengths, targets, sampled, true_log_q, sampled_log_q,
                 lr):
  """One minibatch of examples through word2vec's per-example SGD; returns the mean loss.

  Args:
    config: StepConfig (layout "examples").
    tables: kernels.Tables.
    inputs: int32 [batch] skip-gram centres, or [batch, 2 * window] padded CBOW contexts.
    lengths: int32 [batch] context lengths (CBOW), ignored (skip-gram).
    targets: int32 [batch], the contexts (skip-gram) or centres (CBOW).
    sampled, true_log_q, sampled_log_q: as for kernels.head.
    lr: scalar learning rate.
  """
  c = config
  h = kernels.hidden(config, tables, inputs, lengths)
  loss, d_hidden, out_ids, d_out, d_bias, (n_hidden, n_out) = kernels.head(
      config, tables, h, targets, sampled, true_log_q, sampled_log_q, with_counts=True)
  out_scale = kernels.row_scale(config, tables, out_ids, lr, n_out)
  kernels.apply_update(tables.output_embeddings, out_ids, lr * d_out, out_scale)
  if c.train_biases:
    kernels.apply_update(tables.output_biases, out_ids, lr * d_bias, out_scale)
  if c.model == "skipgram":
    kernels.apply_update(tables.input_embeddings, inputs, lr * d_hidden,
                         kernels.row_scale(config, tables, inputs, lr, n_hidden))
  else:
    # word2vec.c (cbow_mean=1) adds the hidden gradient to every context word, undivided.
    mask = tf.sequence_mask(lengths, tf.shape(inputs)[1], tf.float32)
    updates = (lr * mask)[:, :, None] * d_hidden[:, None, :]           # [B, 2w, d]
    flat_ids = tf.reshape(inputs, [-1])
    kernels.apply_update(
        tables.input_embeddings, flat_ids, tf.reshape(updates, [-1, c.dim]),
        kernels.row_scale(config, tables, flat_ids, lr, tf.reshape(mask, [-1])))
  return tf.reduce_mean(loss)
