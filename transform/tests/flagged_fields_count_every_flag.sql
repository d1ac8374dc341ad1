-- The per-field flag counts add up to every validation flag unnested, no row has more unnested flags than its
-- validation_flags array has elements, and each field's count covers the flags stg_extraction_fields saw.
{{ config(enabled=source_enabled('talonic')) }}
with unnested as (
    select row_id, count(*) as flags from {{ ref('stg_extraction_flags') }} group by row_id
),

reviewed as (
    select coalesce(sum(flag_count), 0) as flags from {{ ref('review_flagged_extraction_fields') }}
),

per_field_from_fields as (
    select f.field, sum(f.flag_count) as flags
    from {{ ref('stg_extraction_fields') }} as f
    group by f.field
),

per_field_reviewed as (
    select field, sum(flag_count) as flags
    from {{ ref('review_flagged_extraction_fields') }}
    where field is not null
    group by field
)

select 'total' as problem, cast(null as {{ dbt.type_string() }}) as field, u.flags as expected, r.flags as actual
from (select coalesce(sum(flags), 0) as flags from unnested) as u
cross join reviewed as r
where u.flags <> r.flags

union all

select 'more flags than array elements', r.id, r.flag_count, u.flags
from {{ ref('stg_extraction_rows') }} as r
inner join unnested as u on u.row_id = r.id
where u.flags > r.flag_count

union all

-- a field's review count can exceed what stg_extraction_fields saw (a flag may name a field the row lacks),
-- never fall short of it
select 'field undercounted', f.field, f.flags, coalesce(r.flags, 0)
from per_field_from_fields as f
left join per_field_reviewed as r
    on r.field = f.field
where coalesce(r.flags, 0) < f.flags
