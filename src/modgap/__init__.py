"""modgap: measure, reduce and train away the modality gap of image-text embedding models."""

__version__ = "0.1.0"
