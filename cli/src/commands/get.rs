//! `shoal get deployments|replicasets|pods|services [NAME] [-o wide|json]`:
//! shoal's objects as kubectl shows Kubernetes' own. Each kind reads its
//! stored objects, with the counts the manager computes beside them, in one
//! call, and renders kubectl's columns; `-o json` prints those views as a
//! JSON array (the same pbjson form `service inspect` prints).

use anyhow::{bail, Result};
use shoal_manager::objects::is_ready;
use shoal_proto::{
    port_config::Protocol, service::Type as ServiceType, DeploymentMode, DeploymentView,
    EndpointMode, ListDeploymentsRequest, ListPodsRequest, ListReplicaSetsRequest,
    ListServiceObjectsRequest, Pod, PodState, PodView, PortConfig, ReplicaSetView,
    ServiceObjectView,
};
use tonic::Code;

use crate::args::{GetArgs, GetOutput, Kind};
use crate::client::{api_error, connect, Host};
use crate::output::{ago, render_table, short_id};

const NONE: &str = "<none>";

pub async fn get(host: &Host, a: &GetArgs) -> Result<()> {
    match a.kind {
        Kind::Deployments => deployments(host, a).await,
        Kind::Replicasets => replicasets(host, a).await,
        Kind::Pods => pods(host, a).await,
        Kind::Services => services(host, a).await,
    }
}

/// Prints the views as JSON, or their table; an empty listing says so on
/// stderr, as kubectl does.
fn show<T: serde::Serialize>(
    a: &GetArgs,
    views: &[T],
    table: impl Fn(bool) -> String,
) -> Result<()> {
    if a.output == Some(GetOutput::Json) {
        println!("{}", serde_json::to_string_pretty(views)?);
    } else if views.is_empty() {
        eprintln!("No resources found.");
    } else {
        print!("{}", table(a.output == Some(GetOutput::Wide)));
    }
    Ok(())
}

/// How long ago, without the "ago" (as `get replicasets` always showed it).
fn age(created_at: i64) -> String {
    ago(created_at).replace(" ago", "")
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        NONE.to_string()
    } else {
        s.to_string()
    }
}

