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

{# The loader's write time of a source row (_sdc_batched_at) as timestamptz, or NULL when the loader did not add
   metadata columns (target-duckdb without add_metadata_columns): the models build either way, only freshness
   needs the column. #}
{% macro loaded_at(relation) -%}
  {%- set found = false -%}
  {%- if execute -%}
    {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
    {%- set found = '_sdc_batched_at' in names -%}
  {%- endif -%}
  {{ utc_timestamptz('_sdc_batched_at' if found else 'null') }}
{%- endmacro %}
