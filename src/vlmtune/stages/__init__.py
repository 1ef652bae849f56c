"""Pipeline stages: thin orchestration over the library, one module per CLI subcommand.

Every stage scores with the same label parsers, so the built-in ones are registered here, once.
"""

from vlmtune.data.synth.chess_text import parse_label, parse_pieces
from vlmtune.evaluation.metrics import register_label_parser

register_label_parser("chess", parse_pieces, parse_label)
