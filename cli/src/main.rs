//! `shoal`: the client commands and the node daemon in one binary.

mod args;
mod client;
mod commands;
mod daemon;
mod output;
mod parse;
mod stack;

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::Parser;

use args::{
    CaCommand, Cli, Command, DaemonArgs, InitArgs, JoinArgs, NodeCommand, RolloutCommand,
    ServiceCommand,
};
use commands::{node, rollout, service, system};
use daemon::config;

/// A client whose output goes to a closed pipe (`shoal service ls | head
/// -1`) ends quietly with 141 (128 + SIGPIPE), as Unix tools do, instead of
/// panicking in `println!`. Not by restoring SIGPIPE's default: the client's
/// own gRPC socket must see EPIPE (a daemon stopping under `leave`), not die
/// of the signal.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() {
    let cli = Cli::parse();
    let is_daemon = matches!(
        &cli.command,
        Command::Init(InitArgs { daemon: o, .. })
            | Command::Join(JoinArgs { daemon: o, .. })
            | Command::Daemon(DaemonArgs { daemon: o }) if o.foreground
    );
    if !is_daemon {
        quiet_on_closed_stdout();
    }
    let runtime = if is_daemon {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(dispatch(cli)) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> Result<()> {
    let host = client::Host::new(cli.host.as_deref(), cli.tls_dir.clone());
    match cli.command {
        Command::Init(a) => init(a).await,
        Command::Join(a) => join(a).await,
        Command::Daemon(a) => resume(a).await,
        Command::Service(cmd) => match cmd {
            ServiceCommand::Create(a) => service::create(&host, &a).await,
            ServiceCommand::Ls(a) => service::ls(&host, &a).await,
            ServiceCommand::Ps(a) => service::ps(&host, &a).await,
            ServiceCommand::Scale(a) => service::scale(&host, &a).await,
            ServiceCommand::Inspect(a) => service::inspect(&host, &a).await,
            ServiceCommand::Logs(a) => service::logs(&host, &a).await,
            ServiceCommand::Rm(a) => service::rm(&host, &a).await,
            ServiceCommand::Update(a) => rollout::update(&host, &a).await,
            ServiceCommand::Rollback(a) => rollout::rollback(&host, &a).await,
        },
        Command::Rollout(cmd) => match cmd {
            RolloutCommand::Status(a) => rollout::status(&host, &a).await,
            RolloutCommand::History(a) => rollout::history(&host, &a).await,
            RolloutCommand::Undo(a) => rollout::undo(&host, &a).await,
            RolloutCommand::Pause(a) => rollout::pause(&host, &a, true).await,
            RolloutCommand::Resume(a) => rollout::pause(&host, &a, false).await,
        },
        Command::Stack(cmd) => match cmd {
            args::StackCommand::Config(a) => stack::config(&a.compose_file),
            args::StackCommand::Deploy(a) => commands::stack::deploy(&host, &a).await,
            args::StackCommand::Ls(a) => commands::stack::ls(&host, &a).await,
            args::StackCommand::Services(a) => commands::stack::services(&host, &a).await,
            args::StackCommand::Ps(a) => commands::stack::ps(&host, &a).await,
            args::StackCommand::Rm(a) => commands::stack::rm(&host, &a).await,
        },
        Command::Secret(cmd) => {
            commands::secret::run(&host, commands::secret::Kind::Secret, &cmd).await
        }
        Command::Config(cmd) => {
            commands::secret::run(&host, commands::secret::Kind::Config, &cmd).await
        }
        Command::Get(a) => commands::get::get(&host, &a).await,
        Command::Node(NodeCommand::Ls(a)) => node::ls(&host, &a).await,
        Command::Node(NodeCommand::Inspect(a)) => node::inspect(&host, &a).await,
        Command::Node(NodeCommand::Ps(a)) => node::ps(&host, &a).await,
        Command::Node(NodeCommand::Promote(a)) => {
            node::set_role(&host, &a, shoal_proto::NodeRole::Manager).await
        }
        Command::Node(NodeCommand::Demote(a)) => {
            node::set_role(&host, &a, shoal_proto::NodeRole::Worker).await
        }
        Command::Node(NodeCommand::Update(a)) => node::update(&host, &a).await,
        Command::Node(NodeCommand::Rm(a)) => node::rm(&host, &a).await,
        Command::JoinToken(a) => system::join_token(&host, &a).await,
        Command::GossipKey(a) => system::gossip_key(&host, &a).await,
        Command::Ca(CaCommand::ClientCert(a)) => commands::ca::client_cert(&host, &a).await,
        Command::Leave(a) => system::leave(&host, &a).await,
        Command::Version => system::version(&host).await,
        Command::Info(a) => system::info(&host, &a).await,
    }
}

fn socket_host(socket: &std::path::Path) -> String {
    format!("unix://{}", socket.display())
}

async fn init(a: InitArgs) -> Result<()> {
    let dir = config::data_dir(a.daemon.data_dir.as_deref());
    if a.force_new_cluster {
        return force_new_cluster(&dir, &a).await;
    }
    if config::exists(&dir) {
        bail!(
            "this node is already part of a cluster (state in {d}): resume it with `shoal daemon --data-dir {d}`, or remove it with `shoal leave --force`",
            d = dir.display()
        );
    }
    // Validate before detaching, so the error reaches the terminal.
    let listen_addr = a
        .listen_addr
        .clone()
        .unwrap_or_else(|| config::default_listen_addr(&a.advertise_addr));
    let cfg = daemon::new_node_config(
        &listen_addr,
        &a.advertise_addr,
        &a.pod_network,
        a.pod_network_internal,
        a.gossip_port,
    )?;
    if a.daemon.foreground {
        init_tracing();
        return daemon::run(daemon::DaemonRun {
            data_dir: dir,
            socket: a.daemon.socket.clone(),
            config: cfg,
            init: true,
        })
        .await;
    }
    let mut args: Vec<OsString> = vec![
        "init".into(),
        "--foreground".into(),
        "--data-dir".into(),
        dir.clone().into(),
        "--socket".into(),
        a.daemon.socket.clone().into(),
        "--listen-addr".into(),
        listen_addr.into(),
        "--advertise-addr".into(),
        a.advertise_addr.clone().into(),
        "--pod-network".into(),
        a.pod_network.clone().into(),
        "--gossip-port".into(),
        a.gossip_port.to_string().into(),
    ];
    if a.pod_network_internal {
        args.push("--pod-network-internal".into());
    }
    let host = socket_host(&a.daemon.socket);
    daemon::detach::spawn_and_wait(args, &dir, &host).await?;
    let mut client = client::connect(host.as_str()).await?;
    let info = client
        .info(shoal_proto::InfoRequest {})
        .await
        .map_err(|s| client::api_error(host.as_str(), s))?
        .into_inner();
    let worker =
        system::join_token_of(&host.as_str().into(), args::JoinRole::Worker, false).await?;
    println!("Cluster initialized: {}", info.cluster_id);
    println!("Current node ({}) is now a manager.", info.node_id);
    println!();
    print!("{}", system::join_instructions(&worker));
    println!();
    println!("To add a manager to this cluster, run 'shoal join-token manager' and follow the instructions.");
    Ok(())
}

/// `shoal init --force-new-cluster`: see `daemon::force_new`.
async fn force_new_cluster(dir: &std::path::Path, a: &InitArgs) -> Result<()> {
    if a.daemon.foreground {
        bail!(
            "--force-new-cluster starts the daemon detached once the new cluster is made; \
             drop --foreground (then `shoal daemon --foreground` runs it attached)"
        );
    }
    let r = daemon::force_new::run(dir, &a.daemon.socket).await?;
    let host = socket_host(&a.daemon.socket);
    if let Some(pid) = r.stopped {
        println!("Stopped the running shoal daemon (pid {pid}).");
    }
    println!(
        "New cluster formed from this node's state: cluster {}, epoch {} (was {}), {} objects kept.",
        r.new.cluster_id,
        r.new.epoch,
        r.new.epoch - 1,
        r.new.objects
    );
    println!("Current node ({}) is now the only manager.", r.cfg.node_id);
    println!(
        "The old Raft state is kept in {}.",
        r.new.old_raft_dir.display()
    );
    if r.new.removed.is_empty() {
        println!("No other manager was removed.");
    } else {
        println!();
        println!("Removed managers (fenced out: the new cluster refuses them):");
        for m in &r.new.removed {
            println!("    {}  {}  {}", m.node_id, m.hostname, m.addr);
        }
        println!();
        let manager =
            system::join_token_of(&host.as_str().into(), args::JoinRole::Manager, false).await?;
        println!("To bring one back as a manager, run on it:");
        println!();
        println!("    shoal leave --force");
        println!(
            "    shoal join --token {} {}",
            manager.token, manager.join_addr
        );
    }
    println!();
    println!("Workers keep working: they reconnect to this manager with their certificates.");
    Ok(())
}

async fn join(a: JoinArgs) -> Result<()> {
    let dir = config::data_dir(a.daemon.data_dir.as_deref());
    if config::exists(&dir) {
        bail!(
            "this node is already part of a cluster (state in {d}): resume it with `shoal daemon --data-dir {d}`, or leave it with `shoal leave --force` first",
            d = dir.display()
        );
    }
    let cfg = daemon::join::join(
        &dir,
        daemon::join::JoinRequest {
            token: &a.token,
            manager: &a.manager,
            advertise_addr: a.advertise_addr.as_deref(),
            listen_addr: a.listen_addr.as_deref(),
            pod_network: &a.pod_network,
            pod_network_internal: a.pod_network_internal,
            gossip_port: a.gossip_port,
        },
    )
    .await?;
    let role = if cfg.raft_id == 0 {
        "worker"
    } else {
        "manager"
    };
    if !run_node(&dir, &a.daemon, &cfg).await? {
        return Ok(());
    }
    println!(
        "This node joined a cluster as a {role} (node {}).",
        cfg.node_id
    );
    Ok(())
}

/// Runs the node from its data dir: in the foreground (returns `false` when
/// it stopped), or detached, returning `true` once it serves.
async fn run_node(
    dir: &std::path::Path,
    opts: &args::DaemonOpts,
    cfg: &config::NodeConfig,
) -> Result<bool> {
    if opts.foreground {
        init_tracing();
        daemon::run(daemon::DaemonRun {
            data_dir: dir.to_path_buf(),
            socket: opts.socket.clone(),
            config: cfg.clone(),
            init: false,
        })
        .await?;
        return Ok(false);
    }
    let args: Vec<OsString> = vec![
        "daemon".into(),
        "--foreground".into(),
        "--data-dir".into(),
        dir.into(),
        "--socket".into(),
        opts.socket.clone().into(),
    ];
    let host = socket_host(&opts.socket);
    daemon::detach::spawn_and_wait(args, dir, &host).await?;
    Ok(true)
}

async fn resume(a: DaemonArgs) -> Result<()> {
    let dir = config::data_dir(a.daemon.data_dir.as_deref());
    let cfg = config::load(&dir)?;
    if !run_node(&dir, &a.daemon, &cfg).await? {
        return Ok(());
    }
    println!(
        "shoal daemon started (node {}, data dir {})",
        cfg.node_id,
        dir.display()
    );
    Ok(())
}
