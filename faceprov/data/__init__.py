"""Data sets read from outside the project (LFW in ../shared/data) and caches derived from them."""
