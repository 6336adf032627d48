"""Search over embeddings: re-ranking of shortlists (rerank.py); later the index and the store."""
