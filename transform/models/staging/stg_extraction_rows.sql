-- One row per Talonic result row (one per document); partial while its job processes.
{{ config(enabled=source_enabled('talonic')) }}
select
    id,
    job_id,
    job_status,
    document_id,
    filename,
    status,
    {{ json_value('"values"') }} as field_values,
    cast(confidence as double precision) as confidence,
    {{ json_value('validation_flags') }} as validation_flags,
    coalesce({{ json_array_length(json_value('validation_flags')) }}, 0) as flag_count,
    {{ json_value('extra_fields') }} as extra_fields,
    {{ loaded_at(source('tap_jobresults', 'extraction_rows')) }} as loaded_at
from {{ source('tap_jobresults', 'extraction_rows') }}