async fn deployments(host: &Host, a: &GetArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let views = client
        .list_deployments(ListDeploymentsRequest {
            name: a.name.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner()
        .deployments;
    show(a, &views, |wide| deployments_table(&views, wide))
}

fn deployments_table(views: &[DeploymentView], wide: bool) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let dep = v.deployment.clone().unwrap_or_default();
            let spec = dep.spec.clone().unwrap_or_default();
            let mut row = vec![
                spec.name.clone(),
                format!("{}/{}", v.ready, v.desired),
                v.up_to_date.to_string(),
                v.available.to_string(),
                age(dep.meta.map_or(0, |m| m.created_at)),
            ];
            if wide {
                let mode = match spec.mode() {
                    DeploymentMode::Replicated => "replicated",
                    DeploymentMode::Global => "global",
                };
                let image = spec
                    .template
                    .and_then(|t| t.container)
                    .map(|c| c.image)
                    .unwrap_or_default();
                row.extend([
                    mode.to_string(),
                    image,
                    dep.status.map_or(0, |s| s.revision).to_string(),
                    or_none(&spec.stack),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
    if wide {
        header.extend(["MODE", "IMAGES", "REVISION", "STACK"]);
    }
    render_table(&header, &rows)
}

async fn replicasets(host: &Host, a: &GetArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut views = client
        .list_replica_sets(ListReplicaSetsRequest {
            service: a.name.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner()
        .replica_sets;
    // By service name as kubectl sorts by name; newest revision first.
    views.sort_by_key(|v| {
        let revision = v.replica_set.as_ref().map_or(0, |r| r.revision);
        (v.service_name.clone(), std::cmp::Reverse(revision))
    });
    show(a, &views, |wide| replicasets_table(&views, wide))
}

/// The replica set's name as `get` shows it: the service and a short id,
/// stable across revision renumbering.
fn rs_name(service: &str, id: &str) -> String {
    format!("{service}-{}", &short_id(id)[..10.min(id.len())])
}

fn replicasets_table(views: &[ReplicaSetView], wide: bool) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let rs = v.replica_set.clone().unwrap_or_default();
            let mut row = vec![
                rs_name(&v.service_name, &rs.id),
                v.desired.to_string(),
                v.current_pods.to_string(),
                v.ready.to_string(),
                age(rs.meta.as_ref().map_or(0, |m| m.created_at)),
            ];
            if wide {
                let image = rs
                    .template
                    .as_ref()
                    .and_then(|t| t.container.as_ref())
                    .map(|c| c.image.clone())
                    .unwrap_or_default();
                row.extend([rs.revision.to_string(), image, v.service_name.clone()]);
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"];
    if wide {
        header.extend(["REVISION", "IMAGE", "SERVICE"]);
    }
    render_table(&header, &rows)
}

/// The pod's name as `get pods` shows it: the name `service ps` shows
/// (`web.1`) and the first 10 characters of the pod id, so two pods of one
/// slot (during a start-first update) differ, and the name is a prefix of
/// the container's (`web.1.<pod id>`).
fn pod_name(v: &PodView) -> String {
    let id = v.pod.as_ref().map_or("", |p| p.id.as_str());
    format!("{}.{}", v.name, &id[..10.min(id.len())])
}

/// Does `name` select this pod: its service, its `get pods` name, its
/// `service ps` name (every live pod of the slot), or its id?
fn pod_matches(v: &PodView, name: &str) -> bool {
    v.service_name == name
        || v.name == name
        || pod_name(v) == name
        || v.pod.as_ref().is_some_and(|p| p.id == name)
}

async fn pods(host: &Host, a: &GetArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let name = a.name.clone().unwrap_or_default();
    let list = |service: &str| ListPodsRequest {
        service: service.to_string(),
        ..Default::default()
    };
    let views = match client.list_pods(list(&name)).await {
        Ok(r) => r.into_inner().pods,
        // Not a service: a pod's own name.
        Err(s) if s.code() == Code::NotFound && !name.is_empty() => {
            let all = client
                .list_pods(list(""))
                .await
                .map_err(|s| api_error(host, s))?;
            let mine: Vec<PodView> = all
                .into_inner()
                .pods
                .into_iter()
                .filter(|v| pod_matches(v, &name))
                .collect();
            if mine.is_empty() {
                bail!("pod {name} not found: no service or live pod has that name");
            }
            mine
        }
        Err(s) => return Err(api_error(host, s)),
    };
    show(a, &views, |wide| pods_table(&views, wide))
}

/// STATUS as kubectl words it, from the pod's observed state.
fn pod_status(p: &Pod) -> &'static str {
    match p.status.as_ref().map_or(PodState::New, |s| s.state()) {
        PodState::New | PodState::Pending | PodState::Assigned | PodState::Accepted => "Pending",
        PodState::Preparing | PodState::Ready | PodState::Starting => "ContainerCreating",
        PodState::Running => "Running",
        PodState::Complete => "Completed",
        PodState::Failed => "Failed",
        PodState::Rejected => "Rejected",
        PodState::Shutdown | PodState::Remove => "Terminated",
        PodState::Orphaned => "Unknown",
    }
}

fn pods_table(views: &[PodView], wide: bool) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let pod = v.pod.clone().unwrap_or_default();
            let mut row = vec![
                pod_name(v),
                // One container per pod.
                if is_ready(&pod) { "1/1" } else { "0/1" }.to_string(),
                pod_status(&pod).to_string(),
                pod.attempt.to_string(),
                age(pod.meta.map_or(0, |m| m.created_at)),
            ];
            if wide {
                let ip = pod.status.as_ref().map(|s| s.ip.as_str()).unwrap_or("");
                row.extend([
                    or_none(ip),
                    or_none(&v.node_hostname),
                    v.service_name.clone(),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        header.extend(["IP", "NODE", "SERVICE"]);
    }
    render_table(&header, &rows)
}

async fn services(host: &Host, a: &GetArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let views = client
        .list_service_objects(ListServiceObjectsRequest {
            name: a.name.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner()
        .services;
    show(a, &views, |wide| services_table(&views, wide))
}

/// `80:30001/TCP` for a published port, `80/TCP` otherwise, as kubectl
/// writes PORT(S) (target port, then the node's port).
fn ports_text(ports: &[PortConfig]) -> String {
    if ports.is_empty() {
        return NONE.into();
    }
    ports
        .iter()
        .map(|p| {
            let proto = match p.protocol() {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
            };
            if p.published_port == 0 {
                format!("{}/{proto}", p.target_port)
            } else {
                format!("{}:{}/{proto}", p.target_port, p.published_port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn services_table(views: &[ServiceObjectView], wide: bool) -> String {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let svc = v.service.clone().unwrap_or_default();
            let ty = svc.r#type();
            // Virtual IPs come with multi-host networking: none yet; a
            // headless (dnsrr) service never gets one, which kubectl shows
            // as "None".
            let cluster_ip = match (ty, svc.endpoint_mode()) {
                (ServiceType::ExternalName, _) => NONE,
                (_, EndpointMode::Dnsrr) => "None",
                (_, EndpointMode::Vip) => NONE,
            };
            let external_ip = match ty {
                ServiceType::LoadBalancer => "<pending>".to_string(),
                ServiceType::ExternalName => svc.external_name.clone(),
                ServiceType::ClusterIp | ServiceType::NodePort => NONE.to_string(),
            };
            let mut row = vec![
                svc.name.clone(),
                ty.display().to_string(),
                cluster_ip.to_string(),
                external_ip,
                ports_text(&svc.ports),
                age(svc.meta.map_or(0, |m| m.created_at)),
            ];
            if wide {
                row.extend([
                    svc.endpoint_mode().display().to_string(),
                    or_none(&v.deployment_name),
                    or_none(&svc.stack),
                    v.ready_endpoints.to_string(),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec![
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    if wide {
        header.extend(["ENDPOINT-MODE", "DEPLOYMENT", "STACK", "ENDPOINTS"]);
    }
    render_table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{
        port_config::PublishMode, ContainerSpec, Deployment, DeploymentSpec, DeploymentStatus,
        HealthState, Meta, PodStatus, PodTemplate, Service,
    };

    fn meta() -> Option<Meta> {
        Some(Meta {
            created_at: shoal_proto::now_ms() - 120_000,
            ..Default::default()
        })
    }

    /// The table's lines, each split into its cells.
    fn cells(table: &str) -> Vec<Vec<String>> {
        table
            .lines()
            .map(|l| {
                l.split("   ")
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn deployments_show_ready_of_desired_and_wide_adds_mode_images_revision_stack() {
        let views = vec![DeploymentView {
            deployment: Some(Deployment {
                id: "d1".into(),
                meta: meta(),
                spec: Some(DeploymentSpec {
                    name: "shop_web".into(),
                    replicas: 3,
                    stack: "shop".into(),
                    template: Some(PodTemplate {
                        container: Some(ContainerSpec {
                            image: "web:v2".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                status: Some(DeploymentStatus {
                    revision: 2,
                    ..Default::default()
                }),
            }),
            desired: 3,
            ready: 2,
            up_to_date: 1,
            available: 2,
        }];
        let t = cells(&deployments_table(&views, false));
        assert_eq!(t[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
        assert_eq!(t[1], ["shop_web", "2/3", "1", "2", "2 minutes"]);
        let t = cells(&deployments_table(&views, true));
        assert_eq!(&t[0][5..], ["MODE", "IMAGES", "REVISION", "STACK"]);
        assert_eq!(&t[1][5..], ["replicated", "web:v2", "2", "shop"]);
    }

    fn pod_view(state: PodState, ip: &str) -> PodView {
        PodView {
            pod: Some(Pod {
                id: "abcdefghijklmnopqrstuvwxy".into(),
                meta: meta(),
                slot: 1,
                attempt: 2,
                status: Some(PodStatus {
                    state: state as i32,
                    ip: ip.into(),
                    health: HealthState::None as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            name: "web.1".into(),
            service_name: "web".into(),
            image: "web:v1".into(),
            node_hostname: "n1".into(),
        }
    }

    #[test]
    fn pods_are_named_by_slot_and_short_id_with_kubectl_statuses() {
        let views = vec![
            pod_view(PodState::Running, "10.0.0.5"),
            pod_view(PodState::Preparing, ""),
        ];
        let t = cells(&pods_table(&views, true));
        assert_eq!(
            t[0],
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "SERVICE"]
        );
        assert_eq!(
            t[1],
            [
                "web.1.abcdefghij",
                "1/1",
                "Running",
                "2",
                "2 minutes",
                "10.0.0.5",
                "n1",
                "web"
            ]
        );
        assert_eq!(&t[2][..3], ["web.1.abcdefghij", "0/1", "ContainerCreating"]);
        assert_eq!(t[2][5], "<none>");
    }

    #[test]
    fn a_pod_is_selected_by_service_slot_name_or_id() {
        let v = pod_view(PodState::Running, "");
        for name in [
            "web",
            "web.1",
            "web.1.abcdefghij",
            "abcdefghijklmnopqrstuvwxy",
        ] {
            assert!(pod_matches(&v, name), "{name}");
        }
        for name in ["web.2", "we", "web.1.abc"] {
            assert!(!pod_matches(&v, name), "{name}");
        }
    }

    fn service(
        name: &str,
        ty: ServiceType,
        mode: EndpointMode,
        ports: Vec<PortConfig>,
    ) -> ServiceObjectView {
        ServiceObjectView {
            service: Some(Service {
                id: name.into(),
                meta: meta(),
                name: name.into(),
                r#type: ty as i32,
                ports,
                endpoint_mode: mode as i32,
                external_name: if ty == ServiceType::ExternalName {
                    "db.example.org".into()
                } else {
                    String::new()
                },
                stack: "shop".into(),
                deployment_id: "d".into(),
                ..Default::default()
            }),
            deployment_name: if ty == ServiceType::ExternalName {
                String::new()
            } else {
                name.into()
            },
            ready_endpoints: 2,
        }
    }

    #[test]
    fn services_show_type_addresses_and_ports_as_kubectl() {
        let published = PortConfig {
            target_port: 80,
            published_port: 30001,
            publish_mode: PublishMode::Ingress as i32,
            ..Default::default()
        };
        let host_udp = PortConfig {
            target_port: 53,
            protocol: Protocol::Udp as i32,
            ..Default::default()
        };
        let views = vec![
            service(
                "web",
                ServiceType::NodePort,
                EndpointMode::Vip,
                vec![published],
            ),
            service("redis", ServiceType::ClusterIp, EndpointMode::Vip, vec![]),
            service(
                "dns",
                ServiceType::ClusterIp,
                EndpointMode::Dnsrr,
                vec![host_udp],
            ),
            service("lb", ServiceType::LoadBalancer, EndpointMode::Vip, vec![]),
            service("db", ServiceType::ExternalName, EndpointMode::Vip, vec![]),
        ];
        let t = cells(&services_table(&views, true));
        assert_eq!(
            t[0],
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "ENDPOINT-MODE",
                "DEPLOYMENT",
                "STACK",
                "ENDPOINTS"
            ]
        );
        let row = |i: usize| t[i][..5].to_vec();
        assert_eq!(
            row(1),
            ["web", "NodePort", "<none>", "<none>", "80:30001/TCP"]
        );
        assert_eq!(row(2), ["redis", "ClusterIP", "<none>", "<none>", "<none>"]);
        assert_eq!(row(3), ["dns", "ClusterIP", "None", "<none>", "53/UDP"]);
        assert_eq!(
            row(4),
            ["lb", "LoadBalancer", "<none>", "<pending>", "<none>"]
        );
        assert_eq!(
            row(5),
            ["db", "ExternalName", "<none>", "db.example.org", "<none>"]
        );
        assert_eq!(&t[3][6..], ["dnsrr", "dns", "shop", "2"]);
        assert_eq!(&t[5][6..], ["vip", "<none>", "shop", "2"]);
    }
}
