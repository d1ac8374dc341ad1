-- The per-field flag counts add up to every validation flag of every row (counted from the arrays' lengths,
-- not from the unnested flags), and each field's count matches the unnested per-field counts.
with from_arrays as (
    select coalesce(sum(flag_count), 0) as flags from {{ ref('stg_extraction_rows') }}
),

reviewed as (
    select coalesce(sum(flag_count), 0) as flags from {{ ref('review_flagged_extraction_fields') }}
),

per_field_from_fields as (
    -- flags that name a field the row has a value for
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

select 'total' as problem, cast(null as {{ dbt.type_string() }}) as field, a.flags as expected, r.flags as actual
from from_arrays as a cross join reviewed as r
where a.flags <> r.flags

union all

-- a field's review count can exceed what stg_extraction_fields saw (a flag may name a field the row lacks),
-- never fall short of it
select 'field undercounted', f.field, f.flags, coalesce(r.flags, 0)
from per_field_from_fields as f
left join per_field_reviewed as r
    on r.field = f.field
where coalesce(r.flags, 0) < f.flags
