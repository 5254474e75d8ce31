"""Pareto-efficient multi-task loss weights (PE-LTR, Lin et al. RecSys 2019).

Given per-task gradients g_1..g_K of the shared parameters, PE-LTR weights
the task losses with the w that solves

    min_w || sum_k w_k g_k ||^2   s.t.  sum_k w_k = 1,  w_k >= c_k,

c = min_weights. The paper solves a relaxed problem (equality constraint
only) analytically and projects the result onto the feasible set; that
projection is in general not the constrained optimum. Here the problem is
solved EXACTLY: with w = c + v, v >= 0, sum v = 1 - sum c, it is a convex
quadratic program over a scaled simplex in K dimensions whose Gram matrix is
Q = G G^T [K, K]. Its minimiser with the smallest support S solves the KKT
linear system of the face S, [[Q_SS, 1], [1^T, 0]] [v_S; mu] =
[-(Q c)_S; 1 - sum c]; every one of the 2^K - 1 faces is solved (batched,
float64, pseudo-inverse), the feasible candidates are scored with the true
objective and the best one is returned. K is the number of tasks (small;
up to MAX_TASKS), so this is cheap next to one backward pass, runs in pure
TensorFlow and works eagerly or inside tf.function.
"""

import itertools

import numpy as np
import tensorflow as tf

MAX_TASKS = 12
_FEASIBILITY_TOL = 1e-7


def _flat_gradient(grads, variables):
  """Concatenates one task's gradients into a float64 vector [P]."""
  pieces = []
  for i, grad in enumerate(grads):
    if grad is None:
      if variables is None:
        raise ValueError("a None gradient needs shared_variables for its shape")
      pieces.append(tf.zeros([tf.size(variables[i])], tf.float64))
      continue
    if isinstance(grad, tf.IndexedSlices):
      grad = tf.convert_to_tensor(grad)
    pieces.append(tf.reshape(tf.cast(grad, tf.float64), [-1]))
  return tf.concat(pieces, axis=0)


def _support_masks(num_tasks):
  """All non-empty subsets of the tasks as a float64 [2^K - 1, K] array."""
  rows = [m for m in itertools.product([0.0, 1.0], repeat=num_tasks) if any(m)]
  return np.array(rows, dtype=np.float64)


def pareto_weights_from_gram(gram, min_weights):
  """Exact PE-LTR weights from the task-gradient Gram matrix.

  Args:
    gram: float [K, K] tensor, gram[i, j] = g_i . g_j (positive semidefinite).
    min_weights: sequence of K floats c_k >= 0 with sum(c) <= 1.

  Returns:
    float64 tensor [K]: argmin_w w^T gram w s.t. sum w = 1, w >= c.

  Raises:
    ValueError: sum(min_weights) > 1, a negative minimum, a length mismatch,
      or more than MAX_TASKS tasks.
  """
  c = np.asarray(min_weights, dtype=np.float64).reshape(-1)
  num_tasks = c.shape[0]
  if num_tasks < 1 or num_tasks > MAX_TASKS:
    raise ValueError(f"pareto weights support 1..{MAX_TASKS} tasks, got "
                     f"{num_tasks}")
  if np.any(c < 0):
    raise ValueError(f"min_weights must be >= 0, got {list(c)}")
  slack = 1.0 - float(c.sum())
  if slack < -1e-12:
    raise ValueError(
        f"sum(min_weights) = {c.sum():.6g} > 1: no feasible weights")
  slack = max(slack, 0.0)
  gram = tf.cast(tf.convert_to_tensor(gram, dtype_hint=tf.float64), tf.float64)
  gram.shape.assert_is_compatible_with([num_tasks, num_tasks])
  if slack == 0.0 or num_tasks == 1:
    return tf.constant(c + slack / num_tasks, tf.float64)
  # Scale-free: argmin does not change with the scale of the gradients.
  scale = tf.reduce_max(tf.abs(tf.linalg.diag_part(gram)))
  gram = gram / tf.where(scale > 0, scale, tf.ones_like(scale))

  masks = tf.constant(_support_masks(num_tasks))  # [S, K]
  num_faces = masks.shape[0]
  outer = masks[:, :, None] * masks[:, None, :]  # [S, K, K]
  eye = tf.eye(num_tasks, dtype=tf.float64)[None]
  # Off-support coordinates get the row v_k = 0.
  q_face = outer * gram[None] + (1.0 - masks)[:, :, None] * eye
  top = tf.concat([q_face, masks[:, :, None]], axis=2)  # [S, K, K+1]
  bottom = tf.concat([masks, tf.zeros([num_faces, 1], tf.float64)], axis=1)
  kkt = tf.concat([top, bottom[:, None, :]], axis=1)  # [S, K+1, K+1]
  c_t = tf.constant(c)
  q_c = tf.linalg.matvec(gram, c_t)  # [K]
  rhs = tf.concat([-masks * q_c[None], tf.fill([num_faces, 1],
                                               tf.constant(slack, tf.float64))],
                  axis=1)  # [S, K+1]
  solution = tf.linalg.matvec(tf.linalg.pinv(kkt), rhs)
  v = solution[:, :num_tasks] * masks  # [S, K]
  tol = _FEASIBILITY_TOL
  feasible = tf.logical_and(
      tf.reduce_all(v >= -tol, axis=1),
      tf.abs(tf.reduce_sum(v, axis=1) - slack) <= tol)
  v = tf.maximum(v, 0.0)
  v = v * slack / tf.maximum(tf.reduce_sum(v, axis=1, keepdims=True), 1e-300)
  w = c_t[None] + v  # [S, K]
  objective = tf.einsum("sk,kl,sl->s", w, gram, w)
  objective = tf.where(feasible, objective,
                       tf.constant(np.inf, tf.float64))
  return w[tf.argmin(objective)]


