-- Clavata outcomes per policy and UTC day (the report's creation time, else its job's completion or creation).
{{ config(enabled=source_enabled('clavata')) }}
with reports as (
    select
        r.policy_id,
        r.policy_key,
        {{ utc_date('coalesce(r.created, j.completed, j.created)') }} as day,
        upper(r.outcome) as outcome,
        r.score
    from {{ ref('stg_clavata_reports') }} as r
    left join {{ ref('stg_clavata_jobs') }} as j
        on j.job_uuid = r.job_uuid
)

select
    policy_id,
    max(policy_key) as policy_key,
    day,
    count(*) as reports,
    sum(case when outcome = 'OUTCOME_TRUE' then 1 else 0 end) as outcome_true,
    sum(case when outcome = 'OUTCOME_FALSE' then 1 else 0 end) as outcome_false,
    sum(case when outcome = 'OUTCOME_FAILED' then 1 else 0 end) as outcome_failed,
    sum(case when outcome is null or outcome not in ('OUTCOME_TRUE', 'OUTCOME_FALSE', 'OUTCOME_FAILED') then 1 else 0 end)
        as outcome_other,
    avg(score) as avg_score,
    cast(sum(case when outcome = 'OUTCOME_TRUE' then 1 else 0 end) as double precision) / count(*) as true_rate
from reports
group by policy_id, day
