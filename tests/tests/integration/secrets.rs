//! Secrets and configs on the real Docker Engine: created from a file and
//! from stdin, listed and inspected (a secret's data never shown), mounted
//! read-only into the containers of the services that use them and no
//! others, refused removal while in use, never written in clear under the
//! node's data dir, and a stack's file-based secret from deploy to rm.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use shoal_tests::docker::docker;
use shoal_tests::images::web_image;
use shoal_tests::node::CLIENT_TIMEOUT;
use shoal_tests::{run, wait_for, Node, Output};

use crate::service::CONVERGE;

/// `printf %s DATA | shoal -H ... ARGS`: a command reading standard input.
fn shoal_with_stdin(node: &Node, data: &str, args: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.args(["-c", "printf '%s' \"$SHOAL_TEST_STDIN\" | \"$@\"", "sh"])
        .arg(shoal_tests::shoal_bin())
        .arg("-H")
        .arg(node.host())
        .args(args)
        .env("SHOAL_TEST_STDIN", data)
        .env_remove("SHOAL_HOST");
    run(&mut c, CLIENT_TIMEOUT)
}

/// `docker exec CONTAINER ARGS`.
fn exec(container: &str, args: &[&str]) -> Output {
    let mut a = vec!["exec", container];
    a.extend_from_slice(args);
    docker(&a)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The only running container of a service.
fn one_container(node: &Node, service: &str) -> String {
    let ids = node.wait_running(service, 1, CONVERGE);
    ids[0].clone()
}

#[test]
fn secrets_and_configs_reach_only_their_pods_read_only_and_never_rest_in_clear() {
    let node = Node::start();
    let outside = tempfile::tempdir().expect("temp dir");
    let pw = format!("pw-from-file-{}", shoal_tests::random_suffix());
    let token = format!("token-from-stdin-{}", shoal_tests::random_suffix());
    let pw_file = outside.path().join("pw.txt");
    std::fs::write(&pw_file, &pw).unwrap();
    let conf_file = outside.path().join("app.conf");
    std::fs::write(&conf_file, "port=8080").unwrap();
    let pw_path = pw_file.display().to_string();
    let conf_path = conf_file.display().to_string();

    node.shoal(&["secret", "create", "--label", "tier=db", "db_pw", &pw_path])
        .ok();
    shoal_with_stdin(&node, &token, &["secret", "create", "api_token", "-"]).ok();
    node.shoal(&["config", "create", "app_conf", &conf_path])
        .ok();
    let dup = node.shoal(&["secret", "create", "db_pw", &pw_path]).fails();
    assert!(dup.stderr.contains("secret db_pw already exists"), "{dup}");
    let empty = shoal_with_stdin(&node, "", &["secret", "create", "nothing", "-"]).fails();
    assert!(empty.stderr.contains("standard input is empty"), "{empty}");

    // ls and inspect: metadata, never a secret's data; a config's data.
    let ls = node.shoal(&["secret", "ls"]).ok();
    assert!(
        ls.stdout.contains("db_pw") && ls.stdout.contains("api_token"),
        "{ls}"
    );
    let ls_json = json(&node.shoal(&["secret", "ls", "--format", "json"]).ok());
    assert_eq!(ls_json.as_array().map(Vec::len), Some(2), "{ls_json}");
    let quiet = node.shoal(&["secret", "ls", "-q"]).ok();
    assert_eq!(quiet.stdout.lines().count(), 2, "{quiet}");
    let inspect = node
        .shoal(&["secret", "inspect", "db_pw", "api_token"])
        .ok();
    let v = json(&inspect);
    assert_eq!(v[0]["spec"]["name"], "db_pw", "{inspect}");
    assert_eq!(v[0]["spec"]["labels"]["tier"], "db", "{inspect}");
    assert!(v[0]["spec"]["data"].is_null(), "{inspect}");
    assert!(
        !inspect.stdout.contains(&pw) && !inspect.stdout.contains(&token),
        "{inspect}"
    );
    let conf = json(&node.shoal(&["config", "inspect", "app_conf"]).ok());
    // base64("port=8080"), as Docker shows a config's data.
    assert_eq!(conf[0]["spec"]["data"], "cG9ydD04MDgw", "{conf}");

    // A service using both secrets and the config; another using none.
    node.create(&[
        "--name",
        "app",
        "--stop-grace-period",
        "1s",
        "--secret",
        "db_pw",
        "--secret",
        "source=api_token,target=token,mode=0400",
        "--config",
        "source=app_conf,target=/etc/app.conf",
        &web_image("v1"),
    ]);
    node.create(&[
        "--name",
        "plain",
        "--stop-grace-period",
        "1s",
        &web_image("v1"),
    ]);
    let app = one_container(&node, "app");
    let plain = one_container(&node, "plain");

    assert_eq!(exec(&app, &["cat", "/run/secrets/db_pw"]).ok().stdout, pw);
    assert_eq!(
        exec(&app, &["cat", "/run/secrets/token"]).ok().stdout,
        token
    );
    assert_eq!(
        exec(&app, &["cat", "/etc/app.conf"]).ok().stdout,
        "port=8080"
    );
    let ls = exec(&app, &["ls", "-l", "/run/secrets/"]).ok();
    assert!(ls.stdout.contains("-r--r--r--"), "default mode 0444:\n{ls}");
    assert!(ls.stdout.contains("-r--------"), "mode 0400:\n{ls}");
    let write = exec(&app, &["sh", "-c", "echo overwritten > /run/secrets/db_pw"]).fails();
    assert!(write.stderr.contains("Read-only"), "{write}");
    let write = exec(&app, &["sh", "-c", "echo x > /etc/app.conf"]).fails();
    assert!(write.stderr.contains("Read-only"), "{write}");
    exec(&plain, &["cat", "/run/secrets/db_pw"]).fails();

    let out = node
        .shoal(&[
            "service",
            "create",
            "--name",
            "bad",
            "-d",
            "--secret",
            "nope",
            &web_image("v1"),
        ])
        .fails();
    assert!(
        out.stderr
            .contains("secret nope not found: create it first with shoal secret create nope FILE"),
        "{out}"
    );

    // A restarted worker keeps the files of the pods it adopts and removes
    // those of pods without a container.
    let node_files = Path::new(shoal_proto::defaults::POD_FILES_DIR).join(&node.node_id);
    let stale = node_files.join(format!("stale{}", shoal_tests::random_suffix()));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("secret-0"), "old").unwrap();
    node.kill9();
    node.resume().ok();
    wait_for("the stale pod's files to be removed", CONVERGE, || {
        (!stale.exists())
            .then_some(())
            .ok_or(format!("{} still there", stale.display()))
    });
    assert_eq!(node.running_ids("app"), vec![app.clone()], "adopted");
    assert_eq!(exec(&app, &["cat", "/run/secrets/db_pw"]).ok().stdout, pw);

    // In use: refused, naming the service.
    let rm = node.shoal(&["secret", "rm", "db_pw"]).fails();
    assert!(
        rm.stderr.contains("secret db_pw is in use by service app"),
        "{rm}"
    );
    let rm = node.shoal(&["config", "rm", "app_conf"]).fails();
    assert!(
        rm.stderr
            .contains("config app_conf is in use by service app"),
        "{rm}"
    );

    // Nothing under the data dir (Raft log, snapshots, log file, key) holds
    // a secret in clear.
    for secret in [&pw, &token] {
        let found = files_containing(node.data_dir(), secret.as_bytes());
        assert!(found.is_empty(), "{secret} found in clear in {found:?}");
    }
    let key = node.data_dir().join("cluster.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());

    // Once the service is gone, the secret can go, and so do the files.
    node.shoal(&["service", "rm", "app"]).ok();
    wait_for("the secret to be removable", CONVERGE, || {
        let out = node.shoal(&["secret", "rm", "db_pw", "api_token"]);
        out.success().then_some(()).ok_or(out.all())
    });
    node.shoal(&["config", "rm", "app_conf"]).ok();
    let ls = node.shoal(&["secret", "ls", "-q"]).ok();
    assert!(ls.stdout.trim().is_empty(), "{ls}");
    wait_for("the pod's files to be removed", CONVERGE, || {
        let left: Vec<_> = std::fs::read_dir(&node_files)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        left.is_empty()
            .then_some(())
            .ok_or(format!("left: {left:?}"))
    });
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn a_stack_secret_is_created_used_kept_on_redeploy_and_removed_with_the_stack() {
    let node = Node::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let pw = format!("stack-pw-{}", shoal_tests::random_suffix());
    write(dir.path(), "pw.txt", &pw);
    let stack = format!(
        "services:\n  db:\n    image: {}\n    stop_grace_period: 1s\n    secrets:\n      - db_pw\n    configs:\n      - source: conf\n        target: /etc/db.conf\n        mode: 0440\nsecrets:\n  db_pw:\n    file: ./pw.txt\nconfigs:\n  conf:\n    content: \"max_connections=10\"\n",
        web_image("v1")
    );
    let file = write(dir.path(), "stack.yml", &stack);
    let out = node.shoal(&["stack", "deploy", "-c", &file, "sec"]).ok();
    assert!(
        out.stdout.contains("Creating secret sec_db_pw")
            && out.stdout.contains("Creating config sec_conf"),
        "{out}"
    );
    let db = one_container(&node, "sec_db");
    // The target defaults to the short name from the stack file.
    assert_eq!(exec(&db, &["cat", "/run/secrets/db_pw"]).ok().stdout, pw);
    assert_eq!(
        exec(&db, &["cat", "/etc/db.conf"]).ok().stdout,
        "max_connections=10"
    );
    let ls = json(&node.shoal(&["secret", "ls", "--format", "json"]).ok());
    assert_eq!(ls[0]["Name"], "sec_db_pw", "{ls}");
    assert_eq!(ls[0]["Stack"], "sec", "{ls}");

    // Redeploying the unchanged file changes nothing.
    let before = node.running_ids("sec_db");
    node.shoal(&["stack", "deploy", "-c", &file, "sec"]).ok();
    assert_eq!(node.running_ids("sec_db"), before);

    // Changed content: refused (immutable), nothing rolls.
    write(dir.path(), "pw.txt", "something else");
    let out = node.shoal(&["stack", "deploy", "-c", &file, "sec"]).fails();
    assert!(
        out.stderr
            .contains("secret sec_db_pw: its data cannot be changed (secrets are immutable)"),
        "{out}"
    );
    assert_eq!(node.running_ids("sec_db"), before);

    // An external secret must exist.
    let ext = write(
        dir.path(),
        "external.yml",
        &format!(
            "services:\n  x:\n    image: {}\n    secrets: [ext_pw]\nsecrets:\n  ext_pw:\n    external: true\n",
            web_image("v1")
        ),
    );
    let out = node.shoal(&["stack", "deploy", "-c", &ext, "ext"]).fails();
    assert!(
        out.stderr.contains(
            "secret ext_pw is external but does not exist: create it with shoal secret create ext_pw FILE"
        ),
        "{out}"
    );

    // rm removes the services, then the stack's secret and config.
    node.shoal(&["stack", "rm", "sec"]).ok();
    let secrets = node.shoal(&["secret", "ls", "-q"]).ok();
    assert!(secrets.stdout.trim().is_empty(), "{secrets}");
    let configs = node.shoal(&["config", "ls", "-q"]).ok();
    assert!(configs.stdout.trim().is_empty(), "{configs}");
    wait_for("the stack's containers to go", CONVERGE, || {
        let n = node.containers(Some("sec_db"), true).len();
        (n == 0).then_some(()).ok_or(format!("{n} containers"))
    });
}
