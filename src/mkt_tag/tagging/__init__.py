"""Tagging: a model on a device scoring image files against any labels, and the run around it.

- ``tagger``: ``Tagger``, the Python API (``from mkt_tag import Tagger``);
- ``batches``: how files reach the model (decoding, batch plan, parallel batches);
- ``label_embeddings``: a vocabulary turned into candidate embeddings (phrasings, aliases);
- ``selection``: which labels become tags (top-K, thresholds);
- ``job``: a ``mkt-tag tag`` run over files (skip, resume, results file, sidecars);
- ``ray_engine``: ``RayEngine``, the run's images tagged by Ray Data (``tag --engine ray``);
- ``caches``: the label-embedding and image-feature caches, and what ``mkt-tag cache`` does.
"""
