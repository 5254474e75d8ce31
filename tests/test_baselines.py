"""The benchmark's EASE and iALS against direct solves on a tiny hand-made matrix."""
import importlib.util
import os

import numpy as np

# benchmarks/ is scripts, not part of the installed package: load the file itself.
_SPEC = importlib.util.spec_from_file_location("baselines", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "baselines.py"))
baselines = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(baselines)

# 4 users x 5 items, hand-made: users 0 and 1 share items 0, 1; user 2 likes 2, 3, 4;
# user 3 bridges (items 1, 2).
USERS = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
ITEMS = np.array([0, 1, 3, 0, 1, 2, 3, 4, 1, 2])


def matrix():
  return baselines.binary_matrix(USERS, ITEMS, 4, 5)


def test_binary_matrix_counts_duplicates_once():
  m = baselines.binary_matrix(np.array([0, 0]), np.array([1, 1]), 1, 2)
  np.testing.assert_array_equal(m.toarray(), [[0.0, 1.0]])


def test_ease_equals_the_constrained_least_squares_column_by_column():
  x = matrix().toarray()
  lam = 0.7
  b = baselines.ease_weights(matrix(), lam)
  # Column j of B minimises ||x_j - X_{-j} b||^2 + lam ||b||^2 over the other items
  # (diag(B) = 0): b = (X_{-j}^T X_{-j} + lam I)^-1 X_{-j}^T x_j.
  for j in range(5):
    others = [k for k in range(5) if k != j]
    xo = x[:, others]
    want = np.linalg.solve(xo.T @ xo + lam * np.eye(4), xo.T @ x[:, j])
    np.testing.assert_allclose(b[others, j], want, rtol=1e-10, atol=1e-12)
    assert b[j, j] == 0.0
  query, items = baselines.ease(matrix(), lam)
  np.testing.assert_allclose(query @ items.T, x @ b, rtol=1e-5, atol=1e-6)


def test_ials_sweep_equals_the_weighted_least_squares_of_each_row():
  x = matrix().toarray()
  reg, alpha = 0.3, 4.0
  rng = np.random.RandomState(1)
  user0, item0 = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
  user1, item1 = baselines.ials_sweep(matrix(), user0, item0, reg, alpha)
  conf = 1.0 + alpha * x  # c_ui: [4, 5]
  # Users first, with the starting items: x_u = (Y^T C_u Y + reg I)^-1 Y^T C_u p_u.
  for u in range(4):
    c = np.diag(conf[u])
    want = np.linalg.solve(item0.T @ c @ item0 + reg * np.eye(3), item0.T @ c @ x[u])
    np.testing.assert_allclose(user1[u], want, rtol=1e-9)
  # Then items, with the new users.
  for i in range(5):
    c = np.diag(conf[:, i])
    want = np.linalg.solve(user1.T @ c @ user1 + reg * np.eye(3), user1.T @ c @ x[:, i])
    np.testing.assert_allclose(item1[i], want, rtol=1e-9)


def test_ials_ranks_the_co_liked_item_first():
  # User 1 has items 0, 1; user 0 (same taste) also has 3: after ALS, item 3 beats
  # items 2 and 4 for user 1.
  query, items = baselines.ials(matrix(), dim=2, reg=0.1, alpha=10.0, sweeps=20)
  s = query[1] @ items.T
  assert s[3] > s[2] and s[3] > s[4]
