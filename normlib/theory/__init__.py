"""Predictions that the notebooks overlay on their measurements, one submodule per principle.

Every function says where its formula comes from. **Derived** means derived in this book from standard probability
(the main paper's exact formal statements were not available); **paper** means the paper's own statement. No
derived formula here is presented as the paper's. The steps of each derivation are written out in the book, on its
Derivations page (``book/derivations.md``), one section per chapter.

- :mod:`normlib.theory.forward`: principle A, the residual stream at initialization (closed forms and a mean-field
  model of the whole ResNet).
- :mod:`normlib.theory.backward`: principle C, gradient growth through normalizers at initialization (Yang et al.'s
  BatchNorm factor, and derived group-size and map-size laws).
- :mod:`normlib.theory.informative`: principle B, how similar two samples' activations become with depth (a
  mean-field model of correlations through conv, normalizer and ReLU layers).
- :mod:`normlib.theory.scale_invariance`: Hoffer et al. (2018), scale invariance under BatchNorm, the effective
  learning rate, the weight-norm dynamics with and without weight decay, and the learning-rate correction.
- :mod:`normlib.theory.random_matrix`: singular values of products of Gaussian matrices (Fuss–Catalan law,
  Lyapunov exponents), behind Bjorck et al.'s random-matrix argument.
- :mod:`normlib.theory.sgd_noise`: the noise of a stochastic gradient step against step size and batch size
  (Bjorck et al.'s bound and the exact finite-pool law).
- :mod:`normlib.theory.lp`: Hoffer et al. (2018), the constants of the L1, L-infinity and Top-k batch norms
  (paper) against the exact expectations for a finite batch, and where a float16 accumulator overflows (derived).
"""

from normlib.theory.forward import *  # noqa: F403
from normlib.theory.forward import __all__ as _forward_all
from normlib.theory.informative import *  # noqa: F403
from normlib.theory.informative import __all__ as _informative_all

__all__ = [*_forward_all, *_informative_all]
from normlib.theory.backward import *  # noqa: E402, F403
from normlib.theory.backward import __all__ as _backward_all  # noqa: E402

__all__ += list(_backward_all)
from normlib.theory.random_matrix import *  # noqa: E402, F403
from normlib.theory.random_matrix import __all__ as _random_matrix_all  # noqa: E402
from normlib.theory.sgd_noise import *  # noqa: E402, F403
from normlib.theory.sgd_noise import __all__ as _sgd_noise_all  # noqa: E402

__all__ += [*_random_matrix_all, *_sgd_noise_all]
from normlib.theory.scale_invariance import *  # noqa: E402, F403
from normlib.theory.scale_invariance import __all__ as _scale_invariance_all  # noqa: E402

__all__ += list(_scale_invariance_all)
from normlib.theory.lp import *  # noqa: E402, F403
from normlib.theory.lp import __all__ as _lp_all  # noqa: E402

__all__ += list(_lp_all)
