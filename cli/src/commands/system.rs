//! `shoal version`, `shoal info`, `shoal leave`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use shoal_proto::{
    GossipInfo, GossipKeyRequest, InfoRequest, JoinTokenRequest, JoinTokenResponse, LeaveRequest,
    NodeRole,
};

use crate::args::{Format, FormatArgs, GossipKeyArgs, JoinRole, JoinTokenArgs, LeaveArgs};
use crate::client::{api_error, connect, Host};

pub async fn version(host: &Host) -> Result<()> {
    println!("Client:\n Version:    {}", env!("CARGO_PKG_VERSION"));
    let mut client = connect(host).await?;
    let info = client
        .info(InfoRequest {})
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    println!("Server:\n Version:    {}", info.daemon_version);
    println!(" Engine:     Docker {}", info.engine_version);
    Ok(())
}

pub async fn info(host: &Host, a: &FormatArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let i = client
        .info(InfoRequest {})
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    if a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!("Cluster ID:        {}", i.cluster_id);
    println!("Node ID:           {}", i.node_id);
    println!("Hostname:          {}", i.node_hostname);
    println!("Is Manager:        {}", i.is_manager);
    println!("Is Leader:         {}", i.is_leader);
    println!("Managers:          {}", i.managers);
    println!("Nodes:             {}", i.nodes);
    println!("Services:          {}", i.services);
    println!("Pods running:      {}", i.pods_running);
    println!("Daemon version:    {}", i.daemon_version);
    println!("Docker Engine:     {}", i.engine_version);
    println!("Data dir:          {}", i.data_dir);
    println!("Listen address:    {}", i.listen_addr);
    println!("Advertise address: {}", i.advertise_addr);
    println!("Raft applied:      {}", i.raft_last_applied);
    println!("Worker join:       {}", i.worker_join_command);
    println!("Gossip:            {}", gossip_line(i.gossip.as_ref()));
    Ok(())
}

/// One line on this node's gossip for `shoal info`.
fn gossip_line(g: Option<&GossipInfo>) -> String {
    match g {
        None => "off".into(),
        Some(g) if !g.running => format!("not running yet ({})", g.addr),
        Some(g) => {
            let dropped = g.forged + g.replayed + g.stale + g.oversized + g.malformed;
            format!(
                "{} live nodes on {}, key {:08x}{}, {dropped} datagrams dropped{}",
                g.live_nodes.len(),
                g.addr,
                g.primary_key_id,
                if g.key_ids.len() > 1 {
                    format!(" (+{} more, rotating)", g.key_ids.len() - 1)
                } else {
                    String::new()
                },
                if g.degraded {
                    " (past its ceiling: not trusted)"
                } else {
                    ""
                }
            )
        }
    }
}

/// `shoal gossip-key [--rotate]`: the gossip keys' ids, ages and the one
/// that seals.
pub async fn gossip_key(host: &Host, a: &GossipKeyArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let answer = if a.rotate {
        client.rotate_gossip_key(GossipKeyRequest {}).await
    } else {
        client.get_gossip_keys(GossipKeyRequest {}).await
    };
    let ring = answer.map_err(|s| api_error(host, s))?.into_inner();
    if a.format.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&ring)?);
        return Ok(());
    }
    if a.rotate {
        println!("Gossip key rotation started: the new key seals once every node has it.");
    }
    let now = shoal_proto::now_ms();
    let rows: Vec<Vec<String>> = ring
        .keys
        .iter()
        .map(|k| {
            vec![
                format!("{:08x}", k.id),
                if k.id == ring.primary { "yes" } else { "" }.to_string(),
                format!("{}s", (now - k.created_ms).max(0) / 1000),
            ]
        })
        .collect();
    crate::output::table(&["KEY ID", "SEALS", "AGE"], &rows);
    Ok(())
}

/// `shoal join-token worker|manager [-q] [--rotate]`, as Docker's
/// `swarm join-token`.
pub async fn join_token(host: &Host, a: &JoinTokenArgs) -> Result<()> {
    let t = join_token_of(host, a.role, a.rotate).await?;
    if a.quiet {
        println!("{}", t.token);
        return Ok(());
    }
    if a.rotate {
        println!("Successfully rotated {} join token.", role_name(a.role));
        println!();
    }
    print!("{}", join_instructions(&t));
    Ok(())
}

/// Asks the manager for a role's token, rotating it first with `rotate`.
pub async fn join_token_of(host: &Host, role: JoinRole, rotate: bool) -> Result<JoinTokenResponse> {
    let mut client = connect(host).await?;
    let request = JoinTokenRequest {
        role: match role {
            JoinRole::Worker => NodeRole::Worker,
            JoinRole::Manager => NodeRole::Manager,
        } as i32,
    };
    let answer = if rotate {
        client.rotate_join_token(request).await
    } else {
        client.get_join_token(request).await
    };
    Ok(answer.map_err(|s| api_error(host, s))?.into_inner())
}

/// "To add a worker to this cluster, run the following command:" and the
/// command, indented, as `docker swarm init` and `join-token` print them.
pub fn join_instructions(t: &JoinTokenResponse) -> String {
    let role = if t.role == NodeRole::Manager as i32 {
        "manager"
    } else {
        "worker"
    };
    format!(
        "To add a {role} to this cluster, run the following command:\n\n    \
         shoal join --token {} {}\n",
        t.token, t.join_addr
    )
}

fn role_name(role: JoinRole) -> &'static str {
    match role {
        JoinRole::Worker => "worker",
        JoinRole::Manager => "manager",
    }
}

/// Asks the daemon to leave and waits until it has stopped.
pub async fn leave(host: &Host, a: &LeaveArgs) -> Result<()> {
    let mut client = connect(host).await?;
    client
        .leave(LeaveRequest { force: a.force })
        .await
        .map_err(|s| api_error(host, s))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if connect(host).await.is_err() {
            println!("Node left the cluster.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the daemon did not stop within 60s; see its log in the data dir")
}
