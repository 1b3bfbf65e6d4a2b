//! Parser tests over stack-examples/tests/{valid,invalid}.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../stack-examples/tests")
        .join(rel)
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env {
        vars: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

fn load_files(rels: &[&str], e: &Env) -> Result<Stack, StackError> {
    let files: Vec<PathBuf> = rels.iter().map(|r| corpus(r)).collect();
    load(&files, e)
}

#[test]
fn every_valid_file_loads_and_round_trips() {
    let dir = corpus("valid");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let e = env(&[("DOTENV_ONLY", "x"), ("IN_BOTH", "y")]);
        let stack = load(std::slice::from_ref(&path), &e)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        // The normalized output reads back to the same model.
        let yaml = to_yaml(&stack).unwrap();
        let tmp = tempdir_file(&yaml);
        let again = load(std::slice::from_ref(&tmp), &e)
            .unwrap_or_else(|err| panic!("{} re-read: {err}\n{yaml}", path.display()));
        assert_eq!(
            again.file.services,
            stack.file.services,
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5);
}

fn tempdir_file(text: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "shoal-stack-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("stack.yml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Each invalid file, and what its one error must say: file, key path,
/// value or reason.
const INVALID: &[(&str, &[&str])] = &[
    (
        "wrong-type.yml",
        &[":5: services.web.deploy.replicas:", "\"three\"", "integer"],
    ),
    (
        "unknown-key.yml",
        &[
            ":5: services.web.deploy.replica:",
            "unknown field `replica`",
        ],
    ),
    (
        "port-range.yml",
        &["services.web.ports[0]:", "\"70000:80\"", "out of range"],
    ),
    (
        "port-long-range.yml",
        &["services.web.ports[0]:", "70000", "out of range"],
    ),
    ("no-image.yml", &["services.web:", "nothing to run"]),
    (
        "undefined-network.yml",
        &[
            "services.web.networks.backend:",
            "undefined network \"backend\"",
        ],
    ),
    (
        "undefined-volume.yml",
        &["services.web.volumes[0]:", "undefined volume \"dbdata\""],
    ),
    (
        "undefined-secret.yml",
        &["services.web.secrets[0]:", "undefined secret \"token\""],
    ),
    (
        "undefined-config.yml",
        &["services.web.configs[0]:", "undefined config \"site\""],
    ),
    ("empty.yml", &["the file is empty"]),
    (
        "version-2.yml",
        &[":1: version:", "unsupported version \"2\""],
    ),
    (
        "cycle.yml",
        &["services.a.depends_on:", "cycle: a -> b -> c -> a"],
    ),
    (
        "bad-merge.yml",
        &[":4: services.web.<<:", "merge key", "\"web\""],
    ),
    ("alias-bomb.yml", &["alias bomb"]),
    ("alias-bomb-wide.yml", &["alias bomb"]),
    (
        "bad-service-name.yml",
        &[":2: services.-web:", "invalid service name \"-web\""],
    ),
    (
        "extends.yml",
        &[":4: services.web.extends:", "not supported"],
    ),
    (
        "volumes-from.yml",
        &[":4: services.web.volumes_from:", "not supported"],
    ),
    (
        "required-var.yml",
        &[
            ":3: services.web.image:",
            "SHOAL_TEST_UNSET_IMAGE",
            "set the image",
        ],
    ),
    (
        "top-level-typo.yml",
        &[":1: servics:", "unknown field `servics`"],
    ),
    ("syntax-error.yml", &[":4: invalid YAML:"]),
    (
        "bad-duration.yml",
        &[
            ":6: services.web.deploy.update_config.delay:",
            "\"ten seconds\"",
        ],
    ),
    (
        "bad-enum.yml",
        &[":5: services.web.deploy.mode:", "`replicatd`"],
    ),
    (
        "bad-memory.yml",
        &[
            ":7: services.web.deploy.resources.limits.memory:",
            "\"lots\"",
        ],
    ),
    (
        "global-replicas.yml",
        &[":6: services.web.deploy.replicas:", "mode: global"],
    ),
    (
        "merge-list-scalar.yml",
        &[":4: services.web.<<[1]:", "not 42"],
    ),
    (
        "secret-no-source.yml",
        &[":6: secrets.token:", "exactly one of"],
    ),
    (
        "undefined-dependency.yml",
        &[
            ":4: services.web.depends_on.db:",
            "undefined service \"db\"",
        ],
    ),
];

#[test]
fn every_invalid_file_has_its_error() {
    let dir = corpus("invalid");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, INVALID.len(), "every invalid file is listed here");
    for (file, wants) in INVALID {
        let started = Instant::now();
        let err = load_files(&[&format!("invalid/{file}")], &env(&[])).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{file} took too long"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("invalid/{file}")),
            "{file}: no file name in {msg}"
        );
        for w in *wants {
            assert!(msg.contains(w), "{file}: {msg:?} lacks {w:?}");
        }
    }
}

