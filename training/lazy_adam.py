"""A lazy Adam(W) for embedding tables: a sparse gradient updates only the rows it touches.

Keras 3's Adam turns an IndexedSlices gradient dense (its update subtracts the dense slot
from it), and its decoupled weight decay shrinks every row of every table each step: a
step then rewrites each table and both of its slots whole, which a table of 100M rows on
parameter servers cannot afford (docs/scaling.md). `LazyAdam` is Adam (with the decoupled
weight decay of AdamW when `weight_decay` is set) whose sparse updates are row-wise:

  g     = the gradient's rows, duplicates of an index summed
  m[r]  = beta_1 m[r] + (1 - beta_1) g[r]          for the touched rows r only
  v[r]  = beta_2 v[r] + (1 - beta_2) g[r]^2
  w[r] -= lr wd w[r]                                 (weight decay, touched rows only)
  w[r] -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m[r] / (sqrt(v[r]) + epsilon)

with t the optimizer's step (TF-Addons' LazyAdam, TFRS users' choice for big tables).
Untouched rows keep their slots and value, where dense Adam would still move them by their
decaying momentum and decay them. A dense gradient gets Keras's Adam(W) update unchanged.
"""
import keras
import tensorflow as tf


class LazyAdam(keras.optimizers.Adam):
  """keras.optimizers.Adam with row-wise updates for IndexedSlices gradients (see above)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._sparse_keys = set()

  def apply(self, grads, trainable_variables=None):
    # Which variables get a sparse gradient this step (known when the step is traced): the
    # dense weight decay of Keras skips them, update_step decays their touched rows.
    variables = trainable_variables if trainable_variables is not None else \
        self._trainable_variables
    self._sparse_keys = {self._var_key(v) for g, v in zip(grads, variables)
                         if isinstance(g, tf.IndexedSlices)}
    return super().apply(grads, trainable_variables)

  def _use_weight_decay(self, variable):
    if self._var_key(variable) in self._sparse_keys:
      return False
    return super()._use_weight_decay(variable)

  def _decays(self, variable):
    """Whether Keras's rules (weight_decay set, not excluded) decay this variable (its own
    rule, not the override above that leaves sparse variables to update_step)."""
    return self.weight_decay is not None and super()._use_weight_decay(variable)

  def update_step(self, gradient, variable, learning_rate):
    if not isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    target = variable.value if isinstance(variable, keras.Variable) else variable
    dtype = target.dtype
    lr = tf.cast(learning_rate, dtype)
    t = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    alpha = lr * tf.sqrt(1 - tf.pow(beta_2, t)) / (1 - tf.pow(beta_1, t))
    rows, position = tf.unique(tf.cast(gradient.indices, tf.int64))
    grad = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), position,
                                        tf.shape(rows)[0])
    index = self._get_variable_index(variable)
    m, v = self._momentums[index], self._velocities[index]
    m_slot = m.value if isinstance(m, keras.Variable) else m
    v_slot = v.value if isinstance(v, keras.Variable) else v
    m_rows = tf.gather(m_slot, rows)
    v_rows = tf.gather(v_slot, rows)
    m_rows += (grad - m_rows) * (1 - beta_1)
    v_rows += (tf.square(grad) - v_rows) * (1 - beta_2)
    m_slot.scatter_update(tf.IndexedSlices(m_rows, rows))
    v_slot.scatter_update(tf.IndexedSlices(v_rows, rows))
    step = alpha * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, dtype))
    if self._decays(variable):
      step += lr * tf.cast(self.weight_decay, dtype) * tf.gather(target, rows)
    target.scatter_sub(tf.IndexedSlices(step, rows))
