"""bench: cross image-classification architectures with loss functions, honestly."""

__version__ = "0.1.0"
