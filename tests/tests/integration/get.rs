//! `shoal get deployments|replicasets|pods|services` on the real Docker
//! Engine, over a stack with a published service, an internal one, a dnsrr
//! one, an x-shoal LoadBalancer and an x-shoal ExternalName: kubectl's
//! columns, `-o wide`, `-o json`, the NAME filter and unknown names; and
//! `service update` keeping a service's type and endpoint mode.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::images::web_image;
use shoal_tests::table::{self, Row};
use shoal_tests::{free_port, random_suffix, wait_for, Node};

use crate::service::{as_u64, CONVERGE};

/// Removes a Docker network this test's stack created (`stack rm` leaves
/// stack networks in place). Declared before the Node, so it drops after
/// the Node removed the containers attached to it.
struct NetworkCleanup(String);

impl Drop for NetworkCleanup {
    fn drop(&mut self) {
        let _ = shoal_tests::cmd::try_run(
            Command::new("docker").args(["network", "rm", &self.0]),
            Duration::from_secs(30),
        );
    }
}

fn stack_file(image: &str, port: u16) -> String {
    format!(
        "services:
  web:
    image: {image}
    stop_grace_period: 1s
    ports: [\"{port}:80\"]
    deploy:
      replicas: 2
  api:
    image: {image}
    stop_grace_period: 1s
  dns:
    image: {image}
    stop_grace_period: 1s
    deploy:
      endpoint_mode: dnsrr
  lb:
    image: {image}
    stop_grace_period: 1s
    x-shoal:
      type: LoadBalancer
  db:
    x-shoal:
      type: ExternalName
      external_name: db.example.test
"
    )
}

fn rows(node: &Node, args: &[&str]) -> Vec<Row> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    table::parse(&node.shoal(&a).ok().stdout)
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r["NAME"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:#?}"))
}

fn json(node: &Node, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    let out = node.shoal(&a).ok();
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(v)) => v,
        _ => panic!("not a JSON array:\n{out}"),
    }
}

