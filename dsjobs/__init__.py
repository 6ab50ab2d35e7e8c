"""dsjobs: Yandex DataSphere Jobs, run on your own machine."""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import dsjobs` (and the pytest plugin's discovery) stays cheap.
    if name in ("run_job", "JobResult", "EmbeddedEngine", "ConfigError"):
        from dsjobs import api
        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["run_job", "JobResult", "EmbeddedEngine", "ConfigError"]
