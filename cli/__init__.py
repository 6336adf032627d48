"""The command line: each command a module here (the design's train.py and request_send.py stay at the top)."""
