# The `minos` command (registry, gateway, dashboard) in an image.
FROM rust:1-bookworm AS build
RUN cargo install --locked minos
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/cargo/bin/minos /usr/local/bin/minos
WORKDIR /var/lib/minos
