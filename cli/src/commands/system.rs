//! `shoal version`, `shoal info`, `shoal leave`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use shoal_proto::{InfoRequest, LeaveRequest};

use crate::args::{Format, FormatArgs, LeaveArgs};
use crate::client::{api_error, connect};

pub async fn version(host: &str) -> Result<()> {
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

pub async fn info(host: &str, a: &FormatArgs) -> Result<()> {
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
    Ok(())
}

/// Asks the daemon to leave and waits until it has stopped.
pub async fn leave(host: &str, a: &LeaveArgs) -> Result<()> {
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
