//! The Kubernetes side (k8s/): every manifest and config parses; Prometheus' and
//! Alertmanager's own checkers accept their configs; and the manifests name the ports, paths,
//! labels, metric names and rules the binary really uses, read from the binary itself
//! (`--help`, a running deploywatch, `RuleSet::embedded()`, a live `/metrics`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use hyper::Method;
use serde_json::{json, Value};

use deploywatch::rules::RuleSet;

use crate::harness::*;
use crate::sim::{register_deploy, Driver, Effect, Feed, Service, Signal, Sim, Who, EPOCH, MIN};

/// The directory under test.
pub fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The YAML documents of a file (multi-document files split on `---`).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&read(path))
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// One YAML document.
pub fn yaml(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

/// Every Kubernetes object (a document with `apiVersion` and `kind`) in k8s/*.yaml.
fn objects() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in files() {
        if path.extension().is_some_and(|e| e == "yaml") {
            for doc in yaml_docs(&path) {
                if doc["apiVersion"].is_string() && doc["kind"].is_string() {
                    let file = path.file_name().unwrap().to_string_lossy().into_owned();
                    out.push((file, doc));
                }
            }
        }
    }
    out
}

fn object(kind: &str, name: &str) -> Value {
    objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == kind && o["metadata"]["name"] == name)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("k8s/ has no {kind} {name}"))
}

fn files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("listing k8s/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// The default port of `--web.listen-address`, as `deploywatch --help` states it.
fn default_port() -> u16 {
    let out = Command::new(env!("CARGO_BIN_EXE_deploywatch"))
        .arg("--help")
        .output()
        .expect("running deploywatch --help");
    let help = String::from_utf8_lossy(&out.stdout);
    // The flag's entry: its line and, when clap puts help on the next lines, those up to
    // the next flag.
    let lines: Vec<&str> = help.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("--web.listen-address"))
        .unwrap_or_else(|| panic!("--help has no --web.listen-address:\n{help}"));
    let entry: Vec<&str> = std::iter::once(lines[at])
        .chain(
            lines[at + 1..]
                .iter()
                .copied()
                .take_while(|l| !l.trim_start().starts_with('-')),
        )
        .collect();
    let line = entry.join(" ");
    let default = line
        .split("[default: ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or_else(|| panic!("no default in {line:?}"));
    default
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {default:?}"))
}

/// Metric names the default rules select.
fn rule_metric_names() -> BTreeSet<String> {
    let rules = RuleSet::embedded();
    let mut names = BTreeSet::new();
    for r in &rules.rules {
        for (_, sel) in r.signal.selectors() {
            let name = sel
                .metric_name()
                .unwrap_or_else(|| panic!("rule {}: selector {sel} names no metric", r.name));
            names.insert(name.to_string());
        }
    }
    assert!(names.len() >= 5, "{names:?}");
    names
}

/// The `keep` rules on `__name__` of a list of (write) relabel configs, snake or camel case.
fn name_keep_regexes(relabels: &Value) -> Vec<String> {
    relabels
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "keep")
        .filter(|r| {
            let src = if r["source_labels"].is_null() {
                &r["sourceLabels"]
            } else {
                &r["source_labels"]
            };
            *src == json!(["__name__"])
        })
        .map(|r| r["regex"].as_str().expect("a regex").to_string())
        .collect()
}

/// Whether Prometheus' (fully anchored) relabel regex matches `value`.
fn relabel_matches(regex: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{regex})$"))
        .unwrap_or_else(|e| panic!("bad relabel regex {regex:?}: {e}"))
        .is_match(value)
}

fn check_forwards_rule_metrics(what: &str, relabels: &Value) {
    let regexes = name_keep_regexes(relabels);
    assert_eq!(
        regexes.len(),
        1,
        "{what}: expected one keep rule on __name__ in {relabels}"
    );
    for name in rule_metric_names() {
        assert!(
            relabel_matches(&regexes[0], &name),
            "{what}: the relabel regex {:?} drops {name}, which the default rules select",
            regexes[0]
        );
    }
    assert!(!relabel_matches(&regexes[0], "go_goroutines"), "{what}");
}

