"""Faces from photos: reading images, face detectors chosen by name, five-point alignment, the
detection chain and the content-keyed crop cache, with a report of what happened to every photo.

    from detection import read_image, detect, crop_face, crop_paths, load_crop

A detector is one function `(image, crop_cfg) -> Detections` plus one line in DETECTORS
(detection/detectors.py); `python faces.py FOLDER` crops a folder and reports.
"""
from detection.align import ALIGNMENTS, ARCFACE_TEMPLATE, similarity_align, similarity_matrix, square_crop
from detection.cache import CROP_KEYS, crop_key, crop_one, crop_paths, crop_settings, load_crop
from detection.chain import CENTER, GUESS, Crop, chain, crop_face
from detection.detectors import DETECTORS, MTCNN_STAGES, Detections, detect
from detection.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from detection.report import CropReport

__all__ = ["ALIGNMENTS", "ARCFACE_TEMPLATE", "CENTER", "CROP_KEYS", "DETECTORS", "GUESS", "IMAGE_EXTENSIONS",
           "MTCNN_STAGES", "Crop", "CropReport", "Detections", "ImageReadError", "chain", "crop_face", "crop_key",
           "crop_one", "crop_paths", "crop_settings", "detect", "list_images", "load_crop", "read_image",
           "similarity_align", "similarity_matrix", "square_crop"]