#[test]
fn get_shows_a_stacks_deployments_replicasets_pods_and_services_as_kubectl() {
    let stack = format!("get{}", random_suffix());
    let _network = NetworkCleanup(format!("{stack}_default"));
    let node = Node::start();
    let port = free_port();
    let image = web_image("v1");
    let file = node.data_dir().join("stack.yml");
    std::fs::write(&file, stack_file(&image, port)).expect("write stack file");
    let file = file.display().to_string();
    node.shoal(&["stack", "deploy", "-c", &file, &stack]).ok();
    let n = |s: &str| format!("{stack}_{s}");

    // Deployments: every service that runs pods, none for ExternalName.
    let deps = rows(&node, &["deployments", "-o", "wide"]);
    assert_eq!(deps.len(), 4, "{deps:#?}");
    let web = row(&deps, &n("web"));
    assert_eq!(web["READY"], "2/2");
    assert_eq!(web["UP-TO-DATE"], "2");
    assert_eq!(web["AVAILABLE"], "2");
    assert_eq!(web["MODE"], "replicated");
    assert_eq!(web["IMAGES"], image.as_str());
    assert_eq!(web["REVISION"], "1");
    assert_eq!(web["STACK"], stack.as_str());
    assert_eq!(row(&deps, &n("api"))["READY"], "1/1");
    let one = rows(&node, &["deploy", &n("web")]);
    assert_eq!(one.len(), 1, "{one:#?}");
    let j = json(&node, &["deploy", &n("web")]);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["deployment"]["spec"]["name"], n("web").as_str());
    assert_eq!(as_u64(&j[0]["desired"]), Some(2));
    assert_eq!(as_u64(&j[0]["ready"]), Some(2));

    // Replica sets: one revision per deployment.
    assert_eq!(rows(&node, &["replicasets"]).len(), 4);
    let rs = rows(&node, &["rs", &n("web"), "-o", "wide"]);
    assert_eq!(rs.len(), 1, "{rs:#?}");
    assert!(
        rs[0]["NAME"].starts_with(&format!("{}-", n("web"))),
        "{rs:#?}"
    );
    assert_eq!(
        (rs[0]["DESIRED"].as_str(), rs[0]["READY"].as_str()),
        ("2", "2")
    );

    // Pods: web.1.<id> names, running, ready, with their IP and node.
    let pods = rows(&node, &["pods", "-o", "wide"]);
    assert_eq!(pods.len(), 5, "{pods:#?}");
    for p in &pods {
        assert_eq!(p["READY"], "1/1", "{p:?}");
        assert_eq!(p["STATUS"], "Running", "{p:?}");
        assert_eq!(p["RESTARTS"], "0", "{p:?}");
        assert!(p["IP"] != "<none>" && !p["IP"].is_empty(), "{p:?}");
        assert!(!p["NODE"].is_empty(), "{p:?}");
    }
    let web_pods = rows(&node, &["po", &n("web"), "-o", "wide"]);
    assert_eq!(web_pods.len(), 2, "{web_pods:#?}");
    assert!(web_pods.iter().all(|p| p["SERVICE"] == n("web")));
    let first = web_pods[0]["NAME"].clone();
    assert!(
        first.starts_with(&format!("{}.1.", n("web"))) && first.len() == n("web").len() + 13,
        "{first}"
    );
    let by_name = rows(&node, &["pods", &first]);
    assert_eq!(by_name.len(), 1, "{by_name:#?}");
    assert_eq!(by_name[0]["NAME"], first);
    assert_eq!(rows(&node, &["pods", &format!("{}.2", n("web"))]).len(), 1);
    let j = json(&node, &["pods", &n("web")]);
    assert_eq!(j.len(), 2);
    assert!(
        j.iter()
            .all(|p| p["pod"]["status"]["state"] == "POD_STATE_RUNNING"),
        "{j:?}"
    );

    // Services: the type, addresses and ports of each.
    let svcs = rows(&node, &["services", "-o", "wide"]);
    assert_eq!(svcs.len(), 5, "{svcs:#?}");
    let cols = |r: &Row| {
        [
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "ENDPOINT-MODE",
            "DEPLOYMENT",
            "ENDPOINTS",
        ]
        .map(|c| r[c].clone())
    };
    let web_port = format!("80:{port}/TCP");
    let want = [
        (
            "web",
            [
                "NodePort",
                "<none>",
                "<none>",
                web_port.as_str(),
                "vip",
                &n("web"),
                "2",
            ],
        ),
        (
            "api",
            [
                "ClusterIP",
                "<none>",
                "<none>",
                "<none>",
                "vip",
                &n("api"),
                "1",
            ],
        ),
        (
            "dns",
            [
                "ClusterIP",
                "None",
                "<none>",
                "<none>",
                "dnsrr",
                &n("dns"),
                "1",
            ],
        ),
        (
            "lb",
            [
                "LoadBalancer",
                "<none>",
                "<pending>",
                "<none>",
                "vip",
                &n("lb"),
                "1",
            ],
        ),
        (
            "db",
            [
                "ExternalName",
                "<none>",
                "db.example.test",
                "<none>",
                "vip",
                "<none>",
                "0",
            ],
        ),
    ];
    for (svc, expected) in want {
        let r = row(&svcs, &n(svc));
        assert_eq!(cols(r), expected.map(str::to_string), "{svc}: {r:?}");
        assert_eq!(r["STACK"], stack.as_str());
    }
    let j = json(&node, &["svc", &n("db")]);
    assert_eq!(j.len(), 1);
    assert_eq!(j[0]["service"]["type"], "EXTERNAL_NAME", "{j:?}");
    assert_eq!(j[0]["service"]["externalName"], "db.example.test", "{j:?}");

    // Unknown names fail, naming the name; an ExternalName has no deployment.
    for (kind, message) in [
        ("deployments", "deployment nope-x not found"),
        ("replicasets", "service nope-x not found"),
        ("pods", "pod nope-x not found"),
        ("services", "service nope-x not found"),
    ] {
        let out = node.shoal(&["get", kind, "nope-x"]).fails();
        assert!(out.stderr.contains(message), "{out}");
    }
    let out = node.shoal(&["get", "deploy", &n("db")]).fails();
    assert!(out.stderr.contains("is of type ExternalName"), "{out}");
    let out = node
        .shoal(&["service", "scale", &format!("{}=2", n("db"))])
        .fails();
    assert!(out.stderr.contains("is of type ExternalName"), "{out}");

    // The control API refuses what the stack parser refuses, naming the field.
    let out = node
        .shoal(&[
            "service",
            "create",
            "--name",
            "bad",
            "--endpoint-mode",
            "dnsrr",
            "-p",
            "80",
            "-d",
            &image,
        ])
        .fails();
    assert!(
        out.stderr
            .contains("endpoint_mode: dnsrr cannot publish ports in ingress mode"),
        "{out}"
    );
    let out = node
        .shoal(&[
            "service", "create", "--name", "bad", "--type", "NodePort", "-d", &image,
        ])
        .fails();
    assert!(
        out.stderr.contains("type: NodePort needs a port published"),
        "{out}"
    );

    // `service update` keeps type and endpoint mode; the ExternalName
    // service is listed and updated like the others.
    for svc in ["lb", "dns", "db"] {
        node.shoal(&["service", "update", "--label-add", "checked=yes", &n(svc)])
            .ok();
    }
    let svcs = rows(&node, &["svc", "-o", "wide"]);
    assert_eq!(row(&svcs, &n("lb"))["TYPE"], "LoadBalancer");
    assert_eq!(row(&svcs, &n("dns"))["ENDPOINT-MODE"], "dnsrr");
    assert_eq!(row(&svcs, &n("db"))["EXTERNAL-IP"], "db.example.test");
    let j = json(&node, &["svc", &n("db")]);
    assert_eq!(j[0]["service"]["labels"]["checked"], "yes", "{j:?}");
    let ls = node.shoal(&["service", "ls"]).ok();
    assert!(ls.stdout.contains(&n("db")), "{ls}");

    // A redeploy of the same file changes nothing, ExternalName included.
    let web_before = node.running_ids(&n("web"));
    node.shoal(&["stack", "deploy", "-c", &file, &stack]).ok();
    assert_eq!(node.running_ids(&n("web")), web_before);

    // `service create --type ExternalName` needs no image.
    node.create(&[
        "--name",
        "ext",
        "--type",
        "ExternalName",
        "--external-name",
        "ext.example.test",
    ]);
    let ext = rows(&node, &["svc", "ext"]);
    assert_eq!(ext[0]["TYPE"], "ExternalName");
    assert_eq!(ext[0]["EXTERNAL-IP"], "ext.example.test");

    // Removing the stack removes its ExternalName service too.
    node.shoal(&["stack", "rm", &stack]).ok();
    wait_for("the stack's services to go", CONVERGE, || {
        let left = rows(&node, &["svc"]);
        let names: Vec<&String> = left.iter().map(|r| &r["NAME"]).collect();
        (names == ["ext"])
            .then_some(())
            .ok_or(format!("services left: {names:?}"))
    });
    node.shoal(&["service", "rm", "ext"]).ok();
    let out = node.shoal(&["get", "services"]).ok();
    assert!(out.stderr.contains("No resources found."), "{out}");
    wait_for("the stack's containers to go", CONVERGE, || {
        let left = node.containers(None, true).len();
        (left == 0)
            .then_some(())
            .ok_or(format!("{left} containers"))
    });
}
