"""proto <-> domain conversion; the only place (with the servicers) that knows the wire types."""
from __future__ import annotations

from typing import Optional

from google.protobuf import any_pb2, duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import status_pb2

from dsjobs_pb.yandex.cloud.datasphere.v2 import project_pb2 as ppb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from dsjobs_pb.yandex.cloud.operation import operation_pb2 as opb
from engine.api.errors import job_error_code
from engine.jobs import ExecuteView, UploadUrl
from engine.projects import Project
from engine.model import (NONE, ZIP, Argument, DockerImageSpec, Environment, ExtendedWorkingStorage, File, FileDesc,
                          FileError, GracefulShutdown, Job, JobParameters, Operation, OutputDataset,
                          OutputDatasetDesc, PipOptions, Progress, PythonEnv)
from runners.journal import Record, Stream

_COMPRESSION = {jpb.NONE: NONE, jpb.ZIP: ZIP, jpb.FILE_COMPRESSION_TYPE_UNSPECIFIED: NONE}


MAX_TS = 253402300799  # 9999-12-31T23:59:59Z, the last second a Timestamp can hold


def ts(t: Optional[float]) -> Optional[timestamp_pb2.Timestamp]:
    """A stored time as a Timestamp; one out of range (written by an older engine) is clamped, never an error."""
    if t is None:
        return None
    out = timestamp_pb2.Timestamp()
    if t != t or t <= 0:  # NaN, or before 1970
        return out
    if t >= MAX_TS:
        out.seconds = MAX_TS
        return out
    out.FromNanoseconds(int(t * 1e9))
    return out


