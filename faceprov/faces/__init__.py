"""Faces: decode photos, detect faces (MTCNN), align to 5-point templates, paste edits back."""
from .align import Aligned, align, align_faces, paste_back, similarity_transform
from .detect import Detector, Face, default_detector
from .io import ImageError, Photo, decode, encode, read

__all__ = ["Aligned", "Detector", "Face", "ImageError", "Photo", "align", "align_faces", "decode",
           "default_detector", "encode", "paste_back", "read", "similarity_transform"]
