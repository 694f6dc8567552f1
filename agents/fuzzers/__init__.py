"""Targets of the fuzz campaign (``python -m agents.fuzz``): one module per parser that faces
the air or the backbone, each feeding structure-aware inputs and their mutants to a ``Tally``.
"""
