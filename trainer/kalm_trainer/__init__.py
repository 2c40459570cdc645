"""KaLM-Embedding trainer: data pipeline, losses, training stages, model soup."""

__version__ = "0.1.0"
