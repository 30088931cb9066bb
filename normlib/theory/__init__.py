"""Predictions that the notebooks overlay on their measurements, one submodule per principle.

Every function says where its formula comes from. **Derived** means derived in this book from standard probability
(the main paper's exact formal statements were not available); **paper** means the paper's own statement. No
derived formula here is presented as the paper's.

- :mod:`normlib.theory.forward`: principle A, the residual stream at initialization (closed forms and a mean-field
  model of the whole ResNet).
- :mod:`normlib.theory.backward`: principle C, gradient growth through normalizers at initialization (Yang et al.'s
  BatchNorm factor, and derived group-size and map-size laws).
- :mod:`normlib.theory.informative`: principle B, how similar two samples' activations become with depth (a
  mean-field model of correlations through conv, normalizer and ReLU layers).
"""

from normlib.theory.forward import *  # noqa: F403
from normlib.theory.forward import __all__ as _forward_all
from normlib.theory.informative import *  # noqa: F403
from normlib.theory.informative import __all__ as _informative_all

__all__ = [*_forward_all, *_informative_all]
from normlib.theory.backward import *  # noqa: E402, F403
from normlib.theory.backward import __all__ as _backward_all  # noqa: E402

__all__ += list(_backward_all)
