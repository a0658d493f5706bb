# otelgate's fake Dynatrace (the sink) as an image, for the kind, external and docker stacks.
#   docker build -t otelgate-sink:0.1.0 .
#   docker run --rm -p 127.0.0.1:18081:8080 -e DT_API_TOKEN=<token> otelgate-sink:0.1.0
# Runs `otelgate sink --host 0.0.0.0 --port 8080 --profile dynatrace --token-env DT_API_TOKEN` as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY otelgate ./otelgate
COPY manifests ./manifests
COPY collector ./collector
RUN pip install . && rm -rf /src

RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin otelgate
USER 10001
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["otelgate"]
CMD ["sink", "--host", "0.0.0.0", "--port", "8080", "--profile", "dynatrace", "--token-env", "DT_API_TOKEN"]