#[test]
fn every_file_in_k8s_parses_and_the_kustomization_names_existing_files() {
    let files = files();
    assert!(files.len() >= 8, "{files:?}");
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                let docs = yaml_docs(path);
                assert!(!docs.is_empty(), "{}: no documents", path.display());
                for d in &docs {
                    assert!(d.is_object(), "{}: a document is not a map", path.display());
                }
            }
            Some("json") => {
                serde_json::from_str::<Value>(&read(path))
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            }
            _ => panic!("{}: neither YAML nor JSON", path.display()),
        }
    }
    // Every object is named and labelled as deploywatch's manifests are.
    for (file, o) in objects() {
        if o["kind"] == "Kustomization" {
            continue;
        }
        assert!(o["metadata"]["name"].is_string(), "{file}: unnamed object");
    }
    let k = yaml(&k8s_dir().join("kustomization.yaml"));
    assert_eq!(k["kind"], "Kustomization");
    let mut named: Vec<String> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        for f in g["files"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            named.push(f.rsplit('=').next().unwrap().to_string());
        }
    }
    for f in &named {
        assert!(
            !f.contains("..") && k8s_dir().join(f).is_file(),
            "kustomization.yaml names {f}, not a file inside k8s/"
        );
    }
    for f in [
        "configmap.yaml",
        "deploywatch.yaml",
        "grafana-dashboard.json",
    ] {
        assert!(named.iter().any(|n| n == f), "kustomization.yaml lacks {f}");
    }
}

/// Writes `config` for promtool, with each `kubernetes_sd_configs` (not compiled into
/// Debian's Prometheus) replaced by an empty `static_configs`, after checking its roles.
fn promtool_check(name: &str, mut config: Value) {
    for sc in config["scrape_configs"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let sc = sc.as_object_mut().unwrap();
        if let Some(k) = sc.remove("kubernetes_sd_configs") {
            for sd in k.as_array().expect("kubernetes_sd_configs is a list") {
                let role = sd["role"].as_str().unwrap_or("");
                assert!(
                    [
                        "node",
                        "service",
                        "pod",
                        "endpoints",
                        "endpointslice",
                        "ingress"
                    ]
                    .contains(&role),
                    "{name}: kubernetes_sd_configs role {role:?}"
                );
            }
            sc.insert("static_configs".into(), json!([{"targets": []}]));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let out = Command::new("/usr/bin/promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .expect(
            "running /usr/bin/promtool (Debian's prometheus package; bash tests/run installs it)",
        );
    assert!(
        out.status.success(),
        "promtool check config {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_prometheus_configs_and_they_forward_what_the_rules_judge() {
    let prom = yaml(&k8s_dir().join("prometheus.yml"));
    promtool_check("prometheus.yml", prom.clone());
    let shards = yaml(&k8s_dir().join("prometheus-shards.yml"));
    promtool_check("prometheus-shards.yml", shards.clone());

    let port = default_port();
    let rw = prom["remote_write"].as_array().expect("remote_write");
    assert_eq!(rw.len(), 1);
    assert_eq!(
        rw[0]["url"],
        format!("http://deploywatch.monitoring:{port}/api/v1/write")
    );
    check_forwards_rule_metrics("prometheus.yml", &rw[0]["write_relabel_configs"]);

    // The application scrape job gives series the labels deploywatch groups by.
    let pods = &prom["scrape_configs"][0]["relabel_configs"];
    for label in ["job", "version"] {
        assert!(
            pods.as_array()
                .unwrap()
                .iter()
                .any(|r| r["target_label"] == label),
            "prometheus.yml's pod job does not set {label}"
        );
    }

    // Shards: one remote_write per shard, hashmod on the service label, one residue each.
    let rw = shards["remote_write"].as_array().expect("remote_write");
    let n = rw.len();
    assert!(n >= 2);
    for (i, w) in rw.iter().enumerate() {
        let relabels = &w["write_relabel_configs"];
        check_forwards_rule_metrics(&format!("prometheus-shards.yml #{i}"), relabels);
        let hashmod = relabels
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["action"] == "hashmod")
            .expect("a hashmod rule");
        assert_eq!(hashmod["source_labels"], json!(["job"]));
        assert_eq!(hashmod["modulus"], json!(n));
        let tmp = hashmod["target_label"].as_str().unwrap();
        assert!(relabels
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "keep"
                && r["source_labels"] == json!([tmp])
                && r["regex"] == json!(i.to_string())));
        assert!(w["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port}/api/v1/write")));
    }

    // The Prometheus Operator's remoteWrite: the same URL and filter.
    let p = object("Prometheus", "k8s");
    let w = &p["spec"]["remoteWrite"][0];
    assert_eq!(
        w["url"],
        format!("http://deploywatch.monitoring:{port}/api/v1/write")
    );
    check_forwards_rule_metrics("prometheus-operator.yaml", &w["writeRelabelConfigs"]);
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_it_matches_the_example() {
    let k8s = k8s_dir().join("alertmanager.yml");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alertmanager.yml");
    for path in [&k8s, &example] {
        let out = Command::new("/usr/bin/amtool")
            .arg("check-config")
            .arg(path)
            .output()
            .expect("running /usr/bin/amtool (Debian's prometheus-alertmanager package)");
        assert!(
            out.status.success(),
            "amtool check-config {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (am, ex) = (yaml(&k8s), yaml(&example));
    assert_eq!(
        am, ex,
        "k8s/alertmanager.yml and examples/alertmanager.yml differ in substance: keep them equal"
    );

    // The route: rollback to a webhook and Slack, warnings to Slack only, grouped by deploy.
    let route = &am["route"];
    let group_by: BTreeSet<&str> = route["group_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(group_by.contains("service") && group_by.contains("deploy_id"));
    let receiver = |name: &str| -> Value {
        am["receivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no receiver {name}"))
    };
    let routed = |matcher: &str| -> Value {
        let r = route["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["matchers"].as_array().unwrap().iter().any(|m| {
                    m.as_str().unwrap().replace([' ', '"'], "") == matcher.replace('"', "")
                })
            })
            .unwrap_or_else(|| panic!("no route matching {matcher}"));
        receiver(r["receiver"].as_str().unwrap())
    };
    let rollback = routed("action=\"rollback\"");
    assert!(rollback["webhook_configs"].is_array() && rollback["slack_configs"].is_array());
    let warning = routed("severity=\"warning\"");
    assert!(warning["slack_configs"].is_array() && warning["webhook_configs"].is_null());
}

