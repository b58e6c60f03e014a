"""optforge: recent optimization papers as drop-in PyTorch components, each with a reproduction.

Subpackages hold the methods (``optim``, ``nn``, ``losses``, ``data``, ``online``, ``rl``,
``unlearning``, ``dfo``, ``matrix``, ``diffusion``, ``problems``); ``repro`` holds the
reproduction harness and ``testing`` the conformance suite shared by every optimizer.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
