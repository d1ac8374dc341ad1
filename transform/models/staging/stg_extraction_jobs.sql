-- One row per Talonic extraction job (also while queued or processing).
{{ config(enabled=source_enabled('talonic')) }}
select
    job_id,
    status,
    coalesce(finished, lower(status) in ('complete', 'completed', 'failed', 'cancelled')) as finished,
    name,
    schema_id,
    schema_name,
    cast(document_count as bigint) as document_count,
    cast(completed_documents as bigint) as completed_documents,
    cast(progress as bigint) as progress,
    current_phase,
    {{ json_value('grid_stats') }} as grid_stats,
    {{ json_value('error') }} as error,
    coalesce(error_code, {{ json_scalar(json_value('error') ~ " -> 'code'") }}) as error_code,
    coalesce(error_message, {{ json_scalar(json_value('error') ~ " -> 'message'") }}) as error_message,
    {{ utc_timestamptz('created_at') }} as created_at,
    {{ utc_timestamptz('started_at') }} as started_at,
    {{ utc_timestamptz('completed_at') }} as completed_at,
    cast(failed_documents as bigint) as failed_documents,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'extraction_jobs')) }} as loaded_at
from {{ source('tap_jobresults', 'extraction_jobs') }}
