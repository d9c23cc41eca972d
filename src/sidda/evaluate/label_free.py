r"""The formulas of the label-free validators, tensors in, a float out (float64 inside).

:mod:`sidda.evaluate.validators` wraps each into the validator family (inputs, checks, the
registry) and gives the definitions; these functions take the arrays directly:
:func:`prediction_entropy` (per sample), :func:`information_maximisation`,
:func:`soft_neighbourhood_density`, :func:`batch_nuclear_norm`, :func:`class_ami` and
:func:`knn_agreement`. Shapes: ``N`` samples, ``K`` classes, ``D`` latent features.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch.nn import functional as F

from sidda.evaluate.threads import single_blas_thread

__all__ = ["KNN_K", "SND_TEMPERATURE", "batch_nuclear_norm", "class_ami",
           "entropy_rows", "information_maximisation", "knn_agreement", "prediction_entropy",
           "soft_neighbourhood_density"]

#: Temperature of SND's neighbour softmax, as in Saito et al. (2021).
SND_TEMPERATURE = 0.05
#: Source neighbours of the ``knn`` vote.
KNN_K = 5


def prediction_entropy(logits: Tensor) -> Tensor:
    r"""Per-sample entropy :math:`H_i = -\sum_k p_{ik}\log p_{ik}` (nats) of softmax(logits).

    >>> prediction_entropy(torch.zeros(1, 4))  # uniform over 4 classes: log 4
    tensor([1.3863])
    """
    logp = torch.log_softmax(logits.double(), dim=1)  # (N, K)
    return -(logp.exp() * logp).sum(1).to(logits.dtype)


def entropy_rows(p: Tensor) -> Tensor:
    """(N,) entropies of the rows of p (N, K); 0 log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


def information_maximisation(probs: Tensor) -> float:
    r""":math:`H(\bar p) - \frac1N\sum_i H(p_i)` (nats) of (N, K) probabilities.

    >>> information_maximisation(torch.eye(2))  # confident and diverse: log 2
    0.6931471805599453
    """
    p = torch.as_tensor(probs).double()
    return float(entropy_rows(p.mean(0)) - entropy_rows(p).mean())


def soft_neighbourhood_density(probs: Tensor, *, temperature: float = SND_TEMPERATURE) -> float:
    r"""Soft neighbourhood density (Saito et al., 2021) of (N, K) probabilities, N >= 2.

    Mean entropy of each sample's softmax over its cosine similarities to the others, divided by
    the temperature (self-similarity left out).

    >>> p = torch.eye(3)[[0, 0, 1]]  # the third row is as far from both others: entropy ln 2
    >>> round(soft_neighbourhood_density(p), 4)  # the twins see each other: entropy ~0
    0.231
    """
    p = F.normalize(torch.as_tensor(probs).double(), dim=1)  # (N, K)
    sim = p @ p.T / temperature  # (N, N)
    sim.fill_diagonal_(-math.inf)
    q = torch.softmax(sim, dim=1)  # (N, N), q_ii = 0
    return float(entropy_rows(q).mean())


def batch_nuclear_norm(probs: Tensor) -> float:
    r""":math:`\|P\|_* / \sqrt{N\min(N, K)}` of (N, K) probabilities, in [0, 1].

    >>> batch_nuclear_norm(torch.eye(3))  # one-hot, one per class: the maximum
    1.0
    """
    p = torch.as_tensor(probs).double()
    n, k = p.shape
    return float(torch.linalg.svdvals(p).sum() / math.sqrt(n * min(n, k)))


def class_ami(latents: Tensor, predicted: Tensor, *, num_classes: int,
              random_state: int = 0) -> float:
    """AMI between predicted classes and a K-means clustering of the latents (K clusters).

    K-means starts at the centroid of each predicted class; a class never predicted starts at
    the sample farthest from the starting centroids so far. Fewer than two predicted classes
    score 0 (a collapsed prediction holds no class structure).

    Args:
        latents: (N, D) target latents, N >= num_classes.
        predicted: (N,) predicted classes.
        num_classes: K.
        random_state: Seed of K-means (only used for ties; the start is deterministic).
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import adjusted_mutual_info_score

    z = torch.as_tensor(latents).double()  # (N, D)
    y = torch.as_tensor(predicted).long()
    if len(torch.unique(y)) < 2:
        return 0.0
    centres: list[Tensor | None] = [z[y == c].mean(0) if bool((y == c).any()) else None
                                    for c in range(num_classes)]
    for c in range(num_classes):
        if centres[c] is None:
            known = torch.stack([m for m in centres if m is not None])  # (M, D)
            centres[c] = z[torch.cdist(z, known).min(1).values.argmax()]
    init = torch.stack(centres).numpy()  # (K, D)
    with single_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than K
        km = KMeans(num_classes, init=init, n_init=1, random_state=random_state).fit(z.numpy())
    return float(adjusted_mutual_info_score(y.numpy(), km.labels_))


def knn_agreement(latents_t: Tensor, predicted_t: Tensor, latents_s: Tensor, labels_s: Tensor,
                  *, k: int = KNN_K) -> float:
    """Fraction of target samples whose prediction is the majority label of their ``k``
    nearest source samples (Euclidean); a tied vote goes to the label of the nearer neighbour.

    >>> z_s = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    >>> knn_agreement(torch.tensor([[0.05], [5.05]]), torch.tensor([0, 0]), z_s,
    ...               torch.tensor([0, 0, 1, 1]), k=2)
    0.5
    """
    z_t, z_s = torch.as_tensor(latents_t).double(), torch.as_tensor(latents_s).double()
    y_s = torch.as_tensor(labels_s).long()
    k = min(k, len(z_s))
    near = torch.cdist(z_t, z_s).topk(k, dim=1, largest=False).indices  # (N_t, k), nearest first
    # one vote each, plus 2^-(r+1) for the r-th nearest: below 1 in all, so it only breaks ties,
    # and in favour of the label that holds the nearest of the tied neighbours
    bonus = 0.5 ** torch.arange(1, k + 1, dtype=torch.float64)  # (k,)
    votes = torch.zeros(len(z_t), int(y_s.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, y_s[near], (1.0 + bonus).expand(len(z_t), k).contiguous())
    return float((votes.argmax(1) == torch.as_tensor(predicted_t).long()).double().mean())
