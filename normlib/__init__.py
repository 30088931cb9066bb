"""normlib: the small library behind the executable book on normalization layers.

Modules, one concern each: ``layers`` (every normalizer and the ``make_norm`` factory), ``models`` (the papers'
CNNs and ResNets), ``probes`` (per-layer statistics), ``theory`` (closed-form predictions), ``params`` (presets and
validation), ``experiments`` (what each notebook measures), ``claims`` (checked claims), ``plotting`` (one theme).
"""

__version__ = "0.1.0"