/// The deploywatch container of a pod template.
fn deploywatch_container(spec: &Value) -> Value {
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "deploywatch")
        .cloned()
        .expect("a container named deploywatch")
}

fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    container["args"]
        .as_array()?
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix(&format!("{flag}=")))
}

/// Kubernetes quantity in bytes (`512Mi`, `1Gi`).
fn bytes(q: &str) -> f64 {
    for (suffix, m) in [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
    ] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * m;
        }
    }
    q.parse().unwrap()
}

#[test]
fn manifests_name_the_ports_paths_labels_and_rules_deploywatch_uses() {
    let port = default_port();
    assert_eq!(port, 10997);
    let namespace = yaml(&k8s_dir().join("kustomization.yaml"))["namespace"]
        .as_str()
        .expect("kustomization namespace")
        .to_string();

    // Service: port `http` = the default port, selecting the Deployment's pods.
    let svc = object("Service", "deploywatch");
    let deployment = object("Deployment", "deploywatch");
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(
        (sp["name"].as_str(), sp["port"].as_u64()),
        (Some("http"), Some(port as u64))
    );
    assert_eq!(sp["targetPort"], "http");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Service selector {k}");
    }
    for (k, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "Deployment selector {k}");
    }
    let base = format!(
        "http://{}.{namespace}:{port}",
        svc["metadata"]["name"].as_str().unwrap()
    );

    // The deploywatch container, in the Deployment and in the sidecar alternative.
    let config_map = object("ConfigMap", "deploywatch-config");
    let sidecar = object("StatefulSet", "prometheus");
    let mut config_path = String::new();
    for (what, pod) in [
        ("deploywatch.yaml", &deployment["spec"]["template"]["spec"]),
        (
            "prometheus-sidecar.yaml",
            &sidecar["spec"]["template"]["spec"],
        ),
    ] {
        let c = deploywatch_container(pod);
        let p = &c["ports"][0];
        assert_eq!(
            (p["name"].as_str(), p["containerPort"].as_u64()),
            (Some("http"), Some(port as u64)),
            "{what}"
        );
        if let Some(listen) = arg(&c, "--web.listen-address") {
            assert!(listen.ends_with(&format!(":{port}")), "{what}: {listen}");
        }
        for (probe, path) in [
            ("livenessProbe", "/-/healthy"),
            ("readinessProbe", "/-/ready"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{what} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{what} {probe}");
        }
        // --config.file lies in the ConfigMap's mount; --storage.path in a writable volume.
        let mount_of = |file: &str| -> Value {
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
                .cloned()
                .unwrap_or_else(|| panic!("{what}: {file} is in no volume mount"))
        };
        let config = arg(&c, "--config.file").expect("--config.file");
        let m = mount_of(config);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        assert_eq!(volume["configMap"]["name"], "deploywatch-config", "{what}");
        let key = &config[m["mountPath"].as_str().unwrap().len() + 1..];
        assert!(
            config_map["data"][key].is_string(),
            "{what}: ConfigMap has no {key}"
        );
        config_path = config.to_string();
        let storage = arg(&c, "--storage.path").expect("--storage.path");
        assert_ne!(mount_of(storage)["readOnly"], true, "{what}");
        // Memory sized by the formula in the manifest and docs/scaling.md.
        let cfg: Value = serde_saphyr::from_str(config_map["data"][key].as_str().unwrap()).unwrap();
        let series = cfg["limits"]["max_active_series"].as_f64().unwrap();
        let per_series = 160.0 + 1.3 * (2.0 * 3600.0 / 15.0) + 250.0 + 50.0;
        let need = series * per_series + 64.0 * 1024.0 * 1024.0;
        let request = bytes(c["resources"]["requests"]["memory"].as_str().unwrap());
        let limit = bytes(c["resources"]["limits"]["memory"].as_str().unwrap());
        assert!(
            request >= need && limit >= request,
            "{what}: {request} < {need}"
        );
    }

    // The ConfigMap: default.rules.yml is rules/default.yml verbatim, and the config loads it.
    let rules_text = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/default.yml"));
    let data = config_map["data"].as_object().unwrap();
    let rule_keys: Vec<&String> = data.keys().filter(|k| k.ends_with(".rules.yml")).collect();
    assert_eq!(rule_keys.len(), 1, "{rule_keys:?}");
    assert!(
        data[rule_keys[0]].as_str() == Some(rules_text.as_str()),
        "k8s/configmap.yaml's {} differs from rules/default.yml: copy it over",
        rule_keys[0]
    );
    let config_key = config_path.rsplit('/').next().unwrap();
    let files: Vec<(&str, &str)> = data
        .iter()
        .filter(|(k, _)| k.as_str() != config_key)
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    let dw = Deploywatch::start_with_files(data[config_key].as_str().unwrap(), &files);

    // A series of every metric the rules select: every rule of the embedded set matches.
    let t = now_ms();
    let all: Vec<_> = rule_metric_names()
        .iter()
        .map(|m| {
            let mut l = vec![("__name__", m.as_str()), ("job", "k8s"), ("version", "v1")];
            l.push(("instance", "10.0.0.1:8080"));
            if m.ends_with("_bucket") {
                l.push(("le", "+Inf"));
            }
            if m == "http_requests_total" {
                l.push(("code", "500"));
            }
            series(&l, &[(t, 1.0)])
        })
        .collect();
    assert_eq!(dw.push_v1(&write_request(all)).0, 204);
    let s = dw.get_json("/api/v1/services?service=k8s");
    let matched: BTreeMap<String, u64> = service(&s, "k8s").expect("service k8s")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().into(),
                r["matched_series"].as_u64().unwrap(),
            )
        })
        .collect();
    let embedded: BTreeSet<String> = RuleSet::embedded()
        .rules
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(
        matched.keys().cloned().collect::<BTreeSet<_>>(),
        embedded,
        "{s}"
    );
    assert!(
        matched.values().all(|&n| n > 0),
        "a rule matches nothing: {matched:?}"
    );

    // Probe paths answer 200.
    for path in ["/-/healthy", "/-/ready"] {
        let r = request(Method::GET, &format!("{}{path}", dw.url()), &[], vec![]);
        assert_eq!(r.status, 200, "{path}");
    }

    // ServiceMonitor: selects the Service, scrapes port http at a path that serves metrics.
    let sm = object("ServiceMonitor", "deploywatch");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], "http");
    let path = ep["path"].as_str().unwrap();
    assert!(dw.metrics_text().contains("deploywatch_build_info"));
    assert_eq!(path, "/metrics");

    // Argo Rollouts: the web provider's URL is the verdict route, its answer has `verdict`.
    let at = object("AnalysisTemplate", "deploywatch");
    let m = &at["spec"]["metrics"][0];
    let web = &m["provider"]["web"];
    let url = web["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/")), "{url} is not {base}");
    assert!(url.contains("service={{args.service}}"), "{url}");
    // Issue 16: the analysis asks about the version this rollout brings.
    assert!(url.contains("version={{args.version}}"), "{url}");
    let args: Vec<&str> = at["spec"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(args, ["service", "version"]);
    let local = url
        .replacen(&base, &dw.url(), 1)
        .replace("{{args.service}}", "k8s")
        .replace("{{args.version}}", "v2");
    let r = request(
        Method::GET,
        &local,
        &[("accept", "application/json")],
        vec![],
    );
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    let body: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert!(body["verdict"].is_string(), "{body}");
    assert_eq!(body["version"], "v2", "{body}");
    assert!(["{$}", "{$.verdict}"].contains(&web["jsonPath"].as_str().unwrap()));
    assert!(web["timeoutSeconds"].as_u64().is_some_and(|t| t > 0));
    assert!(m["interval"].is_string() && m["count"].is_u64() && m["failureLimit"].is_u64());
    let conditions = format!("{} {}", m["successCondition"], m["failureCondition"]);
    for v in ["pass", "pause", "rollback"] {
        assert!(conditions.contains(&format!("\\\"{v}\\\"")), "{conditions}");
    }
    assert!(m["successCondition"].as_str().unwrap().contains("\"pass\""));

    // Flagger: each webhook's URL is the route for its type, and answers Flagger's POST.
    let canary = object("Canary", "checkout");
    let hooks = canary["spec"]["analysis"]["webhooks"].as_array().unwrap();
    let want = [
        ("rollout", "/api/v1/gate", 200),
        ("confirm-promotion", "/api/v1/gate?require=pass", 412),
        ("rollback", "/api/v1/rollback-hook", 409),
    ];
    for (kind, path, status) in want {
        let h = hooks
            .iter()
            .find(|h| h["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} webhook"));
        assert_eq!(h["url"], format!("{base}{path}"), "{kind} webhook");
        assert!(
            h["metadata"]["service"].is_string(),
            "{kind}: metadata.service"
        );
        let version = h["metadata"]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind}: metadata.version"));
        let payload = json!({"name": "checkout", "namespace": "shop", "phase": "Progressing",
                             "checksum": "abc", "metadata": {"service": "k8s", "version": version}});
        let r = request(
            Method::POST,
            &format!("{}{path}", dw.url()),
            &[("content-type", "application/json")],
            serde_json::to_vec(&payload).unwrap(),
        );
        // No deploy of k8s is known: pending goes on, is not promoted, is not rolled back.
        assert_eq!(r.status, status, "{kind} {path}: {}", r.text());
        let body: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(body["verdict"], "pending");
        assert_eq!(body["version"], version);
    }

    // The remote_write URL's path is the write route (an empty body is bad data, not 404).
    let r = request(
        Method::POST,
        &format!("{}/api/v1/write", dw.url()),
        &[
            ("content-type", RW1_CONTENT_TYPE),
            ("content-encoding", "snappy"),
        ],
        vec![0xff],
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------------------

/// The metric names a PromQL expression (or a Grafana `label_values(...)` query) selects.
pub fn promql_metric_names(expr: &str) -> Vec<String> {
    let mut expr = expr.trim().to_string();
    // label_values(selector, label): only the selector names a metric.
    if let Some(inner) = expr.strip_prefix("label_values(") {
        let inner = inner.trim_end().trim_end_matches(')');
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' | '(' => depth += 1,
                '}' | ')' => depth -= 1,
                ',' if depth == 0 => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        expr = inner[..end].to_string();
    }
    // Blank out strings, label matchers and range selectors.
    let mut clean = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                clean.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                clean.push(' ');
            }
            _ => clean.push(c),
        }
    }
    // Identifiers, skipping functions, keywords and the label lists of by/without/on/...
    const KEYWORDS: [&str; 8] = [
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b = clean.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == b'_' || c == b':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
            i += 1;
        }
        let word = &clean[start..i];
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        // A call, or an aggregation with its clause first (`sum by (le) (...)`).
        let rest = &clean[j..];
        let call = rest.starts_with('(')
            || ["by", "without"].iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            });
        if LABEL_LISTS.contains(&word.to_ascii_lowercase().as_str()) {
            if call {
                // Skip the parenthesised label list.
                while j < b.len() && b[j] != b')' {
                    j += 1;
                }
                i = j + 1;
            }
            continue;
        }
        if call || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            continue;
        }
        names.push(word.to_string());
    }
    names
}

