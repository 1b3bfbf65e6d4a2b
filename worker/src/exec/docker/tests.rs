//! Docker-backed tests of [`DockerExecutor`]. They need the local engine and
//! FAIL when it is unreachable (a skipped test would prove nothing). The
//! image is built here from busybox-static (`apt-get install -y
//! busybox-static`), since no registry can be reached. Tests share the
//! engine, so they run one at a time behind [`ENGINE`]; each uses its own
//! node id so their containers never mix.

use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use shoal_proto::{Assignment, ContainerSpec, Pod, PodTemplate};

use super::*;

/// One test at a time on the engine.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const IMAGE: &str = "shoal-test/exec:v1";
const NETWORK: &str = "shoal-test-exec";
/// busybox httpd ignores SIGTERM: keep the stop grace short.
const GRACE: Duration = Duration::from_secs(1);

/// A root file system with busybox, applet links and a web root.
fn rootfs_tar() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: apt-get install -y busybox-static");
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "www", "tmp"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, dir, std::io::empty()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for applet in ["sh", "httpd", "echo", "sleep", "cat", "true", "wget"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let index = b"v1\n";
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(index.len() as u64);
    tar.append_data(&mut h, "www/index.html", &index[..])
        .unwrap();
    tar.into_inner().unwrap()
}

/// Imports the test image unless the engine has it already.
async fn ensure_test_image(docker: &Docker) {
    if docker.inspect_image(IMAGE).await.is_ok() {
        return;
    }
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo("shoal-test/exec")
        .tag("v1")
        .changes(vec![
            r#"CMD ["/bin/httpd","-f","-p","80","-h","/www"]"#.to_string()
        ])
        .build();
    let body = bollard::body_full(bytes::Bytes::from(rootfs_tar()));
    let mut progress = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = progress.next().await {
        item.expect("importing the test image");
    }
}

/// Node ids of these tests start with this, so leftovers of a failed run
/// can be found and removed.
const NODE_PREFIX: &str = "exec-test-node-";

