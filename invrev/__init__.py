"""invrev: Inv-ReVersion relation inversion on Stable Diffusion-shaped models.

Modules, one concern each: ``config`` (the recipe), ``data`` (exemplar folders), ``text``
(captions), ``words`` (word lists), ``losses``, ``filters``, ``sampling``, ``embeddings``,
``models`` (loading), ``trainer``, ``generate``, ``evaluate``, ``runs``, ``testing``, ``world``
(the embedded relation world) and ``cli``.
"""

__version__ = "0.1.0"
