"""Covers drawn on faces (covers.py): masks, sunglasses, hands, scarves and the rest, placed from a face's landmarks,
for evaluation on covered queries and for training. Nothing here detects a face; it draws on one detection found."""
