# The `minion` image: one binary, run as a worker (`minion worker`), a scheduler
# (`minion scheduler`) or the migration hook (`minion migrate`). README, "Deploy on Kubernetes".
#
# Build: docker build -t upsert-minion:0.1.0 .

# ---- builder: the release binary, exactly as `scripts/build-release.sh` builds it -------------
FROM rust:1.95-slim-bookworm AS builder
# libclang for the rocksdb crate's bindgen, a C++ compiler for RocksDB itself. Debian's packages
# of the pinned base image are what we build with; pinning each one's version would break the
# build at every Debian point release without making it more repeatable.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang libclang-dev g++ pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies in their own layer: built from the manifest and lock file alone (with stub
# sources), so a change to our code does not rebuild RocksDB.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/it \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/it/main.rs \
    && cargo build --release --locked --bin minion \
    && rm -rf src tests

# Our code; the binary embeds the migrations and the example tables.
COPY migrations migrations
COPY examples examples
COPY src src
COPY tests tests
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin minion \
    && cp target/release/minion /usr/local/bin/minion

# ---- runtime: the binary, CA certificates for S3 over TLS, and tini ---------------------------
FROM debian:bookworm-slim
# Unpinned for the same reason as above: the base image pins the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /usr/local/bin/minion /usr/local/bin/minion
COPY jobs /etc/minion/jobs
COPY examples/tables /etc/minion/tables
# A non-root numeric user (the chart's runAsNonRoot checks the number); staging under /tmp,
# which the chart mounts as an emptyDir on a read-only root filesystem.
USER 10001:10001
WORKDIR /tmp
ENV MINION_JOBS_DIR=/etc/minion/jobs \
    MINION_STAGING_DIR=/tmp \
    MINION_LISTEN=0.0.0.0:9090
EXPOSE 9090
# tini as PID 1 forwards SIGTERM to minion, which drains its jobs, and reaps what it spawns.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/minion"]
CMD ["worker"]
