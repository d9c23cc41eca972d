"""The latent space in two dimensions: one Isomap of source and target latents (the paper's
Figure 4, drawn by :func:`sidda.plots.isomap_figure`)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from sidda.evaluate.threads import single_blas_thread

__all__ = ["IsomapEmbedding", "isomap_embedding"]

logger = logging.getLogger(__name__)


class IsomapEmbedding(NamedTuple):
    """A 2-d Isomap of source and target latents (as in the paper's figures), split by domain."""

    points_s: np.ndarray  #: (n_s, 2) embedded source points
    points_t: np.ndarray  #: (n_t, 2) embedded target points
    preds_s: np.ndarray  #: (n_s,) predicted classes of those source points
    preds_t: np.ndarray  #: (n_t,) predicted classes of those target points
    index_s: np.ndarray  #: (n_s,) rows of the input source latents that were used
    index_t: np.ndarray  #: (n_t,) rows of the input target latents that were used
    n_neighbors: int  #: neighbours of the graph actually used


def isomap_embedding(
    latents_s: np.ndarray,
    latents_t: np.ndarray,
    preds_s: np.ndarray,
    preds_t: np.ndarray,
    *,
    n_points: int = 600,
    n_neighbors: int = 5,
    random_state: int = 0,
) -> IsomapEmbedding:
    """Fit one Isomap on the union of source and target latents and split it by domain.

    As the authors' ``plotting_isomaps_*.ipynb``: ``sklearn.manifold.Isomap(n_components=2,
    n_neighbors=5)`` on the concatenated latents. Unlike them, the ``n_points`` random points
    per domain are drawn *before* the fit, not after, so that the cost stays small on large
    test sets; the map is then of the points shown. A dense eigensolver makes it
    deterministic.

    Args:
        latents_s: (N_s, D) source test latents.
        latents_t: (N_t, D) target test latents.
        preds_s: (N_s,) predicted classes, for colouring.
        preds_t: (N_t,) predicted classes.
        n_points: points per domain (all when fewer).
        n_neighbors: neighbours of the Isomap graph; raised (doubled until the graph is
            connected) when the k-nearest-neighbour graph falls apart, which sklearn would
            otherwise patch with straight-line edges.
        random_state: seed of the subsample.
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.manifold import Isomap
    from sklearn.neighbors import kneighbors_graph

    rng = np.random.default_rng(random_state)
    idx = [np.sort(rng.permutation(len(z))[:n_points]) for z in (latents_s, latents_t)]
    z = np.concatenate([np.asarray(latents_s)[idx[0]], np.asarray(latents_t)[idx[1]]])
    z = z.astype(np.float64)  # (n_s + n_t, D)
    k = max(1, min(n_neighbors, len(z) - 1))
    with single_blas_thread():
        # A disconnected neighbour graph has no geodesic distances between its parts:
        # widen the neighbourhood until it is connected, and say so.
        while k < len(z) - 1 and connected_components(kneighbors_graph(z, k))[0] > 1:
            k = min(2 * k, len(z) - 1)
        if k != n_neighbors:
            logger.info("isomap: %d neighbours instead of %d, to connect the graph",
                        k, n_neighbors)
        emb = Isomap(n_components=2, n_neighbors=k, eigen_solver="dense").fit_transform(z)
    n_s = len(idx[0])
    return IsomapEmbedding(emb[:n_s], emb[n_s:], np.asarray(preds_s)[idx[0]],
                           np.asarray(preds_t)[idx[1]], idx[0], idx[1], k)
