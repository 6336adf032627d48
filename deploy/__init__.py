"""Models out of PyTorch: a checkpoint exported to ONNX and checked against PyTorch (export.py), quantised where accuracy
allows (quantize.py). runtime/ runs what is written here; docs/deploy.md says how to deploy one.

    from deploy import export_checkpoint, exported
"""
import importlib

_HOME = {"deploy.export": ["ExportError", "export_checkpoint", "exported"]}  # looked up when first used (PEP 562)
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'deploy' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
