"""Executors: how a job's command runs on a machine, behind one interface (base.py). process.py hands each job to
its own supervisor process (supervisor.py, stdlib only, outlives the engine); docker.py runs it in a container on
the local Docker Engine; fake.py plays a script, for the fast tests."""
