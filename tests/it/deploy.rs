//! The deployment files (`deploy/`) against the code they deploy: every YAML and JSON file parses, the
//! alert rules and the dashboard query only metrics the server emits (under the names the exporter
//! gives them), the Kubernetes probes, ports and secrets are the ones the server reads, the image runs
//! as a user other than root, and `deploy/scrm.example.toml` is the server's configuration with every
//! option at its default.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use promql_parser::parser::{Expr, parse};
use promql_parser::util::{ExprVisitor, walk_expr};
use regex::Regex;
use scrm::platform::config::{CallbackSettings, Config, HttpSettings};
use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every YAML document of a file, with `<<: *anchor` merges applied.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{relative}: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: {e}"));
            value
        })
        .collect()
}

/// The one YAML document of a file.
fn yaml(relative: &str) -> Value {
    let mut docs = yaml_documents(relative);
    assert_eq!(docs.len(), 1, "{relative}: one document expected");
    docs.remove(0)
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, got {value:?}"))
}

fn seq_of<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: a list expected, got {value:?}"))
}

/// The port of the server's default listen address (`0.0.0.0:8080`).
fn default_port() -> u16 {
    Config::from_toml("", &HashMap::new())
        .expect("defaults")
        .listen
        .port()
}

#[test]
fn deploy_every_yaml_and_json_file_parses() {
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    let mut yaml_files = BTreeSet::new();
    for file in &files {
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match file.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                let docs = yaml_documents(&relative);
                assert!(!docs.is_empty(), "{relative}: no document");
                assert!(
                    docs.iter().all(Value::is_mapping),
                    "{relative}: every document must be a mapping"
                );
                yaml_files.insert(relative);
            }
            Some("json") => {
                let _: serde_json::Value = serde_json::from_str(&read(&relative))
                    .unwrap_or_else(|e| panic!("{relative}: {e}"));
            }
            _ => {}
        }
    }
    for expected in [
        "deploy/compose.yaml",
        "deploy/k8s/configmap.yaml",
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/kustomization.yaml",
        "deploy/k8s/pdb.yaml",
        "deploy/k8s/secret.example.yaml",
        "deploy/k8s/service.yaml",
        "deploy/monitoring/alerts.yml",
    ] {
        assert!(
            yaml_files.contains(expected),
            "{expected} missing; found {yaml_files:?}"
        );
    }
}

