r"""A domain classifier on the latents, and what it gives: density ratios, IWV/DEV, the PAD.

One cross-fitted logistic regression (:func:`domain_classifier`) tells source from target
latents. Each sample's probability :math:`\pi(z) = P(\text{target}\mid z)` comes from a model
fitted on the other folds, so no sample is scored by a model that saw it. Three quantities read
that one fit:

* the density ratio of each source sample (:func:`domain_weights`),

  .. math:: w(z) = \frac{p_t(z)}{p_s(z)} = \frac{n_s}{n_t}\,\frac{\pi(z)}{1 - \pi(z)};

* the importance-weighted risks IWV (Sugiyama et al., 2007) and DEV (You et al., 2019) of the
  labelled source samples (:func:`importance_weighted_risk`);
* the proxy A-distance (Ben-David et al., 2007; :meth:`DomainFit.proxy_a_distance`),
  :math:`\mathrm{PAD} = 2(1 - 2\,\mathrm{err})`, with err the balanced out-of-fold error of
  the classifier that calls a sample "target" where :math:`w(z) > 1`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from torch import Tensor

from sidda.evaluate.threads import single_blas_thread

__all__ = ["DomainFit", "RiskEstimate", "domain_classifier", "domain_weights",
           "importance_weighted_risk"]

#: Probabilities of the domain classifier are clipped to [CLIP, 1 - CLIP].
CLIP = 1e-3


class RiskEstimate(NamedTuple):
    """Importance-weighted estimates of the target risk from labelled source samples."""

    iwv: float  #: mean_i w_i l_i (Sugiyama et al., 2007)
    dev: float  #: with the control variate of You et al. (2019), "deep embedded validation"


class DomainFit(NamedTuple):
    """Out-of-fold probabilities of a cross-fitted source-vs-target classifier."""

    p_target_s: np.ndarray  #: (N_s,) P(target | z) of each source sample, clipped
    p_target_t: np.ndarray  #: (N_t,) P(target | z) of each target sample, clipped

    @property
    def weights_s(self) -> np.ndarray:
        r"""(N_s,) density ratios :math:`w = \frac{n_s}{n_t}\frac{\pi}{1-\pi}` of the source
        samples."""
        n_s, n_t = len(self.p_target_s), len(self.p_target_t)
        p = self.p_target_s
        return (n_s / n_t) * p / (1 - p)

    def balanced_accuracy(self) -> float:
        r"""Out-of-fold balanced accuracy of the rule "target where :math:`w(z) > 1`".

        :math:`w > 1 \iff \pi > n_t/(n_s+n_t)`: the Bayes rule for equal domain priors, so a
        classifier that cannot tell the domains apart scores 0.5 whatever the set sizes.

        >>> DomainFit(np.array([0.1, 0.2]), np.array([0.9, 0.4])).balanced_accuracy()
        0.75
        """
        n_s, n_t = len(self.p_target_s), len(self.p_target_t)
        cut = n_t / (n_s + n_t)
        return 0.5 * (float(np.mean(self.p_target_s <= cut))
                      + float(np.mean(self.p_target_t > cut)))

    def proxy_a_distance(self) -> float:
        r""":math:`\mathrm{PAD} = 2(1 - 2\,\mathrm{err})`, err = 1 - :meth:`balanced_accuracy`,
        clipped to [0, 2] (an error above 0.5 is a chance classifier's noise).

        0: the latents of the two domains cannot be told apart; 2: perfectly separable.
        """
        err = 1.0 - self.balanced_accuracy()
        return 2.0 * (1.0 - 2.0 * min(err, 0.5))


def domain_classifier(
    latents_s: Tensor, latents_t: Tensor, *, n_splits: int = 5, random_state: int = 0
) -> DomainFit:
    """Cross-fitted logistic regression (target = 1) on standardised latents.

    Args:
        latents_s: (N_s, D) source latents.
        latents_t: (N_t, D) target latents (no labels).
        n_splits: Stratified folds, lowered to the size of the smaller domain.
        random_state: Seed of the fold split.

    Raises:
        ValueError: fewer than 2 samples in a domain (nothing to cross-fit).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_s, n_t = len(latents_s), len(latents_t)
    k = min(n_splits, n_s, n_t)
    if k < 2:
        raise ValueError(
            f"the domain classifier needs >= 2 source and >= 2 target samples, got {n_s} and "
            f"{n_t}"
        )
    z = np.concatenate([latents_s.double().numpy(), latents_t.double().numpy()])  # (N_s+N_t, D)
    d = np.r_[np.zeros(n_s, int), np.ones(n_t, int)]
    p_t = np.zeros(len(z))
    folds = StratifiedKFold(k, shuffle=True, random_state=random_state)
    with single_blas_thread():
        for train, test in folds.split(z, d):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            clf.fit(z[train], d[train])
            p_t[test] = clf.predict_proba(z[test])[:, 1]
    p_t = np.clip(p_t, CLIP, 1 - CLIP)
    return DomainFit(p_t[:n_s], p_t[n_s:])


def domain_weights(
    latents_s: Tensor, latents_t: Tensor, *, n_splits: int = 5, random_state: int = 0
) -> np.ndarray:
    r"""Density-ratio weights :math:`w(z) = p_t(z)/p_s(z)` for the source samples.

    :attr:`DomainFit.weights_s` of :func:`domain_classifier`: a logistic-regression domain
    classifier (target = 1) on standardised latents gives
    :math:`w_i = \frac{n_s}{n_t}\frac{P(t|z_i)}{P(s|z_i)}`, each source sample's probability
    from a classifier fitted on the other folds, clipped to [1e-3, 1 - 1e-3].

    Args:
        latents_s: (N_s, D) source-validation latents.
        latents_t: (N_t, D) target latents (no labels).
        n_splits: folds, lowered to the size of the smaller domain; at least 2 per domain.

    Returns:
        (N_s,) float64 weights.
    """
    return domain_classifier(latents_s, latents_t, n_splits=n_splits,
                             random_state=random_state).weights_s


def importance_weighted_risk(losses: np.ndarray, weights: np.ndarray) -> RiskEstimate:
    r"""Importance-weighted validation risk, plain and with DEV's control variate.

    .. math::
        \hat R_{\mathrm{IWV}} = \overline{w\ell}, \qquad
        \hat R_{\mathrm{DEV}} = \overline{w\ell} + \eta\,\overline{w} - \eta, \quad
        \eta = -\frac{\mathrm{Cov}(w\ell, w)}{\mathrm{Var}(w)}

    (:math:`E[w] = 1` under the source, so the control variate adds no bias; :math:`\eta = 0`
    when the weights are constant).

    Args:
        losses: (N,) per-sample losses of labelled source-validation samples.
        weights: (N,) density ratios from :func:`domain_weights`.

    >>> importance_weighted_risk(np.array([1.0, 3.0]), np.ones(2))
    RiskEstimate(iwv=2.0, dev=2.0)
    """
    losses, weights = np.asarray(losses, float), np.asarray(weights, float)
    wl = weights * losses
    var = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = 0.0 if var <= 1e-12 else -np.cov(wl, weights, ddof=1)[0, 1] / var
    return RiskEstimate(float(wl.mean()), float(wl.mean() + eta * weights.mean() - eta))
