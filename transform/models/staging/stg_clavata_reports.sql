-- One row per result of a finished Clavata job (one per evaluated content item).
{{ config(enabled=source_enabled('clavata')) }}
select
    job_uuid,
    cast(result_index as bigint) as result_index,
    content_hash,
    policy_id,
    policy_key,
    policy_version_id,
    label_id,
    label_version_id,
    outcome,
    cast(score as double precision) as score,
    cast(threshold as double precision) as threshold,
    {{ json_value('label_matches') }} as label_matches,
    {{ json_value('section_evaluation_reports') }} as section_evaluation_reports,
    {{ json_value('exception_evaluation_report') }} as exception_evaluation_report,
    {{ json_value('token_usage') }} as token_usage,
    {{ json_value('content_metadata') }} as content_metadata,
    {{ utc_timestamptz('created') }} as created,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'clavata_reports')) }} as loaded_at
from {{ source('tap_jobresults', 'clavata_reports') }}