def pareto_loss_weights(task_losses, shared_variables, min_weights, tape=None):
  """PE-LTR loss weights for K tasks (seed 004, TorchEasyRec pe_mtl_loss).

  Two ways to call it:
    * with a tape: `task_losses` is a list of K scalar losses computed under
      `tape` (a tf.GradientTape created with persistent=True, still
      recording or not); the gradients of each loss w.r.t.
      `shared_variables` are taken here.
    * without a tape: `task_losses` is a list of K per-task gradient lists
      (each aligned with `shared_variables`; None entries mean zero and then
      need `shared_variables` for the shape). `shared_variables` may be None
      when no entry is None.

  The total loss is then sum_k w_k * L_k; the weights carry no gradient.

  Args:
    task_losses: list of K scalar float tensors (with `tape`), or list of K
      lists of gradient tensors (without).
    shared_variables: list of tf.Variable shared by the tasks.
    min_weights: sequence of K floats, c_k >= 0, sum <= 1 (TorchEasyRec's
      pareto_min_loss_weight).
    tape: optional persistent tf.GradientTape.

  Returns:
    float32 tensor [K]: w >= min_weights, sum w = 1, the exact minimiser of
    ||sum_k w_k g_k||^2 (see module docstring).

  Raises:
    ValueError: sum(min_weights) > 1, K != len(min_weights), K > MAX_TASKS,
      or scalar losses given without a tape.
  """
  if len(task_losses) != len(min_weights):
    raise ValueError(f"{len(task_losses)} tasks but {len(min_weights)} "
                     "min_weights")
  if float(np.sum(min_weights)) > 1.0 + 1e-12:
    raise ValueError(
        f"sum(min_weights) = {float(np.sum(min_weights)):.6g} > 1: no "
        "feasible weights")
  if tape is not None:
    grads = [tape.gradient(loss, shared_variables) for loss in task_losses]
  else:
    if not all(isinstance(g, (list, tuple)) for g in task_losses):
      raise ValueError(
          "without `tape`, task_losses must be per-task gradient lists; pass "
          "tape=<persistent GradientTape> to differentiate scalar losses")
    grads = task_losses
  # Task gradients, one row per task: [K, P].
  matrix = tf.stack([_flat_gradient(g, shared_variables) for g in grads])
  gram = tf.matmul(matrix, matrix, transpose_b=True)
  weights = pareto_weights_from_gram(gram, min_weights)
  return tf.stop_gradient(tf.cast(weights, tf.float32))