/// Removes containers left behind by earlier, failed runs of these tests
/// (once per test process: later calls would hit this run's containers).
async fn remove_leftovers(docker: &Docker) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let filters = HashMap::from([("label".to_string(), vec![labels::NODE_ID.to_string()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        let node = c
            .labels
            .unwrap_or_default()
            .remove(labels::NODE_ID)
            .unwrap_or_default();
        if let (true, Some(id)) = (node.starts_with(NODE_PREFIX), c.id) {
            let force = RemoveContainerOptionsBuilder::default().force(true).build();
            let _ = docker.remove_container(&id, Some(force)).await;
        }
    }
}

/// A node id no other test run uses.
fn node_id() -> String {
    format!("{NODE_PREFIX}{:08x}", rand::random::<u32>())
}

/// An executor for `node_id`, its image ready and old leftovers gone.
async fn executor(node_id: &str) -> DockerExecutor {
    let exec = DockerExecutor::new(
        node_id,
        PodNetwork {
            name: NETWORK.into(),
            internal: true,
        },
    )
    .await
    .expect("the Docker engine must be reachable for these tests");
    ensure_test_image(exec.docker()).await;
    remove_leftovers(exec.docker()).await;
    exec
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn assignment(image: &str, command: &[&str]) -> Assignment {
    let id = unique("pod");
    Assignment {
        pod: Some(Pod {
            id,
            slot: 1,
            ..Default::default()
        }),
        template: Some(PodTemplate {
            container: Some(ContainerSpec {
                image: image.into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        pod_name: "web.1".into(),
        service_name: "web".into(),
        stack: String::new(),
        ..Default::default()
    }
}

/// Removes every container of the node (tests clean up even on success
/// paths that leave containers behind).
async fn cleanup(exec: &DockerExecutor) {
    for c in exec.list().await.unwrap_or_default() {
        let _ = exec.remove(&c.pod).await;
    }
}

async fn wait_for_exit(exec: &DockerExecutor, pod: &PodRef) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = exec.inspect(pod).await.unwrap();
        if matches!(status.state, ContainerState::Exited { .. }) || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_created_and_started_container_runs_with_an_ip_then_stops_and_is_removed() {
    let _engine = ENGINE.lock().await;
    let exec = executor(&node_id()).await;
    let a = assignment(IMAGE, &[]);
    let pod = PodRef::of(&a);

    exec.prepare(&a).await.unwrap();
    let id = exec.create(&a).await.unwrap();
    let created = exec.inspect(&pod).await.unwrap();
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(created.container_id, id);

    exec.start(&pod).await.unwrap();
    let running = exec.inspect(&pod).await.unwrap();
    assert_eq!(running.state, ContainerState::Running, "{running:?}");
    assert!(
        running.ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "ip on the pod network: {running:?}"
    );
    assert_eq!(running.health, HealthState::None);

    // A second create of the same pod conflicts instead of duplicating.
    assert!(matches!(
        exec.create(&a).await,
        Err(ExecError::AlreadyExists { .. })
    ));

    exec.stop(&pod, GRACE).await.unwrap();
    let stopped = exec.inspect(&pod).await.unwrap();
    assert!(
        matches!(stopped.state, ContainerState::Exited { .. }),
        "{stopped:?}"
    );
    exec.stop(&pod, GRACE)
        .await
        .expect("stopping twice is fine");

    exec.remove(&pod).await.unwrap();
    assert_eq!(
        exec.inspect(&pod).await.unwrap().state,
        ContainerState::Missing
    );
    exec.remove(&pod).await.expect("removing twice is fine");
}

#[tokio::test]
async fn a_new_executor_for_the_same_node_lists_its_containers_by_pod_id() {
    let _engine = ENGINE.lock().await;
    let node = node_id();
    let first = executor(&node).await;
    let a = assignment(IMAGE, &[]);
    first.prepare(&a).await.unwrap();
    let id = first.create(&a).await.unwrap();
    first.start(&PodRef::of(&a)).await.unwrap();
    drop(first);

    // "Restart": a new executor instance with the same node id.
    let restarted = executor(&node).await;
    let listed = restarted.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].pod, PodRef::of(&a));
    assert_eq!(listed[0].container_id, id);
    assert_eq!(listed[0].state, ContainerState::Running);

    // Another node's executor does not see it.
    let other = executor(&node_id()).await;
    assert!(other.list().await.unwrap().is_empty());

    cleanup(&restarted).await;
    assert!(restarted.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_a_clear_error() {
    let _engine = ENGINE.lock().await;
    let exec = executor(&node_id()).await;
    // A registry on a loopback port nothing listens on: the pull fails
    // without any traffic leaving the machine.
    let a = assignment("127.0.0.1:9/shoal-test/nope:v0", &[]);
    let err = exec.prepare(&a).await.unwrap_err();
    println!("pull error: {err}");
    assert!(matches!(err, ExecError::ImagePull { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("shoal-test/nope:v0") && message.contains("could not be pulled"),
        "{message}"
    );
}

#[tokio::test]
async fn logs_return_each_printed_line_and_the_exit_code_is_observed() {
    let _engine = ENGINE.lock().await;
    let exec = executor(&node_id()).await;
    let a = assignment(
        IMAGE,
        &[
            "/bin/sh",
            "-c",
            "echo one; echo two >&2; echo three; exit 3",
        ],
    );
    let pod = PodRef::of(&a);
    exec.prepare(&a).await.unwrap();
    exec.create(&a).await.unwrap();
    exec.start(&pod).await.unwrap();
    let exited = wait_for_exit(&exec, &pod).await;
    assert_eq!(exited.state, ContainerState::Exited { code: 3 });

    let lines: Vec<LogLine> = exec
        .logs(&pod, false, None)
        .map(|l| l.unwrap())
        .collect()
        .await;
    let mut got: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l.stream.clone(), l.line.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("stderr".to_string(), "two".to_string()),
            ("stdout".to_string(), "one".to_string()),
            ("stdout".to_string(), "three".to_string()),
        ]
    );
    assert!(lines.iter().all(|l| l.pod_id == pod.pod_id));

    let tail: Vec<String> = exec
        .logs(&pod, false, Some(1))
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    cleanup(&exec).await;
}

#[tokio::test]
async fn engine_info_reports_version_and_capacity() {
    let _engine = ENGINE.lock().await;
    let exec = executor(&node_id()).await;
    let info = exec.engine_info().await.unwrap();
    assert!(!info.version.is_empty());
    assert!(info.ncpu > 0 && info.memory_bytes > 0, "{info:?}");
}

#[test]
fn a_pod_network_is_a_bridge_and_the_default_one_is_never_internal() {
    let net = |name: &str, internal| PodNetwork {
        name: name.into(),
        internal,
    };
    assert_eq!(net("shoal", true).check(), Ok(()));
    assert_eq!(net(spec::DOCKER_DEFAULT_BRIDGE, false).check(), Ok(()));
    assert_eq!(
        net(spec::DOCKER_DEFAULT_BRIDGE, true).check(),
        Err(PodNetworkError::InternalDefaultBridge)
    );
    for name in ["host", "none"] {
        assert_eq!(
            net(name, false).check(),
            Err(PodNetworkError::NotABridge(name.into()))
        );
    }
    assert_eq!(net("", false).check(), Err(PodNetworkError::Unnamed));
}
