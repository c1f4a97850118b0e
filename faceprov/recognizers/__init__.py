"""Face recognizers behind one protocol (see base.py) and a registry."""
from .base import Recognizer, RecognizerUnavailable, available, get, names

__all__ = ["Recognizer", "RecognizerUnavailable", "available", "get", "names"]
