"""The model factory: the relation world's text-to-image model built (``model``), pretrained or
continued (``pretrain``, settings in ``config``), measured and shipped under ``data/world``
(``release``).

It stands on the world (``invrev.world``: scene, render, scorer, benchmark) and on the package's
measurement layer (``invrev.measure``); nothing below imports it.
"""
