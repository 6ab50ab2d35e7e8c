import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileCompressionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_COMPRESSION_TYPE_UNSPECIFIED: _ClassVar[FileCompressionType]
    NONE: _ClassVar[FileCompressionType]
    ZIP: _ClassVar[FileCompressionType]

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    CREATING: _ClassVar[JobStatus]
    EXECUTING: _ClassVar[JobStatus]
    UPLOADING_OUTPUT: _ClassVar[JobStatus]
    SUCCESS: _ClassVar[JobStatus]
    ERROR: _ClassVar[JobStatus]
    CANCELLED: _ClassVar[JobStatus]
    CANCELLING: _ClassVar[JobStatus]
    PREPARING: _ClassVar[JobStatus]
FILE_COMPRESSION_TYPE_UNSPECIFIED: FileCompressionType
NONE: FileCompressionType
ZIP: FileCompressionType
JOB_STATUS_UNSPECIFIED: JobStatus
CREATING: JobStatus
EXECUTING: JobStatus
UPLOADING_OUTPUT: JobStatus
SUCCESS: JobStatus
ERROR: JobStatus
CANCELLED: JobStatus
CANCELLING: JobStatus
PREPARING: JobStatus

class JobParameters(_message.Message):
    __slots__ = ("input_files", "output_files", "s3_mount_ids", "dataset_ids", "cmd", "env", "attach_project_disk", "cloud_instance_types", "extended_working_storage", "arguments", "output_datasets", "graceful_shutdown_parameters", "spark_parameters")
    INPUT_FILES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILES_FIELD_NUMBER: _ClassVar[int]
    S3_MOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    DATASET_IDS_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    ATTACH_PROJECT_DISK_FIELD_NUMBER: _ClassVar[int]
    CLOUD_INSTANCE_TYPES_FIELD_NUMBER: _ClassVar[int]
    EXTENDED_WORKING_STORAGE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATASETS_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_SHUTDOWN_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SPARK_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    input_files: _containers.RepeatedCompositeFieldContainer[File]
    output_files: _containers.RepeatedCompositeFieldContainer[FileDesc]
    s3_mount_ids: _containers.RepeatedScalarFieldContainer[str]
    dataset_ids: _containers.RepeatedScalarFieldContainer[str]
    cmd: str
    env: Environment
    attach_project_disk: bool
    cloud_instance_types: _containers.RepeatedCompositeFieldContainer[CloudInstanceType]
    extended_working_storage: ExtendedWorkingStorage
    arguments: _containers.RepeatedCompositeFieldContainer[Argument]
    output_datasets: _containers.RepeatedCompositeFieldContainer[OutputDatasetDesc]
    graceful_shutdown_parameters: GracefulShutdownParameters
    spark_parameters: SparkParameters
    def __init__(self, input_files: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., output_files: _Optional[_Iterable[_Union[FileDesc, _Mapping]]] = ..., s3_mount_ids: _Optional[_Iterable[str]] = ..., dataset_ids: _Optional[_Iterable[str]] = ..., cmd: _Optional[str] = ..., env: _Optional[_Union[Environment, _Mapping]] = ..., attach_project_disk: _Optional[bool] = ..., cloud_instance_types: _Optional[_Iterable[_Union[CloudInstanceType, _Mapping]]] = ..., extended_working_storage: _Optional[_Union[ExtendedWorkingStorage, _Mapping]] = ..., arguments: _Optional[_Iterable[_Union[Argument, _Mapping]]] = ..., output_datasets: _Optional[_Iterable[_Union[OutputDatasetDesc, _Mapping]]] = ..., graceful_shutdown_parameters: _Optional[_Union[GracefulShutdownParameters, _Mapping]] = ..., spark_parameters: _Optional[_Union[SparkParameters, _Mapping]] = ...) -> None: ...

