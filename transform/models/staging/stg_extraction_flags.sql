-- One row per validation flag of a Talonic row. The vendor documents flags as strings ('format_mismatch' or
-- 'format_mismatch:date', code then field) and some accounts send objects ({code, field, ...}); both land here
-- as flag_code and field (NULL when the flag names no field). An object with no code keeps its JSON text as code.
{{ config(enabled=source_enabled('talonic')) }}
with flags as (
    select
        r.id as row_id,
        r.job_id,
        f.idx as flag_index,
        {{ json_kind('f.value') }} as flag_kind,
        f.value as flag
    from {{ ref('stg_extraction_rows') }} as r
    {{ json_array_elements('r.validation_flags', 'f') }}
    where {{ json_kind('f.value') }} <> 'null'  -- a null element flags nothing
),

parsed as (
    select
        row_id,
        job_id,
        flag_index,
        flag,
        case
            when flag_kind = 'object' then coalesce(
                {{ json_scalar("flag -> 'code'") }}, {{ json_scalar("flag -> 'type'") }}, {{ json_scalar("flag -> 'name'") }},
                {{ json_text('flag') }}
            )
            else {{ json_text('flag') }}
        end as code_part,
        case
            when flag_kind = 'object' then coalesce(
                {{ json_scalar("flag -> 'field'") }}, {{ json_scalar("flag -> 'field_name'") }}, {{ json_scalar("flag -> 'path'") }}
            )
        end as object_field,
        flag_kind
    from flags
)

select
    row_id,
    job_id,
    flag_index,
    case
        when flag_kind = 'object' then code_part
        when position(':' in code_part) > 0 then split_part(code_part, ':', 1)
        else code_part
    end as flag_code,
    case
        when flag_kind = 'object' then object_field
        when position(':' in code_part) > 0 then nullif(substr(code_part, position(':' in code_part) + 1), '')
    end as field,
    flag
from parsed