// ---- metrics ------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the server records, by name: `metrics::counter!/gauge!/histogram!` with a literal
/// name, or with a constant whose value is a literal (`Q::OUTCOMES_METRIC`).
fn emitted_metrics() -> BTreeMap<String, Kind> {
    let mut files = Vec::new();
    files_under(&root().join("src"), &mut files);
    let literal = Regex::new(r#"metrics::(counter|gauge|histogram)!\(\s*"([^"]+)""#).unwrap();
    let indirect =
        Regex::new(r"metrics::(counter|gauge|histogram)!\(\s*([A-Za-z_][A-Za-z0-9_:]*)").unwrap();
    let constant =
        Regex::new(r#"const\s+([A-Z][A-Z0-9_]*)\s*:\s*&(?:'static\s+)?str\s*=\s*"([^"]+)""#)
            .unwrap();
    let kind = |k: &str| match k {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        _ => Kind::Histogram,
    };
    let mut names = BTreeMap::new();
    let mut via_constant: Vec<(Kind, String)> = Vec::new();
    let mut constants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let code = crate::layers::code_lines(&std::fs::read_to_string(file).unwrap());
        for c in literal.captures_iter(&code) {
            names.insert(c[2].to_owned(), kind(&c[1]));
        }
        for c in indirect.captures_iter(&code) {
            let ident = c[2].rsplit("::").next().unwrap_or(&c[2]).to_owned();
            via_constant.push((kind(&c[1]), ident));
        }
        for c in constant.captures_iter(&code) {
            constants
                .entry(c[1].to_owned())
                .or_default()
                .push(c[2].to_owned());
        }
    }
    for (k, ident) in via_constant {
        let values = constants.get(&ident).unwrap_or_else(|| {
            panic!("a metric is named by {ident}, whose value this test cannot find in src/")
        });
        for value in values.iter().filter(|v| v.starts_with("scrm_")) {
            names.insert(value.clone(), k);
        }
    }
    names
}

/// Histograms the exporter renders with buckets (`_bucket`); the others are summaries (`quantile`).
fn bucketed_histograms() -> BTreeSet<String> {
    let matcher = Regex::new(r#"Matcher::Full\(\s*"([^"]+)""#).unwrap();
    matcher
        .captures_iter(&read("src/platform/telemetry.rs"))
        .map(|c| c[1].to_owned())
        .collect()
}

/// The series names Prometheus sees, as metrics-exporter-prometheus writes them: counters and gauges
/// as named (no `_total` is added), bucketed histograms as `_bucket`/`_sum`/`_count`, the other
/// histograms as summaries (the bare name with `quantile`, `_sum`, `_count`).
fn exported_series() -> BTreeSet<String> {
    let buckets = bucketed_histograms();
    let mut series = BTreeSet::new();
    for (name, kind) in emitted_metrics() {
        match kind {
            Kind::Counter | Kind::Gauge => {
                series.insert(name);
            }
            Kind::Histogram => {
                series.insert(format!("{name}_sum"));
                series.insert(format!("{name}_count"));
                if buckets.contains(&name) {
                    series.insert(format!("{name}_bucket"));
                } else {
                    series.insert(name);
                }
            }
        }
    }
    series
}

/// Series that Prometheus makes itself.
const FROM_PROMETHEUS: [&str; 1] = ["up"];

struct Selectors(Vec<Option<String>>);

impl ExprVisitor for Selectors {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(vs) => self.0.push(vs.name.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.name.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// The metric names an expression reads; it must parse as PromQL.
fn metric_names(expr: &str, place: &str) -> Vec<String> {
    let parsed = parse(expr).unwrap_or_else(|e| panic!("{place}: not PromQL: {e}\n{expr}"));
    let mut selectors = Selectors(Vec::new());
    walk_expr(&mut selectors, &parsed).unwrap();
    assert!(!selectors.0.is_empty(), "{place}: reads no metric: {expr}");
    selectors
        .0
        .into_iter()
        .map(|name| name.unwrap_or_else(|| panic!("{place}: a selector without a metric name")))
        .collect()
}

/// Grafana's variables replaced by what they stand for, so the query parses as PromQL.
fn without_grafana_variables(expr: &str) -> String {
    let interval = Regex::new(r"\$__(rate_interval|interval|range)").unwrap();
    let variable = Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?").unwrap();
    let expr = interval.replace_all(expr, "5m");
    variable.replace_all(&expr, ".+").into_owned()
}

fn alert_rules() -> Vec<Value> {
    let rules = yaml("deploy/monitoring/alerts.yml");
    seq_of(&rules["groups"], "groups")
        .iter()
        .flat_map(|g| seq_of(&g["rules"], "rules").to_vec())
        .collect()
}

/// `(place, expr)` of every query of the dashboard: panel targets and query variables.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).unwrap();
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            queries.push((format!("panel {:?}", panel["title"]), expr.to_owned()));
        }
    }
    let label_values = Regex::new(r"^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$").unwrap();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            let definition = variable["definition"].as_str().expect("a query variable");
            let selector = label_values
                .captures(definition)
                .unwrap_or_else(|| panic!("variable query not understood: {definition}"));
            queries.push((
                format!("variable {:?}", variable["name"]),
                selector[1].to_owned(),
            ));
        }
    }
    queries
}

