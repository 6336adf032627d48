"""The embedding network in PyTorch, by concept: the network (embedding_net.py, with its pooling.py and heads.py),
its checkpoints and their upgrades (checkpoints.py), and the embed loop (embed_loop.py). Callers import these names
from network.py."""
