import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as _jobs_pb2
from dsjobs_pb.yandex.cloud.operation import operation_pb2 as _operation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StandardStream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STANDARD_STREAM_UNSPECIFIED: _ClassVar[StandardStream]
    OUT: _ClassVar[StandardStream]
    ERR: _ClassVar[StandardStream]
STANDARD_STREAM_UNSPECIFIED: StandardStream
OUT: StandardStream
ERR: StandardStream

class CreateProjectJobRequest(_message.Message):
    __slots__ = ("project_id", "job_parameters", "config", "name", "desc", "data_ttl")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    DATA_TTL_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    job_parameters: _jobs_pb2.JobParameters
    config: str
    name: str
    desc: str
    data_ttl: _duration_pb2.Duration
    def __init__(self, project_id: _Optional[str] = ..., job_parameters: _Optional[_Union[_jobs_pb2.JobParameters, _Mapping]] = ..., config: _Optional[str] = ..., name: _Optional[str] = ..., desc: _Optional[str] = ..., data_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateProjectJobMetadata(_message.Message):
    __slots__ = ("project_id", "job_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    job_id: str
    def __init__(self, project_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class CreateProjectJobResponse(_message.Message):
    __slots__ = ("job_id", "upload_files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    upload_files: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.StorageFile]
    def __init__(self, job_id: _Optional[str] = ..., upload_files: _Optional[_Iterable[_Union[_jobs_pb2.StorageFile, _Mapping]]] = ...) -> None: ...

class CloneProjectJobRequest(_message.Message):
    __slots__ = ("source_job_id", "job_parameters_overrides", "name", "desc", "data_ttl")
    SOURCE_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_PARAMETERS_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    DATA_TTL_FIELD_NUMBER: _ClassVar[int]
    source_job_id: str
    job_parameters_overrides: _jobs_pb2.JobParameters
    name: str
    desc: str
    data_ttl: _duration_pb2.Duration
    def __init__(self, source_job_id: _Optional[str] = ..., job_parameters_overrides: _Optional[_Union[_jobs_pb2.JobParameters, _Mapping]] = ..., name: _Optional[str] = ..., desc: _Optional[str] = ..., data_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CloneProjectJobResponse(_message.Message):
    __slots__ = ("job_id", "upload_files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    upload_files: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.StorageFile]
    def __init__(self, job_id: _Optional[str] = ..., upload_files: _Optional[_Iterable[_Union[_jobs_pb2.StorageFile, _Mapping]]] = ...) -> None: ...

class CloneProjectJobMetadata(_message.Message):
    __slots__ = ("project_id", "job_id")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    job_id: str
    def __init__(self, project_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class ExecuteProjectJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ExecuteProjectJobResponse(_message.Message):
    __slots__ = ("output_files", "output_files_errors", "output_datasets", "result")
    OUTPUT_FILES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILES_ERRORS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATASETS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    output_files: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.StorageFile]
    output_files_errors: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.FileUploadError]
    output_datasets: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.OutputDataset]
    result: _jobs_pb2.JobResult
    def __init__(self, output_files: _Optional[_Iterable[_Union[_jobs_pb2.StorageFile, _Mapping]]] = ..., output_files_errors: _Optional[_Iterable[_Union[_jobs_pb2.FileUploadError, _Mapping]]] = ..., output_datasets: _Optional[_Iterable[_Union[_jobs_pb2.OutputDataset, _Mapping]]] = ..., result: _Optional[_Union[_jobs_pb2.JobResult, _Mapping]] = ...) -> None: ...

class ExecuteProjectJobMetadata(_message.Message):
    __slots__ = ("job", "progress", "metadata")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    progress: _jobs_pb2.JobProgress
    metadata: _jobs_pb2.JobMetadata
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., progress: _Optional[_Union[_jobs_pb2.JobProgress, _Mapping]] = ..., metadata: _Optional[_Union[_jobs_pb2.JobMetadata, _Mapping]] = ...) -> None: ...

class CancelProjectJobRequest(_message.Message):
    __slots__ = ("job_id", "reason", "graceful")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    graceful: bool
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., graceful: _Optional[bool] = ...) -> None: ...

class ReadProjectJobStdLogsRequest(_message.Message):
    __slots__ = ("job_id", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ReadProjectJobStdLogsResponse(_message.Message):
    __slots__ = ("logs", "offset")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[StdLog]
    offset: int
    def __init__(self, logs: _Optional[_Iterable[_Union[StdLog, _Mapping]]] = ..., offset: _Optional[int] = ...) -> None: ...

class ReadProjectJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ReadProjectJobLogsResponse(_message.Message):
    __slots__ = ("logs", "offset")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    logs: _containers.RepeatedCompositeFieldContainer[LogMessage]
    offset: int
    def __init__(self, logs: _Optional[_Iterable[_Union[LogMessage, _Mapping]]] = ..., offset: _Optional[int] = ...) -> None: ...

class DownloadProjectJobFilesRequest(_message.Message):
    __slots__ = ("job_id", "files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    files: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.File]
    def __init__(self, job_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_jobs_pb2.File, _Mapping]]] = ...) -> None: ...

class DownloadProjectJobFilesResponse(_message.Message):
    __slots__ = ("download_files",)
    DOWNLOAD_FILES_FIELD_NUMBER: _ClassVar[int]
    download_files: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.StorageFile]
    def __init__(self, download_files: _Optional[_Iterable[_Union[_jobs_pb2.StorageFile, _Mapping]]] = ...) -> None: ...

class ListProjectJobRequest(_message.Message):
    __slots__ = ("project_id", "page_size", "page_token", "filter")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    page_size: int
    page_token: str
    filter: str
    def __init__(self, project_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListProjectJobResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_jobs_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_jobs_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetProjectJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteProjectJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteProjectJobMetadata(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteProjectJobDataRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteProjectJobDataMetadata(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteProjectJobDataResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteAllProjectJobDataRequest(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class DeleteAllProjectJobDataMetadata(_message.Message):
    __slots__ = ("project_id",)
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    def __init__(self, project_id: _Optional[str] = ...) -> None: ...

class DeleteAllProjectJobDataResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetProjectJobDataTtlRequest(_message.Message):
    __slots__ = ("job_id", "ttl")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, job_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SetProjectJobDataTtlResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StdLog(_message.Message):
    __slots__ = ("content", "type")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[StdLog.Type]
        OUT: _ClassVar[StdLog.Type]
        ERR: _ClassVar[StdLog.Type]
    TYPE_UNSPECIFIED: StdLog.Type
    OUT: StdLog.Type
    ERR: StdLog.Type
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    type: StdLog.Type
    def __init__(self, content: _Optional[bytes] = ..., type: _Optional[_Union[StdLog.Type, str]] = ...) -> None: ...

class LogMessage(_message.Message):
    __slots__ = ("standard_stream", "file_path", "content", "created_at")
    STANDARD_STREAM_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    standard_stream: StandardStream
    file_path: str
    content: bytes
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, standard_stream: _Optional[_Union[StandardStream, str]] = ..., file_path: _Optional[str] = ..., content: _Optional[bytes] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
