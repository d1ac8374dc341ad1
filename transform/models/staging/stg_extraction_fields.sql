-- One row per extracted field of a Talonic row: extraction_rows.values unnested. value stays JSON (any type);
-- value_text is its text (strings unquoted); flag_count / flag_codes are the row's validation flags that name
-- this field.
{{ config(enabled=source_enabled('talonic')) }}
with fields as (
    select
        r.id as row_id,
        r.job_id,
        r.document_id,
        r.filename,
        r.confidence,
        v.key as field,
        v.value
    from {{ ref('stg_extraction_rows') }} as r
    {{ json_object_entries('r.field_values', 'v') }}
),

field_flags as (
    select
        row_id,
        field,
        count(*) as flag_count,
        {{ dbt.listagg('flag_code', "', '", "order by flag_code") }} as flag_codes
    from {{ ref('stg_extraction_flags') }}
    where field is not null
    group by row_id, field
)

select
    f.row_id,
    f.job_id,
    f.document_id,
    f.filename,
    f.field,
    case when {{ json_kind('f.value') }} = 'null' then null else f.value end as value,
    {{ json_kind('f.value') }} as value_type,
    case when {{ json_kind('f.value') }} = 'null' then null else {{ json_text('f.value') }} end as value_text,
    f.confidence as row_confidence,
    coalesce(ff.flag_count, 0) as flag_count,
    ff.flag_codes
from fields as f
left join field_flags as ff
    on ff.row_id = f.row_id and ff.field = f.field
