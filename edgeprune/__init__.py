"""edgeprune: prune, quantize, compile and prove a vision model on an edge target."""

__version__ = "0.1.0"
