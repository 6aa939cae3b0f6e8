"""Trace/export, pnnx, bundle writing and verification, parity against torch."""
