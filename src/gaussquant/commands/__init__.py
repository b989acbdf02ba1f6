"""Command-line modules of the single-module workflow steps (convert, encode, decode, demo).

A command module defines ``add_arguments(parser)`` and ``main(args) -> int`` and imports nothing heavy at
module level: torch and the workflow module are imported inside ``main``, so that ``gaussquant --help``
and ``gaussquant NAME --help`` stay fast. Steps that own a folder keep their command there
(``train/command.py``, ``eval/command.py``, ``bench/command.py``); :mod:`gaussquant.cli` lists them all.
"""
