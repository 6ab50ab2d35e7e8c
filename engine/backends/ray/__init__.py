"""The Ray backend: placement by the engine, one Ray job per attempt running the dsjobs agent (runners/agent.py,
the node runner behind an HTTP NodeIO), and the runner channel that agent talks to."""
from engine.backends.ray.backend import RayBackend  # noqa: F401
