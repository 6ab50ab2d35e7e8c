"""A Spark connector job, for real: `dsjobs spark add` registers a local Spark for the connector id, and a job whose
config names it calls the official SDK's `SDK().connect_to_spark()`, which reads the connection config the engine
wrote and gives a working local Spark session (real pyspark 3.5.9 and the official datasphere 0.10.0 installed in
the job's env from a local index on loopback; this machine's Java). Refusals as the cloud's."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import grpc
import pytest
import requests

from dsjobs.cli import main as dsjobs_main
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.conftest import Server
from tests.helpers import ROOT, blob, logs, python_env, response, run

pytestmark = pytest.mark.e2e

WHEELS = ROOT / ".cache" / "wheels" / "spark"  # `make test` puts them there (the Makefile's SPARK_WHEELS)
CONNECTOR = "bt1sparkconnector000"

WORDCOUNT = b'''import json
import os
import sys

from datasphere import SDK

if __name__ == "__main__":
    wrapper = SDK().connect_to_spark()  # the SDK's SparkWrapper: .spark (the session), .sc (its context)
    spark, sc = wrapper.spark, wrapper.sc
    lines = spark.read.text(sys.argv[1]).rdd.map(lambda r: r.value)
    counts = dict(lines.flatMap(lambda line: line.split()).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
                  .collect())
    with open(sys.argv[2], "w") as f:
        json.dump({"master": sc.master, "app": sc.appName, "counts": counts,
                   "partitions": spark.conf.get("spark.sql.shuffle.partitions"),
                   "grpc_fork_support": os.environ.get("GRPC_ENABLE_FORK_SUPPORT")}, f)
    spark.stop()
'''


@pytest.fixture(scope="module")
def spark_index(tmp_path_factory):
    from tests.pyindex import Index
    wheels = sorted(WHEELS.glob("*.whl"))
    assert any(w.name.startswith("pyspark-3.5.9") for w in wheels), \
        f"no pyspark wheel in {WHEELS}: run `make test` (its SPARK_WHEELS step) once"
    index = Index(tmp_path_factory.mktemp("spark-index"))
    for w in wheels:
        index.add_file(w)
    yield index
    index.close()


def test_a_pyspark_job_counts_words_through_the_connector(tmp_path, spark_index):
    data = tmp_path / "data"
    assert dsjobs_main(["spark", "add", CONNECTOR, "--conf", "spark.sql.shuffle.partitions=3",
                        "--conf", "spark.app.name=wordcount-test", "--data-dir", str(data)]) == 0
    s = Server(data)
    try:
        text = blob(b"the quick brown fox\njumps over the lazy dog\nthe fox\n", "text.txt", "TEXT")
        script = blob(WORDCOUNT, "wc.py")
        p = jpb.JobParameters(
            cmd="python wc.py ${TEXT} ${COUNTS}", output_files=[jpb.FileDesc(path="counts.json", var="COUNTS")],
            spark_parameters=jpb.SparkParameters(connector_id=CONNECTOR),
            env=python_env("", ["pyspark==3.5.9", "datasphere==0.10.0"], index=spark_index.url))  # the engine's Python
        jid, op = run(s.client, p, [text, script], timeout=280)
        msgs = logs(s.client, jid)[0]
        system = b"".join(m.content for m in msgs if m.file_path == ".system.log").decode()
        stderr = b"".join(m.content for m in msgs if m.WhichOneof("source") == "standard_stream"
                          and m.standard_stream == 2).decode()
        assert not op.HasField("error"), op.error.message + system
        assert response(op).result.return_code == 0, stderr[-3000:]
        url = {f.file.desc.path: f.url for f in response(op).output_files}["counts.json"]
        got = json.loads(requests.get(url).content)
        assert got["counts"] == {"the": 3, "quick": 1, "brown": 1, "fox": 2, "jumps": 1, "over": 1, "lazy": 1,
                                 "dog": 1}
        # local[<vCPUs of c1.4>], capped at this machine's cores; the connector's settings over the engine's.
        assert got["master"] == f"local[{min(4, os.cpu_count())}]"
        assert got["app"] == "wordcount-test" and got["partitions"] == "3"
        # gRPC's fork handler could abort pyspark's fork of the JVM (grpc/grpc#43055): off for Spark jobs
        assert got["grpc_fork_support"] == "0"
        assert f"spark connector {CONNECTOR}: a local Spark, local[" in system
        config = json.loads((s.work_dir(jid) / ".spark_connection_config.json").read_text())
        assert config["connection_mode"] == "SPARK_LOCAL" and config["master_node_host"] == "localhost"
    finally:
        s.stop()


def test_what_the_cloud_refuses_and_an_unknown_connector(server, client):
    image = jpb.Environment(docker_image_spec=jpb.DockerImageSpec(image_url="some/image:1"))
    with pytest.raises(grpc.RpcError) as e:
        run(client, jpb.JobParameters(cmd="true", env=image,
                                      spark_parameters=jpb.SparkParameters(connector_id=CONNECTOR)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "job_parameters.env" in e.value.details() and "'some/image:1'" in e.value.details()
    assert CONNECTOR in e.value.details()

    jid, op = run(client, jpb.JobParameters(cmd="echo ran", spark_parameters=jpb.SparkParameters(
        connector_id="c9unknownconnector00")))
    assert op.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], op.error
    assert "spark_parameters.connector_id 'c9unknownconnector00'" in op.error.message
    assert "dsjobs spark add c9unknownconnector00" in op.error.message

    # A fork of a Spark job that changes its image: refused the same way.
    assert dsjobs_main(["spark", "add", CONNECTOR, "--data-dir", str(server.data_dir)]) == 0
    jid, op = run(client, jpb.JobParameters(cmd="echo ran", spark_parameters=jpb.SparkParameters(
        connector_id=CONNECTOR)))
    from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
    with pytest.raises(grpc.RpcError) as e:
        client.jobs.Clone(spb.CloneProjectJobRequest(source_job_id=jid, job_parameters_overrides=jpb.JobParameters(
            env=image)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot have a Docker image" in e.value.details()
    assert dsjobs_main(["spark", "add", "bad id", "--data-dir", str(server.data_dir)]) == 2
