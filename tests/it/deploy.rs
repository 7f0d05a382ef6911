//! The Dockerfile and the Helm chart, tested the way chart-testing does without a cluster:
//! `helm lint --strict`, `helm template` over several value sets, every object validated against
//! the Kubernetes schemas by `kubernetes-validate --strict`, then what matters asserted on the
//! objects (security context, probes, grace period, secrets, the schedules). `hadolint` checks
//! the Dockerfile. helm, kubernetes-validate and hadolint are installed by scripts/setup.sh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::python;

/// The Kubernetes version the objects are validated against.
const KUBERNETES: &str = "1.33.0";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tool(path: &str) -> PathBuf {
    let tool = root().join(path);
    assert!(tool.exists(), "{path} is missing: run scripts/setup.sh");
    tool
}

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(tool(".tools/bin/helm"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("helm runs")
}

/// `helm template` with `args`, validated by kubernetes-validate; the objects as JSON.
fn render(args: &[&str]) -> Vec<Value> {
    let mut words = vec!["template", "minion", "charts/minion"];
    words.extend_from_slice(args);
    let output = helm(&words);
    assert!(
        output.status.success(),
        "helm {words:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &output.stdout).unwrap();
    let validated = Command::new(tool(".venv/bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES, "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&validated.stdout).to_string()
        + &String::from_utf8_lossy(&validated.stderr);
    assert!(validated.status.success(), "{words:?}: {said}");
    // Only the custom resources (KEDA, Prometheus Operator) have no schema there.
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("Couldn't find schema for kind ScaledObject")
                || line.contains("Couldn't find schema for kind TriggerAuthentication")
                || line.contains("Couldn't find schema for kind ServiceMonitor"),
            "{words:?}: {line}"
        );
    }
    serde_json::from_str(&python("yaml_docs.py", &[file.to_str().unwrap()])).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn pod_specs(objects: &[Value]) -> Vec<(String, &Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                &o["spec"]["template"]["spec"],
            )
        })
        .collect()
}

/// The restricted pod security standard on every pod and container.
fn assert_restricted(objects: &[Value]) {
    for (name, pod) in pod_specs(objects) {
        let security = &pod["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["runAsNonRoot"], true, "{name}");
            assert_eq!(
                security["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{name}"
            );
        }
    }
}

fn container<'a>(objects: &'a [Value], deployment: &str) -> &'a Value {
    &find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[test]
