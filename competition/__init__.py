"""The competition: its rules (the ground truth, what a valid submission is, how one is scored),
building one from labelled photos, scoring a model on one, and the server that scores submissions.
The rules and the server are light on purpose (no torch), so the server starts fast.

    from competition import load_ground_truth, validate_payload, score_submission
"""
from competition.rules import (SCORES, GroundTruthError, Payload, PayloadError, load_ground_truth, score_submission,
                               validate_payload)

__all__ = ["SCORES", "GroundTruthError", "Payload", "PayloadError", "load_ground_truth", "score_submission",
           "validate_payload"]
