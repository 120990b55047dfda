"""meer: masked face recognition with mask decoupling and generative de-occlusion (MEER).

``meer.load(checkpoint)`` gives a :class:`~meer.api.FaceModel` that works on ordinary photos
(see :mod:`meer.api`). The names below are imported on first use, so ``import meer`` stays fast.
"""

__version__ = "0.1.0"

_API = (
    "load",
    "FaceModel",
    "Face",
    "VerifyResult",
    "UnmaskResult",
    "Match",
    "Gallery",
    "NoFaceError",
    "ImageError",
    "NotAnImageError",
    "CorruptImageError",
    "ImageTooLargeError",
)

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from meer import api

        return getattr(api, name)
    raise AttributeError(f"module 'meer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
