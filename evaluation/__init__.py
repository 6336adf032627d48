"""Scoring, and nothing of photos or networks: the metrics (metrics.py, names defined once and used by
training, evaluation and the server), same-person calibration (calibration.py) and the figures (plots.py).
The protocol that embeds photos and scores them is pipeline/protocol.py."""
