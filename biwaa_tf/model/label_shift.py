"""Label shift: the target's class prior from unlabelled predictions, and the source
sampling distribution that matches it (--prior_matching).

--prior_matching loads the source in the proportions of the source-only run's
predicted class histogram (`sampling_distribution` of its counts). `em_prior` is the
textbook alternative, measured against it by tools/prior_estimates.py (on the digits
LT tasks EM was further from the true prior: these networks are overconfident, and
EM's reweighting amplifies their errors):

A classifier trained on a source loaded with class distribution pi_s gives target
posteriors p(y | x) that carry pi_s as their prior. Under label shift (p(x | y) shared,
p(y) different) the target prior pi_t is the fixed point of Saerens, Latinne and
Decaestecker's EM (Neural Computation 14, 2002):
    w_i(y) = p_i(y) pi_t(y) / pi_s(y), normalised over y;   pi_t = mean_i w_i.
Sampling the source with pi_t then gives both domains the same label distribution,
which is what adversarial alignment assumes; it needs only the aggregate prior, not
correct pseudo-labels on the rare classes (which class-balancing the target needs).
"""

import numpy as np

# A class the estimate all but removes keeps this fraction of a uniform share in the
# source sampling distribution, so that the classifier never stops seeing it.
FLOOR_FRACTION = 0.1


def em_prior(probs, train_prior, max_iters=1000, tol=1e-7):
  """The target class prior (K,) by EM from N x K posteriors trained under `train_prior`."""
  p = np.asarray(probs, np.float64)
  p = p / p.sum(axis=1, keepdims=True)
  pi_s = np.asarray(train_prior, np.float64)
  pi_s = pi_s / pi_s.sum()
  ratio_base = np.divide(1.0, pi_s, out=np.zeros_like(pi_s), where=pi_s > 0)
  pi = pi_s.copy()
  for _ in range(max_iters):
    w = p * (pi * ratio_base)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    new = w.mean(axis=0)
    if np.abs(new - pi).max() < tol:
      return new
    pi = new
  return pi


def sampling_distribution(prior, floor_fraction=FLOOR_FRACTION):
  """`prior` with every class raised to at least floor_fraction / K, renormalised."""
  prior = np.asarray(prior, np.float64)
  floored = np.maximum(prior / prior.sum(), floor_fraction / len(prior))
  return floored / floored.sum()
