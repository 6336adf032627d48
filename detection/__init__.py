"""Faces from photos: reading images, face detectors chosen by name, five-point alignment, the
detection chain and the content-keyed crop cache, with a report of what happened to every photo.

    from detection import FaceFinder, read_image, crop_paths
    finder = FaceFinder()                       # its detectors and memory are the caller's
    crop = finder.crop_face(read_image(path), CropSettings())

A detector is one function `(image, settings: CropSettings, models) -> Detections` plus one line in DETECTORS
(detection/detectors.py); `facematch faces FOLDER` crops a folder and reports.
"""
from utils import lazy_exports

# The package's names and the module each lives in, looked up when first used (utils.lazy_exports).
_HOME = {
    "detection.align": ["ALIGNMENTS", "ARCFACE_TEMPLATE", "similarity_align", "similarity_matrix", "square_crop"],
    "detection.cache": ["CROP_KEYS", "crop_key", "crop_one", "crop_paths", "key_settings", "load_crop"],
    "detection.chain": ["CENTER", "GUESS", "LANDMARKS", "Crop", "Found", "chain_steps", "describe_chain"],
    "detection.crop_settings": ["CropSettings", "MTCNN_STAGES"],
    "detection.detectors": ["DETECTORS", "Detections", "Models", "detect"],
    "detection.finder": ["FaceFinder", "crop_face"],
    "detection.landmark_net": ["LandmarkNet", "LandmarkNetError"],
    "detection.images": ["IMAGE_EXTENSIONS", "ImageReadError", "list_images", "read_image"],
    "detection.occluders": ["dark_patches", "fill_dark_patches"],
    "detection.report": ["CropReport"],
}
__getattr__, __all__ = lazy_exports(__name__, _HOME)
