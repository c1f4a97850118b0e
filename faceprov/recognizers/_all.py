"""Imports every recognizer implementation so that it registers itself."""
from . import dlib_resnet, dlib_native  # noqa: F401
from . import onnx_arcface  # noqa: F401
from . import human  # noqa: F401
from . import facenet, sface  # noqa: F401
from . import student  # noqa: F401
from . import regions  # noqa: F401  (region views of sface; after sface)
