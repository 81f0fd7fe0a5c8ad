"""The build of the shipped corpus (``data/``) from Debian packages, one module per stage.

``config`` (packages, languages, limits) -> ``packages`` (download, unpack) ->
``readers`` (HTML blocks, gettext ``.mo``, dictd) and ``text`` (cleaning, filters) ->
``collect`` (aligned pairs and monolingual lines per source, deduplicated) ->
``classify`` (the LibreOffice-help classification task) -> ``split`` (held-out sets) ->
``dicts`` (FreeDict test dictionaries) -> ``reports`` (ATTRIBUTION.md, STATS.md);
``build`` runs them all (``scripts/build_corpus.py``), ``xnli15`` adds ``data/xnli15/``
(``scripts/build_xnli15.py``). Only the standard library is used.
"""
