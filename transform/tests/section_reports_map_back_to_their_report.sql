-- Each Clavata result has exactly as many section rows as its section_evaluation_reports array has elements.
{{ config(enabled=source_enabled('clavata')) }}
with per_report as (
    select job_uuid, result_index, count(*) as sections
    from {{ ref('stg_clavata_section_reports') }}
    group by job_uuid, result_index
)

select r.job_uuid, r.result_index, coalesce(p.sections, 0) as sections,
    {{ json_array_length('r.section_evaluation_reports') }} as expected
from {{ ref('stg_clavata_reports') }} as r
left join per_report as p
    on p.job_uuid = r.job_uuid and p.result_index = r.result_index
where coalesce(p.sections, 0) <> coalesce({{ json_array_length('r.section_evaluation_reports') }}, 0)
