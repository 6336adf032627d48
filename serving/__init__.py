"""What every facematch server needs, whatever it serves: bounds on connections that uvicorn lacks (a deadline for
the request head and one for the whole request, a cap that keeps room for requests that arrive whole), the bearer
token rule, and the addresses (loopback, the network a per-address limit counts as one client, the refusal to serve
beyond loopback without a secret). Light on purpose: no torch, nothing of the competition or the page.

    from serving import Bounds, SettingNames, bounded_config, bearer_token, same_secret, check_beyond_loopback
"""
from serving.addresses import check_beyond_loopback, client_net, is_loopback
from serving.auth import bearer_token, same_secret
from serving.bounds import Bounds, SettingNames, bounded_config, bounded_protocol

__all__ = ["Bounds", "SettingNames", "bearer_token", "bounded_config", "bounded_protocol", "check_beyond_loopback",
           "client_net", "is_loopback", "same_secret"]