def duration_s(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


# --- to domain ---------------------------------------------------------------------------------------------------


def file_desc(p: jpb.FileDesc) -> FileDesc:
    return FileDesc(path=p.path, var=p.var)


def file(p: jpb.File) -> File:
    return File(desc=file_desc(p.desc), sha256=p.sha256, size_bytes=p.size_bytes,
                compression_type=_COMPRESSION.get(p.compression_type, str(p.compression_type)))


def params(p: jpb.JobParameters) -> JobParameters:
    env = Environment(vars=dict(p.env.vars))
    which = p.env.WhichOneof("docker_image")
    if which == "docker_image_resource_id":
        env.docker_image_resource_id = p.env.docker_image_resource_id
    elif which == "docker_image_spec":
        s = p.env.docker_image_spec
        env.docker_image_spec = DockerImageSpec(image_url=s.image_url, username=s.username,
                                                password_plain_text=s.password_plain_text,
                                                password_ds_secret_name=s.password_ds_secret_name)
    if p.env.HasField("python_env"):
        pe = p.env.python_env
        env.python_env = PythonEnv(
            conda_yaml=pe.conda_yaml, local_modules=[file(f) for f in pe.local_modules],
            python_version=pe.python_version, requirements=list(pe.requirements),
            pip_options=PipOptions(index_url=pe.pip_options.index_url,
                                   extra_index_urls=list(pe.pip_options.extra_index_urls),
                                   trusted_hosts=list(pe.pip_options.trusted_hosts),
                                   no_deps=pe.pip_options.no_deps) if pe.HasField("pip_options") else None)
    g = None
    if p.HasField("graceful_shutdown_parameters"):
        gp = p.graceful_shutdown_parameters
        g = GracefulShutdown(timeout_s=duration_s(gp.timeout) if gp.HasField("timeout") else None,
                             signal=gp.signal or 15)
    return JobParameters(
        input_files=[file(f) for f in p.input_files],
        output_files=[file_desc(d) for d in p.output_files],
        s3_mount_ids=list(p.s3_mount_ids), dataset_ids=list(p.dataset_ids), cmd=p.cmd, env=env,
        attach_project_disk=p.attach_project_disk,
        cloud_instance_types=[t.name for t in p.cloud_instance_types],
        extended_working_storage=ExtendedWorkingStorage(size_gb=p.extended_working_storage.size_gb)
        if p.HasField("extended_working_storage") else None,
        arguments=[Argument(a.name, a.value) for a in p.arguments],
        output_datasets=[OutputDatasetDesc(name=d.name, description=d.description, labels=dict(d.labels),
                                           size_gb=d.size_gb, var=d.var) for d in p.output_datasets],
        graceful_shutdown=g,
        spark_connector_id=p.spark_parameters.connector_id if p.HasField("spark_parameters") else "",
    )


# --- to proto ----------------------------------------------------------------------------------------------------


def file_desc_pb(d: FileDesc) -> jpb.FileDesc:
    return jpb.FileDesc(path=d.path, var=d.var)


def file_pb(f: File) -> jpb.File:
    return jpb.File(desc=file_desc_pb(f.desc), sha256=f.sha256, size_bytes=f.size_bytes,
                    compression_type=jpb.ZIP if f.compression_type == ZIP else jpb.NONE)


def params_pb(p: JobParameters) -> jpb.JobParameters:
    env = jpb.Environment(vars=p.env.vars)
    if p.env.docker_image_resource_id:
        env.docker_image_resource_id = p.env.docker_image_resource_id
    elif p.env.docker_image_spec is not None:
        s = p.env.docker_image_spec
        env.docker_image_spec.CopyFrom(jpb.DockerImageSpec(image_url=s.image_url, username=s.username))
        # A password is never sent back: the plain one is redacted, a secret name is not a secret.
        if s.password_plain_text:
            env.docker_image_spec.password_plain_text = "***"
        elif s.password_ds_secret_name:
            env.docker_image_spec.password_ds_secret_name = s.password_ds_secret_name
    if p.env.python_env is not None:
        pe = p.env.python_env
        env.python_env.CopyFrom(jpb.PythonEnv(conda_yaml=pe.conda_yaml,
                                              local_modules=[file_pb(f) for f in pe.local_modules],
                                              python_version=pe.python_version, requirements=pe.requirements))
        if pe.pip_options is not None:
            po = pe.pip_options
            env.python_env.pip_options.CopyFrom(jpb.PipOptions(
                index_url=po.index_url, extra_index_urls=po.extra_index_urls, trusted_hosts=po.trusted_hosts,
                no_deps=po.no_deps))
    out = jpb.JobParameters(
        input_files=[file_pb(f) for f in p.input_files], output_files=[file_desc_pb(d) for d in p.output_files],
        s3_mount_ids=p.s3_mount_ids, dataset_ids=p.dataset_ids, cmd=p.cmd, env=env,
        attach_project_disk=p.attach_project_disk,
        cloud_instance_types=[jpb.CloudInstanceType(name=n) for n in p.cloud_instance_types],
        arguments=[jpb.Argument(name=a.name, value=a.value) for a in p.arguments],
        output_datasets=[output_dataset_desc_pb(d) for d in p.output_datasets],
    )
    if p.extended_working_storage is not None:
        out.extended_working_storage.CopyFrom(jpb.ExtendedWorkingStorage(
            type=jpb.ExtendedWorkingStorage.SSD, size_gb=p.extended_working_storage.size_gb))
    if p.graceful_shutdown is not None:
        g = jpb.GracefulShutdownParameters(signal=p.graceful_shutdown.signal)
        if p.graceful_shutdown.timeout_s is not None:
            g.timeout.FromNanoseconds(int(p.graceful_shutdown.timeout_s * 1e9))
        out.graceful_shutdown_parameters.CopyFrom(g)
    if p.spark_connector_id:
        out.spark_parameters.connector_id = p.spark_connector_id
    return out


def output_dataset_desc_pb(d: OutputDatasetDesc) -> jpb.OutputDatasetDesc:
    return jpb.OutputDatasetDesc(name=d.name, description=d.description, labels=d.labels, size_gb=d.size_gb,
                                 var=d.var)


def output_dataset_pb(d: OutputDataset) -> jpb.OutputDataset:
    return jpb.OutputDataset(desc=output_dataset_desc_pb(d.desc), id=d.id)


def file_error_pb(e: FileError) -> jpb.FileUploadError:
    out = jpb.FileUploadError(description=e.description, type=jpb.FileUploadError.ErrorType.Value(e.type))
    if e.output_file_desc is not None:
        out.output_file_desc.CopyFrom(file_desc_pb(e.output_file_desc))
    elif e.log_file_name:
        out.log_file_name = e.log_file_name
    return out


def job_pb(j: Job) -> jpb.Job:
    out = jpb.Job(
        id=j.id, name=j.name, desc=j.desc, created_at=ts(j.created_at), finished_at=ts(j.finished_at),
        status=j.status.value, config=j.config, created_by_id=j.created_by_id, project_id=j.project_id,
        job_parameters=params_pb(j.params), data_expires_at=ts(j.data_expires_at), data_cleared=j.data_cleared,
        output_files=[file_pb(f) for f in j.output_files], log_files=[file_pb(f) for f in j.log_files],
        diagnostic_files=[file_pb(f) for f in j.diagnostic_files], data_size_bytes=j.data_size_bytes,
        started_at=ts(j.started_at), status_details=j.status_details, parent_job_id=j.parent_job_id,
        file_errors=[file_error_pb(e) for e in j.file_errors],
        output_datasets=[output_dataset_pb(d) for d in j.output_datasets],
    )
    if j.actual_cloud_instance_type:
        out.actual_cloud_instance_type.name = j.actual_cloud_instance_type
    return out


def job_metadata_pb(j: Job) -> jpb.JobMetadata:
    return jpb.JobMetadata(
        id=j.id, name=j.name, description=j.desc, created_at=ts(j.created_at), started_at=ts(j.started_at),
        finished_at=ts(j.finished_at), data_expires_at=ts(j.data_expires_at), status=j.status.value,
        status_details=j.status_details, created_by_id=j.created_by_id, project_id=j.project_id,
        parent_job_id=j.parent_job_id)


def project_pb(p: Project, community_id: str) -> ppb.Project:
    return ppb.Project(id=p.id, name=p.id, community_id=community_id, created_at=ts(p.created_at))


def progress_pb(p: Progress) -> jpb.JobProgress:
    return jpb.JobProgress(message=p.message, progress=p.progress, create_time=ts(p.create_time))


def storage_files_pb(urls: list[UploadUrl]) -> list[jpb.StorageFile]:
    return [jpb.StorageFile(file=file_pb(u.file), url=u.url) for u in urls]


def _pack(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def operation_pb(op: Operation, *, view: Optional[ExecuteView] = None,
                 uploads: Optional[list[UploadUrl]] = None) -> opb.Operation:
    out = opb.Operation(id=op.id, description=_DESCRIPTIONS.get(op.kind, op.kind), created_at=ts(op.created_at),
                        created_by=op.created_by, modified_at=ts(op.modified_at or op.created_at), done=op.done)
    k = op.kind
    if k in ("create", "clone"):
        meta = (spb.CreateProjectJobMetadata if k == "create" else spb.CloneProjectJobMetadata)(
            project_id=op.project_id, job_id=op.job_id)
        out.metadata.CopyFrom(_pack(meta))
        resp = (spb.CreateProjectJobResponse if k == "create" else spb.CloneProjectJobResponse)(
            job_id=op.job_id, upload_files=storage_files_pb(uploads or []))
        out.response.CopyFrom(_pack(resp))
    elif k == "execute" and view is not None:
        meta = spb.ExecuteProjectJobMetadata(job=job_pb(view.job), metadata=job_metadata_pb(view.job))
        if view.progress is not None:
            meta.progress.CopyFrom(progress_pb(view.progress))
        out.metadata.CopyFrom(_pack(meta))
        if op.done:
            if op.error is not None:
                out.error.CopyFrom(status_pb2.Status(code=job_error_code(op.error).value[0],
                                                     message=op.error.message))
            else:
                j = view.job
                resp = spb.ExecuteProjectJobResponse(
                    output_files=storage_files_pb(view.output_urls),
                    output_files_errors=[file_error_pb(e) for e in j.file_errors],
                    output_datasets=[output_dataset_pb(d) for d in j.output_datasets],
                    result=jpb.JobResult(return_code=j.return_code or 0))
                out.response.CopyFrom(_pack(resp))
    elif k == "delete":
        out.metadata.CopyFrom(_pack(spb.DeleteProjectJobMetadata(job_id=op.job_id)))
        out.response.CopyFrom(_pack(empty_pb2.Empty()))
    elif k == "delete_data":
        out.metadata.CopyFrom(_pack(spb.DeleteProjectJobDataMetadata(job_id=op.job_id)))
        out.response.CopyFrom(_pack(spb.DeleteProjectJobDataResponse()))
    elif k == "delete_all_data":
        out.metadata.CopyFrom(_pack(spb.DeleteAllProjectJobDataMetadata(project_id=op.project_id)))
        out.response.CopyFrom(_pack(spb.DeleteAllProjectJobDataResponse()))
    return out


_DESCRIPTIONS = {"create": "Create job", "clone": "Clone job", "execute": "Execute job", "delete": "Delete job",
                 "delete_data": "Delete job data", "delete_all_data": "Delete all job data"}


def log_message_pb(r: Record) -> spb.LogMessage:
    m = spb.LogMessage(content=r.content, created_at=ts(r.created_at))
    if r.stream == Stream.STDOUT:
        m.standard_stream = spb.OUT
    elif r.stream == Stream.STDERR:
        m.standard_stream = spb.ERR
    else:
        m.file_path = Stream.FILE_PATHS.get(r.stream, ".system.log")
    return m


def std_log_pb(r: Record) -> Optional[spb.StdLog]:
    if r.stream == Stream.STDOUT:
        return spb.StdLog(content=r.content, type=spb.StdLog.OUT)
    if r.stream == Stream.STDERR:
        return spb.StdLog(content=r.content, type=spb.StdLog.ERR)
    return None
