"""What train.py's loop is made of: the people and their crops (data.py), the losses (losses.py) and
distillation targets (distill.py), optimiser and schedule (optim.py), the frozen-backbone path (frozen.py),
several processes under torchrun (distributed.py), a trained network's same-person thresholds (thresholds.py)
and several trained networks fused into one checkpoint (fusion.py)."""