fn the_chart_lints_and_renders_valid_objects_for_every_value_set() {
    let lint = helm(&["lint", "--strict", "charts/minion"]);
    assert!(
        lint.status.success(),
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // Defaults.
    let objects = render(&[]);
    assert_restricted(&objects);
    for deployment in ["minion-worker", "minion-scheduler"] {
        let c = container(&objects, deployment);
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{deployment}"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{deployment}"
        );
        assert!(args(c).contains(&"--listen=0.0.0.0:9090".to_string()));
    }
    let worker = find(&objects, "Deployment", "minion-worker");
    assert_eq!(worker["spec"]["replicas"], 2);
    let grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(args(container(&objects, "minion-worker")).contains(&"--shutdown-timeout=300s".into()));
    assert!(grace > 300, "grace {grace}");
    let volumes = worker["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("emptyDir"), "{volumes}");
    assert_eq!(
        find(&objects, "Deployment", "minion-scheduler")["spec"]["replicas"],
        2
    );
    let migrate = find(&objects, "Job", "minion-migrate-0-1-0");
    assert_eq!(
        migrate["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    assert_eq!(
        migrate["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate"])
    );
    find(&objects, "PodDisruptionBudget", "minion-worker");
    find(&objects, "Service", "minion-metrics");
    assert!(!objects
        .iter()
        .any(|o| o["kind"] == "ScaledObject" || o["kind"] == "ServiceMonitor"));

    // The jobs ConfigMap holds exactly the files of jobs/.
    let jobs = &find(&objects, "ConfigMap", "minion-jobs")["data"];
    let mut expected = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            expected.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let shipped: BTreeMap<String, String> = jobs
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        shipped, expected,
        "charts/minion/files/jobs must be a copy of jobs/: cp jobs/*.toml charts/minion/files/jobs/"
    );
    let config = find(&objects, "ConfigMap", "minion-config")["data"]["minion.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let parsed: toml::Value = toml::from_str(&config).expect("minion.toml parses");
    assert_eq!(parsed["log_format"].as_str(), Some("json"));

    // Secrets given as values: only ever base64 in a Secret, referenced by name elsewhere.
    let secrets = [
        "--set",
        "database.url=postgres://minion:HUNTER2PW@db.example.com/minion",
        "--set",
        "store.s3.accessKeyId=AKIDSECRETVALUE",
        "--set",
        "store.s3.secretAccessKey=SKSECRETVALUE",
        "--set",
        "config.prebuild.max_key_ranges=4",
    ];
    let objects = render(&secrets);
    for object in &objects {
        if object["kind"] == "Secret" {
            continue;
        }
        let text = object.to_string();
        for secret in ["HUNTER2PW", "AKIDSECRETVALUE", "SKSECRETVALUE"] {
            assert!(
                !text.contains(secret),
                "{secret} in {}",
                object["metadata"]["name"]
            );
        }
    }
    let env = env_of(container(&objects, "minion-worker"));
    assert_eq!(
        env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"],
        "minion-database"
    );
    assert_eq!(
        env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"],
        "minion-store"
    );
    let made = find(&objects, "Secret", "minion-database");
    assert!(made["data"]["url"].is_string());
    let config = find(&objects, "ConfigMap", "minion-config")["data"]["minion.toml"]
        .as_str()
        .unwrap();
    let parsed: toml::Value = toml::from_str(config).unwrap();
    assert_eq!(parsed["prebuild"]["max_key_ranges"].as_integer(), Some(4));

    // S3 with an existing Secret, and a longer drain: the grace period follows.
    let objects = render(&[
        "--set",
        "store.url=s3://bucket/prefix",
        "--set",
        "store.s3.existingSecret=my-s3",
        "--set",
        "database.existingSecret=my-db",
        "--set",
        "database.existingSecretKey=dsn",
        "--set",
        "worker.shutdownTimeoutSeconds=900",
    ]);
    assert!(
        !objects.iter().any(|o| o["kind"] == "Secret"),
        "nothing to make"
    );
    let c = container(&objects, "minion-worker");
    let env = env_of(c);
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"],
        "my-s3"
    );
    assert_eq!(
        env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"],
        "dsn"
    );
    assert_eq!(env["MINION_STORE"]["value"], "s3://bucket/prefix");
    assert!(args(c).contains(&"--shutdown-timeout=900s".into()));
    let grace = find(&objects, "Deployment", "minion-worker")["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > 900, "grace {grace}");

    // KEDA and ServiceMonitor on: KEDA owns the replica count.
    let objects = render(&[
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "worker.queues={default,bulk}",
    ]);
    assert_restricted(&objects);
    let scaled = find(&objects, "ScaledObject", "minion-worker");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "postgresql");
    let query = trigger["metadata"]["query"].as_str().unwrap();
    assert!(
        query.contains("FROM jobs") && query.contains("'default', 'bulk'"),
        "{query}"
    );
    let auth = find(&objects, "TriggerAuthentication", "minion-catalog");
    assert_eq!(
        auth["spec"]["secretTargetRef"][0]["parameter"],
        "connection"
    );
    assert!(find(&objects, "Deployment", "minion-worker")["spec"]["replicas"].is_null());
    let monitor = find(&objects, "ServiceMonitor", "minion");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The console: read-only on the schedulers, with a Service that selects them.
    assert!(args(container(&objects, "minion-scheduler")).contains(&"--console".into()));
    assert!(!args(container(&objects, "minion-worker")).contains(&"--console".into()));
    let console = find(&objects, "Service", "minion-console");
    assert_eq!(
        console["spec"]["selector"]["app.kubernetes.io/component"],
        "scheduler"
    );

    // Hooks off (GitOps): a plain Job; the scheduler inside the workers instead.
    let objects = render(&[
        "--set",
        "migrations.hook=false",
        "--set",
        "scheduler.enabled=false",
        "--set",
        "worker.runScheduler=true",
    ]);
    let migrate = find(&objects, "Job", "minion-migrate-0-1-0");
    assert!(migrate["metadata"]["annotations"].is_null(), "{migrate}");
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["name"] == "minion-scheduler"));
    assert!(args(container(&objects, "minion-worker")).contains(&"--scheduler".into()));
    // The console moves to the workers with the scheduler, and write access is one value.
    assert!(args(container(&objects, "minion-worker")).contains(&"--console".into()));
    let console = find(&objects, "Service", "minion-console");
    assert_eq!(
        console["spec"]["selector"]["app.kubernetes.io/component"],
        "worker"
    );
    let objects = render(&["--set", "console.write=true"]);
    assert!(args(container(&objects, "minion-scheduler")).contains(&"--console-write".into()));
    let objects = render(&["--set", "console.enabled=false"]);
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["name"] == "minion-console"));
    // Prefetch is off unless set, and then reaches the workers' flags.
    let worker_args = |objects: &[Value]| args(container(objects, "minion-worker"));
    assert!(!worker_args(&objects)
        .iter()
        .any(|a| a.starts_with("--prefetch")));
    let objects = render(&["--set", "worker.prefetch=200"]);
    assert!(worker_args(&objects).contains(&"--prefetch=200".into()));
}

