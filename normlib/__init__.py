"""normlib: the small library behind the executable book on normalization layers.

Modules, one concern each:

- ``layers``: every normalizer, organised by mechanism, with one registry and the ``make_norm`` factory;
- ``models``: the papers' CNNs, ResNets and VGG, with any normalizer;
- ``probes``: per-layer statistics at initialization and per-channel records during training;
- ``theory``: closed-form predictions, one submodule per principle;
- ``numerics``: reduced-precision arithmetic (float16 accumulation, a reduced-precision model wrapper);
- ``optim``: the optimizers the experiments need beyond torch's;
- ``train``: the training loop, its configuration and result;
- ``data``: the datasets behind one loader;
- ``params`` and ``presets``: parameters, validation and the ``book`` / ``paper`` scales;
- ``experiments``: what each notebook measures, each chapter an ``Experiment`` (resolve, measure, predict, check);
- ``claims``: checked claims; ``cache``, ``serialize`` and ``sweep``: cached, resumable, executor-agnostic runs;
- ``plotting``: one theme and one colour per normalizer.
"""

__version__ = "0.1.0"
