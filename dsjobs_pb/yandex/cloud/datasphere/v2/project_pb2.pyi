import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import wrappers_pb2 as _wrappers_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Project(_message.Message):
    __slots__ = ("id", "created_at", "name", "description", "labels", "created_by_id", "settings", "limits", "community_id")
    class Settings(_message.Message):
        __slots__ = ("service_account_id", "subnet_id", "data_proc_cluster_id", "security_group_ids", "early_access", "ide", "default_folder_id", "stale_exec_timeout_mode", "vm_inactivity_timeout", "default_dedicated_spec")
        class Ide(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            IDE_UNSPECIFIED: _ClassVar[Project.Settings.Ide]
            JUPYTER_LAB: _ClassVar[Project.Settings.Ide]
        IDE_UNSPECIFIED: Project.Settings.Ide
        JUPYTER_LAB: Project.Settings.Ide
        class StaleExecutionTimeoutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
            __slots__ = ()
            STALE_EXECUTION_TIMEOUT_MODE_UNSPECIFIED: _ClassVar[Project.Settings.StaleExecutionTimeoutMode]
            ONE_HOUR: _ClassVar[Project.Settings.StaleExecutionTimeoutMode]
            THREE_HOURS: _ClassVar[Project.Settings.StaleExecutionTimeoutMode]
            NO_TIMEOUT: _ClassVar[Project.Settings.StaleExecutionTimeoutMode]
        STALE_EXECUTION_TIMEOUT_MODE_UNSPECIFIED: Project.Settings.StaleExecutionTimeoutMode
        ONE_HOUR: Project.Settings.StaleExecutionTimeoutMode
        THREE_HOURS: Project.Settings.StaleExecutionTimeoutMode
        NO_TIMEOUT: Project.Settings.StaleExecutionTimeoutMode
        SERVICE_ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
        SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
        DATA_PROC_CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
        SECURITY_GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
        EARLY_ACCESS_FIELD_NUMBER: _ClassVar[int]
        IDE_FIELD_NUMBER: _ClassVar[int]
        DEFAULT_FOLDER_ID_FIELD_NUMBER: _ClassVar[int]
        STALE_EXEC_TIMEOUT_MODE_FIELD_NUMBER: _ClassVar[int]
        VM_INACTIVITY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
        DEFAULT_DEDICATED_SPEC_FIELD_NUMBER: _ClassVar[int]
        service_account_id: str
        subnet_id: str
        data_proc_cluster_id: str
        security_group_ids: _containers.RepeatedScalarFieldContainer[str]
        early_access: bool
        ide: Project.Settings.Ide
        default_folder_id: str
        stale_exec_timeout_mode: Project.Settings.StaleExecutionTimeoutMode
        vm_inactivity_timeout: _duration_pb2.Duration
        default_dedicated_spec: str
        def __init__(self, service_account_id: _Optional[str] = ..., subnet_id: _Optional[str] = ..., data_proc_cluster_id: _Optional[str] = ..., security_group_ids: _Optional[_Iterable[str]] = ..., early_access: _Optional[bool] = ..., ide: _Optional[_Union[Project.Settings.Ide, str]] = ..., default_folder_id: _Optional[str] = ..., stale_exec_timeout_mode: _Optional[_Union[Project.Settings.StaleExecutionTimeoutMode, str]] = ..., vm_inactivity_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_dedicated_spec: _Optional[str] = ...) -> None: ...
    class Limits(_message.Message):
        __slots__ = ("max_units_per_hour", "max_units_per_execution")
        MAX_UNITS_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
        MAX_UNITS_PER_EXECUTION_FIELD_NUMBER: _ClassVar[int]
        max_units_per_hour: _wrappers_pb2.Int64Value
        max_units_per_execution: _wrappers_pb2.Int64Value
        def __init__(self, max_units_per_hour: _Optional[_Union[_wrappers_pb2.Int64Value, _Mapping]] = ..., max_units_per_execution: _Optional[_Union[_wrappers_pb2.Int64Value, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    COMMUNITY_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    created_at: _timestamp_pb2.Timestamp
    name: str
    description: str
    labels: _containers.ScalarMap[str, str]
    created_by_id: str
    settings: Project.Settings
    limits: Project.Limits
    community_id: str
    def __init__(self, id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., created_by_id: _Optional[str] = ..., settings: _Optional[_Union[Project.Settings, _Mapping]] = ..., limits: _Optional[_Union[Project.Limits, _Mapping]] = ..., community_id: _Optional[str] = ...) -> None: ...
