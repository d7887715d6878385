"""genarena: compare image-generation paradigms head to head and measure how they scale."""

__version__ = "0.1.0"
