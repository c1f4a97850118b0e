"""Provenance: PDQ perceptual hashes, C2PA manifests, the audit hash chain."""
