"""The pipeline: photos to embeddings through the crop and embedding caches (embedding.py,
embedding_cache.py), the gallery store (store.py), the evaluation protocol (protocol.py) and validation
during training (validation.py). It composes the floors below it (detection, dataset, network, search,
evaluation) and is used by the ones above (training, competition, webapp, the commands)."""
