"""Parsing: DAG files in, serialized DAGs out.

`dag_folder` walks the DAG folders, `parser` imports each file in an isolated process and
stores what it found, `dag_processor` runs that every `min_file_process_interval`,
`serialization` is the stored form the scheduler and the console read, and `airflow_migrate`
rewrites Airflow DAG files (`dagwatch dags migrate`).
"""
