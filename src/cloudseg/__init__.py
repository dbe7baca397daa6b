"""cloudseg: clouds and cloud shadows in RGB + NIR satellite images, segmented with CMX."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cloudseg")
except PackageNotFoundError:  # run from a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"
__all__ = ["Predictor", "__version__", "build_model", "load_model"]

_LAZY = {
    "build_model": "cloudseg.models.registry",
    "load_model": "cloudseg.models.checkpoint",
    "Predictor": "cloudseg.inference.predictor",
}


def __getattr__(name: str):
    # Lazy, so `import cloudseg` and `cloudseg --help` do not pay for importing torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cloudseg' has no attribute {name!r}")