#[test]
fn deploy_alerts_and_dashboard_use_only_emitted_metrics() {
    let emitted = emitted_metrics();
    // The test reads what it means to read: names from literals and from the queues' constants.
    for name in [
        "scrm_callbacks_total",
        "scrm_inbox_dead",
        "scrm_worker_events_total",
        "scrm_outbox_attempts_total",
    ] {
        assert!(
            emitted.contains_key(name),
            "{name} not found in src/: {emitted:?}"
        );
    }
    let exported = exported_series();
    let known = |name: &str| exported.contains(name) || FROM_PROMETHEUS.contains(&name);

    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    let rules = alert_rules();
    let mut alert_names = BTreeSet::new();
    for rule in &rules {
        let name = str_of(&rule["alert"], "alert").to_owned();
        assert!(alert_names.insert(name.clone()), "alert {name} twice");
        let severity = str_of(&rule["labels"]["severity"], "severity");
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity}"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: no summary"
        );
        for metric in metric_names(str_of(&rule["expr"], "expr"), &name) {
            if !known(&metric) {
                unknown.push(format!("alert {name}: {metric}"));
            }
            used.insert(metric);
        }
    }
    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "the dashboard has {} queries",
        queries.len()
    );
    for (place, expr) in &queries {
        for metric in metric_names(&without_grafana_variables(expr), place) {
            if !known(&metric) {
                unknown.push(format!("dashboard {place}: {metric}"));
            }
            used.insert(metric);
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the server does not export under these names:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    // What loses data first has a rule: the archive against WeCom's retention, dead letters,
    // refused callbacks, the outbox, instances.
    for needed in [
        "scrm_archive_newest_message_age_seconds",
        "scrm_inbox_dead",
        "scrm_callbacks_total",
        "scrm_outbox_lag_seconds",
        "scrm_outbox_dead",
        "up",
    ] {
        let in_rules = rules.iter().any(|r| {
            metric_names(str_of(&r["expr"], "expr"), "rule")
                .iter()
                .any(|m| m == needed)
        });
        assert!(in_rules, "no alert rule reads {needed}");
    }
    assert!(
        used.contains("scrm_callback_duration_seconds_bucket"),
        "latency panels read the bucketed histogram"
    );
}

#[test]
fn deploy_dashboard_is_an_importable_grafana_dashboard() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).unwrap();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().expect("gridPos"));
        assert!(x + w <= 24, "panel {id} wider than the grid");
        for row in y..y + h {
            for column in x..x + w {
                assert!(cells.insert((row, column)), "panel {id} overlaps another");
            }
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert!(
                target["refId"].is_string(),
                "panel {id}: a target without refId"
            );
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
        "panels refer to ${{datasource}}"
    );
}

// ---- containers ----------------------------------------------------------------------------------

/// A Dockerfile's instructions (continuation lines joined), split into stages at `FROM`.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read("deploy/Dockerfile");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || (trimmed.starts_with('#') && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
        let instruction = (word.to_ascii_uppercase(), rest.trim().to_owned());
        if instruction.0 == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(instruction);
        }
        pending.clear();
    }
    stages
}

