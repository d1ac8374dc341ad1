-- One row per Clavata job (also while pending or running).
{{ config(enabled=source_enabled('clavata')) }}
select
    job_uuid,
    status,
    coalesce(finished, status in ('JOB_STATUS_COMPLETED', 'JOB_STATUS_FAILED', 'JOB_STATUS_CANCELED')) as finished,
    customer_id,
    policy_id,
    policy_version_id,
    label_id,
    label_version_id,
    job_type,
    cast(threshold as double precision) as threshold,
    {{ utc_timestamptz('created') }} as created,
    {{ utc_timestamptz('updated') }} as updated,
    {{ utc_timestamptz('completed') }} as completed,
    {{ json_value('content_data') }} as content_data,
    cast(result_count as bigint) as result_count,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'clavata_jobs')) }} as loaded_at
from {{ source('tap_jobresults', 'clavata_jobs') }}
