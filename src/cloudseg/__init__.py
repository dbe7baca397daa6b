"""cloudseg: clouds and cloud shadows in RGB + NIR satellite images, segmented with CMX."""

from importlib.metadata import version

__version__ = version("cloudseg")
__all__ = ["__version__", "build_model"]


def __getattr__(name: str):
    # Lazy, so `import cloudseg` and `cloudseg --help` do not pay for importing torch.
    if name == "build_model":
        from cloudseg.models import build_model

        return build_model
    raise AttributeError(f"module 'cloudseg' has no attribute {name!r}")