#[test]
fn deploy_dockerfile_builds_locked_and_runs_as_non_root() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let build = &stages[0];
    let cargo = build
        .iter()
        .find(|(i, args)| i == "RUN" && args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    for flag in ["--release", "--locked", "--bin scrm"] {
        assert!(cargo.1.contains(flag), "cargo build without {flag}");
    }
    let runtime = stages.last().unwrap();
    let get = |name: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = *get("USER").last().expect("the runtime stage sets a USER");
    let account = user.split(':').next().unwrap_or(user);
    assert!(
        !["root", "0", ""].contains(&account),
        "the runtime stage runs as {user}"
    );
    // The runtime stage carries the binary only: copied from the build stage, nothing compiled.
    assert!(get("COPY").iter().all(|c| c.contains("--from=")));
    assert!(!get("RUN").iter().any(|r| r.contains("cargo")));
    let port = default_port().to_string();
    assert!(
        get("EXPOSE")
            .iter()
            .any(|e| e.split_whitespace().any(|p| p == port))
    );
    let health = get("HEALTHCHECK").concat();
    assert!(health.contains("/healthz") || health.contains("/readyz"));
    assert!(health.contains(&port), "the HEALTHCHECK probes {port}");
    assert!(
        !health.contains("curl") && !health.contains("wget"),
        "the runtime image has neither"
    );
    assert!(get("ENTRYPOINT").concat().contains("/scrm"));
    assert_eq!(get("CMD"), vec![r#"["serve"]"#]);

    // The build context keeps what `cargo build` reads.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "wecom-sdk",
        "migrations",
        "templates",
        "assets",
        "fixtures",
        "benches",
    ] {
        assert!(
            !ignored.iter().any(|i| i == needed),
            ".dockerignore drops {needed}"
        );
    }
    assert!(ignored.iter().any(|i| i.ends_with("target")));
}

#[test]
fn deploy_compose_runs_two_instances_behind_nginx() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    let name = |k: &Value| k.as_str().unwrap_or_default().to_owned();
    let apps: Vec<String> = services
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"] == "deploy/Dockerfile")
        .map(|(k, _)| name(k))
        .collect();
    assert_eq!(apps, ["app1", "app2"]);
    let image = |service: &str| str_of(&compose["services"][service]["image"], service).to_owned();
    assert!(image("postgres").starts_with("postgres:16"));
    assert!(image("redis").starts_with("redis:7"));
    for service in ["postgres", "redis"] {
        assert!(
            compose["services"][service]["healthcheck"]["test"].is_sequence(),
            "{service} has a healthcheck"
        );
    }
    for app in &apps {
        let s = &compose["services"][app.as_str()];
        let env = &s["environment"];
        assert!(str_of(&env["SCRM_DATABASE_URL"], "database").starts_with("postgres://"));
        assert!(str_of(&env["SCRM_REDIS_URL"], "redis").starts_with("redis://"));
        assert!(str_of(&env["SCRM_CONFIG"], "config").ends_with(".toml"));
        for dependency in ["postgres", "redis"] {
            assert_eq!(
                s["depends_on"][dependency]["condition"], "service_healthy",
                "{app} waits for {dependency}"
            );
        }
        // The config file is mounted, never baked in; secrets come from the environment (.env).
        let mounts = seq_of(&s["volumes"], "volumes");
        assert!(
            mounts
                .iter()
                .any(|m| m["target"].as_str() == env["SCRM_CONFIG"].as_str())
        );
        for var in ["SCRM_DATABASE_URL", "SCRM_REDIS_URL", "SCRM_METRICS_TOKEN"] {
            assert!(
                str_of(&env[var], var).contains("${"),
                "{var} comes from the environment"
            );
        }
    }
    let nginx = &compose["services"]["nginx"];
    assert!(
        seq_of(&nginx["volumes"], "nginx volumes")
            .iter()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with("./nginx.conf:")))
    );

    let conf = read("deploy/nginx.conf");
    let port = default_port();
    for app in &apps {
        assert!(
            conf.contains(&format!("server {app}:{port} ")),
            "nginx.conf: upstream {app}:{port}"
        );
    }
    for header in ["X-Forwarded-For", "X-Real-IP"] {
        assert!(conf.contains(&format!("proxy_set_header {header} ")));
    }
    // The callback location refuses what the server would refuse, no less.
    let callback = conf
        .split("location /wecom/callback/")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a location for the callbacks");
    let size = Regex::new(r"client_max_body_size\s+(\d+)([kKmM]?);")
        .unwrap()
        .captures(callback)
        .expect("client_max_body_size in the callback location");
    let unit = match &size[2] {
        "k" | "K" => 1024,
        "m" | "M" => 1024 * 1024,
        _ => 1,
    };
    let bytes: usize = size[1].parse::<usize>().unwrap() * unit;
    assert_eq!(bytes, CallbackSettings::default().max_body_bytes);
}

// ---- Kubernetes ------------------------------------------------------------------------------------

