"""The package's version: one literal, read by packaging (pyproject.toml) and at run time.

importlib.metadata would find it too, by reading the installed metadata (about 1.5 ms per lookup).
"""

VERSION = "0.1.0"
