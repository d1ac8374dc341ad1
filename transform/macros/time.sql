{# The loaders write UTC wall-clock times into `timestamp without time zone` (PostgreSQL) / TIMESTAMP (DuckDB):
   say so, so that the models carry timestamptz and compare correctly with now() in any session time zone. #}
{% macro utc_timestamptz(expr) -%}
  (cast({{ expr }} as timestamp) at time zone 'UTC')
{%- endmacro %}

{# The UTC calendar day of a timestamptz. #}
{% macro utc_date(expr) -%}
  cast(({{ expr }}) at time zone 'UTC' as date)
{%- endmacro %}

{# Seconds from timestamptz a to timestamptz b. #}
{% macro seconds_between(a, b) %}{{ return(adapter.dispatch('seconds_between', 'tap_jobresults')(a, b)) }}{% endmacro %}
{% macro default__seconds_between(a, b) %}extract(epoch from ({{ b }}) - ({{ a }})){% endmacro %}
{% macro duckdb__seconds_between(a, b) %}(epoch({{ b }}) - epoch({{ a }})){% endmacro %}