#[test]
fn deploy_k8s_deployment_probes_security_and_rollout() {
    let deployment = yaml("deploy/k8s/deployment.yaml");
    assert_eq!(deployment["kind"], "Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().is_some_and(|r| r >= 2));
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|u| u > 0)
    );
    let containers = seq_of(&pod["containers"], "containers");
    let scrm = containers
        .iter()
        .find(|c| c["name"] == "scrm")
        .expect("a container named scrm");
    let port = u64::from(default_port());
    assert_eq!(scrm["ports"][0]["containerPort"].as_u64(), Some(port));
    let probe_path = |probe: &str| str_of(&scrm[probe]["httpGet"]["path"], probe).to_owned();
    assert_eq!(probe_path("readinessProbe"), "/readyz");
    assert_eq!(probe_path("livenessProbe"), "/healthz");
    assert!(scrm["startupProbe"]["httpGet"]["path"].is_string());
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            scrm[probe]["httpGet"]["port"], scrm["ports"][0]["name"],
            "{probe} on the server's port"
        );
    }
    for c in containers
        .iter()
        .chain(seq_of(&pod["initContainers"], "initContainers"))
    {
        let security = &c["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert!(c["resources"]["requests"].is_mapping());
    }

    // Secrets reach the server as variables it reads, from keys the Secret has.
    let secret = yaml("deploy/k8s/secret.example.yaml");
    let mut variables = BTreeMap::new();
    for var in seq_of(&scrm["env"], "env") {
        let name = str_of(&var["name"], "env name").to_owned();
        if let Some(key) = var["valueFrom"]["secretKeyRef"]["key"].as_str() {
            assert_eq!(
                var["valueFrom"]["secretKeyRef"]["name"],
                secret["metadata"]["name"]
            );
            assert!(
                secret["stringData"][key].is_string(),
                "the Secret has no {key}"
            );
        }
        variables.insert(name, var.clone());
    }
    for name in [
        "SCRM_CONFIG",
        "SCRM_DATABASE_URL",
        "SCRM_REDIS_URL",
        "SCRM_METRICS_TOKEN",
    ] {
        assert!(variables.contains_key(name), "{name} not set");
    }
    // The init container writes the file SCRM_CONFIG names.
    let config_path = str_of(&variables["SCRM_CONFIG"]["value"], "SCRM_CONFIG");
    let init = seq_of(&pod["initContainers"], "initContainers")
        .iter()
        .map(|c| format!("{:?}", c["command"]))
        .collect::<String>();
    assert!(init.contains(&format!("> {config_path}")), "{init}");

    let service = yaml("deploy/k8s/service.yaml");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        scrm["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["selector"],
        spec["template"]["metadata"]["labels"]
    );
    let pdb = yaml("deploy/k8s/pdb.yaml");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], spec["selector"]);

    // kustomize applies every manifest but the example Secret, and only files that exist.
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    let listed: BTreeSet<String> = seq_of(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_owned())
        .collect();
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("deploy/k8s")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if file.ends_with(".yaml") && file != "kustomization.yaml" {
            present.insert(file);
        }
    }
    present.remove("secret.example.yaml");
    assert_eq!(listed, present);
}

/// The Kubernetes config as the pod assembles it: the ConfigMap's scrm.toml, then the Secret's
/// corps.toml; and the Secret's variables.
fn k8s_config(replace: &dyn Fn(&str, &str) -> String) -> (String, HashMap<String, String>) {
    let configmap = yaml("deploy/k8s/configmap.yaml");
    let secret = yaml("deploy/k8s/secret.example.yaml");
    let data = &secret["stringData"];
    let corps: String = str_of(&data["corps.toml"], "corps.toml")
        .lines()
        .map(|line| match line.split_once(" = ") {
            Some((key, value)) if !line.trim_start().starts_with('#') => {
                format!("{key} = {}\n", replace(key.trim(), value))
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let text = format!(
        "{}{corps}",
        str_of(&configmap["data"]["scrm.toml"], "scrm.toml")
    );
    let mut env = HashMap::new();
    for (var, key) in [
        ("SCRM_DATABASE_URL", "database-url"),
        ("SCRM_REDIS_URL", "redis-url"),
        ("SCRM_METRICS_TOKEN", "metrics-token"),
    ] {
        let value = str_of(&data[key], key);
        env.insert(var.to_owned(), replace(var, value));
    }
    (text, env)
}

fn load_file(text: &str, env: &HashMap<String, String>) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scrm.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), env).map_err(|e| e.to_string())
}

