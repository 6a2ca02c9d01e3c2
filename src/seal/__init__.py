"""seal: self-adapting language models."""

__version__ = "0.1.0"
