# MLflow tracking server for cluster/compose.yaml: PostgreSQL backend store (psycopg2) and
# artifacts proxied to S3/MinIO (boto3). Built by `docker compose -f cluster/compose.yaml build`.
# Keep MLFLOW_VERSION on the same major version as the mlflow client in the training image.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG MLFLOW_VERSION=3.17.2
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34" \
 && useradd --create-home --uid 1000 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
