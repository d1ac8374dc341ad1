-- Talonic extraction fields ranked by how often validation flagged them, per extraction schema. field is NULL
-- for flags that name no field (e.g. a bare 'missing_required_field').
{{ config(enabled=source_enabled('talonic')) }}
with flags as (
    select
        j.schema_id,
        j.schema_name,
        f.field,
        f.flag_code,
        f.row_id
    from {{ ref('stg_extraction_flags') }} as f
    left join {{ ref('stg_extraction_jobs') }} as j
        on j.job_id = f.job_id
),

codes as (
    select schema_id, field, {{ dbt.listagg('flag_code', "', '", "order by flag_code") }} as flag_codes
    from (select distinct schema_id, field, flag_code from flags where flag_code is not null) as d
    group by schema_id, field
),

per_field as (
    select
        schema_id,
        max(schema_name) as schema_name,
        field,
        count(*) as flag_count,
        count(distinct row_id) as flagged_rows
    from flags
    group by schema_id, field
),

rows_per_schema as (
    select j.schema_id, count(*) as schema_rows
    from {{ ref('stg_extraction_rows') }} as r
    left join {{ ref('stg_extraction_jobs') }} as j
        on j.job_id = r.job_id
    group by j.schema_id
)

select
    p.schema_id,
    p.schema_name,
    p.field,
    p.flag_count,
    p.flagged_rows,
    s.schema_rows,
    cast(p.flagged_rows as double precision) / nullif(s.schema_rows, 0) as flagged_row_rate,
    c.flag_codes,
    dense_rank() over (partition by p.schema_id order by p.flag_count desc) as flag_rank
from per_field as p
left join rows_per_schema as s
    on s.schema_id = p.schema_id or (s.schema_id is null and p.schema_id is null)
left join codes as c
    on (c.schema_id = p.schema_id or (c.schema_id is null and p.schema_id is null))
    and (c.field = p.field or (c.field is null and p.field is null))
