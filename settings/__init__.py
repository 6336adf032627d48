"""The configuration, read at the top: config/default.yaml, --config files and key=value overrides merged and
checked once against config/schema.yaml with the code's registries (config.py, registries.py: named here, so no floor
below imports one above it), models made from a config or a checkpoint ready for inference (models.py), and the
commands' one way in (command.py). Below this floor nothing reads a config dictionary: each command turns the
sections it needs into the typed settings that the library takes as arguments (CropSettings(**cfg["crop"]),
RetrievalSettings(**cfg["retrieval"]), …).

    cfg = load_config(["config/best.yaml"], ["train.epochs=2"])        # checked
    model, cfg, device = load_for_inference("checkpoints/best/best.pt", [], ["retrieval.k=5"])
"""
from utils import lazy_exports

# The package's names and the module each lives in, looked up when first used (utils.lazy_exports).
_HOME = {
    "settings.command": ["COMMAND_ERRORS", "command_failed", "command_parser", "parse_command", "run_command"],
    "settings.config": ["check_config", "check_monitor", "embed_settings", "load_config", "parse_override",
                        "read_layers"],
    "settings.models": ["RUNTIME_KEYS", "build_model", "crop_settings_of", "load_for_inference"],
    "settings.registries": ["REGISTRIES"],
}
__getattr__, __all__ = lazy_exports(__name__, _HOME)
