//! `minos deploy`: the files deploying a project needs, a Dockerfile per service and a compose file or
//! Kubernetes manifests, each written whole (beside itself, then renamed over).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use crate::project::{
    config_port, failed, io, project_root, services, Result, FIRST_PORT, SERVICES,
};

/// What `minos deploy` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub(crate) enum Target {
    /// A Dockerfile per service and `deploy/docker-compose.yml`.
    #[default]
    Compose,
    /// A Dockerfile per service and `deploy/kubernetes/*.yaml` (a Deployment and a Service each).
    Kubernetes,
}

pub(crate) fn deploy(target: Target) -> Result<()> {
    let root = project_root()?;
    let services = services(&root)?;
    if services.is_empty() {
        return Err(failed(
            "the project has no microservices to deploy: `minos new microservice NAME` creates one",
        ));
    }
    let project = root.file_name().map_or_else(
        || "project".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let mut ports = Vec::new();
    for service in &services {
        let config_path = root.join(SERVICES).join(service).join("config.yml");
        let config =
            fs::read_to_string(&config_path).map_err(|e| io("cannot read", &config_path, e))?;
        let port = config_port(&config).unwrap_or(FIRST_PORT);
        ports.push(port);
        files.push((
            root.join(SERVICES).join(service).join("Dockerfile"),
            dockerfile(service, port),
        ));
    }
    match target {
        Target::Compose => files.push((
            root.join("deploy").join("docker-compose.yml"),
            compose(&project, &services, &ports),
        )),
        Target::Kubernetes => {
            for (service, port) in services.iter().zip(&ports) {
                files.push((
                    root.join("deploy")
                        .join("kubernetes")
                        .join(format!("{service}.yaml")),
                    kubernetes(service, *port),
                ));
            }
            files.push((
                root.join("deploy").join("kubernetes").join("minos.yaml"),
                kubernetes_infrastructure(),
            ));
        }
    }
    // Each file whole: written beside itself, then renamed over.
    for (path, content) in &files {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        }
        let staged = path.with_extension("minos-new");
        fs::write(&staged, content)
            .and_then(|()| fs::rename(&staged, path))
            .map_err(|e| {
                let _ = fs::remove_file(&staged);
                io("cannot write", path, e)
            })?;
        println!(
            "wrote {}",
            path.strip_prefix(&root).unwrap_or(path).display()
        );
    }
    Ok(())
}

fn dockerfile(service: &str, port: u16) -> String {
    format!(
        r#"# The {service} service's image, built from the project's root:
#   docker build -f microservices/{service}/Dockerfile -t {service} .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p {service}

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/{service} /usr/local/bin/{service}
COPY microservices/{service}/config.yml /etc/{service}/config.yml
ENV MINOS_CONFIG=/etc/{service}/config.yml MINOS_HTTP_HOST=0.0.0.0
WORKDIR /var/lib/{service}
EXPOSE {port}
HEALTHCHECK CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/{port}"]
CMD ["/usr/local/bin/{service}"]
"#
    )
}

fn compose(project: &str, services: &[String], ports: &[u16]) -> String {
    let mut out = format!(
        r#"# The {project} system: PostgreSQL, Kafka, the registry, the API gateway and every service.
#   docker compose -f deploy/docker-compose.yml up --build
# The gateway answers on localhost:5566; written by `minos deploy`, written again each time.
name: {project}
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: postgres
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 2s
      retries: 30

  kafka:
    image: apache/kafka:3.9.0
    environment:
      KAFKA_NODE_ID: 1
      KAFKA_PROCESS_ROLES: broker,controller
      KAFKA_LISTENERS: PLAINTEXT://:9092,CONTROLLER://:9093
      KAFKA_ADVERTISED_LISTENERS: PLAINTEXT://kafka:9092
      KAFKA_CONTROLLER_LISTENER_NAMES: CONTROLLER
      KAFKA_CONTROLLER_QUORUM_VOTERS: 1@localhost:9093
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: 1

  discovery:
    build:
      context: ..
      dockerfile: deploy/minos.Dockerfile
    command: ["minos", "discovery"]
    environment:
      MINOS_HTTP_HOST: 0.0.0.0
      MINOS_STORAGE: postgresql://postgres:postgres@postgres:5432/postgres?schema=discovery
    depends_on:
      postgres:
        condition: service_healthy

  gateway:
    build:
      context: ..
      dockerfile: deploy/minos.Dockerfile
    command: ["minos", "gateway"]
    environment:
      MINOS_HTTP_HOST: 0.0.0.0
      MINOS_DISCOVERY_URL: http://discovery:5567
    ports:
      - "5566:5566"
    depends_on:
      - discovery
"#
    );
    for (service, port) in services.iter().zip(ports) {
        let schema = service.replace('-', "_");
        let _ = write!(
            out,
            r#"
  {service}:
    build:
      context: ..
      dockerfile: microservices/{service}/Dockerfile
    environment:
      MINOS_STORAGE: postgresql://postgres:postgres@postgres:5432/postgres?schema={schema}
      MINOS_BROKER: kafka://kafka:9092
      MINOS_DISCOVERY_URL: http://discovery:5567
      MINOS_DISCOVERY_ADDRESS: {service}
      MINOS_HTTP_PORT: "{port}"
    depends_on:
      postgres:
        condition: service_healthy
      kafka:
        condition: service_started
      discovery:
        condition: service_started
"#
        );
    }
    out
}

fn kubernetes(service: &str, port: u16) -> String {
    let schema = service.replace('-', "_");
    format!(
        r#"# The {service} service: a Deployment and its Service. Written by `minos deploy kubernetes`.
# PostgreSQL, Kafka and the registry are expected at the addresses below (minos.yaml runs the
# registry and the gateway).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {service}
  labels:
    app: {service}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {service}
  template:
    metadata:
      labels:
        app: {service}
    spec:
      containers:
        - name: {service}
          image: {service}:latest
          ports:
            - containerPort: {port}
          env:
            - name: MINOS_STORAGE
              value: postgresql://postgres:postgres@postgres:5432/postgres?schema={schema}
            - name: MINOS_BROKER
              value: kafka://kafka:9092
            - name: MINOS_DISCOVERY_URL
              value: http://discovery:5567
            - name: MINOS_DISCOVERY_ADDRESS
              value: {service}
            - name: MINOS_HTTP_PORT
              value: "{port}"
          readinessProbe:
            httpGet:
              path: /system/health
              port: {port}
          livenessProbe:
            httpGet:
              path: /system/live
              port: {port}
---
apiVersion: v1
kind: Service
metadata:
  name: {service}
spec:
  selector:
    app: {service}
  ports:
    - port: {port}
      targetPort: {port}
"#
    )
}

fn kubernetes_infrastructure() -> String {
    let mut out = String::from(
        "# The registry and the API gateway (image `minos`, built from deploy/minos.Dockerfile).\n",
    );
    for (index, (name, port, command)) in [
        ("discovery", 5567, "discovery"),
        ("gateway", 5566, "gateway"),
    ]
    .into_iter()
    .enumerate()
    {
        if index > 0 {
            out.push_str("---\n");
        }
        let extra = if name == "gateway" {
            "\n            - name: MINOS_DISCOVERY_URL\n              value: http://discovery:5567"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: {name}
          image: minos:latest
          command: ["minos", "{command}"]
          ports:
            - containerPort: {port}
          env:
            - name: MINOS_HTTP_HOST
              value: 0.0.0.0{extra}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
    - port: {port}
      targetPort: {port}
"#
        );
    }
    out
}
