"""mmaffect: multi-modal multi-task facial Action Unit and expression recognition.

The library is importable without side effects; the click commands live in ``stages/``.
"""

__version__ = "0.1.0"
