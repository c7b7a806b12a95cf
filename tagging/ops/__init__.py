"""Running the DAG: one Airflow harness (airflow), a local Airflow on SQLite (local), the
native distributed stack (stack, services) and the demos (demo)."""
