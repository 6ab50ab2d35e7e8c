"""Where attempts run: on this machine (local.py) or on a Ray cluster (ray/), behind one interface (base.py)."""
