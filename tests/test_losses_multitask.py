"""PE-LTR Pareto loss weights (Lin et al., RecSys 2019)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import optimize

from tf_embeddings import losses


def objective(w, g):
  d = np.asarray(w) @ g
  return float(d @ d)


def two_task_analytic(g1, g2, c1=0.0, c2=0.0):
  """w1 = clip(((g2 - g1) . g2) / ||g1 - g2||^2), then within [c1, 1 - c2]."""
  w1 = np.clip(np.dot(g2 - g1, g2) / np.dot(g1 - g2, g1 - g2), 0.0, 1.0)
  w1 = np.clip(w1, c1, 1.0 - c2)
  return np.array([w1, 1.0 - w1])


def np_simplex_projection(y, total):
  """Euclidean projection of y onto {v >= 0, sum v = total}."""
  u = np.sort(y)[::-1]
  css = np.cumsum(u) - total
  ind = np.arange(1, len(y) + 1)
  rho = ind[u - css / ind > 0][-1]
  return np.maximum(y - css[rho - 1] / rho, 0.0)


def paper_relaxed_then_projected(g, c):
  """PE-LTR as in the paper / TorchEasyRec: KKT of the equality-constrained
  problem, then projection of the result onto the feasible set."""
  k = len(c)
  q = g @ g.T
  m = np.block([[q, np.ones([k, 1])], [np.ones([1, k]), np.zeros([1, 1])]])
  z = np.concatenate([-q @ c, [1 - c.sum()]])
  v = (np.linalg.pinv(m) @ z)[:k]
  return c + np_simplex_projection(v, 1 - c.sum())


def test_golden_two_tasks():
  # g1 = [1, 0], g2 = [0, 2]: w1 = ((g2 - g1) . g2) / ||g1 - g2||^2
  #   = (0 + 4) / (1 + 4) = 0.8 -> [0.8, 0.2], ||0.8 g1 + 0.2 g2||^2 = 0.8.
  g = [[tf.constant([1.0, 0.0])], [tf.constant([0.0, 2.0])]]
  w = losses.pareto_loss_weights(g, None, [0.0, 0.0])
  assert w.dtype == tf.float32 and w.shape == (2,)
  np.testing.assert_allclose(w.numpy(), [0.8, 0.2], rtol=1e-6)
  # Minimum 0.3 for task 2: the optimum moves to the bound -> [0.7, 0.3].
  w = losses.pareto_loss_weights(g, None, [0.0, 0.3])
  np.testing.assert_allclose(w.numpy(), [0.7, 0.3], rtol=1e-6)
  # Gram-matrix entry point, same answer.
  np.testing.assert_allclose(
      losses.pareto_weights_from_gram([[1.0, 0.0], [0.0, 4.0]],
                                      [0.0, 0.0]).numpy(), [0.8, 0.2])


@pytest.mark.parametrize("seed", range(6))
def test_two_tasks_match_analytic_solution(seed):
  r = np.random.default_rng(seed)
  g1, g2 = r.normal(size=[5]), r.normal(size=[5])
  if seed % 2:
    g2 = -0.5 * g1 + 0.1 * g2  # conflicting tasks: interior solution
  c = r.uniform(0.0, 0.45, size=[2]) if seed >= 3 else np.zeros(2)
  w = losses.pareto_loss_weights([[g1], [g2]], None, c).numpy()
  np.testing.assert_allclose(w, two_task_analytic(g1, g2, c[0], c[1]),
                             atol=1e-6)


@pytest.mark.parametrize("seed,k,dim", [(0, 3, 2), (1, 3, 6), (2, 4, 3),
                                        (3, 5, 10), (4, 4, 2)])
def test_k_tasks_exact_against_scipy_and_paper(seed, k, dim):
  r = np.random.default_rng(seed)
  g = r.normal(size=[k, dim])
  g[0] = -g[1] + 0.2 * g[0]  # some conflict
  c = r.dirichlet(np.ones(k)) * r.uniform(0.2, 0.9)
  w = losses.pareto_loss_weights([[tf.constant(row)] for row in g], None,
                                 c).numpy().astype(np.float64)
  # Feasible: minimums respected, sums to 1.
  assert np.all(w >= c - 1e-6)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  # Optimal: no worse than SLSQP from many starts.
  best = np.inf
  for start in r.dirichlet(np.ones(k), size=8):
    x0 = c + (1 - c.sum()) * start
    res = optimize.minimize(
        lambda v: objective(v, g), x0, method="SLSQP",
        bounds=[(ci, 1.0) for ci in c],
        constraints={"type": "eq", "fun": lambda v: v.sum() - 1.0},
        options={"ftol": 1e-14, "maxiter": 500})
    best = min(best, objective(res.x, g))
  assert objective(w, g) <= best + 1e-5 * max(1.0, best)
  # And never worse than the paper's relaxed-then-projected weights.
  assert objective(w, g) <= objective(paper_relaxed_then_projected(g, c),
                                      g) + 1e-7


def test_exact_beats_relaxed_then_projected():
  # Random 3-task problems: projecting the relaxed optimum onto the simplex
  # is never better than the exact solution and on some problems worse.
  c = np.zeros(3)
  worse = None
  r = np.random.default_rng(3)
  for _ in range(50):
    g = r.normal(size=[3, 2])
    exact = losses.pareto_weights_from_gram(g @ g.T, c).numpy()
    paper = paper_relaxed_then_projected(g, c)
    assert objective(exact, g) <= objective(paper, g) + 1e-9
    if objective(exact, g) < objective(paper, g) - 1e-6:
      worse = (g, exact, paper)
  assert worse is not None  # the difference is real on some problems


def test_tape_form_equals_gradient_lists_and_runs_in_tf_function():
  r = np.random.default_rng(5)
  shared = [tf.Variable(r.normal(size=[3, 2])), tf.Variable(r.normal(size=[2]))]
  head = tf.Variable(r.normal(size=[2]))  # task-specific, not shared
  x = tf.constant(r.normal(size=[4, 3]))

  def task_losses():
    h = tf.matmul(x, shared[0]) + shared[1]
    return [tf.reduce_mean(tf.square(h - 1.0)),
            tf.reduce_mean(tf.nn.softplus(-tf.linalg.matvec(h, head))),
            # task 3 does not use shared[1]: its gradient there is None.
            tf.reduce_mean(tf.square(tf.matmul(x, shared[0])))]

  min_w = [0.1, 0.2, 0.1]
  with tf.GradientTape(persistent=True) as tape:
    task = task_losses()
  w_tape = losses.pareto_loss_weights(task, shared, min_w, tape=tape)
  grads = [tape.gradient(t, shared) for t in task]
  assert grads[2][1] is None
  w_lists = losses.pareto_loss_weights(grads, shared, min_w)
  np.testing.assert_allclose(w_tape.numpy(), w_lists.numpy(), rtol=1e-6)
  flat = np.stack([np.concatenate([
      (gv.numpy() if gv is not None else np.zeros(v.shape)).ravel()
      for gv, v in zip(gr, shared)]) for gr in grads])
  np.testing.assert_allclose(
      w_tape.numpy(),
      losses.pareto_weights_from_gram(flat @ flat.T, min_w).numpy(),
      rtol=1e-6)

  @tf.function
  def step():
    with tf.GradientTape(persistent=True) as t:
      ls = task_losses()
    w = losses.pareto_loss_weights(ls, shared, min_w, tape=t)
    return w, tf.add_n([w[i] * tf.cast(ls[i], tf.float32) for i in range(3)])

  w_fn, total = step()
  np.testing.assert_allclose(w_fn.numpy(), w_tape.numpy(), rtol=1e-6)
  assert np.isfinite(total.numpy())


def test_weights_carry_no_gradient_and_edge_cases():
  g = [[tf.constant([1.0, 0.0])], [tf.constant([0.0, 2.0])]]
  # sum(min) == 1: the minimums are the answer.
  np.testing.assert_allclose(
      losses.pareto_loss_weights(g, None, [0.25, 0.75]).numpy(), [0.25, 0.75])
  # One task: weight 1.
  np.testing.assert_allclose(
      losses.pareto_loss_weights(g[:1], None, [0.0]).numpy(), [1.0])
  # Identical gradients (singular Gram): any split is optimal; feasible.
  same = [[tf.constant([1.0, 1.0])]] * 3
  w = losses.pareto_loss_weights(same, None, [0.1, 0.2, 0.3]).numpy()
  assert np.all(w >= [0.1, 0.2, 0.3]) and abs(w.sum() - 1) < 1e-6
  # Zero gradients: still a valid weight vector.
  zero = [[tf.zeros([2])]] * 2
  w = losses.pareto_loss_weights(zero, None, [0.0, 0.0]).numpy()
  assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-6


def test_errors():
  g = [[tf.constant([1.0])], [tf.constant([2.0])]]
  with pytest.raises(ValueError, match="sum"):
    losses.pareto_loss_weights(g, None, [0.6, 0.5])
  with pytest.raises(ValueError, match="min_weights"):
    losses.pareto_loss_weights(g, None, [0.5])
  with pytest.raises(ValueError, match="tape"):
    losses.pareto_loss_weights([tf.constant(1.0), tf.constant(2.0)],
                               [tf.Variable(1.0)], [0.0, 0.0])
  with pytest.raises(ValueError):
    losses.pareto_weights_from_gram(np.eye(2), [-0.1, 0.2])
