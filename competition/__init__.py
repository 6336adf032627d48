"""The competition: its rules (the ground truth, what a valid submission is, how one is scored,
how test people's photos become queries and gallery), building one from labelled photos, and the
server that scores submissions. Light on purpose (no torch), so the server starts fast.

    from competition import load_ground_truth, validate_payload, score_submission
"""
from competition.rules import (SCORES, GroundTruthError, Payload, PayloadError, load_ground_truth, pick_queries,
                               score_submission, validate_payload)

__all__ = ["SCORES", "GroundTruthError", "Payload", "PayloadError", "load_ground_truth", "pick_queries",
           "score_submission", "validate_payload"]