#[test]
fn deploy_k8s_config_loads_once_the_placeholders_are_replaced() {
    // As shipped, the placeholders stop the server: nobody runs the example by mistake.
    let (text, env) = k8s_config(&|_, value| value.to_owned());
    let refused = load_file(&text, &env).unwrap_err();
    assert!(refused.contains("metrics.token"), "{refused}");
    let (text, env) = k8s_config(&|key, value| match key {
        "SCRM_METRICS_TOKEN" => "0123456789abcdef0123".to_owned(),
        _ => value.to_owned(),
    });
    let refused = load_file(&text, &env).unwrap_err();
    assert!(refused.contains("corps[0].apps[0].token"), "{refused}");

    // Filled in, it is a valid configuration with the Secret's URLs in force.
    let (text, env) = k8s_config(&|key, value| {
        let quoted = |s: &str| format!("\"{s}\"");
        match key {
            "SCRM_METRICS_TOKEN" => "0123456789abcdef0123".to_owned(),
            "corp_id" => quoted("ww0123456789abcdef"),
            "token" => quoted("Tok3nOfTheDeployTest"),
            "encoding_aes_key" => quoted("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"),
            "secret" => quoted("the-app-secret"),
            _ => value.to_owned(),
        }
    });
    let config = load_file(&text, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.corps.len(), 1);
    assert_eq!(config.listen.port(), default_port());
    assert!(
        config
            .redis_url
            .as_deref()
            .is_some_and(|u| u.starts_with("redis://"))
    );
    assert!(config.effective_database_url().starts_with("postgres://"));
    assert!(config.metrics.token.is_some());
}

// ---- the example config ------------------------------------------------------------------------------

/// `struct Name { field: Type, … }` of a Rust file: each struct's fields with their types.
fn struct_fields(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let head = Regex::new(r"(?m)^\s*(?:pub\s+)?struct\s+(\w+)\s*\{").unwrap();
    let field = Regex::new(r"^(?:pub\s+)?(\w+)\s*:\s*(.+?),?$").unwrap();
    let mut structs = BTreeMap::new();
    for c in head.captures_iter(text) {
        let start = c.get(0).unwrap().end();
        let end = start + text[start..].find("\n}").expect("end of struct");
        let fields = text[start..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
            .filter_map(|l| field.captures(l))
            .map(|f| (f[1].to_owned(), f[2].to_owned()))
            .collect();
        structs.insert(c[1].to_owned(), fields);
    }
    structs
}

/// Every key path the config file may hold (`callback.max_batch`, `corps.apps.token`, …), and every
/// table path (`archive.worker_env`, `corps.archive`), from the structs `RawConfig` deserializes.
fn config_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let structs = struct_fields(&read("src/platform/config.rs"));
    let mut keys = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut stack = vec![(String::new(), "RawConfig".to_owned())];
    while let Some((prefix, name)) = stack.pop() {
        for (field, ty) in structs.get(&name).expect("a config struct") {
            let path = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            let inner = ty
                .trim_start_matches("Option<")
                .trim_start_matches("Vec<")
                .trim_end_matches('>');
            let inner = inner.rsplit("::").next().unwrap_or(inner);
            if structs.contains_key(inner) {
                tables.insert(path.clone());
                stack.push((path, inner.to_owned()));
            } else {
                if ty.contains("Map<") {
                    tables.insert(path.clone());
                }
                keys.insert(path);
            }
        }
    }
    (keys, tables)
}

/// The keys an example file shows, set or commented out, by path; inline tables' keys too
/// (`corps.archive.keys.version`). Keys of `[archive.worker_env]` are free names, left out.
fn example_keys(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let header = Regex::new(r"^#?\s*\[\[?([a-z_.]+)\]\]?").unwrap();
    let key = Regex::new(r"^(#\s*)?([a-z_]+)\s*=\s*(.*)$").unwrap();
    let inline = Regex::new(r"([a-z_]+)\s*=").unwrap();
    let mut keys = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(c) = header.captures(line) {
            section = c[1].to_owned();
            tables.insert(section.clone());
            continue;
        }
        let Some(c) = key.captures(line) else {
            continue;
        };
        if section == "archive.worker_env" {
            continue;
        }
        let path = if section.is_empty() {
            c[2].to_owned()
        } else {
            format!("{section}.{}", &c[2])
        };
        // The value without a trailing comment (no value here holds a '#').
        let value = c[3].split('#').next().unwrap_or_default();
        for table in value.split('{').skip(1) {
            let body = table.split('}').next().unwrap_or_default();
            for k in inline.captures_iter(body) {
                keys.insert(format!("{path}.{}", &k[1]));
            }
        }
        keys.insert(path);
    }
    (keys, tables)
}

