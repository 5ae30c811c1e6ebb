# syncd: the daemon (`syncd serve`) by default, any syncd command otherwise:
#   docker build -t syncd .
#   docker run -d -p 9108:9108 -v syncd-state:/var/lib/syncd \
#     -v "$PWD/syncd.yaml:/etc/syncd/syncd.yaml:ro" -e COMMUNIC8_TOKEN=… syncd
#   docker run --rm -v "$PWD/syncd.yaml:/etc/syncd/syncd.yaml:ro" -v syncd-state:/var/lib/syncd syncd run --dry-run
# Stop it with a grace period above syncd's 30 s stop bound: `docker stop -t 45`.

# ---- build: install syncd and its dependencies (wheels only, nothing compiled) into a venv
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/syncd
WORKDIR /src
COPY pyproject.toml README.md ./
COPY syncd ./syncd
COPY connectors ./connectors
# [postgres]: psycopg, for a PostgreSQL state DB (several replicas)
# pip and setuptools are not needed at run time: dropped from the venv.
RUN /opt/syncd/bin/pip install --no-cache-dir ".[postgres]" \
 && /opt/syncd/bin/pip uninstall -y -q pip setuptools

# ---- runtime: the venv, a non-root user, config and state locations
FROM python:3.11-slim
ENV PATH=/opt/syncd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TZ=UTC \
    SYNCD_CONFIG=/etc/syncd/syncd.yaml \
    SYNCD_STATE__URL=sqlite:////var/lib/syncd/syncd.db
# uid/gid 10001, as deploy/kubernetes and the README say: above the system range (SYS_UID_MAX 999), so a regular
# account (`useradd --system` warns about such a uid), with no login shell, no home made, no lastlog/faillog entry
# and no subordinate uid/gid range.
RUN groupadd --gid 10001 syncd \
 && useradd --uid 10001 --gid syncd --no-log-init --no-create-home --home-dir /var/lib/syncd \
      --shell /usr/sbin/nologin -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 syncd \
 && mkdir -p /etc/syncd /var/lib/syncd \
 && chown syncd:syncd /var/lib/syncd
COPY --from=build /opt/syncd /opt/syncd
COPY deploy/docker/syncd.yaml /etc/syncd/syncd.yaml
USER 10001:10001
WORKDIR /var/lib/syncd
VOLUME ["/var/lib/syncd"]
EXPOSE 9108
# Liveness of the daemon (process and scheduler alive). It assumes the default server.listen port 9108.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["syncd"]
CMD ["serve"]