#[test]
fn merge_keys_arrive() {
    let s = load_files(&["valid/merge-keys.yml"], &env(&[])).unwrap();
    let cache = &s.file.services["cache"];
    assert_eq!(cache.image.as_deref(), Some("redis:7"));
    assert_eq!(cache.environment["FROM_BASE"].as_deref(), Some("yes"));
    let d = cache.deploy.as_ref().unwrap();
    assert_eq!(d.replicas, Some(3));
    assert_eq!(d.labels["a"], "1");
    assert_eq!(d.endpoint_mode, Some(model::EndpointMode::Dnsrr));
    // A key written beside the merge key wins over the merged one.
    assert_eq!(s.file.services["cache2"].image.as_deref(), Some("redis:6"));
}

#[test]
fn nested_merge_keys_apply() {
    let p = tempdir_file(
        "x-a: &a {image: busybox}\nx-b: &b {<<: *a, user: '7'}\nservices:\n  s:\n    <<: *b\n",
    );
    let s = load(&[p], &env(&[])).unwrap();
    assert_eq!(s.file.services["s"].image.as_deref(), Some("busybox"));
    assert_eq!(s.file.services["s"].user.as_deref(), Some("7"));
}

#[test]
fn full_file_normalizes_units() {
    let s = load_files(&["valid/full.yml"], &env(&[])).unwrap();
    let web = &s.file.services["web"];
    assert_eq!(web.ports.len(), 6, "ranges expand");
    assert_eq!(web.ports[1].protocol, "udp");
    assert_eq!(web.ports[5].mode, "host");
    let d = web.deploy.as_ref().unwrap();
    let lim = d.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(lim.cpus, Some(de::NanoCpus(500_000_000)));
    assert_eq!(lim.memory, Some(de::Bytes(128 * 1024 * 1024)));
    let hc = web.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(hc.start_period, Some(de::Millis(90_000)));
    assert_eq!(web.stop_grace_period, Some(de::Millis(1500)));
    let rp = d.restart_policy.as_ref().unwrap();
    assert_eq!(rp.window, Some(de::Millis(120_000)));
    assert_eq!(rp.condition, Some(model::RestartCondition::OnFailure));
    assert_eq!(web.networks["front"].aliases, vec!["www"]);
    assert!(web.networks.contains_key("back"));
    assert_eq!(web.volumes[0].read_only, Some(true));
    assert_eq!(web.volumes[1].kind, de::MountType::Bind);
    assert!(web.volumes[1]
        .source
        .as_deref()
        .unwrap()
        .ends_with("valid/site"));
    assert_eq!(s.file.networks["outside"].name.as_deref(), Some("host_net"));
    assert!(s.file.networks["outside"].is_external());
    assert_eq!(
        s.extensions["web"].get("x-shoal").unwrap()["type"],
        "LoadBalancer"
    );
    assert!(s.extensions[""].contains_key("x-restart"));
}

