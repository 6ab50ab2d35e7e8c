"""The job against a real database beside its test: pytest-docker runs the PostgreSQL container of
../docker-compose.yml (conftest.py), the `dsjobs` fixture runs the job, a process job on this machine, which reaches
the server where Docker published its port (127.0.0.1:PORT); the last test runs it in a container instead."""
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).parent.parent
CONFIG = EXAMPLE / "config.yaml"

# pytest-xdist (--dist loadgroup): these tests on one worker, which starts one database for them. The first run on a
# machine builds the database's image (conftest.py), hence the longer timeout.
pytestmark = [pytest.mark.xdist_group("pgreport"), pytest.mark.timeout(900)]


def test_the_report_of_the_orders_table(dsjobs, database):
    result = dsjobs.run(CONFIG, args=database.args, env={"PGPASSWORD": database.password})
    assert result.return_code == 0, result.stderr
    assert result.outputs["report.csv"].read_text() == ("customer,orders,total\n"
                                                        "grace,1,99.90\n"
                                                        "ada,3,60.50\n"
                                                        "linus,1,5.25\n")


def test_another_query(dsjobs, database, tmp_path):
    query = tmp_path / "november.sql"
    query.write_text("SELECT count(*) AS orders FROM orders WHERE placed >= '2026-11-05';\n")
    result = dsjobs.run(CONFIG, args=database.args, vars={"QUERY": str(query)}, env={"PGPASSWORD": database.password})
    assert result.return_code == 0, result.stderr
    assert result.outputs["report.csv"].read_text() == "orders\n3\n"


def test_a_wrong_password_fails_the_job_with_the_servers_word(dsjobs, database):
    result = dsjobs.run(CONFIG, args=database.args, env={"PGPASSWORD": "not-the-password"})
    assert result.return_code == 2  # psql: the connection to the server failed
    assert 'password authentication failed for user "reporter"' in result.stderr


@pytest.mark.dsjobs_runner("docker")
def test_in_a_container_the_job_finds_the_service_by_name(dsjobs, database, db_image, tmp_path):
    # The same job with `env.docker`; its image needs psql, and the database's image has it.
    config = yaml.safe_load(CONFIG.read_text())
    config["env"] = {"docker": {"image": db_image}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = dsjobs.run(tmp_path / "config.yaml", cwd=EXAMPLE, args=database.in_network,
                        env={"PGPASSWORD": database.password})
    assert result.return_code == 0, result.stderr + result.system_log
    assert "network: pgreport-" in result.system_log  # the compose project's network, not dsjobs's own
    assert result.outputs["report.csv"].read_text().splitlines()[1] == "grace,1,99.90"
