"""Running the DAG: local Airflow, the native stack, demos."""