class CloudInstanceType(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ExtendedWorkingStorage(_message.Message):
    __slots__ = ("type", "size_gb")
    class StorageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STORAGE_TYPE_UNSPECIFIED: _ClassVar[ExtendedWorkingStorage.StorageType]
        SSD: _ClassVar[ExtendedWorkingStorage.StorageType]
    STORAGE_TYPE_UNSPECIFIED: ExtendedWorkingStorage.StorageType
    SSD: ExtendedWorkingStorage.StorageType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_GB_FIELD_NUMBER: _ClassVar[int]
    type: ExtendedWorkingStorage.StorageType
    size_gb: int
    def __init__(self, type: _Optional[_Union[ExtendedWorkingStorage.StorageType, str]] = ..., size_gb: _Optional[int] = ...) -> None: ...

class Argument(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class File(_message.Message):
    __slots__ = ("desc", "sha256", "size_bytes", "compression_type")
    DESC_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_TYPE_FIELD_NUMBER: _ClassVar[int]
    desc: FileDesc
    sha256: str
    size_bytes: int
    compression_type: FileCompressionType
    def __init__(self, desc: _Optional[_Union[FileDesc, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., compression_type: _Optional[_Union[FileCompressionType, str]] = ...) -> None: ...

class StorageFile(_message.Message):
    __slots__ = ("file", "url")
    FILE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    file: File
    url: str
    def __init__(self, file: _Optional[_Union[File, _Mapping]] = ..., url: _Optional[str] = ...) -> None: ...

class FileDesc(_message.Message):
    __slots__ = ("path", "var")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VAR_FIELD_NUMBER: _ClassVar[int]
    path: str
    var: str
    def __init__(self, path: _Optional[str] = ..., var: _Optional[str] = ...) -> None: ...

class FileUploadError(_message.Message):
    __slots__ = ("output_file_desc", "log_file_name", "description", "type")
    class ErrorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ERROR_TYPE_UNSPECIFIED: _ClassVar[FileUploadError.ErrorType]
        UPLOAD_FAILED: _ClassVar[FileUploadError.ErrorType]
        NOT_FOUND: _ClassVar[FileUploadError.ErrorType]
    ERROR_TYPE_UNSPECIFIED: FileUploadError.ErrorType
    UPLOAD_FAILED: FileUploadError.ErrorType
    NOT_FOUND: FileUploadError.ErrorType
    OUTPUT_FILE_DESC_FIELD_NUMBER: _ClassVar[int]
    LOG_FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    output_file_desc: FileDesc
    log_file_name: str
    description: str
    type: FileUploadError.ErrorType
    def __init__(self, output_file_desc: _Optional[_Union[FileDesc, _Mapping]] = ..., log_file_name: _Optional[str] = ..., description: _Optional[str] = ..., type: _Optional[_Union[FileUploadError.ErrorType, str]] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("docker_image_resource_id", "docker_image_spec", "vars", "python_env")
    class VarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOCKER_IMAGE_RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    DOCKER_IMAGE_SPEC_FIELD_NUMBER: _ClassVar[int]
    VARS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_ENV_FIELD_NUMBER: _ClassVar[int]
    docker_image_resource_id: str
    docker_image_spec: DockerImageSpec
    vars: _containers.ScalarMap[str, str]
    python_env: PythonEnv
    def __init__(self, docker_image_resource_id: _Optional[str] = ..., docker_image_spec: _Optional[_Union[DockerImageSpec, _Mapping]] = ..., vars: _Optional[_Mapping[str, str]] = ..., python_env: _Optional[_Union[PythonEnv, _Mapping]] = ...) -> None: ...

class DockerImageSpec(_message.Message):
    __slots__ = ("password_plain_text", "password_ds_secret_name", "image_url", "username")
    PASSWORD_PLAIN_TEXT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_DS_SECRET_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    password_plain_text: str
    password_ds_secret_name: str
    image_url: str
    username: str
    def __init__(self, password_plain_text: _Optional[str] = ..., password_ds_secret_name: _Optional[str] = ..., image_url: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class PythonEnv(_message.Message):
    __slots__ = ("conda_yaml", "local_modules", "python_version", "requirements", "pip_options")
    CONDA_YAML_FIELD_NUMBER: _ClassVar[int]
    LOCAL_MODULES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    PIP_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    conda_yaml: str
    local_modules: _containers.RepeatedCompositeFieldContainer[File]
    python_version: str
    requirements: _containers.RepeatedScalarFieldContainer[str]
    pip_options: PipOptions
    def __init__(self, conda_yaml: _Optional[str] = ..., local_modules: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., python_version: _Optional[str] = ..., requirements: _Optional[_Iterable[str]] = ..., pip_options: _Optional[_Union[PipOptions, _Mapping]] = ...) -> None: ...

class PipOptions(_message.Message):
    __slots__ = ("index_url", "extra_index_urls", "trusted_hosts", "no_deps")
    INDEX_URL_FIELD_NUMBER: _ClassVar[int]
    EXTRA_INDEX_URLS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_HOSTS_FIELD_NUMBER: _ClassVar[int]
    NO_DEPS_FIELD_NUMBER: _ClassVar[int]
    index_url: str
    extra_index_urls: _containers.RepeatedScalarFieldContainer[str]
    trusted_hosts: _containers.RepeatedScalarFieldContainer[str]
    no_deps: bool
    def __init__(self, index_url: _Optional[str] = ..., extra_index_urls: _Optional[_Iterable[str]] = ..., trusted_hosts: _Optional[_Iterable[str]] = ..., no_deps: _Optional[bool] = ...) -> None: ...

class OutputDatasetDesc(_message.Message):
    __slots__ = ("name", "description", "labels", "size_gb", "var")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SIZE_GB_FIELD_NUMBER: _ClassVar[int]
    VAR_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    labels: _containers.ScalarMap[str, str]
    size_gb: int
    var: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., size_gb: _Optional[int] = ..., var: _Optional[str] = ...) -> None: ...

class OutputDataset(_message.Message):
    __slots__ = ("desc", "id")
    DESC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    desc: OutputDatasetDesc
    id: str
    def __init__(self, desc: _Optional[_Union[OutputDatasetDesc, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "name", "desc", "created_at", "finished_at", "status", "config", "created_by_id", "project_id", "job_parameters", "data_expires_at", "data_cleared", "output_files", "log_files", "diagnostic_files", "data_size_bytes", "started_at", "status_details", "actual_cloud_instance_type", "parent_job_id", "file_errors", "output_datasets")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DATA_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_CLEARED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILES_FIELD_NUMBER: _ClassVar[int]
    LOG_FILES_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTIC_FILES_FIELD_NUMBER: _ClassVar[int]
    DATA_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_DETAILS_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_CLOUD_INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATASETS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    desc: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    status: JobStatus
    config: str
    created_by_id: str
    project_id: str
    job_parameters: JobParameters
    data_expires_at: _timestamp_pb2.Timestamp
    data_cleared: bool
    output_files: _containers.RepeatedCompositeFieldContainer[File]
    log_files: _containers.RepeatedCompositeFieldContainer[File]
    diagnostic_files: _containers.RepeatedCompositeFieldContainer[File]
    data_size_bytes: int
    started_at: _timestamp_pb2.Timestamp
    status_details: str
    actual_cloud_instance_type: CloudInstanceType
    parent_job_id: str
    file_errors: _containers.RepeatedCompositeFieldContainer[FileUploadError]
    output_datasets: _containers.RepeatedCompositeFieldContainer[OutputDataset]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., desc: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[JobStatus, str]] = ..., config: _Optional[str] = ..., created_by_id: _Optional[str] = ..., project_id: _Optional[str] = ..., job_parameters: _Optional[_Union[JobParameters, _Mapping]] = ..., data_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_cleared: _Optional[bool] = ..., output_files: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., log_files: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., diagnostic_files: _Optional[_Iterable[_Union[File, _Mapping]]] = ..., data_size_bytes: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_details: _Optional[str] = ..., actual_cloud_instance_type: _Optional[_Union[CloudInstanceType, _Mapping]] = ..., parent_job_id: _Optional[str] = ..., file_errors: _Optional[_Iterable[_Union[FileUploadError, _Mapping]]] = ..., output_datasets: _Optional[_Iterable[_Union[OutputDataset, _Mapping]]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("return_code",)
    RETURN_CODE_FIELD_NUMBER: _ClassVar[int]
    return_code: int
    def __init__(self, return_code: _Optional[int] = ...) -> None: ...

class GracefulShutdownParameters(_message.Message):
    __slots__ = ("timeout", "signal")
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    signal: int
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., signal: _Optional[int] = ...) -> None: ...

class JobMetadata(_message.Message):
    __slots__ = ("id", "name", "description", "created_at", "started_at", "finished_at", "data_expires_at", "status", "status_details", "created_by_id", "project_id", "parent_job_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DATA_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_DETAILS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    data_expires_at: _timestamp_pb2.Timestamp
    status: JobStatus
    status_details: str
    created_by_id: str
    project_id: str
    parent_job_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[JobStatus, str]] = ..., status_details: _Optional[str] = ..., created_by_id: _Optional[str] = ..., project_id: _Optional[str] = ..., parent_job_id: _Optional[str] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("message", "progress", "create_time")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    message: str
    progress: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, message: _Optional[str] = ..., progress: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SparkParameters(_message.Message):
    __slots__ = ("connector_id",)
    CONNECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    connector_id: str
    def __init__(self, connector_id: _Optional[str] = ...) -> None: ...
