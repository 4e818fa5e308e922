# syntax=docker/dockerfile:1
# One image for both parts of the add-on: `autoscaler run` (the controller, the default command)
# and `autoscaler proxy`. Build from the repository root: docker build -t autoscaler:0.1.0 .
#
# Pinned dependencies (requirements.lock) go into a virtualenv in a build stage; the final stage
# copies only that virtualenv, runs as an unprivileged user with no writes outside /tmp, and needs
# no shell (exec-form entrypoint), so it runs under readOnlyRootFilesystem with all capabilities dropped.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/autoscaler
WORKDIR /src
COPY requirements.lock ./
RUN /opt/autoscaler/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY policies ./policies
COPY autoscaler ./autoscaler
RUN /opt/autoscaler/bin/pip install --no-deps . \
    && /opt/autoscaler/bin/pip check \
    && /opt/autoscaler/bin/python -m compileall -q /opt/autoscaler/lib

FROM python:3.11-slim-bookworm
ENV PATH=/opt/autoscaler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /opt/autoscaler /opt/autoscaler
USER 65532:65532
# 8080: proxy traffic; 8081: controller admin; 8082: proxy admin (/healthz, /readyz, /metrics).
EXPOSE 8080 8081 8082
ENTRYPOINT ["autoscaler"]
CMD ["run"]
