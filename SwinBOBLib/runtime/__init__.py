"""What a running job needs around the computing: the bundled resource files, JSON-lines progress
for other programs, clean stops on SIGINT/SIGTERM or a stop file, and one run per output folder
(:mod:`.locks`).

Lowest layer with :mod:`SwinBOBLib.labels`: imports nothing else of SwinBOBLib.
"""
