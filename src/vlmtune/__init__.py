"""vlmtune: fine-tune a vision-language model on your own captioned photos."""

__version__ = "0.1.0"