#[test]
fn interpolation_and_type_conversion() {
    let e = env(&[
        ("GREETING", "hi"),
        ("N", "5"),
        ("MEM", "1g"),
        ("DOTENV_ONLY", "d"),
        ("IN_BOTH", "b"),
    ]);
    let s = load_files(&["valid/interpolation.yml"], &e).unwrap();
    let app = &s.file.services["app"];
    assert_eq!(app.image.as_deref(), Some("busybox:latest"));
    assert_eq!(
        app.command,
        Some(model::StringOrList::List(vec![
            "echo".into(),
            "$HOME".into(),
            "hi".into()
        ]))
    );
    let d = app.deploy.as_ref().unwrap();
    assert_eq!(d.replicas, Some(5));
    let lim = d.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(lim.memory, Some(de::Bytes(1 << 30)));
    assert_eq!(
        d.update_config.as_ref().unwrap().max_failure_ratio,
        Some(0.5)
    );
    // Defaults when unset.
    let s = load_files(&["valid/interpolation.yml"], &env(&[])).unwrap();
    assert_eq!(
        s.file.services["app"].deploy.as_ref().unwrap().replicas,
        Some(2)
    );
    assert!(s.warnings.iter().any(|w| w.contains("DOTENV_ONLY")));
}

#[test]
fn interpolation_forms() {
    let e = env(&[("SET", "v"), ("EMPTY", "")]);
    let mut w = Vec::new();
    let f = |s: &str, w: &mut Vec<String>| interp::interpolate(s, &e, w);
    assert_eq!(f("${SET}-$SET-$$SET", &mut w).unwrap(), "v-v-$SET");
    assert_eq!(
        f("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", &mut w).unwrap(),
        "d||d"
    );
    assert_eq!(f("${UNSET:-${SET}x}", &mut w).unwrap(), "vx");
    assert!(f("${EMPTY:?must}", &mut w)
        .unwrap_err()
        .contains("EMPTY is empty: must"));
    assert_eq!(f("${EMPTY?must}", &mut w).unwrap(), "");
    assert!(f("${UNSET?gone}", &mut w)
        .unwrap_err()
        .contains("UNSET is not set: gone"));
    assert!(f("cost $5", &mut w).is_err());
    assert!(f("${SET", &mut w).is_err());
    assert!(w.is_empty());
    assert_eq!(f("$UNSET", &mut w).unwrap(), "");
    assert_eq!(w.len(), 1);
}

#[test]
fn wrong_interpolated_type_names_the_value() {
    let err = load_files(&["valid/interpolation.yml"], &env(&[("N", "many")])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("services.app.deploy.replicas"), "{msg}");
    assert!(msg.contains("\"many\""), "{msg}");
}

#[test]
fn dotenv_beside_the_file_and_environment_wins() {
    let first = corpus("dotenv/stack.yml");
    let e = build_env(
        &first,
        [
            ("IN_BOTH".to_string(), "from-env".to_string()),
            ("N".to_string(), "4".to_string()),
        ],
    )
    .unwrap();
    let s = load(&[first], &e).unwrap();
    let app = &s.file.services["app"];
    assert_eq!(app.image.as_deref(), Some("busybox:from-dotenv"));
    assert_eq!(app.environment["A"].as_deref(), Some("from-dotenv"));
    assert_eq!(app.environment["B"].as_deref(), Some("from-env"));
    assert_eq!(app.deploy.as_ref().unwrap().replicas, Some(4));
}

