"""Strong simple baselines for implicit-feedback retrieval, in numpy/scipy.

Each returns (query [num_users, D], items [num_items, D]) so that
query @ items.T is the score matrix and `twotower.metrics.evaluate` ranks
them exactly like the two-tower's embeddings.

  ease   EASE (Steck, WWW 2019): item-item weights B = argmin ||X - XB||^2 +
         lambda ||B||^2 with diag(B) = 0, closed form B = I - P / diag(P),
         P = (X^T X + lambda I)^-1 (B_jj = 0 after the division).
  ials   implicit ALS (Hu, Koren, Volinsky, ICDM 2008): confidence
         c_ui = 1 + alpha for observed pairs and 1 otherwise, preference
         p_ui = 1 if observed, loss sum c_ui (p_ui - x_u . y_i)^2 +
         reg (|x_u|^2 + |y_i|^2); one sweep solves every user, then every item:
         x_u = (Y^T Y + alpha Y_u^T Y_u + reg I)^-1 (1 + alpha) Y_u^T 1.
"""
import numpy as np
import scipy.sparse as sp


def binary_matrix(users, items, num_users, num_items):
  """0/1 CSR user x item matrix of the interactions (duplicates count once)."""
  m = sp.csr_matrix((np.ones(len(users), np.float64), (users, items)),
                    shape=(num_users, num_items))
  m.data[:] = 1.0
  return m


def ease_weights(x, lam):
  """EASE item-item matrix B: float64 [num_items, num_items], zero diagonal."""
  g = np.asarray((x.T @ x).todense(), np.float64)  # Gram matrix: [N, N]
  g[np.diag_indices_from(g)] += lam
  p = np.linalg.inv(g)
  b = -p / np.diag(p)[None, :]
  b[np.diag_indices_from(b)] = 0.0
  return b


def ease(x, lam):
  """(query, items) with query @ items.T = X B."""
  b = ease_weights(x, lam)
  return np.asarray(x.todense(), np.float32), b.T.astype(np.float32)


def _half_sweep(x, fixed, reg, alpha):
  """Solves every row of `x` (CSR [R, N]) given the other side's factors `fixed` [N, D]."""
  d = fixed.shape[1]
  gram = fixed.T @ fixed + reg * np.eye(d)  # [D, D]
  indptr, indices = x.indptr, x.indices
  a = np.broadcast_to(gram, (x.shape[0], d, d)).copy()  # [R, D, D]
  b = np.zeros((x.shape[0], d))
  for r in range(x.shape[0]):
    y = fixed[indices[indptr[r]:indptr[r + 1]]]  # the row's observed columns: [n_r, D]
    if len(y):
      a[r] += alpha * (y.T @ y)
      b[r] = (1.0 + alpha) * y.sum(0)
  return np.linalg.solve(a, b[..., None])[..., 0]


def ials_sweep(x, user_f, item_f, reg, alpha):
  """One ALS sweep: users given items, then items given the new users."""
  user_f = _half_sweep(x, item_f, reg, alpha)
  item_f = _half_sweep(x.T.tocsr(), user_f, reg, alpha)
  return user_f, item_f


def ials(x, dim, reg, alpha, sweeps=15, seed=0):
  """(query, items) of implicit ALS after `sweeps` sweeps from a N(0, 0.01) start."""
  rng = np.random.RandomState(seed)
  user_f = rng.normal(0, 0.01, (x.shape[0], dim))
  item_f = rng.normal(0, 0.01, (x.shape[1], dim))
  for _ in range(sweeps):
    user_f, item_f = ials_sweep(x, user_f, item_f, reg, alpha)
  return user_f.astype(np.float32), item_f.astype(np.float32)
