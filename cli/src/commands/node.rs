//! `shoal node ...`

use anyhow::Result;
use shoal_proto::{
    InfoRequest, ListNodesRequest, NodeAvailability, NodeRole, NodeState, RemoveNodeRequest,
    UpdateNodeRequest,
};

use crate::args::{
    Availability, Format, ListArgs, NodeArgs, NodePsArgs, NodeRmArgs, NodeUpdateArgs, NodesArgs,
};
use crate::client::{api_error, connect, Host};
use crate::output::table;

fn state(n: &shoal_proto::Node) -> &'static str {
    match n.status.as_ref().map(|s| s.state()) {
        Some(NodeState::Ready) => "Ready",
        Some(NodeState::Down) => "Down",
        Some(NodeState::Disconnected) => "Disconnected",
        _ => "Unknown",
    }
}

fn availability(n: &shoal_proto::Node) -> &'static str {
    match n.spec.as_ref().map(|s| s.availability()) {
        Some(NodeAvailability::Pause) => "Pause",
        Some(NodeAvailability::Drain) => "Drain",
        _ => "Active",
    }
}

pub async fn ls(host: &Host, a: &ListArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let me = client
        .info(InfoRequest {})
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    let listed = client
        .list_nodes(ListNodesRequest::default())
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    let raft = listed.managers;
    let mut nodes = listed.nodes;
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    if a.quiet {
        nodes.iter().for_each(|n| println!("{}", n.id));
        return Ok(());
    }
    let manager_status = |n: &shoal_proto::Node| -> String {
        let is_manager = n
            .spec
            .as_ref()
            .is_some_and(|s| s.role() == NodeRole::Manager);
        if !is_manager {
            return String::new();
        }
        match raft.iter().find(|m| m.node_id == n.id) {
            Some(m) if m.leader => "Leader".into(),
            Some(m) if m.learner => "Joining".into(),
            Some(m) if m.reachable => "Reachable".into(),
            Some(_) => "Unreachable".into(),
            // Promoted, not in Raft yet.
            None => "Joining".into(),
        }
    };
    let hostname = |n: &shoal_proto::Node| {
        n.status
            .as_ref()
            .map(|s| s.hostname.clone())
            .unwrap_or_default()
    };
    if a.format.format == Format::Json {
        let rows: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "ID": n.id,
                    "Self": n.id == me.node_id,
                    "Hostname": hostname(n),
                    "Status": state(n),
                    "Addr": n.status.as_ref().map(|s| s.addr.clone()).unwrap_or_default(),
                    "Availability": availability(n),
                    "ManagerStatus": manager_status(n),
                    "EngineVersion": n.status.as_ref().map(|s| s.engine_version.clone()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let star = if n.id == me.node_id { " *" } else { "" };
            vec![
                format!("{}{star}", n.id),
                hostname(n),
                state(n).into(),
                availability(n).into(),
                manager_status(n),
            ]
        })
        .collect();
    table(
        &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
        &rows,
    );
    Ok(())
}

/// `shoal node inspect`: the node object and, for a manager, its Raft view.
pub async fn inspect(host: &Host, a: &NodeArgs) -> Result<()> {
    let mut client = connect(host).await?;
    // The manager resolves the name as for every other node command.
    let listed = client
        .list_nodes(ListNodesRequest {
            node: a.node.clone(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    let node = listed
        .nodes
        .first()
        .ok_or_else(|| anyhow::anyhow!("node {} not found", a.node))?;
    let manager = listed.managers.first();
    let out = serde_json::json!({
        "Node": node,
        "ManagerStatus": manager,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `shoal node promote|demote`: one request per node, stopping at the
/// first refusal (which says why, e.g. a demotion that would lose quorum).
pub async fn set_role(host: &Host, a: &NodesArgs, role: NodeRole) -> Result<()> {
    let mut client = connect(host).await?;
    for node in &a.nodes {
        let updated = client
            .update_node(UpdateNodeRequest {
                node: node.clone(),
                role: role as i32,
                ..Default::default()
            })
            .await
            .map_err(|s| api_error(host, s))?
            .into_inner();
        let what = if role == NodeRole::Manager {
            "promoted to a manager"
        } else {
            "demoted to a worker"
        };
        println!("Node {} {what}.", updated.id);
    }
    Ok(())
}

/// `shoal node update --availability --label-add --label-rm`.
pub async fn update(host: &Host, a: &NodeUpdateArgs) -> Result<()> {
    let labels_add = crate::parse::key_values("--label-add", &a.label_add)?;
    let availability = match a.availability {
        None => NodeAvailability::Unspecified,
        Some(Availability::Active) => NodeAvailability::Active,
        Some(Availability::Pause) => NodeAvailability::Pause,
        Some(Availability::Drain) => NodeAvailability::Drain,
    };
    let mut client = connect(host).await?;
    let updated = client
        .update_node(UpdateNodeRequest {
            node: a.node.clone(),
            availability: availability as i32,
            labels_add,
            labels_rm: a.label_rm.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    println!("{}", updated.id);
    Ok(())
}

/// `shoal node rm [--force]`.
pub async fn rm(host: &Host, a: &NodeRmArgs) -> Result<()> {
    let mut client = connect(host).await?;
    for node in &a.nodes {
        client
            .remove_node(RemoveNodeRequest {
                node: node.clone(),
                force: a.force,
            })
            .await
            .map_err(|s| api_error(host, s))?;
        println!("{node}");
    }
    Ok(())
}

/// `shoal node ps [NODE...]`: the pods placed on nodes (this node's by
/// default), as `service ps` shows them.
pub async fn ps(host: &Host, a: &NodePsArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let nodes = if a.nodes.is_empty() {
        let me = client
            .info(InfoRequest {})
            .await
            .map_err(|s| api_error(host, s))?
            .into_inner();
        vec![me.node_id]
    } else {
        a.nodes.clone()
    };
    let mut pods = Vec::new();
    for node in nodes {
        let mut got = client
            .list_pods(shoal_proto::ListPodsRequest {
                node,
                include_history: !a.pods.no_history,
                ..Default::default()
            })
            .await
            .map_err(|s| api_error(host, s))?
            .into_inner()
            .pods;
        pods.append(&mut got);
    }
    crate::commands::service::print_pods(&pods, &a.pods)
}