#[test]
fn overrides_merge_as_compose_does() {
    let s = load_files(&["valid/base.yml", "valid/override.yml"], &env(&[])).unwrap();
    let web = &s.file.services["web"];
    assert_eq!(web.image.as_deref(), Some("nginx:1.25"));
    // Lists such as command are replaced.
    assert_eq!(
        web.command,
        Some(model::StringOrList::List(vec!["c".into()]))
    );
    // Maps merge by key (a list form in the override too).
    assert_eq!(web.environment["A"].as_deref(), Some("1"));
    assert_eq!(web.environment["B"].as_deref(), Some("20"));
    assert_eq!(web.environment["C"].as_deref(), Some("3"));
    // Ports merge by (target, published, protocol).
    let ports: Vec<(u16, Option<u16>, &str)> = web
        .ports
        .iter()
        .map(|p| (p.target, p.published, p.mode.as_str()))
        .collect();
    assert_eq!(
        ports,
        vec![
            (80, Some(8080), "host"),
            (90, Some(9090), "ingress"),
            (70, Some(7070), "ingress")
        ]
    );
    // Volumes merge by target.
    assert_eq!(web.volumes.len(), 2);
    assert_eq!(web.volumes[0].kind, de::MountType::Bind);
    assert_eq!(web.volumes[0].target, "/data");
    assert_eq!(web.volumes[1].target, "/logs");
    let d = web.deploy.as_ref().unwrap();
    assert_eq!(d.replicas, Some(4));
    assert_eq!(d.labels["keep"], "yes");
    assert!(s.file.services.contains_key("extra"));
}

#[test]
fn ignored_keys_warn_and_are_dropped() {
    let s = load_files(&["valid/ignored-keys.yml"], &env(&[])).unwrap();
    for k in [
        "build",
        "privileged",
        "container_name",
        "network_mode",
        "links",
        "cap_add",
    ] {
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains(&format!("services.app.{k}"))),
            "{k}: {:?}",
            s.warnings
        );
    }
}

#[test]
fn units_parse() {
    assert_eq!(de::parse_duration("1h2m3s"), Some(3_723_000));
    assert_eq!(de::parse_duration("1.5s"), Some(1500));
    assert_eq!(de::parse_duration("10"), None);
    assert_eq!(de::parse_bytes("512k"), Some(512 * 1024));
    assert_eq!(de::parse_bytes("1.5G"), Some(1_610_612_736));
    assert_eq!(de::parse_bytes("12x"), None);
}

#[test]
fn override_checked_as_a_whole_names_every_file() {
    // An override may hold a partial service; the merged result must run.
    let base = tempdir_file("services:\n  web:\n    image: nginx\n");
    let over =
        tempdir_file("services:\n  web:\n    deploy: {replicas: 3}\n  other:\n    user: root\n");
    let err = load(&[base.clone(), over.clone()], &env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{} + {}", base.display(), over.display())),
        "{msg}"
    );
    assert!(msg.contains("services.other: nothing to run"), "{msg}");
    let s = load(&[base, over][..1], &env(&[])).unwrap();
    assert_eq!(s.file.services.len(), 1);
}

#[test]
fn file_modes_are_octal_when_written_so() {
    let p = tempdir_file(
        "services:\n  s:\n    image: x\n    secrets:\n      - {source: a, mode: 0440}\n      - {source: a, target: b, mode: 0o600}\n      - {source: a, target: c, mode: 256}\nsecrets:\n  a: {environment: HOME}\n",
    );
    let s = load(&[p], &env(&[])).unwrap();
    let modes: Vec<Option<u64>> = s.file.services["s"]
        .secrets
        .iter()
        .map(|r| r.mode)
        .collect();
    assert_eq!(modes, vec![Some(0o440), Some(0o600), Some(256)]);
}

#[test]
fn no_line_is_invented_for_merged_errors() {
    let e = StackError {
        file: "a.yml".into(),
        path: "services.web".into(),
        line: None,
        message: "m".into(),
    };
    assert_eq!(e.to_string(), "a.yml: services.web: m");
    assert_eq!(
        split_path("services.web.ports[0]"),
        vec!["services", "web", "ports", "[0]"]
    );
}
