# The catalogue-tagging Airflow image: the official Airflow image plus this project.
#
#   docker compose build        (see docker-compose.yml)
#
# The project (tagging, model_registry and their libraries: TensorFlow, pandas, pyarrow, ...)
# is installed under the constraints file the official image ships for its exact Airflow
# version, with apache-airflow pinned to that version, so that no package Airflow was
# released with is moved. If a project pin ever conflicts with them, the build fails here
# instead of producing an image with a different Airflow.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER root
RUN mkdir -p /data/catalogue /data/registry /home/airflow/.cache/catalogue-tagging \
    && chown -R airflow:0 /data /home/airflow/.cache
USER airflow
COPY --chown=airflow:0 pyproject.toml README.md /opt/catalogue-tagging/
COPY --chown=airflow:0 tagging/ /opt/catalogue-tagging/tagging/
COPY --chown=airflow:0 model_registry/ /opt/catalogue-tagging/model_registry/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/catalogue-tagging \
        --constraint "${HOME}/constraints.txt" \
    && python -c "import tagging.catalogue.tagger, model_registry"

# The DAGs are baked in (the compose file also mounts ./dags over them for development).
COPY --chown=airflow:0 dags/ /opt/airflow/dags/

ENV TAGGING_CATALOGUE=/data/catalogue \
    TAGGING_REGISTRY=/data/registry
