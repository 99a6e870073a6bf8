# Decider's container image: `docker build -t decider:0.1.0 .` (see the README, "Run in a
# container"). Two stages: the first builds the wheel and installs it with its dependencies
# into a virtualenv; the second is a slim CPython with that virtualenv, the sample rules and
# nothing that builds software.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# what the wheel is made of: the package, its metadata, and the sample rules it bundles
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY rules ./rules
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/decider-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
# the base image's pip, setuptools and wheel are build tools: the service needs none of them
RUN python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 decider \
    && useradd --system --no-log-init --uid 10001 --gid decider --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin decider \
    && install --directory --owner=decider --group=decider --mode=0750 /var/lib/decider
COPY --from=build /opt/venv /opt/venv
# the sample rules, served until the operator mounts their own directory over this path
COPY rules /etc/decider/rules
# no keys here: the operator gives them (DECIDER_API_KEYS, or DECIDER_API_KEYS_FILE naming a
# mounted file); without any, listening on 0.0.0.0 is refused, saying why
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DECIDER_HOST=0.0.0.0 \
    DECIDER_PORT=8080 \
    DECIDER_RULES_DIR=/etc/decider/rules \
    DECIDER_PROFILE_DB=/var/lib/decider/decider.db \
    DECIDER_PROFILE_SEED_SAMPLES=false
# the SQLite profile store: keep it in a volume so it outlives the container
VOLUME ["/var/lib/decider"]
WORKDIR /var/lib/decider
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DECIDER_PORT', '8080') + '/healthz', timeout=4)"]
# exec form: decider is PID 1 and gets SIGTERM itself, and stops gracefully on it
ENTRYPOINT ["decider"]
CMD ["serve"]
