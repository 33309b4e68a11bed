# locshare in one container: the one-file binary, nothing else.
#
#   docker build -t locshare .
#   docker run -d --name locshare -p 8080:8080 -p 8081:8081 -v locshare-data:/data \
#       --stop-timeout 30 -e LOCSHARE_PUBLIC_URL=https://locshare.example.org locshare
#
# Configuration is only LOCSHARE_* environment variables (`docker run --rm locshare
# settings --markdown` lists them).  Without LOCSHARE_DATABASE_URL the embedded
# PostgreSQL lives in the /data volume, next to the generated JWT secret.

# --- build: the same command as tests/test_binary.py -------------------------------
# Same Debian release as the runtime stage: the binary needs a glibc at least as new
# as the one it was built against.
FROM python:3.11-slim-bookworm AS build

# PyInstaller needs objdump (binutils) on Linux.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY locshare ./locshare
COPY packaging ./packaging
RUN pip install --no-cache-dir . pyinstaller==6.22.3 \
    && python packaging/build_binary.py --dist /out --work /tmp/pyinstaller \
    && /out/locshare --version

# --- runtime ------------------------------------------------------------------------
FROM debian:bookworm-slim

# tini as PID 1: forwards SIGTERM to locshare and reaps the embedded PostgreSQL's
# processes, which pg_ctl leaves to PID 1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home locshare \
    && mkdir /data \
    && chown locshare:locshare /data

COPY --from=build /out/locshare /usr/local/bin/locshare

ENV LOCSHARE_HOST=0.0.0.0 \
    LOCSHARE_PORT=8080 \
    LOCSHARE_WS_PORT=8081 \
    LOCSHARE_DATA_DIR=/data

USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8080 8081

# `locshare healthcheck` asks /health/ready on LOCSHARE_PORT; no curl needed.  Each
# check unpacks the one-file binary (about 1 s), hence the 30 s interval.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["locshare", "healthcheck"]

ENTRYPOINT ["/usr/bin/tini", "--", "locshare"]
CMD ["serve"]
