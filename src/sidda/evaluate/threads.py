"""One thread for the small scikit-learn and SciPy fits of an evaluation.

Many tiny BLAS/OpenMP calls (L-BFGS on a few hundred latents, an Isomap of a few hundred
points) are several times slower with a thread pool than without one, especially next to
torch's own OpenMP threads. (:mod:`sidda.losses` limits *torch's* threads for the same reason;
this limits the BLAS and OpenMP pools that NumPy, SciPy and scikit-learn use.)
"""

from __future__ import annotations

from contextlib import AbstractContextManager

__all__ = ["single_blas_thread"]


def single_blas_thread() -> AbstractContextManager:
    """A context in which the BLAS and OpenMP thread pools (threadpoolctl) use one thread.

    >>> with single_blas_thread():
    ...     pass
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)