#[test]
fn deploy_example_config_lists_every_option_at_its_default() {
    let path = root().join("deploy/scrm.example.toml");
    let example = Config::load(Some(&path), &HashMap::new())
        .unwrap_or_else(|e| panic!("deploy/scrm.example.toml: {e}"));
    // Each value set in the example is the default, so the file documents the defaults.
    let defaults = Config::from_toml("", &HashMap::new()).unwrap();
    let sections = |c: &Config| {
        [
            ("listen", format!("{:?}", c.listen)),
            ("data_dir", format!("{:?}", c.data_dir)),
            ("database_url", format!("{:?}", c.database_url)),
            ("redis_url", format!("{:?}", c.redis_url)),
            ("log", format!("{:?} {:?}", c.log_format, c.log_level)),
            ("callback", format!("{:?}", c.callback)),
            ("wecom", format!("{:?}", c.wecom)),
            ("worker", format!("{:?}", c.worker)),
            ("sync", format!("{:?}", c.sync)),
            ("outbox", format!("{:?}", c.outbox)),
            ("reminders", format!("{:?}", c.reminders)),
            ("alerts", format!("{:?}", c.alerts)),
            ("archive", format!("{:?}", c.archive)),
            ("transfers", format!("{:?}", c.transfers)),
            ("http", format!("{:?}", c.http)),
            ("metrics", format!("{:?}", c.metrics)),
            ("sidebar", format!("{:?}", c.sidebar)),
            ("console", format!("{:?}", c.console)),
        ]
    };
    for ((name, shown), (_, default)) in sections(&example).iter().zip(sections(&defaults).iter()) {
        assert_eq!(
            shown, default,
            "[{name}] of the example differs from the default"
        );
    }
    assert_eq!(example.corps.len(), 1, "the example shows a corp");

    let (src_keys, src_tables) = config_keys();
    assert!(src_keys.len() > 60, "config keys found: {src_keys:?}");
    let (shown, shown_tables) = example_keys(&read("deploy/scrm.example.toml"));
    let missing: Vec<&String> = src_keys
        .iter()
        .filter(|k| !shown.contains(*k) && !shown_tables.contains(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/scrm.example.toml does not show {missing:?}"
    );
    let strange: Vec<&String> = shown
        .iter()
        .filter(|k| !src_keys.contains(*k) && !src_tables.contains(*k))
        .collect();
    assert!(
        strange.is_empty(),
        "deploy/scrm.example.toml shows keys the server does not have: {strange:?}"
    );
    let strange_tables: Vec<&String> = shown_tables.difference(&src_tables).collect();
    assert!(
        strange_tables.is_empty(),
        "unknown tables: {strange_tables:?}"
    );

    let emulator = root().join("deploy/scrm.emulator.toml");
    Config::load(Some(&emulator), &HashMap::new())
        .unwrap_or_else(|e| panic!("deploy/scrm.emulator.toml: {e}"));
}

// ---- systemd -----------------------------------------------------------------------------------------

#[test]
fn deploy_systemd_unit_serves_hardened() {
    let unit = read("deploy/scrm.service");
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .collect()
    };
    let start = get("ExecStart");
    assert_eq!(start.len(), 1);
    assert!(start[0].ends_with("/scrm serve"), "{}", start[0]);
    for (key, value) in [
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "true"),
        ("Restart", "on-failure"),
        ("User", "scrm"),
    ] {
        assert_eq!(get(key), vec![value], "{key}");
    }
    let working = get("WorkingDirectory");
    let writable = get("ReadWritePaths");
    assert!(
        working.iter().all(|w| writable
            .iter()
            .any(|p| p.split_whitespace().any(|p| p == *w))),
        "the working directory (data_dir \"data\" lives there) must be writable"
    );
    let files: usize = get("LimitNOFILE")
        .first()
        .and_then(|n| n.parse().ok())
        .expect("LimitNOFILE");
    assert!(
        files > HttpSettings::default().max_connections,
        "LimitNOFILE must exceed [http] max_connections"
    );
}
