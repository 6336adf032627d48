"""Scoring retrieval: the metrics (evaluation/metrics.py, names defined once and used by training,
evaluation and the server), the protocol that ranks and scores (evaluation/protocol.py), the figures
(evaluation/plots.py). `python evaluate.py` is its command."""
