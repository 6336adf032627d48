"""Vector search, and nothing of photos or networks: the one exact search in faiss's order (exact.py),
FAISS and exact indexes (index.py), re-rankers (rerank.py), relevance feedback (feedback.py), and the
retrieval that composes them (retrieval.py). Vectors in, (distances, ids) out."""
