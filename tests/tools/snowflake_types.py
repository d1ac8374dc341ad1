import json
import sys

from target_snowflake.connector import SnowflakeConnector

catalog = json.load(sys.stdin)
conn = SnowflakeConnector(config={"account": "x", "user": "u", "password": "p", "database": "d"})
out = {}
for entry in catalog["streams"]:
    for name, prop in entry["schema"]["properties"].items():
        out[f"{entry['stream']}.{name}"] = str(conn.to_sql_type(prop))
json.dump(out, sys.stdout)
