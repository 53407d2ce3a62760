"""Built-in examples: small, reproducible models a user can prune on a fresh machine.

``FASHION_MNIST`` records how the shipped Fashion-MNIST checkpoint expects its input, so the
product can preprocess data and rebuild the model without guessing.
"""

from __future__ import annotations

from typing import Any

FASHION_MNIST: dict[str, Any] = {
    # statistics of the 60k training images scaled to [0, 1]
    "mean": 0.2860,
    "std": 0.3530,
    "input_size": (28, 28),
    "channels": 1,
    "arch": "edgeprune.zoo:fashion_cnn",
    "classes": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}
