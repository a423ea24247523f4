"""Tide model.

The tide model uses a harmonic series with thirty-seven constituents.

This note is part of the internal knowledge base of the Harbourline cooperative. It was reviewed by the documentation team and applies to all members.

Questions about tide model go to the members' office.
"""

CONSTITUENTS = 37