#[test]
fn wrong_values_are_refused_by_the_schema() {
    let cases: [(&[&str], &str); 5] = [
        (&["--set", "worker.replicas=-1"], "replicas"),
        (&["--set", "worker.colour=red"], "colour"),
        (&["--set", "store.url=ftp://nope"], "url"),
        (&["--set", "worker.concurrency=many"], "concurrency"),
        (&["--set", "worker.prefetch=-5"], "prefetch"),
    ];
    for (args, named) in cases {
        let mut words = vec!["template", "minion", "charts/minion"];
        words.extend_from_slice(args);
        let output = helm(&words);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{stderr}"
        );
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    // Autoscalers that would fight are refused by the chart itself.
    let output = helm(&[
        "template",
        "minion",
        "charts/minion",
        "--set",
        "worker.keda.enabled=true",
        "--set",
        "worker.autoscaling.enabled=true",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("enable one"));
}

/// The README's deploy commands render: each `helm install|upgrade` line, as `helm template`.
#[test]
fn the_readme_deploy_commands_render() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("## Deploy on Kubernetes")
        .nth(1)
        .expect("README has a deploy section")
        .split("\n## ")
        .next()
        .unwrap();
    let commands: Vec<Vec<&str>> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("helm install ") || l.starts_with("helm upgrade "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(commands.len() >= 3, "{commands:?}");
    for words in commands {
        // helm install|upgrade NAME CHART FLAGS...  ->  helm template NAME CHART FLAGS...
        assert_eq!(words[2], "minion");
        assert_eq!(words[3], "charts/minion");
        let objects = render(&words[4..]);
        assert_restricted(&objects);
        let image = container(&objects, "minion-worker")["image"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            image.starts_with("registry.example.com/upsert-minion:"),
            "{image}"
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_as_the_release_script_does() {
    let output = Command::new(tool(".venv/bin/hadolint"))
        .current_dir(root())
        .arg("Dockerfile")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let script = std::fs::read_to_string(root().join("scripts/build-release.sh")).unwrap();
    let build = "cargo build --release --locked --bin minion";
    assert!(script.lines().any(|l| l.trim() == build), "{script}");
    assert!(
        dockerfile.contains(&format!("&& {build}")),
        "the image builds as the script does"
    );
    // Every ignored hadolint rule is explained by the comment above it.
    let lines: Vec<&str> = dockerfile.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("# hadolint ignore") {
            assert!(
                i > 0 && lines[i - 1].starts_with('#'),
                "unexplained: {line}"
            );
        }
    }
    for needed in [
        "USER 10001",
        "ENTRYPOINT [\"/usr/bin/tini\"",
        "COPY jobs",
        "ca-certificates",
        "FROM debian:bookworm-slim",
    ] {
        assert!(dockerfile.contains(needed), "{needed}");
    }
}
