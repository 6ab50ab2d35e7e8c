"""dsjobs: Yandex DataSphere Jobs, run on your own machine."""

__version__ = "0.1.0"