#[test]
fn promql_metric_names_finds_metrics_and_skips_the_rest() {
    assert_eq!(
        promql_metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"y|z"}[5m]))) / on (job) group_left (v) b * 1e3 > bool 0"#
        ),
        ["a_bucket", "b"]
    );
    assert_eq!(
        promql_metric_names(r#"label_values(deploywatch_rule_value{service=~"$service"}, rule)"#),
        ["deploywatch_rule_value"]
    );
    assert_eq!(promql_metric_names("ALERTS{alertname=\"X\"}"), ["ALERTS"]);
}

/// Metric names a text exposition declares or carries, with a histogram's series.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" || kind == "summary" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Every `expr` and variable query in the dashboard, with where it is.
fn dashboard_queries(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let here = format!("{at}.{k}");
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push((here, s.clone())),
                    ("query", Value::String(s)) if s.starts_with("label_values(") => {
                        out.push((here, s.clone()))
                    }
                    _ => dashboard_queries(x, &here, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                dashboard_queries(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn grafana_dashboard_queries_only_metrics_deploywatch_exports() {
    let dash: Value = serde_json::from_str(&read(&k8s_dir().join("grafana-dashboard.json")))
        .expect("k8s/grafana-dashboard.json is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dash, "", &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");

    // Verdict panels map the codes the contract and /metrics define.
    let timelines: Vec<&Value> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["type"] == "state-timeline" && p["title"].as_str().unwrap().starts_with("Verdict")
        })
        .collect();
    assert!(!timelines.is_empty());
    for p in &timelines {
        let opts = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
        for (code, text) in ["pending", "pass", "warn", "pause", "rollback"]
            .iter()
            .enumerate()
        {
            assert_eq!(opts[code.to_string()]["text"], *text, "{}", p["title"]);
        }
    }
    let annotations = serde_json::to_string(&dash["annotations"]).unwrap();
    assert!(annotations.contains("deploywatch_deploy_started_timestamp_seconds"));
    // deploywatch posts to Alertmanager itself: Prometheus has no ALERTS series for it.
    assert!(annotations.contains("deploywatch_deploy_alert_firing"));
    assert!(!annotations.contains("ALERTS"), "{annotations}");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(vars.contains(&"service"), "{vars:?}");

    // A live deploywatch with an Alertmanager (unreachable), a registered deploy that goes
    // to rollback, and so every derived and self metric.
    let dw = Deploywatch::start_with_config(
        "alerting:\n  alertmanagers:\n    - url: http://127.0.0.1:9\n",
    );
    let t = EPOCH + 30 * MIN;
    let svc = Service::new("dash", 401, 2)
        .canary("v2", t, 1)
        .effect(Effect::step(
            Who::Version("v2".into()),
            Signal::Errors,
            10.0,
            t,
            i64::MAX,
        ));
    let mut driver = Driver::new(&dw, Feed::new(vec![Sim::new(svc)], 5_000));
    driver.run_to(t);
    register_deploy(
        &dw,
        &json!({"service": "dash", "version": "v2", "baseline_version": "v1", "commit": "abc123", "at": t}),
    )
    .unwrap();
    driver.run_to(t + 4 * MIN);
    let text = dw.metrics_text();
    let verdict = sample_value(
        &parse_exposition(&text),
        "deploywatch_deploy_verdict",
        &[("service", "dash")],
    );
    assert_eq!(verdict, Some(4.0), "the test deploy should be at rollback");
    let help = text
        .lines()
        .find(|l| l.starts_with("# HELP deploywatch_deploy_verdict "))
        .unwrap();
    assert!(
        help.contains("0 pending, 1 pass, 2 warn, 3 pause, 4 rollback"),
        "{help}"
    );
    let exported = exported_names(&text);

    for (at, expr) in &queries {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{at}: {expr} names no metric");
        for n in names {
            let allowed = n == "up"
                || ((n.starts_with("deploywatch_") || n.starts_with("process_"))
                    && exported.contains(&n));
            assert!(
                allowed,
                "{at}: {expr} uses {n}, which deploywatch does not export (it exports {exported:?})"
            );
        }
    }
}
